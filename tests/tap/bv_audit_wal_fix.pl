# bv_audit 0.7.0: the rules that fix red-team round 6b findings 1 and 10,
# beyond the red-team tests themselves (tests/tap/bv_redteam6b_audit_*.pl).
#
# Finding 1: a write into a partitioned table emits the context message
#   when any partition (at any depth) is in WAL mode: INSERT routed two
#   levels down, an UPDATE that moves a row into a WAL-mode partition,
#   MERGE through the parent, all name their actor.
# Finding 10: the commit of enable() that ends a WAL-mode table's exclusion
#   of a column records every row with a value in it (a U naming the
#   column), also when it switches from trigger mode at the same time; a
#   row whose column is NULL gets no record.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('auditwalfix', extra_conf => "bv_audit.wal_mode = on\n");
BvTest::create_suite_db($node);
my $db = 'bitvelocity';
sub sql { return $node->safe_psql($db, $_[0]); }

$node->poll_query_until($db, q{SELECT count(*) = 1 FROM pg_replication_slots WHERE slot_name = 'bv_audit_wal'})
  or die 'no slot';

sub caught_up
{
	die 'the WAL worker did not catch up'
	  unless sql(q{SELECT bv_audit.wait_for(pg_current_wal_insert_lsn(), '120 seconds')}) eq 't';
	return;
}

# ---------------------------------------------------------------- finding 1
sql(q{
CREATE TABLE public.r (id int, k int, v text, PRIMARY KEY (id, k)) PARTITION BY LIST (k);
CREATE TABLE public.r_1 PARTITION OF public.r FOR VALUES IN (1);
CREATE TABLE public.r_2 PARTITION OF public.r FOR VALUES IN (2, 3) PARTITION BY LIST (k);
CREATE TABLE public.r_2a PARTITION OF public.r_2 FOR VALUES IN (2);
CREATE TABLE public.r_2b PARTITION OF public.r_2 FOR VALUES IN (3);
SELECT bv_audit.enable('public.r_2a', mode => 'wal');
CREATE TABLE public.rsrc (id int, k int, v text);
INSERT INTO public.rsrc VALUES (7, 2, 'm');
});
sql(q{
BEGIN; SELECT bv.set_actor('ann'); INSERT INTO public.r VALUES (1, 1, 'x'); COMMIT;
BEGIN; SELECT bv.set_actor('ben'); INSERT INTO public.r VALUES (2, 2, 'deep'); COMMIT;
BEGIN; SELECT bv.set_actor('cat'); UPDATE public.r SET k = 2 WHERE id = 1; COMMIT;
BEGIN; SELECT bv.set_actor('dan'); MERGE INTO public.r USING public.rsrc s ON r.id = s.id AND r.k = s.k
  WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.k, s.v); COMMIT;
});
caught_up();
is(sql(q{SELECT string_agg(audit_op || ':' || id || ':' || audit_actor, ' ' ORDER BY audit_id) FROM bv_audit.public__r_2a WHERE audit_op <> 'S'}),
	'I:2:ben I:1:cat I:7:dan',
	'a WAL-mode partition two levels down: INSERT, a row moved into it and MERGE through the top parent name their actor');

# ---------------------------------------------------------------- finding 10
sql(q{
CREATE TABLE public.x (id int PRIMARY KEY, v int, doc text);
INSERT INTO public.x SELECT 1, 1, string_agg(md5(g::text), '') FROM generate_series(1, 400) g;
INSERT INTO public.x VALUES (2, 1, NULL);
SELECT bv_audit.enable('public.x', '{doc}', mode => 'trigger');
SELECT bv_audit.enable('public.x', '{}', mode => 'wal');
UPDATE public.x SET v = 2;
});
caught_up();
is(sql(q{SELECT string_agg(audit_op || ':' || id || ':' || coalesce(length(doc), 0) || ':' || coalesce(audit_changed::text, '-'), ' ' ORDER BY audit_id)
	FROM bv_audit.public__x}),
	'S:1:0:- S:2:0:- U:1:12800:{doc} U:1:12800:{v} U:2:0:{v}',
	'trigger -> WAL ending an exclusion: the rows with a value get a U naming the column at once');
is(sql(q{SELECT string_agg(r->>'id' || ':' || coalesce(length(r->>'doc'), 0), ' ' ORDER BY r->>'id') FROM bv_audit.as_of('public.x', now()) r}),
	'1:12800 2:0', '... and as_of(now()) holds it');
is(sql('SELECT count(*) FROM bv_audit.wal_quarantine'), '0', 'nothing quarantined');

done_testing();
