# bv_iot: registry changes reach the broker at run time, without a restart.
# The bridge rewrites the broker's password and ACL files
# (iot.bridge_config.auth_dir) and signals it (broker_pid_file) after every
# commit that provisions, disables, enables, deletes a device or rotates its
# secret.  End to end with a real mosquitto: a device provisioned after the
# broker started connects and its readings land; once disabled, its open
# connection is cut and it cannot connect again (waited for, bounded by the
# test timeout), and nothing it sent after the disable committed lands (the
# bridge refuses it too); a rotated secret cuts the old one off; a deleted
# device is refused.  Then a seeded random sequence of registry changes is
# checked against a model (the broker's password file and who can connect),
# and hostile ids and settings are refused.
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

my $seed = $ENV{BV_SEED} // time();
srand($seed);
diag("seed $seed (rerun with BV_SEED=$seed)");

my $node = BvTest::new_node('iotauth', extra_conf => "bv_iot.naptime = 200\n");
BvTest::create_suite_db($node);
my $dir = $node->basedir;
sub sql { return $node->safe_psql('bitvelocity', $_[0]); }
sub poll { return $node->poll_query_until('bitvelocity', $_[0]); }

my $b = BvIot::start_broker($node, $dir, managed => 1);
BvIot::enable_bridge($node, $b, batch_ms => 20);
BvIot::wait_auth_applied($node, $b, 0);
is(sql('SELECT error IS NULL FROM iot.broker_auth'), 't', 'the bridge writes the broker\'s files without error');

