# bv_cdc loses nothing: kill -9 of the worker mid-stream, an immediate
# shutdown of the server, and the broker down for 20 s.  Every committed
# change reaches Kafka at least once (distinct changes consumed = changes
# committed, no gaps) and each row's changes arrive in commit order.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvKafka;

my $node = BvTest::new_node('durable',
	extra_conf => "bv_cdc.heartbeat_interval = 500\nbv_cdc.naptime = 200\nbv_cdc.retry_max = 2000\nrestart_after_crash = on\n");
BvTest::create_suite_db($node);
$node->safe_psql('bitvelocity', 'CREATE EXTENSION IF NOT EXISTS bv_cdc CASCADE');
my $mock = BvKafka::start_mock($node->basedir);

my $keys = 20;
$node->safe_psql(
	'bitvelocity', qq{
CREATE TABLE public.kv (k int PRIMARY KEY, v int NOT NULL);
CREATE PROCEDURE public.work(n int) LANGUAGE plpgsql AS \$\$
BEGIN
    FOR i IN 1..n LOOP
        UPDATE public.kv SET v = v + 1 WHERE k = i % $keys;
        COMMIT;
    END LOOP;
END \$\$;
SELECT bv_cdc.add_sink('main', 'kafka', '{"bootstrap.servers": "$mock->{bootstrap}"}');
SELECT bv_cdc.add_route('public.kv', 'main', 'kv');
});
ok( $node->poll_query_until(
		'bitvelocity', "SELECT worker_state = 'streaming' FROM bv_cdc.stats WHERE sink = 'main'"),
	'streaming');
$node->safe_psql('bitvelocity', "INSERT INTO public.kv SELECT k, 0 FROM generate_series(0, $keys - 1) k");

sub events { return $node->safe_psql('bitvelocity', "SELECT coalesce(sum(events), 0) FROM bv_cdc.stats"); }
sub worker_pid { return $node->safe_psql('bitvelocity', "SELECT pid FROM bv_cdc.worker()"); }

# Start a workload in the background; it may be cut short by a crash.
sub background_work
{
	my ($n) = @_;
	my ($in, $out, $err) = ('', '', '');
	return IPC::Run::start(
		[ 'psql', '-X', '-d', $node->connstr('bitvelocity'), '-c', "CALL public.work($n)" ],
		\$in, \$out, \$err);
}

# 1. kill -9 of the worker while it streams.
my $before = events();
my $h = background_work(2500);
ok($node->poll_query_until('bitvelocity', "SELECT coalesce(sum(events), 0) > $before + 300 FROM bv_cdc.stats"),
	'the worker streams the workload');
my $pid = worker_pid();
ok(kill('KILL', $pid), "kill -9 of the worker (pid $pid) mid-stream");
$h->finish;    # the crash restart ends the workload's session too
ok( $node->poll_query_until(
		'bitvelocity', "SELECT pid <> $pid AND state = 'streaming' FROM bv_cdc.worker()"),
	'the worker is back, streaming from its slot');

# 2. Immediate shutdown of the server while the worker streams.
$before = events();
$h = background_work(2500);
ok($node->poll_query_until('bitvelocity', "SELECT coalesce(sum(events), 0) > $before + 300 FROM bv_cdc.stats"),
	'streaming again');
$node->stop('immediate');
$h->finish;
$node->start;
ok( $node->poll_query_until('bitvelocity', "SELECT state = 'streaming' FROM bv_cdc.worker()"),
	'after an immediate shutdown and restart the worker streams again');

# 3. The broker goes down for 20 s under load, then comes back.
BvKafka::broker_down($mock);
$node->safe_psql('bitvelocity', 'CALL public.work(1000)');
my $lsn_down = $node->safe_psql('bitvelocity', 'SELECT pg_current_wal_lsn()');
ok( $node->poll_query_until(
		'bitvelocity', "SELECT state = 'down' AND inflight > 0 FROM bv_cdc.stats WHERE sink = 'main'"),
	'with the broker down the sink is reported down and messages wait in flight');
sleep(20);    # the scenario: the broker stays down for 20 s
is( $node->safe_psql(
		'bitvelocity',
		"SELECT confirmed_flush_lsn < '$lsn_down' FROM pg_replication_slots WHERE slot_name = 'bv_cdc'"),
	't',
	'while the broker is down the slot keeps the unacknowledged changes');
like($node->safe_psql('bitvelocity', "SELECT last_error FROM bv_cdc.stats WHERE sink = 'main'"),
	qr/\S/, 'and the sink says why');
BvKafka::broker_up($mock);

# Everything committed is delivered, in order per key.
my $committed = $node->safe_psql('bitvelocity', 'SELECT sum(v) + count(*) FROM public.kv');
my $lsn_end = $node->safe_psql('bitvelocity', 'SELECT pg_current_wal_lsn()');
ok( $node->poll_query_until(
		'bitvelocity',
		"SELECT confirmed_flush_lsn >= '$lsn_end' FROM pg_replication_slots WHERE slot_name = 'bv_cdc'"),
	'after the broker returns the worker catches up and the slot advances');

my @msgs = BvKafka::consume($mock, 'kv', $committed);
@msgs = sort { $a->{partition} <=> $b->{partition} || $a->{offset} <=> $b->{offset} } @msgs;
my (%seen, %order);
for my $m (@msgs)
{
	my ($k, $v) = ($m->{env}{key}{k}, $m->{env}{after}{v});
	next if $seen{"$k:$v"}++;
	push @{ $order{$k} }, $v;
}
is(scalar(keys %seen), $committed, "distinct changes consumed = changes committed ($committed)");
cmp_ok(scalar(@msgs), '>=', $committed, 'at least once (' . (scalar(@msgs) - $committed) . ' duplicates from replays)');
my @bad = grep {
	my @v = @{ $order{$_} };
	grep { $v[$_] != $_ } 0 .. $#v
} sort { $a <=> $b } keys %order;
is(scalar(@bad), 0, 'every key: versions 0, 1, 2, ... in order, no gap (first occurrences)');
is(scalar(keys %order), $keys, "all $keys keys seen");

BvKafka::stop_mock($mock);
$node->stop;
done_testing();
