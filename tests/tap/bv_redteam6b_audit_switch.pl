# Red-team round 6b (bv_audit): writes in the transaction that switches a
# table between trigger and WAL mode, or disables or re-enables it.
#
# Finding 7: docs/bv_audit.md promises, for WAL mode and across switches,
#   "every committed change is recorded once, none twice", and "changes
#   committed before [the switch] are recorded the old way, after it the
#   new way".  The refusal of a switch by "a transaction that has written
#   already" (55000) applies only while the worker's slot is not yet
#   consistent; with a running worker these transactions commit, and:
#   (a) trigger -> WAL after an UPDATE in the same transaction: the UPDATE
#       is recorded twice (by the trigger, then by the worker);
#   (b) WAL -> trigger after an UPDATE: the UPDATE is not recorded at all;
#   (c) WAL mode, UPDATE, then disable(): the UPDATE, made while the table
#       was tracked, is not recorded (trigger mode records it);
#   (d) disable(), UPDATE, enable(mode => 'wal'): the snapshot of enable()
#       holds the new value, and the worker adds a U of the change made
#       while tracking was off (a record of nothing).
#   Whoever may switch modes (bv_admin) can so write a tracked table in
#   one transaction without a record: "cannot change or delete records" is
#   circumvented by never producing one.  Expected: each committed change
#   recorded exactly once, or the switch refused (55000) in a transaction
#   that has written the table.
# Finding 10: WAL mode, a column that stops being excluded.  enable(tbl,
#   '{doc}', mode => 'wal'), then enable(tbl, '{}') (documented: "the
#   exclusions ... updated, columns re-synced, no second snapshot").  An
#   UPDATE that leaves a TOASTed doc unchanged does not log it, and the
#   worker takes it "from the last record", which has none: the record and
#   as_of(now()) say doc is NULL for as long as doc is not rewritten,
#   although the row holds it (trigger mode records it at the first U).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('red6bswitch', extra_conf => "bv_audit.wal_mode = on\n");
BvTest::create_suite_db($node);
my $db = 'bitvelocity';
sub sql { return $node->safe_psql($db, $_[0]); }

$node->poll_query_until($db, q{SELECT count(*) = 1 FROM pg_replication_slots WHERE slot_name = 'bv_audit_wal'})
  or die 'no slot';

# name => [initial mode, the transaction, records expected if it committed]
my %case = (
	a => ['trigger', q{UPDATE public.s_a SET v = 'x1'; SELECT bv_audit.enable('public.s_a', mode => 'wal'); UPDATE public.s_a SET v = 'x2'},
		'S:v0 U:x1 U:x2'],
	b => ['wal', q{UPDATE public.s_b SET v = 'x1'; SELECT bv_audit.enable('public.s_b', mode => 'trigger'); UPDATE public.s_b SET v = 'x2'},
		'S:v0 U:x1 U:x2'],
	c => ['wal', q{UPDATE public.s_c SET v = 'x1'; SELECT bv_audit.disable('public.s_c'); UPDATE public.s_c SET v = 'x2'},
		'S:v0 U:x1'],
	d => ['wal', q{SELECT bv_audit.disable('public.s_d'); UPDATE public.s_d SET v = 'x1'; SELECT bv_audit.enable('public.s_d', mode => 'wal'); UPDATE public.s_d SET v = 'x2'},
		'S:v0 S:x1 U:x2'],
	# controls: the same in trigger mode only
	t => ['trigger', q{UPDATE public.s_t SET v = 'x1'; SELECT bv_audit.disable('public.s_t'); UPDATE public.s_t SET v = 'x2'},
		'S:v0 U:x1'],
);
for my $n (sort keys %case)
{
	sql(qq{
CREATE TABLE public.s_$n (id int PRIMARY KEY, v text);
INSERT INTO public.s_$n VALUES (1, 'v0');
SELECT bv_audit.enable('public.s_$n', mode => '$case{$n}[0]');
});
}
my %committed;
for my $n (sort keys %case)
{
	my ($rc, undef, $err) = $node->psql($db, "BEGIN; $case{$n}[1]; COMMIT;", on_error_stop => 1);
	$committed{$n} = sql("SELECT v FROM public.s_$n") ne 'v0';
	note "case $n: " . ($committed{$n} ? 'committed' : "refused: $err");
}
die 'the WAL worker did not catch up'
  unless sql(q{SELECT bv_audit.wait_for(pg_current_wal_insert_lsn(), '120 seconds')}) eq 't';

sub records
{
	my ($n) = @_;
	return sql(qq{SELECT string_agg(audit_op || ':' || v, ' ' ORDER BY audit_id) FROM bv_audit.public__s_$n});
}
sub expected { my ($n) = @_; return $committed{$n} ? $case{$n}[2] : 'S:v0'; }

is(records('t'), expected('t'), 'control: trigger mode, UPDATE then disable() in one transaction: the UPDATE is recorded');
# Fixed in 0.7.0 (finding 7): refused (55000) in a transaction that wrote the table.
# Got (0.6.0): a S:v0 U:x1 U:x1 U:x2; b S:v0 U:x2; c S:v0; d S:v0 S:x1 U:x1 U:x2
is(records('a'), expected('a'), 'trigger -> WAL after an UPDATE in the same transaction: each change recorded once');
is(records('b'), expected('b'), 'WAL -> trigger after an UPDATE in the same transaction: no change lost');
is(records('c'), expected('c'), 'WAL mode, UPDATE, disable(): the UPDATE made while tracked is recorded');
is(records('d'), expected('d'), 'disable(), UPDATE, enable(wal): no record of the change made while disabled');
is(sql('SELECT count(*) FROM bv_audit.wal_quarantine'), '0', 'nothing quarantined');

# ---------------------------------------------------------------- finding 10
for my $mode (qw(trigger wal))
{
	sql(qq{
CREATE TABLE public.tt_$mode (id int PRIMARY KEY, v int, doc text);
INSERT INTO public.tt_$mode SELECT 1, 1, string_agg(md5(g::text), '') FROM generate_series(1, 400) g;
SELECT bv_audit.enable('public.tt_$mode', '{doc}', mode => '$mode');
SELECT bv_audit.enable('public.tt_$mode', '{}', mode => '$mode');
UPDATE public.tt_$mode SET v = 2;
});
}
die 'the WAL worker did not catch up'
  unless sql(q{SELECT bv_audit.wait_for(pg_current_wal_insert_lsn(), '120 seconds')}) eq 't';
is(sql(q{SELECT r->>'v' || ':' || coalesce(length(r->>'doc'), 0) FROM bv_audit.as_of('public.tt_trigger', now()) r}), '2:12800',
	'control: trigger mode records the formerly excluded column at the next UPDATE');
# Fixed in 0.7.0 (finding 10): the commit of enable() records the column.
is(sql(q{SELECT r->>'v' || ':' || coalesce(length(r->>'doc'), 0) FROM bv_audit.as_of('public.tt_wal', now()) r}), '2:12800',
	'WAL mode: as_of(now()) holds the formerly excluded column after an UPDATE');

done_testing();
