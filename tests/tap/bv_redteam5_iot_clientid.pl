# Red-team round 5, bv_iot: a device could disconnect the MQTT bridge.
# Client ids are one namespace per broker and a broker closes a client's
# connection when another connects with its id.  The bridge's id was the
# fixed, documented 'bv_iot_bridge': a device logged in with its own
# credentials and client id bv_iot_bridge made the broker close the
# bridge's connection, and the readings published meanwhile never reached
# it.  Now the bridge's id is 'bv_iot_bridge-' and 32 random hex digits,
# readable by superusers only; a device id equal to the bridge's broker user
# is refused and never written to the password file.  Checked against a
# real mosquitto set up as make run's (tests/tools/BvIot.pm, managed).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvMqtt;
use BvIot;

my $node = BvTest::new_node('rt5iotcid', extra_conf => "bv_iot.naptime = 200\n");
BvTest::create_suite_db($node);
my $dir = $node->basedir;
sub sql { return $node->safe_psql('bitvelocity', $_[0]); }

my $cid = sql('SELECT client_id FROM iot.bridge_config');
like($cid, qr/^bv_iot_bridge-[0-9a-f]{32}$/, 'a fresh install gives the bridge an unguessable client id');
for my $r (qw(bv_user bv_service bv_admin))
{
	is(sql("SELECT has_column_privilege('$r', 'iot.bridge_config', 'client_id', 'SELECT')"), 'f',
		"$r cannot read the bridge's client id");
}

my $b = BvIot::start_broker($node, $dir, managed => 1);
my $s1 = BvIot::provision($node, $b, 'rt5-d1', 'mallory');
my $s2 = BvIot::provision($node, $b, 'rt5-d2', 'alice');
BvIot::enable_bridge($node, $b, batch_ms => 20);
$node->poll_query_until('bitvelocity', "SELECT state = 'running' FROM iot.bridge_stats") or die;
# The bridge is subscribed once the broker logged its last subscription.
BvMqtt::wait_until(sub { BvMqtt::log_since($b, 0) =~ /\Q$cid\E \d devices\/\+\/status/ }, 60) or die 'bridge not subscribed';
my $reconnects = sql('SELECT reconnects FROM iot.bridge_stats');

# Connect as device rt5-d1 with client id $id, hold the connection for a
# moment (a subscription to its own commands topic), return the broker's
# log lines written meanwhile.
sub connect_as_d1
{
	my ($id) = @_;
	my $pos = BvMqtt::log_position($b);
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'mosquitto_sub', '-h', '127.0.0.1', '-p', $b->{port}, '-u', 'rt5-d1', '-P', $s1, '-i', $id,
			'-c', '-q', '1', '-t', 'devices/rt5-d1/commands', '-W', '2' ], '>', \$out, '2>', \$err,
		IPC::Run::timeout(30));
	return BvMqtt::log_since($b, $pos);
}

my $log = connect_as_d1('bv_iot_bridge');
like($log, qr/as bv_iot_bridge .*u'rt5-d1'/, 'the device connected with client id bv_iot_bridge');
unlike($log, qr/Client \Q$cid\E already connected, closing old connection/,
	'the well-known id no longer disconnects the bridge');
is(sql('SELECT reconnects FROM iot.bridge_stats'), $reconnects, 'the bridge did not reconnect');

# Control: the id is what matters.  A device that knew it would still
# disconnect the bridge, which reconnects and loses nothing it acknowledged.
$log = connect_as_d1($cid);
like($log, qr/Client \Q$cid\E already connected, closing old connection/,
	'control: with the bridge\'s real id the broker would close its connection (the test sees it)');
$node->poll_query_until('bitvelocity', "SELECT reconnects > $reconnects AND state = 'running' FROM iot.bridge_stats")
  or die 'the bridge did not come back';
BvMqtt::wait_until(sub { BvMqtt::log_since($b, 0) =~ /New client connected .* as \Q$cid\E .*u'bv_iot_bridge'/ }, 60);

# Readings of another tenant still land.
my $ts = sql("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')");
my ($rc, $err) = BvIot::publish($b, 'rt5-d2', $s2, 'devices/rt5-d2/telemetry', qq({"metric":"t","value":1,"ts":"$ts"}));
is($rc, 0, 'rt5-d2 publishes') or diag($err);
ok($node->poll_query_until('bitvelocity', "SELECT count(*) = 1 FROM iot.telemetry WHERE device_id = 'rt5-d2'"),
	'its reading lands');

# A device may not take the bridge's broker user name.
for my $id ('bv_iot_bridge', 'BV_IOT_BRIDGE')
{
	my ($r, $o, $e) = $node->psql('bitvelocity', "SELECT bv.set_actor('mallory'); SELECT iot.provision_device('$id')",
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	like($e, qr/22023: device id '\Q$id\E' is reserved/, "device id $id: 22023");
}
unlike(sql(q{SELECT string_agg(l, E'\n') FROM iot.mosquitto_passwd('bv_iot_bridge', 'x') l WHERE l LIKE 'bv_iot_bridge:%'}),
	qr/\n/, 'one password line for the bridge user');

$node->stop;
done_testing();
