# bv_vector hnsw: an immediate shutdown in the middle of concurrent inserts
# (half of them into element slots that a DELETE + VACUUM freed, the rest
# appended), then recovery: bv_vector.hnsw_check() finds the graph sound, every
# committed row is still found through the index, inserts go on; and a
# streaming standby replays the same index (generic WAL), page for page, so
# that the same query gives the same rows there.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $db = 'bitvelocity';
my $node = BvTest::new_node('primary');
BvTest::create_suite_db($node);

$node->safe_psql($db, q{
CREATE TABLE public.items (id bigserial PRIMARY KEY, v bv_vector.vector(16) NOT NULL);
INSERT INTO public.items (v)
SELECT (SELECT array_agg(random()::real) FROM generate_series(1, 16) WHERE g > 0) FROM generate_series(1, 2000) g;
CREATE INDEX items_v ON public.items USING hnsw (v) WITH (m = 8, ef_construction = 32);
DELETE FROM public.items WHERE id % 2 = 0;
VACUUM public.items;
});
is($node->safe_psql($db, 'SELECT elements || \',\' || deleted FROM bv_vector.hnsw_check(\'items_v\')'),
	'2000,1000', 'VACUUM freed the slots of the 1000 deleted rows');

$node->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($node, 'base', has_streaming => 1);
$standby->start;

# Three clients insert one row per transaction until the crash.
my $script = $node->basedir . '/insert.sql';
open my $fh, '>', $script or die $!;
print $fh "INSERT INTO public.items (v) SELECT array_agg(random()::real)::bv_vector.vector FROM generate_series(1, 16);\n";
close $fh;
my ($out, $err) = ('', '');
my $pgbench = IPC::Run::start(
	[ 'pgbench', '-n', '-c', '3', '-j', '3', '-t', '1000000', '-f', $script,
	  '-h', $node->host, '-p', $node->port, $db ],
	'>', \$out, '2>', \$err);
ok($node->poll_query_until($db, 'SELECT count(*) >= 2500 FROM public.items'),
	'the clients are inserting');
$node->stop('immediate');
$pgbench->finish;    # it fails: the server went away
$node->start;

my $rows = $node->safe_psql($db, 'SELECT count(*) FROM public.items');
cmp_ok($rows, '>=', 2500, "$rows rows committed before the crash");
my ($elements, $deleted, $unreachable) = split /\|/, $node->safe_psql($db,
	'SELECT elements, deleted, unreachable FROM bv_vector.hnsw_check(\'items_v\')');
cmp_ok($elements - $deleted, '>=', $rows, "hnsw_check passes after recovery: $elements elements ($deleted free) for $rows rows");
# without reuse the index would hold 2000 + the inserted rows' elements
cmp_ok($elements, '<=', $rows + 100, "free slots were reused: $elements elements for $rows rows");
note("unreachable after the crash: $unreachable");

# Every committed row through the index: a full ordered scan returns each
# live row once (minus any element the crash left without links).
my $scan = q{
SET enable_seqscan = off;
SELECT count(*), count(DISTINCT id),
       count(*) FILTER (WHERE id NOT IN (SELECT id FROM public.items))
FROM (SELECT id FROM public.items ORDER BY v OPERATOR(bv_vector.<->) (SELECT v FROM public.items WHERE id = 1)) s;
};
my ($n, $distinct, $ghosts) = split /\|/, $node->safe_psql($db, $scan);
is($n, $distinct, 'no row is returned twice');
is($ghosts, '0', 'no row that is not in the table is returned');
cmp_ok($n, '>=', $rows - $unreachable, "the index returns $n of $rows rows ($unreachable unreachable)");

# Inserts and VACUUM go on after recovery.
$node->safe_psql($db, q{
INSERT INTO public.items (v)
SELECT (SELECT array_agg(random()::real) FROM generate_series(1, 16) WHERE g > 0) FROM generate_series(1, 200) g;
});
my $doomed = $node->safe_psql($db, 'SELECT count(*) FROM public.items WHERE id % 10 = 0');
$node->safe_psql($db, q{
DELETE FROM public.items WHERE id % 10 = 0;
VACUUM public.items;
});
($elements, $deleted) = split /\|/, $node->safe_psql($db,
	'SELECT elements, deleted FROM bv_vector.hnsw_check(\'items_v\')');
cmp_ok($deleted, '>=', $doomed, "VACUUM freed $deleted elements after recovery ($doomed rows deleted)");
($n, $distinct, $ghosts) = split /\|/, $node->safe_psql($db, $scan);
is($ghosts, '0', 'deleted rows are not returned');

# The standby replays the index: the same graph gives the same answer.
$node->wait_for_catchup($standby);
is($standby->safe_psql($db, 'SELECT elements FROM bv_vector.hnsw_check(\'items_v\')'),
	$elements, 'the standby has the same elements and hnsw_check passes there');
my $top = q{
SET enable_seqscan = off;
SELECT string_agg(id::text, ',') FROM
  (SELECT id FROM public.items ORDER BY v OPERATOR(bv_vector.<->) (SELECT v FROM public.items WHERE id = 7) LIMIT 10) s;
};
is($standby->safe_psql($db, $top), $node->safe_psql($db, $top),
	'a query on the standby returns the rows it returns on the primary');

$standby->stop;
$node->stop;
done_testing();
