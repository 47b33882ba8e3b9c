# Red-team round 6b (bv_audit, WAL mode): does every record name the actor
# of the statement that wrote it, however the row reached the table?
# Findings are TODO checks (they assert the promise of docs/bv_audit.md,
# "Each record names the actor ..."); promises that held are plain checks.
#
# Finding 1: a WAL-mode partition written through its partitioned parent.
#   enable() accepts a partition (docs: "enable each partition"), and
#   trigger mode records such writes with the writer's actor.  In WAL mode
#   the context message is emitted only when the statement's *opened*
#   result relations carry the marker trigger (wal_context.c,
#   writes_wal_table()), and INSERT (or COPY FROM, or INSERT ... ON
#   CONFLICT) into the parent opens the leaf partition only while routing
#   the first row, after ExecutorStart.  No message: the rows are recorded
#   with the actor of an earlier statement of the transaction, or
#   'unknown' when there is none.
# Finding 2 (most severe): the owner of a WAL-mode table (not a superuser)
#   drops its primary key: ALTER TABLE ... DROP CONSTRAINT <pkey> is not
#   refused (the guard checks relreplident, still 'd', and a deferrable key,
#   but not a missing one).  REPLICA IDENTITY DEFAULT without a key logs no
#   old key, and the worker then records nothing of the UPDATEs (key
#   changes or not) and DELETEs that follow: no record, no quarantine entry, no
#   error.  The owner adds the key back; as_of(now()) shows deleted rows as
#   live (ghosts) and misses moved ones.  Trigger mode refuses writes to a
#   tracked table without a key (55000); docs/bv_audit.md says WAL mode
#   refuses "commands that would ... stop deletes from logging the key".
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('red6bwal', extra_conf => "bv_audit.wal_mode = on\n");
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

# "op:id:actor" of the records of an audit table, in audit_id order.
sub records
{
	my ($audit, $where) = @_;
	$where //= 'true';
	return sql(qq{SELECT coalesce(string_agg(audit_op || ':' || id || ':' || audit_actor, ' ' ORDER BY audit_id), '')
		FROM bv_audit.$audit WHERE audit_op <> 'S' AND $where});
}

# The same partitioned table twice: partitions in WAL mode and, as the
# control, in trigger mode.
for my $mode (qw(wal trigger))
{
	sql(qq{
CREATE TABLE public.p_$mode (id int, k int, v text, PRIMARY KEY (id, k)) PARTITION BY LIST (k);
CREATE TABLE public.p_${mode}_1 PARTITION OF public.p_$mode FOR VALUES IN (1);
CREATE TABLE public.p_${mode}_2 PARTITION OF public.p_$mode FOR VALUES IN (2);
SELECT bv_audit.enable('public.p_${mode}_1', mode => '$mode');
SELECT bv_audit.enable('public.p_${mode}_2', mode => '$mode');
});
}
is(sql(q{SELECT string_agg(source_table || ':' || mode, ' ' ORDER BY source_table) FROM bv_audit.tracked WHERE source_table LIKE 'p\_%'}),
	'p_trigger_1:trigger p_trigger_2:trigger p_wal_1:wal p_wal_2:wal', 'enable() tracks each partition in its mode');

for my $mode (qw(wal trigger))
{
	sql(qq{
BEGIN; SELECT bv.set_actor('alice'); INSERT INTO public.p_$mode VALUES (1, 1, 'a'); COMMIT;
BEGIN; SELECT bv.set_actor('alice'); INSERT INTO public.p_${mode}_1 VALUES (2, 1, 'x');
       SELECT bv.set_actor('bob');   INSERT INTO public.p_$mode VALUES (3, 1, 'b'); COMMIT;
BEGIN; SELECT bv.set_actor('carol');
COPY public.p_$mode FROM stdin;
4	1	c
\\.
COMMIT;
BEGIN; SELECT bv.set_actor('dave'); INSERT INTO public.p_$mode VALUES (1, 1, 'd') ON CONFLICT (id, k) DO UPDATE SET v = excluded.v; COMMIT;
BEGIN; SELECT bv.set_actor('erin'); UPDATE public.p_$mode SET v = 'e' WHERE id = 2; COMMIT;
BEGIN; SELECT bv.set_actor('fay'); DELETE FROM public.p_$mode WHERE id = 4; COMMIT;
});
}
caught_up();

