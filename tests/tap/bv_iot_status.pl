# bv_iot online/offline status by MQTT last will, with the bridge and a real
# mosquitto enforcing device identity:
#  - a device connects with a will ("offline" on devices/<id>/status) and
#    says "online": online; killed with SIGKILL (no DISCONNECT) the broker
#    publishes its will and the device goes offline at once, long before the
#    offline_after timeout;
#  - a command sent while it is offline waits (a later command to an online
#    device goes out first), and is delivered when it reconnects;
#  - a device cannot set another device's status (the broker's ACL);
#    malformed status messages are quarantined (bad_status); JSON
#    {"status": ...} is accepted;
#  - a retained will is not applied again when the bridge resubscribes
#    (the broker resends retained messages on every SUBSCRIBE);
#  - the timeout still applies to devices without a will.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvMqtt;
use BvIot;

my $node = BvTest::new_node('iotstatus', extra_conf => "bv_iot.naptime = 200\n");
BvTest::create_suite_db($node);
my $dir = $node->basedir;

sub sql { return $node->safe_psql('bitvelocity', $_[0]); }
sub poll { return $node->poll_query_until('bitvelocity', $_[0]); }

my $b = BvIot::start_broker($node, $dir);
my %secret;
$secret{$_} = BvIot::provision($node, undef, $_) for qw(s1 s2 s3);
BvIot::reload_auth($node, $b);
is(sql("SELECT count(*) FROM iot.mosquitto_acl() a WHERE a = 'pattern write devices/%u/status'"), 1,
	'the ACL lets a device write its own status topic');
BvIot::enable_bridge($node, $b, batch_ms => 20);

# A device's connection: mosquitto_sub on its command topic with a
# persistent session and a last will; one command per line in a file.
my %dev;
sub connect_device
{
	my ($id, %o) = @_;
	my $file = "$dir/commands_$id.txt";
	my @cmd = (
		'mosquitto_sub', '-h', '127.0.0.1', '-p', $b->{port}, '-u', $id, '-P', $secret{$id},
		'-i', "dev-$id", '-c', '-q', 1, '-k', 5, '-t', "devices/$id/commands", '-F', '%p',
		'--will-topic', "devices/$id/status", '--will-payload', 'offline', '--will-qos', 1);
	push @cmd, '--will-retain' if $o{retain};
	my $pos = BvMqtt::log_position($b);
	my $pid = fork() // die "fork: $!";
	if ($pid == 0)
	{
		open STDIN, '<', '/dev/null';
		open STDOUT, '>>', $file or die "$file: $!";
		open STDERR, '>>', "$file.err" or die "$file.err: $!";
		exec(@cmd) or die "exec mosquitto_sub: $!";
	}
	$dev{$id} = { pid => $pid, file => $file };
	# Connected (and its will set) once the broker logs the subscription.
	ok(BvMqtt::wait_until(sub { BvMqtt::log_since($b, $pos) =~ /dev-\Q$id\E \d devices\/\Q$id\E\/commands/ }),
		"$id connected" . ($o{retain} ? ' (retained will)' : ''));
	return;
}

sub kill_device
{
	my ($id) = @_;
	kill 'KILL', $dev{$id}{pid};
	waitpid($dev{$id}{pid}, 0);
	return;
}

sub received
{
	my ($id) = @_;
	open my $fh, '<', $dev{$id}{file} or return ();
	return map { decode_json($_) } grep { /\S/ } <$fh>;
}

sub say_as
{
	my ($id, $kind, $payload, $as) = @_;
	$as //= $id;
	my ($rc) = BvIot::publish($b, $as, $secret{$as}, "devices/$id/$kind", $payload);
	return $rc;
}

sub online { return sql("SELECT online FROM iot.device_status WHERE device_id = '$_[0]'"); }

# A marker that the bridge has processed everything published before it:
# a malformed status of s3's, quarantined in order.
my $probes = 0;
sub probe
{
	$probes++;
	say_as('s3', 'status', "probe-$probes");
	return poll("SELECT count(*) = $probes FROM iot.quarantine WHERE reason = 'bad_status' AND device_id = 's3' AND payload_prefix LIKE 'probe-%'");
}

# ---- 1. online, then killed without DISCONNECT: offline by its will ----
connect_device('s1');
connect_device('s2');
is(say_as('s1', 'status', 'online'), 0, 's1 says online');
is(say_as('s2', 'status', '"online"'), 0, 's2 says "online" (a JSON string)');
ok(poll("SELECT bool_and(online) FROM iot.device_status WHERE device_id IN ('s1', 's2')"), 'both are online');
is(sql("SELECT offline_after FROM iot.bridge_config"), '00:05:00', 'the timeout is five minutes');

