# Red-team round 6b (bv_audit, both modes): as_of() reads a version before
# it existed when an older transaction writes a row after a younger one.
#
# Finding 5: records carry their transaction's *start* time (audit_ts) and
#   are ordered by audit_id (lock and commit order).  as_of(tbl, ts) takes,
#   per key, the record with the highest audit_id among those with
#   audit_ts <= ts.  Transaction A starts (t0), B updates the row to v1 and
#   commits (start t1 > t0), then, at tm, the table holds v1; A then
#   updates the row to v2 and commits.  as_of(tm) answers v2: a value the
#   row only got after tm, and wrong under either reading of time (by
#   commit, the row held v1; by transaction start, B's t1 is the latest
#   start <= tm, so v1 again).  docs/bv_audit.md: as_of() gives "the table's
#   rows at ts ... Exact from enable() on"; its limits say times are start
#   times and audit_id orders a row's records, which is what makes as_of()
#   combine the two inconsistently.  A long transaction (a batch job that
#   started before a user's edit) rewrites the past of every reading
#   between its start and its commit.  The same holds in WAL mode.
#
# Fixed in 0.7.0: a record's time is the clock at capture (trigger mode;
#   records written by SQL too) or the commit time (WAL mode); see
#   docs/bv_audit.md "Time".
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('red6border', extra_conf => "bv_audit.wal_mode = on\n");
BvTest::create_suite_db($node);
my $db = 'bitvelocity';
sub sql { return $node->safe_psql($db, $_[0]); }

$node->poll_query_until($db, q{SELECT count(*) = 1 FROM pg_replication_slots WHERE slot_name = 'bv_audit_wal'})
  or die 'no slot';

for my $mode (qw(trigger wal))
{
	sql(qq{
CREATE TABLE public.o_$mode (id int PRIMARY KEY, v text);
INSERT INTO public.o_$mode VALUES (1, 'v0');
SELECT bv_audit.enable('public.o_$mode', mode => '$mode');
});
	# A: starts first, writes last.
	my $a = $node->background_psql($db);
	$a->query_safe('BEGIN; SELECT pg_current_xact_id();');
	# B: starts after A, writes and commits.
	sql(qq{UPDATE public.o_$mode SET v = 'v1' WHERE id = 1});
	my $tm = sql('SELECT clock_timestamp()');
	is(sql(qq{SELECT v FROM public.o_$mode WHERE id = 1}), 'v1', "$mode mode: control: at tm the table holds v1");
	$a->query_safe(qq{UPDATE public.o_$mode SET v = 'v2' WHERE id = 1; COMMIT;});
	$a->quit;
	if ($mode eq 'wal')
	{
		die 'the WAL worker did not catch up'
		  unless sql(q{SELECT bv_audit.wait_for(pg_current_wal_insert_lsn(), '120 seconds')}) eq 't';
	}
	is(sql(qq{SELECT string_agg(r->>'v', ' ') FROM bv_audit.as_of('public.o_$mode', now()) r}), 'v2',
		"$mode mode: control: as_of(now()) holds v2");
	is(sql(qq{SELECT string_agg(operation || ':' || (row_data->>'v'), ' ' ORDER BY audit_id) FROM bv_audit.history('public.o_$mode', '{"id": 1}')}),
		'S:v0 U:v1 U:v2', "$mode mode: control: history() lists the versions in the order they were written");
	is(sql(qq{SELECT string_agg(r->>'v', ' ') FROM bv_audit.as_of('public.o_$mode', '$tm') r}), 'v1',
		"$mode mode: as_of(tm) shows v1, what the row held at tm, not the later v2");
	# The rule behind it: per key, times never go back in audit_id order.
	is(sql(qq{SELECT count(*) FROM (SELECT changed_at < lag(changed_at) OVER (ORDER BY audit_id) AS back
		FROM bv_audit.history('public.o_$mode', '{"id": 1}')) h WHERE back}), '0',
		"$mode mode: audit_ts is non-decreasing in audit_id order");

	# The same with records written by SQL: ADD COLUMN ... DEFAULT records
	# every row again (_record_rows), in a transaction that started before
	# a younger one updated the row.
	my $e = $node->background_psql($db);
	$e->query_safe('BEGIN; SELECT pg_current_xact_id();');
	sql(qq{UPDATE public.o_$mode SET v = 'v3' WHERE id = 1});
	my $tm2 = sql('SELECT clock_timestamp()');
	$e->query_safe(qq{ALTER TABLE public.o_$mode ADD COLUMN w int DEFAULT 5; COMMIT;});
	$e->quit;
	if ($mode eq 'wal')
	{
		die 'the WAL worker did not catch up'
		  unless sql(q{SELECT bv_audit.wait_for(pg_current_wal_insert_lsn(), '120 seconds')}) eq 't';
	}
	is(sql(qq{SELECT string_agg((r->>'v') || ':' || coalesce(r->>'w', '-'), ' ') FROM bv_audit.as_of('public.o_$mode', now()) r}),
		'v3:5', "$mode mode: control: ADD COLUMN DEFAULT recorded the row again");
	is(sql(qq{SELECT string_agg((r->>'v') || ':' || coalesce(r->>'w', '-'), ' ') FROM bv_audit.as_of('public.o_$mode', '$tm2') r}),
		'v3:-', "$mode mode: as_of(tm2) does not show the column added after tm2");
	is(sql(qq{SELECT count(*) FROM (SELECT changed_at < lag(changed_at) OVER (ORDER BY audit_id) AS back
		FROM bv_audit.history('public.o_$mode', '{"id": 1}')) h WHERE back}), '0',
		"$mode mode: audit_ts is non-decreasing in audit_id order, records written by SQL included");
}

done_testing();
