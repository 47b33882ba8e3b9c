# bv_cdc NATS sink: a refused acknowledgement in the middle of a window.
#
# A JetStream stream with a message limit that refuses new messages when
# full (discard new) stands for a server that acknowledges the first part
# of a window and refuses the rest.  A seeded random workload (inserts and
# updates, several transactions) is committed while the sink is paused, so
# that it goes out as one asynchronous window; the stream takes the first
# LIMIT messages and refuses the others.  Checked against a model (the
# changes in commit order):
#   - the sink reports the refusal, the stream holds exactly the first
#     LIMIT changes, and the slot's confirmed position has not passed the
#     transaction of the first refused change (nothing refused counts);
#   - once the stream takes more, the window is published again from the
#     first unacknowledged change: the stream then holds every change of
#     the model exactly once (JetStream dropped the resent copies by
#     Nats-Msg-Id) and in commit order: duplicates allowed, loss never.
# The seed is printed (BV_SEED=n to replay one).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvNats;

my $seed = $ENV{BV_SEED} // int(rand(1_000_000));
srand($seed);
diag("seed $seed (BV_SEED=$seed to replay)");

my $node = BvTest::new_node('nats_refused',
	extra_conf => "bv_cdc.heartbeat_interval = 500\nbv_cdc.naptime = 200\nbv_cdc.retry_max = 2000\n");
BvTest::create_suite_db($node);
$node->safe_psql('bitvelocity', 'CREATE EXTENSION IF NOT EXISTS bv_cdc CASCADE');

sub sql { return $node->safe_psql('bitvelocity', $_[0]); }
sub poll { return $node->poll_query_until('bitvelocity', $_[0]); }

my $s = BvNats::start_server($node->basedir);

# The model: the workload's changes in commit order, "key:version" each;
# and the WAL position before each transaction.
my (@model, @txn_of, @lsn_before, %ver);
my $ntxn = 3 + int(rand(6));
my @txns;
for my $t (0 .. $ntxn - 1)
{
	my @stmts;
	for (1 .. 3 + int(rand(15)))
	{
		my $k = 1 + int(rand(12));
		if (exists $ver{$k})
		{
			$ver{$k}++;
			push @stmts, "UPDATE public.lim SET v = $ver{$k} WHERE k = $k;";
		}
		else
		{
			$ver{$k} = 0;
			push @stmts, "INSERT INTO public.lim VALUES ($k, 0);";
		}
		push @model, "$k:$ver{$k}";
		push @txn_of, $t;
	}
	push @txns, join("\n", @stmts);
}
my $total = scalar @model;
my $limit = 1 + int(rand($total - 1));    # 1 .. total-1: refused mid-window
diag("$ntxn transactions, $total changes, the stream takes $limit");
BvNats::stream($s, 'LIM', 'lim.>', $limit);

sql(qq{
CREATE TABLE public.lim (k int PRIMARY KEY, v int NOT NULL);
SELECT bv_cdc.add_sink('nl', 'nats', '{"host": "127.0.0.1", "port": $s->{port}, "stream": "LIM"}');
SELECT bv_cdc.add_route('public.lim', 'nl', 'lim.{schema}.{table}');
});
ok(poll("SELECT worker_state = 'streaming' AND state = 'up' FROM bv_cdc.stats WHERE sink = 'nl'"),
	'the sink is up');

sql("SELECT bv_cdc.pause('nl')");
ok(poll("SELECT state = 'paused' FROM bv_cdc.stats WHERE sink = 'nl'"), 'paused: the workload goes out as one window');
for my $t (0 .. $#txns)
{
	push @lsn_before, sql("SELECT pg_current_wal_lsn()");
	sql("BEGIN;\n$txns[$t]\nCOMMIT;");
}
sql("SELECT bv_cdc.resume('nl')");

# Each key's versions and the whole sequence, as the stream holds them.
sub stream_now
{
	return map { "$_->{body}{key}{k}:$_->{body}{after}{v}" } BvNats::dump($s, 'LIM');
}

ok(poll("SELECT last_error LIKE '%JetStream refused a message%' FROM bv_cdc.stats WHERE sink = 'nl'"),
	'the refusal is reported');
is(BvNats::count($s, 'LIM'), $limit, "the stream took the first $limit changes");
is(join(' ', stream_now()), join(' ', @model[0 .. $limit - 1]), 'the first changes, in commit order');

# The first refused change is in transaction $t: the slot never confirms
# past the WAL position before it, however often the window is resent.
my $t = $txn_of[$limit];
ok(poll("SELECT retries >= 2 FROM bv_cdc.stats WHERE sink = 'nl'"), 'the window is resent (and refused again)');
my $slot = sql("SELECT setting FROM pg_settings WHERE name = 'bv_cdc.slot_name'");
is(sql("SELECT confirmed_flush_lsn <= '$lsn_before[$t]'::pg_lsn FROM pg_replication_slots WHERE slot_name = '$slot'"),
	't', "the slot is not confirmed past transaction $t, which holds the first refused change");
is(BvNats::count($s, 'LIM'), $limit, 'nothing refused is in the stream');

# The stream takes everything now: the window goes out again from the first
# unacknowledged change.
BvNats::stream_limit($s, 'LIM', 'lim.>', 100000);
ok(BvNats::wait_until(sub { BvNats::count($s, 'LIM') >= $total }), 'the resent window reaches the stream');
ok(poll("SELECT state = 'up' FROM bv_cdc.stats WHERE sink = 'nl'"), 'the sink is up again');
is(join(' ', stream_now()), join(' ', @model),
	'every change exactly once, in commit order (resent copies de-duplicated)');
my %ids = map { $_->{headers}{'Nats-Msg-Id'} => 1 } BvNats::dump($s, 'LIM');
is(scalar(keys %ids), $total, 'one message per event id');
ok(poll("SELECT confirmed_flush_lsn >= '$lsn_before[$#lsn_before]'::pg_lsn FROM pg_replication_slots WHERE slot_name = '$slot'"),
	'the slot moves on once the stream acknowledged everything');

BvNats::stop_server($s, 'TERM');
$node->stop;
done_testing();
