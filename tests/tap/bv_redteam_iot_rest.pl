# Second red-team pass over bv_iot's REST surface (PostgREST): floods that
# worked and the guards next to them.
#  - a signed-in user provisioned devices and queued 64 kB commands without
#    bound (only the request rate limited them).  REST callers now own at most
#    iot.settings.max_devices_per_owner devices and have at most
#    max_pending_commands commands queued or sent per device: beyond, 429
#    with a hint, nothing written; other owners are not affected; answered
#    commands free the allowance; the SQL API of back-end services is not
#    limited; a client cannot raise the quotas;
#  - hostile device ids (MQTT wildcards, separators, NUL, unicode, $SYS)
#    never become topics, and every other owner's id answers 404.
use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('iotred', extra_conf => "bv.request_rate = 1000\nbv.request_burst = 1000\n");
BvTest::create_suite_db($node);
sub sql { return $node->safe_psql('bitvelocity', $_[0]); }

my $secret = join '', map { ('a' .. 'z', 0 .. 9)[ rand 36 ] } 1 .. 48;
sql("INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('postgrest', 'HS256', '$secret')");
my ($pgrst, $url) = BvTest::start_postgrest($node, jwt_secret => $secret);
my $exp = time() + 600;
my %tok = map { $_ => BvTest::jwt_hs256($secret, qq({"role":"bv_user","sub":"$_","exp":$exp})) } qw(mallory bob);

sub rpc
{
	my ($as, $fn, $body) = @_;
	my ($status, $resp) = BvTest::http('POST', "$url/rpc/$fn", token => $tok{$as}, body => encode_json($body));
	my $json = eval { decode_json($resp) };
	return ($status, $json // $resp);
}

is(sql('SELECT max_devices_per_owner || \'/\' || max_pending_commands FROM iot.settings'), '1000/100', 'default quotas');
sql('UPDATE iot.settings SET max_devices_per_owner = 3, max_pending_commands = 2');

# ---- devices ----
for my $i (1 .. 3)
{
	my ($s) = rpc('mallory', 'iot_provision_device', { device_id => "m$i" });
	is($s, '200', "device $i of 3: provisioned");
}
my ($s, $b) = rpc('mallory', 'iot_provision_device', { device_id => 'm4' });
is($s, '429', 'a 4th device: 429');
is($b->{code} // '', 'PT429', 'SQLSTATE PT429');
like($b->{hint} // '', qr/max_devices_per_owner/, 'the hint names the setting');
unlike(encode_json($b), qr/"secret"/, 'no secret in the refusal');
is(sql(q{SELECT count(*) FROM iot.devices WHERE owner = 'mallory'}), 3, 'nothing was written');
($s) = rpc('bob', 'iot_provision_device', { device_id => 'b1' });
is($s, '200', 'another owner is not affected');
is(sql(q{SELECT count(*) FROM (SELECT iot.provision_device('svc-' || g) FROM generate_series(1, 5) g) x}), 5,
	'the SQL API of back-end services is not limited');

# ---- pending commands ----
my @ids;
for my $i (1 .. 2)
{
	($s, $b) = rpc('mallory', 'iot_send_command', { device_id => 'm1', name => 'noop', args => { pad => 'x' x 60000 } });
	is($s, '200', "command $i of 2 to m1: queued");
	push @ids, $b->{id};
}
($s, $b) = rpc('mallory', 'iot_send_command', { device_id => 'm1', name => 'noop' });
is($s, '429', 'a 3rd pending command: 429');
like($b->{hint} // '', qr/iot_commands/, 'with a hint');
is(sql(q{SELECT count(*) FROM iot.commands WHERE device_id = 'm1'}), 2, 'nothing queued');
($s) = rpc('mallory', 'iot_send_command', { device_id => 'm2', name => 'noop' });
is($s, '200', 'the quota is per device');
sql("UPDATE iot.commands SET state = 'succeeded' WHERE id = $ids[0]");
($s) = rpc('mallory', 'iot_send_command', { device_id => 'm1', name => 'noop' });
is($s, '200', 'an answered command frees its place');
($s) = rpc('mallory', 'iot_send_command', { device_id => 'm1', name => 'noop' });
is($s, '429', 'and only one');

# ---- the quotas are not the client's ----
my ($rc, $out, $err) = $node->psql('bitvelocity', q{SET ROLE bv_user; UPDATE iot.settings SET max_devices_per_owner = 1000000});
like($err, qr/permission denied/, 'bv_user cannot raise the quotas');

# ---- hostile ids: never a topic, never another owner's ----
sql('UPDATE iot.settings SET max_devices_per_owner = 1000');
for my $id ('a/b', 'a+', '#', '+', '$SYS', 'a b', "caf\x{e9}", "a\tb", '..', 'x' x 65, '')
{
	($s, $b) = rpc('mallory', 'iot_provision_device', { device_id => $id });
	is($s, '400', 'device id ' . encode_json([$id]) . ': 400');
}
for my $fn ([ 'iot_send_command', { device_id => 'b1', name => 'x' } ], [ 'iot_rotate_device_secret', { device_id => 'b1' } ],
	[ 'iot_set_device_enabled', { device_id => 'b1', enabled => JSON::PP::false } ])
{
	($s) = rpc('mallory', $fn->[0], $fn->[1]);
	is($s, '404', "$fn->[0] on another owner's device: 404");
}
is(sql(q{SELECT status FROM iot.devices WHERE device_id = 'b1'}), 'active', 'bob\'s device is untouched');

$pgrst->kill_kill;
$node->stop;
done_testing();