sub ts_now { return sql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"); }

# One publish as $id (QoS 1): the exit code (0: connected and acknowledged).
sub pub_once
{
	my ($id, $secret, $payload) = @_;
	my ($o, $e) = ('', '');
	IPC::Run::run([ 'mosquitto_pub', '-h', '127.0.0.1', '-p', $b->{port}, '-i', "$id-once", '-u', $id, '-P', $secret,
		'-q', 1, '-t', "devices/$id/telemetry", '-m', $payload ], '>', \$o, '2>', \$e, IPC::Run::timeout(60));
	return $? >> 8;
}

# A long-lived device connection: mosquitto_pub -l publishes each line we
# feed it.  When the broker drops it, it keeps trying to reconnect: the
# broker's log says whether it was cut and then refused.
sub device_start
{
	my ($id, $secret) = @_;
	my $d = { id => $id, in => '', out => '', err => '' };
	my $pos = BvMqtt::log_position($b);
	$d->{h} = IPC::Run::start([ 'mosquitto_pub', '-h', '127.0.0.1', '-p', $b->{port}, '-i', "$id-live", '-u', $id,
		'-P', $secret, '-q', 1, '-t', "devices/$id/telemetry", '-l' ], '<', \$d->{in}, '>', \$d->{out}, '2>', \$d->{err});
	BvMqtt::wait_until(sub { BvMqtt::log_since($b, $pos) =~ /as \Q$id\E-live .*u'\Q$id\E'/ }, 30)
	  or die "device $id did not connect: $d->{err}";
	return $d;
}
sub device_send { my ($d, $line) = @_; $d->{in} .= "$line\n"; $d->{h}->pump_nb; return; }
sub device_gone
{
	my ($d, $pos) = @_;
	my $id = $d->{id};
	my $ok = BvMqtt::wait_until(
		sub {
			BvMqtt::log_since($b, $pos) =~ /Client \Q$id\E-live disconnected\.\n(?:.*\n)*?.*Client <unknown> disconnected, not authorised/;
		},
		60);
	$d->{h}->kill_kill;
	return $ok;
}

# ---- provisioned at run time: connects and lands ----
my $pos = BvMqtt::log_position($b);
my $s1 = BvIot::provision($node, $b, 'd1', 'alice');
is(sql("SELECT in_sync FROM iot.broker_auth"), 't', 'the broker\'s files follow the registry');
like(slurp_file("$b->{dir}/passwd"), qr/^d1:\$7\$/m, 'd1 is in the password file the bridge wrote');
my $d1 = device_start('d1', $s1);
ok(1, 'd1, provisioned after the broker started, connects');
device_send($d1, '{"metric":"live","value":1}');
ok(poll("SELECT count(*) = 1 FROM iot.telemetry WHERE device_id = 'd1' AND metric = 'live'"), 'and its reading lands');

# ---- disabled: disconnected, refused, and nothing after the disable lands ----
device_send($d1, '{"metric":"live","value":2}');
ok(poll("SELECT count(*) = 2 FROM iot.telemetry WHERE device_id = 'd1' AND metric = 'live'"), 'a second reading lands');
$pos = BvMqtt::log_position($b);
my ($rc, $out, $err) = $node->psql('bitvelocity', "BEGIN; SELECT set_config('request.jwt.claims', '{\"sub\": \"alice\"}', true); "
	  . "SET LOCAL ROLE bv_user; SELECT api.iot_set_device_enabled('d1', false); COMMIT;");
is($rc, 0, 'alice disables d1 (as over REST)') or diag($err);
my $disabled_at = ts_now();
# While the broker has not reloaded yet, d1 keeps sending: whatever arrives
# now must not land.
device_send($d1, qq({"metric":"after","value":$_})) for 1 .. 3;
ok(device_gone($d1, $pos), 'd1\'s open connection is cut, and its reconnection refused');
like(BvMqtt::log_since($b, $pos), qr/Reloading config/, 'the broker reloaded its files');
is(pub_once('d1', $s1, '{"metric":"again","value":1}') != 0 ? 1 : 0, 1, 'd1 cannot connect again');
# The bridge refuses its readings too: the bridge's own user may write any
# device topic; what it writes for d1 is quarantined.
my ($prc) = BvIot::publish($b, $BvIot::BRIDGE_USER, $BvIot::BRIDGE_PASSWORD, 'devices/d1/telemetry', '{"metric":"via_bridge","value":1}');
is($prc, 0, 'a reading on d1\'s topic reaches the bridge another way');
ok(poll("SELECT count(*) = 1 FROM iot.quarantine WHERE device_id = 'd1' AND reason = 'disabled_device' AND payload_prefix LIKE '%via_bridge%'"),
	'the bridge quarantines it: disabled_device');
is(sql("SELECT count(*) FROM iot.telemetry WHERE device_id = 'd1' AND (received_at > '$disabled_at' OR metric IN ('after', 'again', 'via_bridge'))"),
	0, 'nothing d1 sent after the disable committed landed');

# ---- enabled again; secret rotation cuts the old secret off ----
$pos = BvMqtt::log_position($b);
sql("UPDATE iot.devices SET status = 'active' WHERE device_id = 'd1'");
BvIot::wait_auth_applied($node, $b, $pos);
is(pub_once('d1', $s1, '{"metric":"back","value":1}'), 0, 'enabled again: d1 connects with its secret');
$d1 = device_start('d1', $s1);
$pos = BvMqtt::log_position($b);
my $s1b = sql("SELECT iot.rotate_device_secret('d1')");
ok(device_gone($d1, $pos), 'after a rotation the connection with the old secret is cut and refused');
BvIot::wait_auth_applied($node, $b, $pos);
isnt(pub_once('d1', $s1, '{"metric":"old","value":1}'), 0, 'the old secret is refused');
is(pub_once('d1', $s1b, '{"metric":"new","value":1}'), 0, 'the new secret works');

# ---- deleted ----
my $s2 = BvIot::provision($node, $b, 'd2', 'alice');
my $d2 = device_start('d2', $s2);
$pos = BvMqtt::log_position($b);
sql("DELETE FROM iot.devices WHERE device_id = 'd2'");
ok(device_gone($d2, $pos), 'a deleted device is disconnected and refused');
BvIot::wait_auth_applied($node, $b, $pos);
isnt(pub_once('d2', $s2, '{"metric":"x","value":1}'), 0, 'and refused');
unlike(slurp_file("$b->{dir}/passwd"), qr/^d2:/m, 'and gone from the password file');

# ---- a seeded random sequence against a model ----
# Model: device -> {secret, active}.  After each change is applied, the
# password file lists exactly the active devices (and the bridge), and a
# probed device connects iff it is active, with its current secret only.
my %model = (d1 => { secret => $s1b, active => 1 });
my @pool = map { "r$_" } 1 .. 6;
my $steps = 24;
my $mismatch = 0;
for my $step (1 .. $steps)
{
	my $id = $pool[ int(rand(@pool)) ];
	my $m = $model{$id};
	my @ops = $m ? ('disable', 'enable', 'rotate', 'delete') : ('provision');
	my $op = $ops[ int(rand(@ops)) ];
	my $old = $m ? $m->{secret} : undef;
	$pos = BvMqtt::log_position($b);
	if ($op eq 'provision')
	{
		my $s = sql("BEGIN; SELECT bv.set_actor('bob'); SELECT secret FROM iot.provision_device('$id'); COMMIT;");
		$s =~ s/.*\n//s;
		$model{$id} = { secret => $s, active => 1 };
	}
	elsif ($op eq 'disable') { sql("UPDATE iot.devices SET status = 'disabled' WHERE device_id = '$id'"); $m->{active} = 0; }
	elsif ($op eq 'enable') { sql("UPDATE iot.devices SET status = 'active' WHERE device_id = '$id'"); $m->{active} = 1; }
	elsif ($op eq 'rotate') { $m->{secret} = sql("SELECT iot.rotate_device_secret('$id')"); }
	else { sql("DELETE FROM iot.devices WHERE device_id = '$id'"); delete $model{$id}; }
	BvIot::wait_auth_applied($node, $b, $pos);
	my @want = sort(grep { $model{$_}{active} } keys %model);
	my @have = sort(grep { $_ ne $BvIot::BRIDGE_USER } map { (split /:/)[0] } grep { length } split /\n/, slurp_file("$b->{dir}/passwd"));
	if ("@want" ne "@have")
	{
		$mismatch++;
		diag("step $step ($op $id): password file has [@have], model [@want]");
	}
	my $can = pub_once($id, $model{$id} ? $model{$id}{secret} : 'nothing', '{"metric":"probe","value":1}') == 0 ? 1 : 0;
	my $should = $model{$id} && $model{$id}{active} ? 1 : 0;
	if ($can != $should)
	{
		$mismatch++;
		diag("step $step ($op $id): connects=$can, model says $should");
	}
	if (defined $old && $op eq 'rotate' && pub_once($id, $old, '{"metric":"probe","value":2}') == 0)
	{
		$mismatch++;
		diag("step $step: $id\'s old secret still connects");
	}
}
is($mismatch, 0, "$steps random registry changes: the broker agrees with the model after each (seed $seed)");

# ---- hostile ids and settings ----
for my $bad ('a/b', 'a+b', 'a#b', '+', '#', 'a:b', "a\nb", "a\rb", 'x' x 65, 'x' x 10000, ' lead', 'é')
{
	($rc, $out, $err) = $node->psql('bitvelocity', "SELECT iot.provision_device(\$q\$$bad\$q\$)",
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	like($err, qr/22023: invalid device id/, 'hostile id refused (22023): ' . (substr($bad, 0, 12) =~ s/\n/\\n/r));
}
# Hostile device ids in topics (the bridge's own user may write any device
# topic; '+' and '#' cannot appear in a published topic): quarantined as
# bad_topic, nothing lands.
my @bad_topics = ('devices/a:b/telemetry', 'devices/' . ('x' x 65) . '/telemetry',
	'devices/' . ('y' x 10000) . '/telemetry', 'devices/a b/telemetry', "devices/\x{c3}\x{a9}/telemetry", 'devices//telemetry');
for my $t (@bad_topics)
{
	my ($r, $e) = BvIot::publish($b, $BvIot::BRIDGE_USER, $BvIot::BRIDGE_PASSWORD, $t, '{"metric":"hostile_topic","value":1}');
	is($r, 0, 'published on a hostile topic: ' . (substr($t, 0, 20) =~ s/\n/\\n/r)) or diag($e);
}
my ($nl) = BvIot::publish($b, $BvIot::BRIDGE_USER, $BvIot::BRIDGE_PASSWORD, "devices/a\nb/telemetry", '{"metric":"hostile_topic","value":1}');
isnt($nl, 0, 'a newline in a topic is refused by MQTT itself (control characters are not allowed)');
ok(poll("SELECT count(*) = " . scalar(@bad_topics) . " FROM iot.quarantine WHERE reason = 'bad_topic' AND payload_prefix LIKE '%hostile_topic%'"),
	'each is quarantined as bad_topic');
is(sql("SELECT count(*) FROM iot.telemetry WHERE metric = 'hostile_topic'"), 0, 'none lands');
is(sql("SELECT count(*) FROM iot.quarantine WHERE reason = 'bad_topic' AND device_id IS NOT NULL"), 0, 'and none is taken for a device');

for my $f ('passwd', 'acl', 'acl_certs')
{
	my $text = slurp_file("$b->{dir}/$f");
	my @odd = grep { length && !/^(#.*|user [A-Za-z0-9_-]{1,64}|topic (read|write|readwrite) devices\/(#|[A-Za-z0-9_-]{1,64}\/(commands|telemetry|ack|result|status))|pattern (read|write) devices\/%u\/[a-z]+|[A-Za-z0-9_-]{1,64}:\$7\$1000\$[A-Za-z0-9+\/=]+\$[A-Za-z0-9+\/=]+)$/ } split /\n/, $text;
	is(scalar(@odd), 0, "$f holds only well-formed lines") or diag(join("\n", @odd));
}
for my $bad ("'relative/dir'", "'/tmp/a\nb'", "'/tmp/../etc'", "'/tmp/a b'", "'/tmp/' || repeat('x', 1000)")
{
	($rc, $out, $err) = $node->psql('bitvelocity', "UPDATE iot.bridge_config SET auth_dir = $bad",
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	like($err, qr/23514/, 'hostile auth_dir refused: ' . (substr($bad, 0, 16) =~ s/\n/\\n/r));
}

# A bridge user name with a newline (bridge_config bounds only its length)
# injects nothing into the files.
$pos = BvMqtt::log_position($b);
sql("UPDATE iot.bridge_config SET username = E'evil\\ntopic readwrite #'");
BvIot::wait_auth_applied($node, $b, $pos);
unlike(slurp_file("$b->{dir}/acl") . slurp_file("$b->{dir}/passwd"), qr/^(topic readwrite #|evil)/m,
	'a hostile bridge user name adds no line to the files');
sql("UPDATE iot.bridge_config SET username = '$BvIot::BRIDGE_USER'");
ok(poll("SELECT state = 'running' FROM iot.bridge_stats"), 'the bridge is back with its own name');

# ---- a wrong pid file: no signal to anything but mosquitto, an error to read ----
open my $pf, '>', "$dir/not_mosquitto.pid" or die;
print $pf $node->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'");
close $pf;
sql("UPDATE iot.bridge_config SET broker_pid_file = '$dir/not_mosquitto.pid'");
ok(poll("SELECT error LIKE '%is not a running mosquitto%' FROM iot.broker_auth"), 'a pid file naming another process: refused, the error is shown');
sql("UPDATE iot.bridge_config SET broker_pid_file = '$b->{dir}/mosquitto.pid'");
ok(poll("SELECT in_sync AND error IS NULL FROM iot.broker_auth"), 'fixed: in sync again');

BvMqtt::stop_broker($b);
$node->stop;
done_testing();
