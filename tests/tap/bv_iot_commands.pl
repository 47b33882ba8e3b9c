# bv_iot commands through the bridge and a real mosquitto: a round trip
# (queued -> sent -> delivered -> succeeded, each transition recorded), a
# failure result, an offline device whose command waits until it is seen,
# expiry, retries ending in timed_out, a restart of the server while a
# command is "sent" (the bridge publishes it again; the device answers it),
# and a device that cannot answer another device's command.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use JSON::PP;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvMqtt;
use BvIot;

my $node = BvTest::new_node('iotcmd', extra_conf => "bv_iot.naptime = 200\n");
BvTest::create_suite_db($node);
my $dir = $node->basedir;

sub sql { return $node->safe_psql('bitvelocity', $_[0]); }
sub poll { return $node->poll_query_until('bitvelocity', $_[0]); }

my $b = BvIot::start_broker($node, $dir);
my %secret;
$secret{$_} = BvIot::provision($node, undef, $_) for qw(c1 c2 c3 c4);
BvIot::reload_auth($node, $b);
BvIot::enable_bridge($node, $b, batch_ms => 20);

# A device's command inbox: mosquitto_sub with its own credentials and a
# persistent session, one payload per line in a file.
my %inbox;
sub listen_commands
{
	my ($dev) = @_;
	my $file = "$dir/commands_$dev.txt";
	my $h = IPC::Run::start(
		[
			'mosquitto_sub', '-h', '127.0.0.1', '-p', $b->{port}, '-u', $dev, '-P', $secret{$dev},
			'-i', "dev-$dev", '-c', '-q', 1, '-t', "devices/$dev/commands", '-F', '%p'
		],
		'>', $file, '2>', "$file.err");
	$inbox{$dev} = { h => $h, file => $file };
	return;
}

sub received
{
	my ($dev) = @_;
	open my $fh, '<', $inbox{$dev}{file} or return ();
	return map { decode_json($_) } grep { /\S/ } <$fh>;
}

sub wait_received
{
	my ($dev, $n) = @_;
	return BvMqtt::wait_until(sub { scalar(received($dev)) >= $n });
}

sub say_as
{
	my ($dev, $kind, $payload) = @_;
	my ($rc) = BvIot::publish($b, $dev, $secret{$dev}, "devices/$dev/$kind", $payload);
	return $rc;
}

sub transitions
{
	my ($id) = @_;
	return sql("SELECT string_agg(coalesce(from_state, '-') || '>' || to_state, ' ' ORDER BY at) "
		  . "FROM iot.command_transitions WHERE command_id = $id");
}

listen_commands('c1');
# The subscription is live once a probe command to an online device arrives.
is(say_as('c1', 'telemetry', '{"metric":"up","value":1}'), 0, 'c1 says hello (online)');
ok(poll("SELECT online FROM iot.device_status WHERE device_id = 'c1'"), 'c1 is online');

# ---- 1. round trip ----
my $id = sql("SELECT iot.send_command('c1', 'reboot', '{\"delay\": 5}')");
ok(wait_received('c1', 1), 'c1 received a command');
my ($cmd) = received('c1');
is_deeply([ $cmd->{id}, $cmd->{name}, $cmd->{args}{delay}, $cmd->{attempt} ], [ $id, 'reboot', 5, 1 ],
	'the command carries id, name, args and attempt');
ok(poll("SELECT state = 'sent' FROM iot.commands WHERE id = $id"), 'sent');
is(say_as('c1', 'ack', qq({"id":$id})), 0, 'c1 acknowledges');
ok(poll("SELECT state = 'delivered' FROM iot.commands WHERE id = $id"), 'delivered');
is(say_as('c1', 'result', qq({"id":$id,"status":"succeeded","result":{"uptime":0}})), 0, 'c1 reports');
ok(poll("SELECT state = 'succeeded' FROM iot.commands WHERE id = $id"), 'succeeded');
is(sql("SELECT result->>'uptime' FROM iot.commands WHERE id = $id"), '0', 'the result is kept');
is(transitions($id), '->queued queued>sent sent>delivered delivered>succeeded', 'every transition recorded');

# A failure result, without an ack first.
my $id2 = sql("SELECT iot.send_command('c1', 'selftest')");
ok(wait_received('c1', 2), 'second command received');
is(say_as('c1', 'result', qq({"id":$id2,"status":"failed","result":{"error":"sensor"}})), 0, 'c1 reports a failure');
ok(poll("SELECT state = 'failed' FROM iot.commands WHERE id = $id2"), 'failed');

