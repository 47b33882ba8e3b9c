# bv_iot over real HTTP through PostgREST, with two owners' tokens:
#  - registry: provision (the secret once, Cache-Control: no-store), list,
#    enable/disable, rotate; commands: send, list, status with transitions;
#    queries: raw readings and rollups over a range, equal to a direct
#    aggregate;
#  - no cross-owner access by any endpoint (views, every RPC, PATCH/DELETE
#    on the views), anonymous callers get 401;
#  - hostile inputs answer 400/404/409 with a hint, never 500;
#  - a seeded randomized sequence of provision / enable / disable / send /
#    read calls by both owners on both owners' devices, checked against a
#    model of who owns what and what state it is in.
use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $seed = $ENV{BV_IOT_SEED} // (time() % 100000);
diag("seed $seed (rerun with BV_IOT_SEED=$seed)");
srand($seed);

# many requests from two subjects: a rate limit above what the test sends
my $node = BvTest::new_node('iotrest', extra_conf => "bv.request_rate = 1000\nbv.request_burst = 1000\n");
BvTest::create_suite_db($node);
sub sql { return $node->safe_psql('bitvelocity', $_[0]); }

my $secret = join '', map { ('a' .. 'z', 0 .. 9)[ rand 36 ] } 1 .. 48;
sql("INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('postgrest', 'HS256', '$secret')");
my ($pgrst, $url) = BvTest::start_postgrest($node, jwt_secret => $secret);
my $exp = time() + 600;
my %tok = map { $_ => BvTest::jwt_hs256($secret, qq({"role":"bv_user","sub":"$_","exp":$exp})) } qw(alice bob);

