# bv_iot in the stack `make run` starts (tools/cluster.sh and its peers):
# the simulated fleet connects with a last will and says "online"; the demo
# token PostgREST prints lists sim-1..3 over REST, sends a command that the
# simulator answers, and reads the readings; a simulator whose connection
# is killed with SIGKILL is marked offline by its will.
use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;
use BvStack;
use lib "$ENV{BV_SRC}/tests/tools";
use BvMqtt;

my $mqtt_port = PostgreSQL::Test::Cluster::get_free_port();
my $mqtts_port = PostgreSQL::Test::Cluster::get_free_port();
# bv_cdc's demo broker too: another stack on this machine may hold its default.
my $stack = BvStack->new(BV_IOT_MQTT_PORT => $mqtt_port, BV_IOT_MQTTS_PORT => $mqtts_port,
	BV_MQTT_PORT => PostgreSQL::Test::Cluster::get_free_port());
my ($home, $port, $rest_port) = ($stack->home, $stack->port, $stack->rest_port);
my $url = $stack->url;
sub cluster { return $stack->cluster(@_); }
sub query   { return $stack->query(@_); }

my ($rc, $out, $err) = cluster('start');
is($rc, 0, 'start: succeeds') or diag($err);
like($out, qr/^iot: started on 127\.0\.0\.1:$mqtt_port \(TLS with client certificates: $mqtts_port\) with simulated devices sim-1 sim-2 sim-3$/m,
	'start: the fleet runs, and a TLS listener');
like($out, qr{iot:   over REST .*/iot_devices}, 'status: says how to use the REST API');
# the token PostgREST prints (other peers print tokens of their own keys)
my ($token) = $out =~ /PostgREST 12: running.*?TOKEN=(\S+)/s;
ok($token, 'PostgREST prints a demo token');

sub call
{
	my ($method, $path, $body) = @_;
	my ($status, $resp) = BvTest::http($method, "$url$path", token => $token, body => $body);
	return ($status, eval { decode_json($resp) } // $resp);
}

ok(BvMqtt::wait_until(sub { query("SELECT count(*) FROM iot.device_status WHERE online AND device_id LIKE 'sim-%'") == 3 }),
	'the three simulated devices come online');
my ($s, $b) = call('GET', '/iot_devices?select=device_id,online&order=device_id');
is($s, '200', 'GET /iot_devices with the demo token') or diag(ref $b ? encode_json($b) : $b);
is(join(',', map { "$_->{device_id}:" . ($_->{online} ? 'online' : 'offline') } @$b), 'sim-1:online,sim-2:online,sim-3:online',
	'lists the demo fleet, online');

($s, $b) = call('POST', '/rpc/iot_send_command', '{"device_id":"sim-1","name":"reboot","args":{"delay":1}}');
is($s, '200', 'a command over REST');
my $id = $b->{id};
ok(BvMqtt::wait_until(sub { (call('GET', "/rpc/iot_command?id=$id"))[1]{state} eq 'succeeded' }),
	'the simulator answers it: succeeded');

ok(BvMqtt::wait_until(sub { query("SELECT count(*) FROM iot.telemetry WHERE device_id = 'sim-2'") > 0 }), 'readings arrive');
my $since = query("SELECT to_char((now() - interval '1 hour') AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')");
$since =~ s/ /T/;
$since .= 'Z';
($s, $b) = call('GET', "/rpc/iot_readings?device_id=sim-2&since=$since&metric=temp");
ok($s eq '200' && ref $b eq 'ARRAY' && @$b > 0, 'GET /rpc/iot_readings returns them') or diag("$s $since " . explain $b);

# sim-1 over TLS with the certificate make run issued it, no password.
my $pki = "$home/iot/pki";
my $fp = BvTest::openssl('x509', '-in', "$pki/devices/sim-1.crt", '-noout', '-fingerprint', '-sha256');
$fp =~ s/.*=//s;
$fp =~ s/[:\s]//g;
is(query("SELECT fingerprint FROM iot.device_certificates WHERE device_id = 'sim-1'"), lc $fp, 'sim-1\'s certificate is recorded');
my ($line) = $out =~ /^iot:\s+(mosquitto_pub -h 127\.0\.0\.1 -p $mqtts_port .*)$/m;
ok($line, 'status: prints how to publish with the certificate');
$line =~ s/-m '.*'$/-m '{"metric":"tls","value":42}'/ if $line;
is(system('bash', '-c', $line), 0, 'the printed command (another payload) runs') if $line;
ok(BvMqtt::wait_until(sub { query("SELECT count(*) FROM iot.telemetry WHERE device_id = 'sim-1' AND metric = 'tls'") == 1 }, 30),
	'and publishes as sim-1 over TLS');

# A device provisioned over REST while the stack runs reaches the broker
# (the bridge rewrites its password file); disabled over REST, it is refused.
($s, $b) = call('POST', '/rpc/iot_provision_device', '{"device_id":"late-1"}');
is($s, '200', 'a device provisioned over REST at run time') or diag(ref $b ? encode_json($b) : $b);
my $late = ref $b ? $b->{secret} // '' : '';
sub late_pub
{
	my ($v) = @_;
	my ($o, $e);
	IPC::Run::run([ 'mosquitto_pub', '-h', '127.0.0.1', '-p', $mqtt_port, '-u', 'late-1', '-P', $late, '-q', 1,
		'-t', 'devices/late-1/telemetry', '-m', qq({"metric":"late","value":$v}) ], '>', \$o, '2>', \$e);
	return $? >> 8;
}
ok(BvMqtt::wait_until(sub { late_pub(1) == 0 }, 30), 'connects to the running broker with the secret it got');
ok(BvMqtt::wait_until(sub { query("SELECT count(*) FROM iot.telemetry WHERE device_id = 'late-1'") > 0 }, 30), 'its reading lands');
($s) = call('POST', '/rpc/iot_set_device_enabled', '{"device_id":"late-1","enabled":false}');
is($s, '200', 'disabled over REST');
ok(BvMqtt::wait_until(sub { late_pub(2) != 0 }, 30), 'the broker refuses it from then on');
is(query("SELECT error IS NULL AND in_sync FROM iot.broker_auth"), 't', 'iot.broker_auth: in sync, no error');

# Kill sim-3's command connection (the one with the will) without DISCONNECT.
my @sims = split /\n/, PostgreSQL::Test::Utils::slurp_file("$home/iot/simulators.pids");
my ($victim) = grep { `ps -o args= -p $_` =~ /mosquitto_sub .*-u sim-3 / } map { split /\s+/, `ps -o pid= --ppid $_` } @sims;
ok($victim, 'found sim-3\'s connection');
my $before = query('SELECT clock_timestamp()');
kill 'KILL', $victim if $victim;
# Its reading loop goes on publishing (which brings it back online within
# 2 s), so what is checked is that the will arrived: offline_at moved.
ok(BvMqtt::wait_until(sub { query("SELECT offline_at > '$before' FROM iot.device_status WHERE device_id = 'sim-3'") eq 't' }),
	'sim-3 killed: its last will marked it offline');

cluster('stop');
done_testing();
