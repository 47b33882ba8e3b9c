# bv_vector hnsw: concurrent inserts, index scans, deletes and VACUUM
# (which frees the slots of deleted elements for inserts to reuse).
# pgbench runs the three scripts on four clients at once; no statement may
# fail.  Then the index is checked against the table (the model): a full
# ordered scan returns every live row once and nothing else, hnsw_check
# passes, and top-10 recall against exact search stays high.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $db = 'bitvelocity';
my $node = BvTest::new_node('concurrency');
BvTest::create_suite_db($node);

$node->safe_psql($db, q{
CREATE TABLE public.items (id bigserial PRIMARY KEY, v bv_vector.vector(16) NOT NULL);
INSERT INTO public.items (v)
SELECT (SELECT array_agg(random()::real) FROM generate_series(1, 16) WHERE g > 0) FROM generate_series(1, 1000) g;
CREATE INDEX items_v ON public.items USING hnsw (v) WITH (m = 8, ef_construction = 32);
});

my %scripts = (
	'insert.sql' => "INSERT INTO public.items (v) SELECT array_agg(random()::real)::bv_vector.vector FROM generate_series(1, 16);\n",
	'scan.sql' => "SET enable_seqscan = off;\n"
	  . "SELECT count(*) FROM (SELECT id FROM public.items ORDER BY v OPERATOR(bv_vector.<->) "
	  . "(SELECT array_agg(random()::real)::bv_vector.vector FROM generate_series(1, 16)) LIMIT 20) s;\n",
	'delete.sql' => "DELETE FROM public.items WHERE id = (SELECT (random() * max(id))::bigint FROM public.items);\n",
	'vacuum.sql' => "VACUUM public.items;\n");
my @files;
foreach my $name (sort keys %scripts)
{
	my $path = $node->basedir . "/$name";
	open my $fh, '>', $path or die $!;
	print $fh $scripts{$name};
	close $fh;
	my $weight = { 'insert.sql' => 10, 'scan.sql' => 10, 'delete.sql' => 3, 'vacuum.sql' => 1 }->{$name};
	push @files, '-f', "$path\@$weight";
}
my ($out, $err) = ('', '');
my $ok = IPC::Run::run(
	[ 'pgbench', '-n', '-c', '4', '-j', '2', '-t', '300', @files,
	  '-h', $node->host, '-p', $node->port, $db ],
	'>', \$out, '2>', \$err);
ok($ok, 'pgbench: 4 clients x 300 mixed transactions, none failed') or diag($err);
my ($processed) = $out =~ /number of transactions actually processed: (\d+)/;
is($processed, 1200, 'every transaction ran');

my ($elements, $deleted, $unreachable) = split /\|/, $node->safe_psql($db,
	'SELECT elements, deleted, unreachable FROM bv_vector.hnsw_check(\'items_v\')');
my $rows = $node->safe_psql($db, 'SELECT count(*) FROM public.items');
note("rows $rows, elements $elements, deleted $deleted, unreachable $unreachable");
cmp_ok($elements - $deleted, '>=', $rows, 'hnsw_check passes; no live row lost its element');
# Slots freed by the VACUUMs were taken by later inserts: without reuse the
# index holds one element per row ever inserted (max(id)).
my $maxid = $node->safe_psql($db, 'SELECT max(id) FROM public.items');
my $gone = $maxid - $rows;
cmp_ok($elements, '<', $maxid - $gone / 2,
	"$elements elements for $maxid rows ever inserted, $gone deleted: most freed slots were reused");

my ($n, $distinct, $ghosts) = split /\|/, $node->safe_psql($db, q{
SET enable_seqscan = off;
SELECT count(*), count(DISTINCT id), count(*) FILTER (WHERE id NOT IN (SELECT id FROM public.items))
FROM (SELECT id FROM public.items ORDER BY v OPERATOR(bv_vector.<->) (SELECT v FROM public.items ORDER BY id LIMIT 1)) s;
});
is($n, $distinct, 'the full scan returns no row twice');
is($ghosts, '0', 'the full scan returns no deleted row');
cmp_ok($n, '>=', $rows - $unreachable, "the full scan returns $n of $rows live rows ($unreachable unreachable)");

# A VACUUM with nothing running beside it leaves no link to a deleted element
# (inserts never choose one; the repair pass replaces the others).
$node->safe_psql($db, 'VACUUM public.items');
is($node->safe_psql($db, "SELECT dead_links FROM bv_vector.hnsw_check('items_v')"), '0',
	'after VACUUM no live element links to a deleted one');

# Recall after the mixed workload: 20 queries, top 10, against exact search.
my $recall = $node->safe_psql($db, q{
CREATE TABLE public.q AS SELECT g AS q, (SELECT array_agg(random()::real) FROM generate_series(1, 16) WHERE g > 0)::bv_vector.vector AS v FROM generate_series(1, 20) g;
SET enable_indexscan = off;
CREATE TABLE public.truth AS SELECT q.q, t.id FROM public.q CROSS JOIN LATERAL
  (SELECT id FROM public.items ORDER BY v OPERATOR(bv_vector.<->) q.v LIMIT 10) t;
RESET enable_indexscan;
SET enable_seqscan = off;
CREATE TABLE public.found AS SELECT q.q, t.id FROM public.q CROSS JOIN LATERAL
  (SELECT id FROM public.items ORDER BY v OPERATOR(bv_vector.<->) q.v LIMIT 10) t;
SELECT count(*)::numeric / 200 FROM public.truth WHERE (q, id) IN (SELECT q, id FROM public.found);
});
cmp_ok($recall, '>=', 0.9, "recall\@10 after concurrent inserts and deletes: $recall");

$node->stop;
done_testing();