sub call
{
	my ($method, $path, %o) = @_;
	my ($status, $body) = BvTest::http($method, "$url$path",
		token => ($o{as} ? $tok{ $o{as} } : undef), body => $o{body}, headers => $o{headers});
	my $json = eval { decode_json($body) };
	return ($status, $json // $body);
}
sub rpc { my ($as, $fn, $body) = @_; return call('POST', "/rpc/$fn", as => $as, body => encode_json($body)); }

# ---- registry ----
my ($s, $b) = rpc('alice', 'iot_provision_device', { device_id => 'a1', metadata => { site => 'lab' }, firmware => '1.0' });
is($s, '200', 'alice provisions a1') or diag(explain $b);
like($b->{secret} // '', qr/^[A-Za-z0-9_-]{20,}$/, 'the secret is returned');
is_deeply([ @$b{qw(username telemetry_topic command_topic status_topic)} ],
	[ 'a1', 'devices/a1/telemetry', 'devices/a1/commands', 'devices/a1/status' ], 'with user name and topics');
ok(index(sql("SELECT secret_hash FROM iot.devices WHERE device_id = 'a1'"), $b->{secret}) < 0, 'stored only hashed');
{
	my @cmd = ('curl', '-s', '-D', '-', '-o', '/dev/null', '-X', 'POST', '-H', "Authorization: Bearer $tok{alice}",
		'-H', 'Content-Type: application/json', '--data-binary', '{"device_id":"a0"}', "$url/rpc/iot_provision_device");
	my $headers = `@{[ join ' ', map { "'$_'" } @cmd ]}`;
	like($headers, qr/^Cache-Control: no-store/mi, 'the response with a secret is not cacheable');
}
($s, $b) = rpc('bob', 'iot_provision_device', { device_id => 'b1' });
is($s, '200', 'bob provisions b1');
($s, $b) = rpc('alice', 'iot_provision_device', { device_id => 'b1' });
is($s, '409', 'an id taken by another owner: 409');
like($b->{hint} // '', qr/another id/, 'with a hint');

($s, $b) = call('GET', '/iot_devices?select=device_id,status,metadata,online&order=device_id', as => 'alice');
is($s, '200', 'alice lists her devices');
is(join(',', map { $_->{device_id} } @$b), 'a0,a1', 'only hers');
is($b->[1]{metadata}{site}, 'lab', 'with metadata');
($s, $b) = call('GET', '/iot_devices?select=device_id', as => 'bob');
is(join(',', map { $_->{device_id} } @$b), 'b1', 'bob sees only his');
($s, $b) = call('GET', '/iot_devices?device_id=eq.b1', as => 'alice');
is_deeply($b, [], 'alice filtering on bob\'s device: nothing');
($s) = call('GET', '/iot_devices');
is($s, '401', 'anonymous list: 401');
($s) = rpc(undef, 'iot_provision_device', { device_id => 'anon1' });
is($s, '401', 'anonymous provision: 401');
($s) = call('GET', '/iot_devices?select=secret_hash', as => 'alice');
is($s, '400', 'secret_hash is not a column of the API');

# ---- hostile provisioning ----
my @bad_provision = (
	[ { device_id => "x'; DROP TABLE iot.devices; --" }, 'quote and SQL' ],
	[ { device_id => "caf\x{e9}" }, 'multibyte' ],
	[ { device_id => 'a' x 65 }, '65 characters' ],
	[ { device_id => '' }, 'empty' ],
	[ { device_id => undef }, 'null' ],
	[ { device_id => 'sub/topic' }, 'a topic separator' ],
	[ { device_id => '+' }, 'an MQTT wildcard' ],
	[ { device_id => 'm1', metadata => [1] }, 'metadata an array' ],
	[ { device_id => 'm2', metadata => 'x' }, 'metadata a string' ],
	[ { device_id => 'm3', metadata => { big => 'x' x 20000 } }, 'metadata over 16 kB' ],
	[ { device_id => 'm4', firmware => 'v' x 65 }, 'firmware over 64' ],
	[ { device_id => 'm5', device_type => 'nope' }, 'unknown type' ],
	[ { device_id => 'm6', group_name => 'nope' }, 'unknown group' ],);
for my $c (@bad_provision)
{
	($s, $b) = rpc('alice', 'iot_provision_device', $c->[0]);
	ok($s eq '400' && ref $b eq 'HASH' && $b->{hint}, "provision with $c->[1]: 400 with a hint") or diag("$s " . explain $b);
}
($s) = rpc('alice', 'iot_provision_device', { device_id => 'a' x 64 });
is($s, '200', 'a 64-character id is fine');
($s) = rpc('alice', 'iot_provision_device', { device_id => 'm7', unknown => 1 });
is($s, '404', 'an unknown argument: 404 (no such function)');
sql("INSERT INTO iot.device_groups (name, owner) VALUES ('bobs', 'bob')");
($s) = rpc('alice', 'iot_provision_device', { device_id => 'm8', group_name => 'bobs' });
is($s, '400', 'another owner\'s group: 400 (does not exist for her)');
is(sql("SELECT count(*) FROM iot.devices WHERE device_id ~ '^m'"), 0, 'none of them was registered');

# ---- no cross-owner access by any endpoint ----
rpc('bob', 'iot_send_command', { device_id => 'b1', name => 'reboot' });
($s, $b) = rpc('bob', 'iot_send_command', { device_id => 'b1', name => 'reboot', args => { delay => 5 } });
is($s, '200', 'bob sends b1 a command');
is($b->{state}, 'queued', 'queued');
my $bob_id = $b->{id};
my @cross = (
	[ 'iot_rotate_device_secret', { device_id => 'b1' } ],
	[ 'iot_set_device_enabled', { device_id => 'b1', enabled => JSON::PP::false } ],
	[ 'iot_send_command', { device_id => 'b1', name => 'reboot' } ],
	[ 'iot_readings', { device_id => 'b1', since => '2020-01-01T00:00:00Z' } ],
	[ 'iot_rollups', { device_id => 'b1', metric => 'temp', since => '2026-01-01T00:00:00Z', bucket => 'hour' } ],
	[ 'iot_command', { id => $bob_id } ],
	[ 'iot_set_device_certificate', { device_id => 'b1', certificate => undef } ],
	[ 'iot_rotate_device_secret', { device_id => 'nosuch' } ],);
for my $c (@cross)
{
	($s, $b) = rpc('alice', @$c);
	ok($s eq '404' && $b->{hint}, "alice: $c->[0] on " . ($c->[1]{device_id} // "command $bob_id") . ': 404')
	  or diag("$s " . explain $b);
}
($s, $b) = call('GET', "/iot_commands?id=eq.$bob_id", as => 'alice');
is_deeply($b, [], 'alice does not see bob\'s command');
($s, $b) = call('GET', "/iot_command_transitions?command_id=eq.$bob_id", as => 'alice');
is_deeply($b, [], 'nor its transitions');
($s, $b) = call('GET', "/iot_command_transitions?command_id=eq.$bob_id", as => 'bob');
is(scalar @$b, 1, 'bob sees its transition');
($s) = call('PATCH', '/iot_devices?device_id=eq.b1', as => 'alice', body => '{"status":"disabled"}');
is($s, '403', 'PATCH on the devices view: 403');
($s) = call('DELETE', '/iot_devices?device_id=eq.b1', as => 'alice');
is($s, '403', 'DELETE on the devices view: 403');
($s) = call('PATCH', "/iot_commands?id=eq.$bob_id", as => 'bob', body => '{"state":"succeeded"}');
is($s, '403', 'PATCH on the commands view, even by its owner: 403');
is(sql("SELECT status FROM iot.devices WHERE device_id = 'b1'"), 'active', 'b1 unchanged');
is(sql("SELECT state FROM iot.commands WHERE id = $bob_id"), 'queued', 'bob\'s command unchanged');

# ---- enable / disable ----
($s, $b) = rpc('alice', 'iot_set_device_enabled', { device_id => 'a1', enabled => JSON::PP::false });
is_deeply([ $s, $b->{status} ], [ '200', 'disabled' ], 'alice disables a1');
($s, $b) = rpc('alice', 'iot_send_command', { device_id => 'a1', name => 'reboot' });
is($s, '409', 'a command to a disabled device: 409');
($s, $b) = rpc('alice', 'iot_set_device_enabled', { device_id => 'a1', enabled => undef });
is($s, '400', 'enabled null: 400');
($s, $b) = rpc('alice', 'iot_set_device_enabled', { device_id => 'a1', enabled => JSON::PP::true });
is_deeply([ $s, $b->{status} ], [ '200', 'active' ], 'and enables it again');
my $hash = sql("SELECT secret_hash FROM iot.devices WHERE device_id = 'a1'");
($s, $b) = rpc('alice', 'iot_rotate_device_secret', { device_id => 'a1' });
ok($s eq '200' && length($b->{secret}) >= 20, 'alice rotates a1\'s secret');
isnt(sql("SELECT secret_hash FROM iot.devices WHERE device_id = 'a1'"), $hash, 'a new hash is stored');

# ---- certificates ----
my $pki = "$PostgreSQL::Test::Utils::tmp_check/pki";
mkdir $pki;
BvTest::make_ca($pki, 'ca', 'test device CA');
BvTest::make_cert($pki, 'a1', 'a1', 'ca', "extendedKeyUsage=clientAuth\n");
my $pem = slurp_file("$pki/a1.crt");
my $fp = BvTest::openssl('x509', '-in', "$pki/a1.crt", '-noout', '-fingerprint', '-sha256');
$fp =~ s/.*=//s;
$fp =~ s/[:\s]//g;
($s, $b) = rpc('alice', 'iot_set_device_certificate', { device_id => 'a1', certificate => $pem });
is_deeply([ $s, $b->{cert_fingerprint} ], [ '200', lc $fp ], 'alice records a1\'s certificate: its SHA-256 fingerprint');
($s, $b) = call('GET', '/iot_devices?select=cert_fingerprint&device_id=eq.a1', as => 'alice');
is($b->[0]{cert_fingerprint}, lc $fp, 'listed with the device');
($s, $b) = rpc('bob', 'iot_set_device_certificate', { device_id => 'a1', certificate => $pem });
is($s, '404', 'bob on alice\'s device: 404');
($s, $b) = rpc('bob', 'iot_set_device_certificate', { device_id => 'b1', certificate => $pem });
is($s, '409', 'bob registering alice\'s certificate for his device: 409');
for my $bad ([ 'garbage', 'not PEM' ], [ "-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----", 'not DER' ],
	[ slurp_file("$pki/a1.key"), 'a private key' ])
{
	($s, $b) = rpc('alice', 'iot_set_device_certificate', { device_id => 'a1', certificate => $bad->[0] });
	ok($s eq '400' && $b->{hint} && $b->{message} !~ /PRIVATE|BEGIN/, "certificate $bad->[1]: 400, not echoed") or diag("$s " . explain $b);
}
($s, $b) = rpc('alice', 'iot_set_device_certificate', { device_id => 'a1', certificate => undef });
is_deeply([ $s, $b->{cert_fingerprint} ], [ '200', undef ], 'null removes it');

# ---- commands ----
my @bad_cmd = (
	[ { device_id => 'a1', name => 'bad name' }, 'a name with a space' ],
	[ { device_id => 'a1', name => '' }, 'an empty name' ],
	[ { device_id => 'a1', name => undef }, 'a null name' ],
	[ { device_id => 'a1', name => 'x', timeout_s => 0 }, 'timeout 0' ],
	[ { device_id => 'a1', name => 'x', timeout_s => 2147483647 }, 'timeout huge' ],
	[ { device_id => 'a1', name => 'x', retries => -1 }, 'retries -1' ],
	[ { device_id => 'a1', name => 'x', retries => 101 }, 'retries 101' ],
	[ { device_id => 'a1', name => 'x', ttl_s => -5 }, 'negative ttl' ],
	[ { device_id => 'a1', name => 'x', args => { blob => 'x' x 70000 } }, 'args over 64 kB' ],);
for my $c (@bad_cmd)
{
	($s, $b) = rpc('alice', 'iot_send_command', $c->[0]);
	ok($s eq '400' && ref $b eq 'HASH' && $b->{hint}, "command with $c->[1]: 400 with a hint") or diag("$s " . explain $b);
}
($s, $b) = rpc('alice', 'iot_send_command', { device_id => 'a1', name => 'x', timeout_s => 'soon' });
is($s, '400', 'timeout of the wrong type: 400');
($s, $b) = rpc('alice', 'iot_send_command', { device_id => 'a1', name => 'calibrate', args => { level => 3 }, timeout_s => 5, retries => 2, ttl_s => 60 });
is($s, '200', 'alice sends a1 a command');
my $cid = $b->{id};
is_deeply([ @$b{qw(device_id name state timeout_s retries)}, $b->{args}{level} ], [ 'a1', 'calibrate', 'queued', 5, 2, 3 ],
	'the command as queued');
# the device answers (as the bridge would record it)
sql("UPDATE iot.commands SET state = 'sent', attempts = 1 WHERE id = $cid;
     UPDATE iot.commands SET state = 'succeeded', result = '{\"ok\": true}' WHERE id = $cid");
($s, $b) = call('GET', "/rpc/iot_command?id=$cid", as => 'alice');
is($s, '200', 'command status by GET');
is($b->{state}, 'succeeded', 'succeeded');
is(join(' ', map { ($_->{from_state} // '-') . '>' . $_->{to_state} } @{ $b->{transitions} }),
	'->queued queued>sent sent>succeeded', 'with every transition');
($s, $b) = call('GET', '/iot_commands?select=id,device_id,state&order=id', as => 'alice');
is(join(',', map { "$_->{device_id}:$_->{state}" } @$b), 'a1:succeeded', 'alice lists only her commands');
($s) = call('GET', '/rpc/iot_command?id=abc', as => 'alice');
is($s, '400', 'a command id that is not a number: 400');

# ---- readings and rollups ----
my $t0 = sql("SELECT to_char(date_trunc('hour', now() - interval '3 hours') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')");
sql(qq{SELECT iot.ingest(jsonb_agg(jsonb_build_object('device', d, 'metric', 'temp', 'value', round((random() * 100)::numeric, 1),
                                                       'ts', '$t0'::timestamptz + interval '53 seconds' * g, 'payload', jsonb_build_object('i', g))))
        FROM generate_series(0, 199) g, (VALUES ('a1'), ('b1')) v(d)});
sql("SELECT iot.refresh_rollups()");
my $since = $t0;
my $until = sql("SELECT to_char(('$t0'::timestamptz + interval '3 hours') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')");
($s, $b) = call('GET', "/rpc/iot_readings?device_id=a1&since=$since&until=$until&max_rows=10000", as => 'alice');
is($s, '200', 'alice reads a1\'s readings');
is(scalar @$b, sql("SELECT count(*) FROM iot.telemetry WHERE device_id = 'a1' AND ts >= '$since' AND ts < '$until'"),
	'every reading of the range');
is(join(',', map { $_->{value} } @$b),
	sql("SELECT string_agg(value::text, ',' ORDER BY ts) FROM iot.telemetry WHERE device_id = 'a1' AND ts >= '$since' AND ts < '$until'"),
	'the same values, oldest first');
($s, $b) = call('GET', "/rpc/iot_readings?device_id=a1&since=$since&until=$until&max_rows=5&metric=temp", as => 'alice');
is(scalar @$b, 5, 'max_rows limits');
is($b->[0]{payload}{i}, 0, 'with the payload');
($s, $b) = call('GET', "/rpc/iot_readings?device_id=a1&since=$since&until=$until&metric=nope", as => 'alice');
is_deeply($b, [], 'an unknown metric: no rows');

for my $bucket (qw(minute hour))
{
	($s, $b) = call('GET', "/rpc/iot_rollups?device_id=a1&metric=temp&since=$since&until=$until&bucket=$bucket", as => 'alice');
	is($s, '200', "rollups per $bucket");
	my $direct = sql("SELECT string_agg(date_trunc('$bucket', ts) || '|' || n || '|' || mn || '|' || mx, ',' ORDER BY b)
	                    FROM (SELECT date_trunc('$bucket', ts) AS b, min(ts) AS ts, count(*) AS n, min(value) AS mn, max(value) AS mx
	                            FROM iot.telemetry WHERE device_id = 'a1' AND metric = 'temp' AND ts >= '$since' AND ts < '$until'
	                           GROUP BY 1) x");
	my $got = join ',', map { sql("SELECT '$_->{bucket}'::timestamptz") . "|$_->{n}|$_->{min}|$_->{max}" } @$b;
	is($got, $direct, "per $bucket: equal to a direct aggregate of the raw readings");
}

my @bad_query = (
	[ "/rpc/iot_readings?device_id=a1&since=$until&until=$since", 'since after until' ],
	[ "/rpc/iot_readings?device_id=a1&since=$since&until=$since", 'an empty range' ],
	[ "/rpc/iot_readings?device_id=a1&since=-infinity", 'since -infinity' ],
	[ "/rpc/iot_readings?device_id=a1&since=yesterday-ish", 'since not a time' ],
	[ "/rpc/iot_readings?device_id=a1&since=1990-01-01T00:00:00Z", 'a range over 366 days' ],
	[ "/rpc/iot_readings?device_id=a1&since=$since&max_rows=0", 'max_rows 0' ],
	[ "/rpc/iot_readings?device_id=a1&since=$since&max_rows=10001", 'max_rows 10001' ],
	[ "/rpc/iot_rollups?device_id=a1&metric=temp&since=$since&bucket=day", 'bucket day' ],
	[ "/rpc/iot_rollups?device_id=a1&metric=temp&since=$since&bucket=minute%27%3B", 'bucket with a quote' ],
	[ "/rpc/iot_rollups?device_id=a1&metric=temp&since=2026-01-01T00:00:00Z&bucket=minute", 'over 10000 minute buckets' ],);
for my $c (@bad_query)
{
	($s, $b) = call('GET', $c->[0], as => 'alice');
	ok($s eq '400', "$c->[1]: 400") or diag("$s " . explain $b);
}
($s, $b) = call('GET', "/rpc/iot_readings?since=$since", as => 'alice');
is($s, '404', 'no device: 404 (PostgREST finds no function without the required argument)');
($s, $b) = call('GET', "/rpc/iot_rollups?device_id=a1&since=$since", as => 'alice');
is($s, '404', 'no metric: 404 likewise');

# ---- a seeded random sequence against a model ----
# model: owner and status of every device; commands per owner
my %model = (a0 => [ 'alice', 'active' ], a1 => [ 'alice', 'active' ], ('a' x 64) => [ 'alice', 'active' ],
	b1 => [ 'bob', 'active' ]);
my %cmds = (alice => 1, bob => 2);
my @ids = (qw(a0 a1 b1 r1 r2 r3 r4), 'a' x 64);
my $mismatch = 0;
for my $step (1 .. 80)
{
	my $as = rand() < 0.5 ? 'alice' : 'bob';
	my $dev = $ids[ int(rand(@ids)) ];
	my $op = (qw(provision disable enable send read list))[ int(rand(6)) ];
	my ($want, $got);
	my $m = $model{$dev};
	my $mine = $m && $m->[0] eq $as;
	if ($op eq 'provision')
	{
		($got) = rpc($as, 'iot_provision_device', { device_id => $dev });
		$want = $m ? '409' : '200';
		$model{$dev} = [ $as, 'active' ] unless $m;
	}
	elsif ($op eq 'disable' || $op eq 'enable')
	{
		($got) = rpc($as, 'iot_set_device_enabled', { device_id => $dev, enabled => $op eq 'enable' ? JSON::PP::true : JSON::PP::false });
		$want = $mine ? '200' : '404';
		$m->[1] = $op eq 'enable' ? 'active' : 'disabled' if $mine;
	}
	elsif ($op eq 'send')
	{
		($got) = rpc($as, 'iot_send_command', { device_id => $dev, name => "op$step", ttl_s => 60 });
		$want = !$mine ? '404' : $m->[1] eq 'active' ? '200' : '409';
		$cmds{$as}++ if $want eq '200';
	}
	elsif ($op eq 'read')
	{
		($got) = call('GET', "/rpc/iot_readings?device_id=$dev&since=$since", as => $as);
		$want = $mine ? '200' : '404';
	}
	else
	{
		my ($st, $list) = call('GET', '/iot_devices?select=device_id,status&order=device_id', as => $as);
		$got = join ',', map { "$_->{device_id}:$_->{status}" } @$list;
		$want = join ',', map { "$_:$model{$_}[1]" } sort grep { $model{$_}[0] eq $as } keys %model;
	}
	if ($got ne $want)
	{
		$mismatch++;
		diag("step $step: $as $op $dev: got $got, model says $want");
	}
}
is($mismatch, 0, 'random REST sequence (80 calls by two owners) matches the model');
for my $who (qw(alice bob))
{
	my ($st, $list) = call('GET', '/iot_commands?select=id', as => $who);
	is(scalar @$list, $cmds{$who}, "$who sees exactly her/his $cmds{$who} commands");
}
is(sql("SELECT string_agg(device_id || ':' || owner || ':' || status, ',' ORDER BY device_id) FROM iot.devices"),
	join(',', map { "$_:$model{$_}[0]:$model{$_}[1]" } sort keys %model), 'the registry equals the model');

$pgrst->kill_kill;
$node->stop;
done_testing();
