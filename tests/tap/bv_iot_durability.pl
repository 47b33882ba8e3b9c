# bv_iot's bridge loses nothing the broker acknowledged, and lands it once:
# kill -9 of the bridge mid-stream (the postmaster then restarts every
# backend), an immediate shutdown of PostgreSQL mid-stream, and a broker
# restart while the bridge works through a backlog.  Every publisher waits
# for the broker's PUBACK of each of its messages (QoS 1), so "acked N"
# means N readings the system must keep; the bridge acknowledges to the
# broker only after its batch committed, and the broker keeps the bridge's
# persistent session meanwhile.
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

my $node = BvTest::new_node('iotdur', extra_conf => "bv_iot.naptime = 200\nrestart_after_crash = on\n");
BvTest::create_suite_db($node);
my $dir = $node->basedir;

sub sql { return $node->safe_psql('bitvelocity', $_[0]); }
sub poll { return $node->poll_query_until('bitvelocity', $_[0]); }

my $b = BvIot::start_broker($node, $dir);
my %secret;
$secret{$_} = BvIot::provision($node, undef, $_) for qw(d1 d2 d3);
BvIot::reload_auth($node, $b);
# Small batches: the stream lasts long enough to be interrupted.
BvIot::enable_bridge($node, $b, batch_ms => 50, batch_size => 20);

my $n = 20000;
my $start = time() - 3600;

# Start a publisher of $n single-reading messages in the background.
sub start_publisher
{
	my ($dev, $metric) = @_;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[
			BvIot::pub_program(), '-p', $b->{port}, '-u', $dev, '-P', $secret{$dev},
			'-t', "devices/$dev/telemetry", '-n', $n, '-b', 1, '-s', $start, '-m', $metric
		],
		'>', \$out, '2>', \$err);
	return ($h, \$out, \$err);
}

sub check_exactly
{
	my ($dev, $metric, $what) = @_;
	ok(poll("SELECT count(*) = $n FROM iot.telemetry WHERE device_id = '$dev' AND metric = '$metric'"),
		"$what: all $n acknowledged readings landed");
	is(sql("SELECT count(*), sum(value)::bigint FROM iot.telemetry WHERE device_id = '$dev' AND metric = '$metric'"),
		"$n|" . ($n * ($n + 1) / 2), "$what: each exactly once");
}

# ---- 1. kill -9 of the bridge mid-stream ----
my ($h, $out, $err) = start_publisher('d1', 'k9');
ok(poll("SELECT count(*) > 1000 FROM iot.telemetry WHERE metric = 'k9'"), 'stream under way');
my $pid = sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'bv_iot bridge'");
ok($pid > 0, 'the bridge runs');
my $landed_at_kill = sql("SELECT count(*) FROM iot.telemetry WHERE metric = 'k9'");
kill 'KILL', $pid;
ok($landed_at_kill < $n, "killed mid-stream ($landed_at_kill of $n landed)");
$h->finish;
like($$out, qr/acked $n/, "the publisher got $n PUBACKs from the broker");
check_exactly('d1', 'k9', 'kill -9');
ok(poll("SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'bv_iot bridge'"), 'bridge up');
my $new = sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'bv_iot bridge'");
isnt($new, $pid, 'the bridge came back');

# ---- 2. immediate shutdown of PostgreSQL mid-stream ----
($h, $out, $err) = start_publisher('d2', 'imm');
ok(poll("SELECT count(*) > 1000 FROM iot.telemetry WHERE metric = 'imm'"), 'second stream under way');
my $before = sql("SELECT count(*) FROM iot.telemetry WHERE metric = 'imm'");
$node->stop('immediate');
ok($before < $n, "stopped mid-stream ($before of $n landed)");
$h->finish;
like($$out, qr/acked $n/, "the publisher got $n PUBACKs while the server was down");
$node->start;
check_exactly('d2', 'imm', 'immediate shutdown');

# ---- 3. broker restart while the bridge works through a backlog ----
sql("UPDATE iot.bridge_config SET enabled = false");
ok(poll("SELECT state <> 'running' FROM iot.bridge_counters"), 'bridge paused');
my ($rc, $acked) = BvIot::publish_generated($b, 'd3', $secret{d3}, 'devices/d3/telemetry',
	messages => $n, start => $start, metric => 'brk');
is($acked, $n, "a backlog of $n messages acknowledged by the broker");
sql("UPDATE iot.bridge_config SET enabled = true");
ok(poll("SELECT count(*) > 500 FROM iot.telemetry WHERE metric = 'brk'"), 'the bridge works through the backlog');
my $at = sql("SELECT count(*) FROM iot.telemetry WHERE metric = 'brk'");
BvMqtt::kill_broker($b, 'TERM');
ok($at < $n, "broker stopped mid-backlog ($at of $n landed)");
BvMqtt::restart_broker($b);
check_exactly('d3', 'brk', 'broker restart');
ok(poll("SELECT reconnects >= 1 AND state = 'running' FROM iot.bridge_counters"), 'the bridge reconnected');

is(sql("SELECT count(*) FROM iot.quarantine"), 0, 'nothing was quarantined');

BvMqtt::stop_broker($b);
$node->stop;
done_testing();