kill_device('s1');
ok(poll("SELECT NOT online FROM iot.device_status WHERE device_id = 's1'"), 's1 killed with SIGKILL: offline');
is(sql("SELECT last_seen > now() - interval '5 minutes' AND offline_at IS NOT NULL FROM iot.device_status WHERE device_id = 's1'"),
	't', 'by its last will, not by the timeout (seen within offline_after)');
is(online('s2'), 't', 's2 is still online');

# ---- 2. a command to the offline device waits; delivered on reconnect ----
my $wait = sql("SELECT iot.send_command('s1', 'calibrate', ttl => '1 hour')");
my $later = sql("SELECT iot.send_command('s2', 'tick')");
ok(BvMqtt::wait_until(sub { grep { $_->{id} == $later } received('s2') }), 'a later command to online s2 went out');
is(sql("SELECT state FROM iot.commands WHERE id = $wait"), 'queued', 'the command to offline s1 waits');
connect_device('s1');
is(say_as('s1', 'status', 'online'), 0, 's1 reconnects and says online');
ok(poll("SELECT state = 'sent' FROM iot.commands WHERE id = $wait"), 'then the command is sent');
ok(BvMqtt::wait_until(sub { grep { $_->{id} == $wait } received('s1') }), 'and s1 receives it');
is(sql("SELECT string_agg(coalesce(from_state, '-') || '>' || to_state, ' ' ORDER BY at) FROM iot.command_transitions WHERE command_id = $wait"),
	'->queued queued>sent', 'queued while offline, sent on reconnect');

# ---- 3. hostile status messages ----
is(say_as('s1', 'status', 'offline', 's2'), 0, 's2 publishes "offline" on s1\'s status topic (the broker drops it)');
is(say_as('s2', 'status', 'maybe'), 0, 's2: an unknown status');
is(say_as('s2', 'status', '{"status": 1}'), 0, 's2: JSON with a non-string status');
is(say_as('s2', 'status', ''), 0, 's2: empty');
is(say_as('s2', 'status', 'x' x 100), 0, 's2: oversized');
ok(probe(), 'the bridge processed them');
is(online('s1'), 't', 's1 is still online: nobody else can take it offline');
is(sql("SELECT count(*) FROM iot.quarantine WHERE reason = 'bad_status' AND device_id = 's2'"), 4,
	'four malformed status messages quarantined');
is(online('s2'), 't', 's2 is still online');
is(say_as('s2', 'status', '{"status": "offline"}'), 0, 's2: {"status": "offline"}');
ok(poll("SELECT NOT online FROM iot.device_status WHERE device_id = 's2'"), 'accepted: s2 offline');
is(say_as('s2', 'telemetry', '{"metric":"t","value":1}'), 0, 's2 sends a reading');
ok(poll("SELECT online FROM iot.device_status WHERE device_id = 's2'"), 'anything it sends says it is back');

# ---- 4. a retained will is not applied again on resubscribe ----
kill_device('s1');
connect_device('s1', retain => 1);
is(say_as('s1', 'status', 'online'), 0, 's1 reconnects with a retained will');
ok(poll("SELECT online FROM iot.device_status WHERE device_id = 's1'"), 'online');
kill_device('s1');
ok(poll("SELECT NOT online FROM iot.device_status WHERE device_id = 's1'"), 'killed: offline (the will is now retained at the broker)');
connect_device('s1');
is(say_as('s1', 'status', 'online'), 0, 's1 back (the retained "offline" stays at the broker)');
ok(poll("SELECT online FROM iot.device_status WHERE device_id = 's1'"), 'online');
my $pos = BvMqtt::log_position($b);
sql("UPDATE iot.bridge_config SET keepalive_s = keepalive_s + 1");   # a new connection, a new SUBSCRIBE
ok(BvMqtt::wait_until(sub { BvMqtt::log_since($b, $pos) =~ /bv_iot_bridge\S* \d devices\/\+\/status/ }),
	'the bridge reconnected and subscribed again');
ok(probe(), 'and processed what the broker sent on SUBSCRIBE');
is(online('s1'), 't', 'the retained "offline" was not applied again');

# ---- 5. the timeout still applies ----
sql("UPDATE iot.bridge_config SET offline_after = '1 second'");
ok(poll("SELECT NOT online FROM iot.device_status WHERE device_id = 's1'"), 'silent for offline_after: offline');
sql("UPDATE iot.bridge_config SET offline_after = '5 minutes'");

kill_device($_) for keys %dev;
BvMqtt::stop_broker($b);
$node->stop;
done_testing();
