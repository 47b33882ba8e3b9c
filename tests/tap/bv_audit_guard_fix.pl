# bv_audit 0.7.0: the rules that fix red-team round 6b findings 2 and 7,
# beyond the red-team tests themselves (tests/tap/bv_redteam6b_audit_*.pl).
#
# Finding 2: a table in WAL mode keeps a primary key: every command that
#   would leave it without one is refused (55000) for every role, also
#   through DROP INDEX ... CASCADE and DROP COLUMN; dropping and adding the
#   key in one ALTER TABLE command stays possible.
# Finding 7: a transaction that has written a table cannot move it into or
#   out of WAL mode (55000); writes after such a call in the same
#   transaction are recorded exactly once, the new way; a rolled-back
#   savepoint's write does not count; trigger mode's disable() after a
#   write stays allowed (the trigger recorded the write).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('auditguardfix', extra_conf => "bv_audit.wal_mode = on\n");
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

# The SQLSTATE of a failing script ('' when it succeeds).
sub sqlstate
{
	my ($script) = @_;
	my ($rc, $out, $err) = $node->psql($db, "\\set VERBOSITY verbose\n$script", on_error_stop => 1);
	return $rc == 0 ? '' : ($err =~ /ERROR:\s+([0-9A-Z]{5})/ ? $1 : "rc $rc: $err");
}

sub records
{
	my ($tbl) = @_;
	return sql(qq{SELECT coalesce(string_agg(audit_op || ':' || coalesce(v, '-'), ' ' ORDER BY audit_id), '') FROM bv_audit.public__$tbl});
}

# ---------------------------------------------------------------- finding 2
sql(q{
CREATE TABLE public.k (id int PRIMARY KEY, v text);
INSERT INTO public.k VALUES (1, 'a'), (2, 'b');
SELECT bv_audit.enable('public.k', mode => 'wal');
CREATE UNIQUE INDEX k_v ON public.k (v);
});
is(sqlstate('ALTER TABLE public.k DROP CONSTRAINT k_pkey'), '55000', 'superuser: DROP CONSTRAINT of the key of a WAL-mode table: 55000');
is(sqlstate('ALTER TABLE public.k DROP COLUMN id'), '55000', 'DROP COLUMN of the key column: 55000');
isnt(sqlstate('DROP INDEX public.k_pkey CASCADE'), '', 'DROP INDEX ... CASCADE of the key index is refused (by PostgreSQL: 2BP01)');
is(sqlstate('BEGIN; ALTER TABLE public.k DROP CONSTRAINT k_pkey, ADD PRIMARY KEY (v); ROLLBACK'), '',
	'dropping and adding the key in one command is allowed');
is(sqlstate('DROP INDEX public.k_v'), '', 'dropping another index is allowed');
sql(q{DELETE FROM public.k WHERE id = 2; UPDATE public.k SET id = 5 WHERE id = 1;});
caught_up();
is(records('k'), 'S:a S:b D:b D:a I:a', 'the key stays: deletes and key changes are recorded');
# Disabled: the key is the owner's business again; trigger mode unchanged.
is(sqlstate(q{SELECT bv_audit.disable('public.k'); ALTER TABLE public.k DROP CONSTRAINT k_pkey}), '',
	'after disable() the key can be dropped');
sql(q{
CREATE TABLE public.kt (id int PRIMARY KEY, v text);
SELECT bv_audit.enable('public.kt');
});
is(sqlstate('BEGIN; ALTER TABLE public.kt DROP CONSTRAINT kt_pkey; ALTER TABLE public.kt ADD PRIMARY KEY (id); COMMIT'), '',
	'trigger mode: the key can still be dropped and added in two commands');

# ---------------------------------------------------------------- finding 7
for my $n (qw(w1 w2 w3 w4 w5))
{
	sql(qq{CREATE TABLE public.$n (id int PRIMARY KEY, v text); INSERT INTO public.$n VALUES (1, 'v0');});
}
sql(q{SELECT bv_audit.enable('public.w1', mode => 'trigger'); SELECT bv_audit.enable('public.w2', mode => 'wal');
      SELECT bv_audit.enable('public.w3', mode => 'wal'); SELECT bv_audit.enable('public.w5', mode => 'trigger');});
is(sqlstate(q{BEGIN; INSERT INTO public.w4 VALUES (2, 'x'); SELECT bv_audit.enable('public.w4', mode => 'wal'); COMMIT}), '55000',
	'a first enable(wal) after a write of the same transaction: 55000');
is(sqlstate(q{BEGIN; DELETE FROM public.w3; SELECT bv_audit.disable('public.w3'); COMMIT}), '55000',
	'disable() of a WAL-mode table after a DELETE: 55000');
is(sqlstate(q{BEGIN; COPY public.w3 FROM stdin;
2	c
\.
SELECT bv_audit.enable('public.w3', mode => 'trigger'); COMMIT}), '55000', 'a switch to trigger mode after COPY FROM: 55000');
# Writes after the call, in the same transaction: recorded once, the new way.
is(sqlstate(q{BEGIN; SELECT bv_audit.enable('public.w1', mode => 'wal'); UPDATE public.w1 SET v = 'x1'; COMMIT}), '',
	'trigger -> WAL, then an UPDATE: allowed');
is(sqlstate(q{BEGIN; SELECT bv_audit.enable('public.w2', mode => 'trigger'); UPDATE public.w2 SET v = 'x1'; COMMIT}), '',
	'WAL -> trigger, then an UPDATE: allowed');
is(sqlstate(q{BEGIN; SELECT bv_audit.disable('public.w3'); UPDATE public.w3 SET v = 'x1'; COMMIT}), '',
	'disable() of a WAL-mode table, then an UPDATE: allowed');
is(sqlstate(q{BEGIN; SAVEPOINT s; UPDATE public.w4 SET v = 'gone'; ROLLBACK TO s; SELECT bv_audit.enable('public.w4', mode => 'wal'); UPDATE public.w4 SET v = 'x1'; COMMIT}), '',
	'a write rolled back to a savepoint does not count');
is(sqlstate(q{BEGIN; UPDATE public.w5 SET v = 'x1'; SELECT bv_audit.disable('public.w5'); UPDATE public.w5 SET v = 'x2'; COMMIT}), '',
	'trigger mode: disable() after a write stays allowed');
caught_up();
is(records('w1'), 'S:v0 U:x1', 'trigger -> WAL: the later UPDATE recorded once');
is(records('w2'), 'S:v0 U:x1', 'WAL -> trigger: the later UPDATE recorded once');
is(records('w3'), 'S:v0', 'disable(): the later UPDATE not recorded');
is(records('w4'), 'S:v0 U:x1', 'enable(wal) after a rolled-back write: the later UPDATE recorded once');
is(records('w5'), 'S:v0 U:x1', 'trigger mode: the write before disable() recorded');
is(sql('SELECT count(*) FROM bv_audit.wal_quarantine'), '0', 'nothing quarantined');

done_testing();