# Hostile reports: another device's command, unknown ids, bad JSON; none
# changes anything, the bad ones are quarantined.
my $id3 = sql("SELECT iot.send_command('c1', 'wait')");
ok(wait_received('c1', 3), 'third command received');
is(say_as('c4', 'result', qq({"id":$id3,"status":"succeeded"})), 0, 'c4 claims c1\'s command');
is(say_as('c1', 'result', '{"id":99999999,"status":"succeeded"}'), 0, 'unknown id');
is(say_as('c1', 'result', qq({"id":$id3,"status":"exploded"})), 0, 'unknown status');
is(say_as('c1', 'ack', 'not json'), 0, 'bad JSON');
is(say_as('c1', 'ack', '{"id":"1e999"}'), 0, 'id of the wrong type');
ok(poll("SELECT count(*) = 3 FROM iot.quarantine WHERE reason = 'bad_report'"), 'bad reports quarantined');
is(sql("SELECT state FROM iot.commands WHERE id = $id3"), 'sent', 'nobody else finished c1\'s command');

# ---- 2. an offline device: the command waits, then goes ----
my $off = sql("SELECT iot.send_command('c2', 'calibrate', ttl => '1 hour')");
# A later command to an online device: once it is out, the bridge has
# looked at the earlier one too (it publishes in id order).
my $id4 = sql("SELECT iot.send_command('c1', 'tick')");
ok(wait_received('c1', 4), 'a later command to an online device went out');
is(sql("SELECT state FROM iot.commands WHERE id = $off"), 'queued', 'the offline device\'s command waits');
listen_commands('c2');
is(say_as('c2', 'telemetry', '{"metric":"up","value":1}'), 0, 'c2 comes online');
ok(poll("SELECT state = 'sent' FROM iot.commands WHERE id = $off"), 'then it is sent');
ok(wait_received('c2', 1), 'and c2 receives it');

# ---- 3. expiry ----
my $exp = sql("SELECT iot.send_command('c3', 'never', ttl => '1 second')");
ok(poll("SELECT state = 'expired' FROM iot.commands WHERE id = $exp"), 'never sent before its ttl: expired');
is(transitions($exp), '->queued queued>expired', 'expiry recorded');

# ---- 4. retries, then timed_out ----
my $rt = sql("SELECT iot.send_command('c1', 'flaky', timeout => '1 second', retries => 1)");
ok(poll("SELECT state = 'timed_out' FROM iot.commands WHERE id = $rt"), 'unanswered after its retry: timed_out');
is(sql("SELECT attempts FROM iot.commands WHERE id = $rt"), 2, 'two attempts');
is(scalar(grep { $_->{id} == $rt } received('c1')), 2, 'the device received it twice');
is(transitions($rt), '->queued queued>sent sent>queued queued>sent sent>timed_out', 'retry recorded');

# ---- 5. a restart of the server while a command is sent ----
my $rs = sql("SELECT iot.send_command('c1', 'survive', timeout => '1 hour')");
ok(poll("SELECT state = 'sent' FROM iot.commands WHERE id = $rs"), 'sent before the restart');
my $before = scalar(grep { $_->{id} == $rs } received('c1'));
$node->restart;
ok(BvMqtt::wait_until(sub { scalar(grep { $_->{id} == $rs } received('c1')) > $before }),
	'after the restart the bridge publishes the unanswered command again');
is(say_as('c1', 'result', qq({"id":$rs,"status":"succeeded"})), 0, 'c1 answers');
ok(poll("SELECT state = 'succeeded' FROM iot.commands WHERE id = $rs"), 'the command completes across the restart');

# ---- 6. argument checks ----
my ($rc, $out, $err) = $node->psql('bitvelocity', "SELECT iot.send_command('nope', 'x')");
like($err, qr/device 'nope' does not exist/, 'unknown device refused');
($rc, $out, $err) = $node->psql('bitvelocity', "SELECT iot.send_command('c1', 'bad name')");
like($err, qr/invalid command/, 'bad command name refused');
($rc, $out, $err) = $node->psql('bitvelocity', "SELECT iot.send_command('c1', 'x', timeout => '0')");
like($err, qr/invalid command timing/, 'zero timeout refused');

$_->{h}->kill_kill for values %inbox;
BvMqtt::stop_broker($b);
$node->stop;
done_testing();