my $want = 'I:1:alice I:2:alice I:3:bob I:4:carol U:1:dave U:2:erin D:4:fay';
is(records('public__p_trigger_1'), $want, 'control: trigger mode names the actor of every write through the parent');
# UPDATE and DELETE through the parent open every partition at start-up:
# these held.
is(records('public__p_wal_1', q{audit_op IN ('D') OR (audit_op = 'U' AND id = 2)}), 'U:2:erin D:4:fay',
	'WAL mode: UPDATE and DELETE through the parent name their actor');
is(records('public__p_wal_1', q{id = 2}), 'I:2:alice U:2:erin', 'WAL mode: a direct INSERT into the partition names its actor');
# Fixed in 0.7.0 (finding 1): a partitioned result relation counts when a partition is in WAL mode.
# Got (0.6.0): I:1:unknown I:2:alice I:3:alice I:4:unknown U:1:unknown U:2:erin D:4:fay
is(records('public__p_wal_1'), $want,
	'WAL mode: INSERT, COPY FROM and INSERT ... ON CONFLICT through the parent name their actor');
is(records('public__p_wal_1', q{id = 3}), 'I:3:bob',
	'WAL mode: an INSERT through the parent is not recorded under the actor of an earlier statement');
note 'WAL-mode records: ', records('public__p_wal_1');

# ---------------------------------------------------------------- finding 2
sql(q{
CREATE ROLE app_owner LOGIN;
GRANT CREATE ON SCHEMA public TO app_owner;
SET ROLE app_owner;
CREATE TABLE public.nokey (id int PRIMARY KEY, v text);
INSERT INTO public.nokey SELECT g, 'v' || g FROM generate_series(1, 3) g;
RESET ROLE;
SELECT bv_audit.enable('public.nokey', mode => 'wal');
});
my ($rc, $out, $err) = $node->psql($db, 'SET ROLE app_owner; ALTER TABLE public.nokey DROP CONSTRAINT nokey_pkey');
note "DROP CONSTRAINT: rc $rc $err";
# Whatever is refused, nothing that commits may go unrecorded.
$node->psql($db, "SET ROLE app_owner; $_") for (
	'DELETE FROM public.nokey WHERE id = 2',
	'UPDATE public.nokey SET id = 10 WHERE id = 3',
	q{UPDATE public.nokey SET v = 'w1' WHERE id = 1},
	'ALTER TABLE public.nokey ADD PRIMARY KEY (id)');
caught_up();
my $table = sql(q{SELECT string_agg(id || ':' || v, ' ' ORDER BY id) FROM public.nokey});
my $asof = sql(q{SELECT string_agg((r->>'id') || ':' || (r->>'v'), ' ' ORDER BY (r->>'id')::int) FROM bv_audit.as_of('public.nokey', now()) r});
note "table: $table; as_of(now()): $asof";
# Fixed in 0.7.0 (finding 2): the command is refused.
isnt($rc, 0, 'the owner cannot drop the primary key of a WAL-mode table');
like($err, qr/must keep a primary key.*HINT:.*disable auditing first/s, '... with a hint to disable auditing first');
# Got (0.6.0): table 1:w1 10:v3; as_of 1:v1 2:v2 3:v3 (no UPDATE or DELETE recorded)
is($asof, $table, 'as_of(now()) of the WAL-mode table agrees with the table');

# Held: DDL that rewrites stored values is recorded in WAL mode too.
sql(q{
SET ROLE app_owner;
CREATE TABLE public.ddlw (id int PRIMARY KEY, v text);
INSERT INTO public.ddlw SELECT g, 'v' || g FROM generate_series(1, 2) g;
RESET ROLE;
SELECT bv_audit.enable('public.ddlw', mode => 'wal');
SET ROLE app_owner;
ALTER TABLE public.ddlw ADD COLUMN z int DEFAULT 7;
ALTER TABLE public.ddlw ALTER COLUMN v TYPE text USING 'forged';
});
caught_up();
is(sql(q{SELECT string_agg((r->>'id') || ':' || (r->>'v') || ':' || (r->>'z'), ' ' ORDER BY (r->>'id')::int) FROM bv_audit.as_of('public.ddlw', now()) r}),
	'1:forged:7 2:forged:7', 'WAL mode: ADD COLUMN ... DEFAULT and ALTER TYPE ... USING are recorded');

