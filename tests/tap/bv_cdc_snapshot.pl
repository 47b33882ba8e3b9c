# bv_cdc.snapshot(): existing rows as "r" events, chunked by primary key,
# while concurrent updates, inserts and deletes stream.  A consumer that
# applies the topic in partition order ends with exactly the table.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvKafka;

my $node = BvTest::new_node('snapshot', extra_conf => "bv_cdc.heartbeat_interval = 500\n");
BvTest::create_suite_db($node);
$node->safe_psql('bitvelocity', 'CREATE EXTENSION IF NOT EXISTS bv_cdc CASCADE');
my $mock = BvKafka::start_mock($node->basedir);

my $rows = 3000;
$node->safe_psql(
	'bitvelocity', qq{
CREATE TABLE public.snap (id int PRIMARY KEY, v int NOT NULL, note text, at timestamptz);
INSERT INTO public.snap SELECT g, 0, 'row ' || g, '2026-01-01 00:00:00+00' FROM generate_series(1, $rows) g;
CREATE TABLE public.nopk (x int);
CREATE PROCEDURE public.churn(n int) LANGUAGE plpgsql AS \$\$
BEGIN
    FOR i IN 1..n LOOP
        UPDATE public.snap SET v = v + 1 WHERE id = 1 + (i * 7919) % $rows;
        IF i % 10 = 0 THEN
            INSERT INTO public.snap VALUES ($rows + i, 0, 'new', now()) ON CONFLICT DO NOTHING;
        END IF;
        IF i % 25 = 0 THEN
            DELETE FROM public.snap WHERE id = 1 + (i * 104729) % $rows;
        END IF;
        COMMIT;
    END LOOP;
END \$\$;
});
# The existing rows are older than the route: only a snapshot publishes them.
my $lsn0 = $node->safe_psql('bitvelocity', 'SELECT pg_current_wal_lsn()');
ok( $node->poll_query_until(
		'bitvelocity', "SELECT confirmed_flush_lsn >= '$lsn0' FROM pg_replication_slots WHERE slot_name = 'bv_cdc'"),
	'the worker streamed past the initial rows');
$node->safe_psql(
	'bitvelocity', qq{
SELECT bv_cdc.add_sink('main', 'kafka', '{"bootstrap.servers": "$mock->{bootstrap}"}');
SELECT bv_cdc.add_route('public.snap', 'main', 'snap');
});
ok($node->poll_query_until('bitvelocity', "SELECT worker_state = 'streaming' AND state = 'up' FROM bv_cdc.stats"), 'streaming');

# Refused: no primary key, bad chunk size.
my ($ret, $out, $err) = $node->psql('bitvelocity', "SELECT bv_cdc.snapshot('public.nopk')");
like($err, qr/table public.nopk has no primary key/, 'a table without primary key is refused');
($ret, $out, $err) = $node->psql('bitvelocity', "SELECT bv_cdc.snapshot('public.snap', 0)");
like($err, qr/invalid chunk size 0/, 'a bad chunk size is refused');

# Concurrent writes while the snapshot runs in chunks of 200.
my ($in, $wout, $werr) = ('', '', '');
my $h = IPC::Run::start(
	[ 'psql', '-X', '-d', $node->connstr('bitvelocity'), '-c', 'CALL public.churn(3000)' ],
	\$in, \$wout, \$werr);
my $id = $node->safe_psql('bitvelocity', "SELECT bv_cdc.snapshot('public.snap', 200)");
ok($node->poll_query_until('bitvelocity', "SELECT status = 'done' FROM bv_cdc.snapshots WHERE id = $id"),
	'the snapshot completes while writes go on');
$h->finish;
is($?, 0, 'the concurrent workload committed');

my $lsn = $node->safe_psql('bitvelocity', 'SELECT pg_current_wal_lsn()');
ok( $node->poll_query_until(
		'bitvelocity', "SELECT confirmed_flush_lsn >= '$lsn' FROM pg_replication_slots WHERE slot_name = 'bv_cdc'"),
	'everything acknowledged');

my $events = $node->safe_psql('bitvelocity', "SELECT events FROM bv_cdc.stats");
my @msgs = BvKafka::consume($mock, 'snap', $events);
@msgs = sort { $a->{partition} <=> $b->{partition} || $a->{offset} <=> $b->{offset} } @msgs;
my @r = grep { $_->{env}{op} eq 'r' } @msgs;
my $published = $node->safe_psql('bitvelocity', "SELECT rows FROM bv_cdc.snapshots WHERE id = $id");
cmp_ok(scalar(@r), '>', $rows / 2, scalar(@r) . ' rows published as r events');
is(scalar(@r), $published, 'bv_cdc.snapshots counts them');
is_deeply([ sort keys %{ $r[0]{env}{after} } ], [qw(at id note v)], 'an r event carries the whole row');
like($r[0]{payload}, qr/"at":"2026-01-01 00:00:00\+00"/, 'values are formatted as in streamed events');

# Apply the topic in partition order; compare with the table.
my %state;
for my $m (@msgs)
{
	my $e = $m->{env};
	if ($e->{op} eq 'd') { delete $state{ $e->{key}{id} }; }
	else { $state{ $e->{key}{id} } = "$e->{after}{v}|$e->{after}{note}"; }
}
my %table = map { my ($i, $v, $n) = split /\|/; ($i => "$v|$n") } split /\n/,
  $node->safe_psql('bitvelocity', 'SELECT id, v, note FROM public.snap');
is(scalar(keys %state), scalar(keys %table), 'the consumer holds as many rows as the table (' . scalar(keys %table) . ')');
my @diff = grep { ($state{$_} // '') ne ($table{$_} // '') } keys %table;
is(scalar(@diff), 0, 'and every row equals the table\'s: snapshot and stream interleave correctly');

BvKafka::stop_mock($mock);
$node->stop;
done_testing();