# ---------------------------------------------------------------- held
# Every other way a statement reaches a WAL-mode table names its actor:
# FK cascades (DELETE and UPDATE), MERGE, writable CTEs, an auto-updatable
# view, TRUNCATE ... CASCADE; and nested statements of one function call
# each name the actor set before them.
sql(q{
CREATE TABLE public.par (id int PRIMARY KEY);
CREATE TABLE public.ch (id int PRIMARY KEY, pid int REFERENCES public.par ON DELETE CASCADE ON UPDATE CASCADE, v text);
INSERT INTO public.par VALUES (1), (2);
INSERT INTO public.ch VALUES (1, 1, 'a'), (2, 2, 'b'), (3, 1, 'c');
SELECT bv_audit.enable('public.ch', mode => 'wal');
CREATE VIEW public.chv AS SELECT * FROM public.ch;
CREATE TABLE public.src (id int, pid int, v text);
INSERT INTO public.src VALUES (2, 2, 'm'), (9, 1, 'n');
CREATE FUNCTION public.two() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  PERFORM bv.set_actor('g1'); INSERT INTO public.ch VALUES (20, 5, 'x');
  PERFORM bv.set_actor('g2'); UPDATE public.ch SET v = 'y' WHERE id = 20;
END $$;
});
sql(q{
BEGIN; SELECT bv.set_actor('a1'); DELETE FROM public.par WHERE id = 2; COMMIT;
BEGIN; SELECT bv.set_actor('a2'); UPDATE public.par SET id = 5 WHERE id = 1; COMMIT;
BEGIN; SELECT bv.set_actor('a3'); MERGE INTO public.ch USING public.src ON ch.id = src.id
  WHEN MATCHED THEN UPDATE SET v = src.v WHEN NOT MATCHED THEN INSERT VALUES (src.id, 5, src.v); COMMIT;
BEGIN; SELECT bv.set_actor('a4'); WITH x AS (UPDATE public.ch SET v = 'cte' WHERE id = 9 RETURNING 1) SELECT count(*) FROM x; COMMIT;
BEGIN; SELECT bv.set_actor('a5'); INSERT INTO public.chv VALUES (10, 5, 'view'); COMMIT;
BEGIN; SELECT public.two(); COMMIT;
BEGIN; SELECT bv.set_actor('a7'); TRUNCATE public.par CASCADE; COMMIT;
});
caught_up();
is(sql(q{SELECT string_agg(audit_op || ':' || coalesce(id::text, '-') || ':' || audit_actor, ' ' ORDER BY audit_id)
	FROM bv_audit.public__ch WHERE audit_op <> 'S'}),
	'D:2:a1 U:1:a2 U:3:a2 I:2:a3 I:9:a3 U:9:a4 I:10:a5 I:20:g1 U:20:g2 T:-:a7',
	'WAL mode: cascades, MERGE, CTEs, views, nested statements and TRUNCATE CASCADE name their actor');
is(sql(q{SELECT count(*) FROM bv_audit.as_of('public.ch', now())}), '0', '... and as_of(now()) is empty after the TRUNCATE');

# A table owner cannot point a capture trigger at another table's audit table.
sql(q{
CREATE TABLE public.inv (id int PRIMARY KEY, amount int);
INSERT INTO public.inv VALUES (1, 100);
SELECT bv_audit.enable('public.inv');
GRANT USAGE ON SCHEMA bv_audit TO app_owner;
});
my $tid = sql(q{SELECT id FROM bv_audit.tracked WHERE source_table = 'inv'});
($rc, undef, $err) = $node->psql($db, qq{SET ROLE app_owner;
CREATE TABLE public.fake (id int PRIMARY KEY, amount int);
CREATE TRIGGER zz AFTER INSERT ON public.fake FOR EACH ROW EXECUTE FUNCTION bv_audit.capture_trigger('$tid');
INSERT INTO public.fake VALUES (666, 999999);}, on_error_stop => 1);
isnt($rc, 0, 'a capture trigger of another tracked table on an owner\'s table fails');
like($err, qr/is not tracked by bv_audit/, '... because the trigger names another table\'s tracking entry');
is(sql(q{SELECT string_agg(r->>'id', ' ') FROM bv_audit.as_of('public.inv', now()) r}), '1', '... and forges no row in the history');

done_testing();
