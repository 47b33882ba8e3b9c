# bv_audit WAL mode (#19): the first changes after enable(mode => 'wal') are
# recorded, round after round, and wait_for() never says they are covered
# before they are.  Each round enables a new table, writes to it at once in
# short transactions (random inserts, updates and deletes from a seeded
# generator) and compares the history with a model of what committed.
#
# Two kinds of round:
#   fresh: WAL mode was off (no slot); it is turned on while another session
#          holds a transaction id, so the worker's new slot cannot reach its
#          consistent point until that session ends.  The writer enables and
#          writes meanwhile; the holder commits only once the writer is done
#          or waits inside enable().  Before the fix, enable() went ahead as
#          soon as the slot was visible and the writes, committed before the
#          slot's consistent point, were never decoded.
#   busy:  the slot exists; other sessions keep writing to another table
#          while the round's table is enabled and written.
#
# BV_RACE_SEED (default: random, printed) and BV_RACE_ROUNDS (default 20).
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $seed = $ENV{BV_RACE_SEED} // int(rand(1_000_000));
my $rounds = $ENV{BV_RACE_ROUNDS} // 20;
srand($seed);
diag("seed $seed (BV_RACE_SEED=$seed reruns this test), $rounds rounds");

my $node = BvTest::new_node('walrace');
BvTest::create_suite_db($node);
my $db = 'bitvelocity';

sub q1 { return $node->safe_psql($db, $_[0]); }

sub slot_count
{
	return q1(q{SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'bv_audit_wal'});
}

sub set_wal_mode
{
	my ($on) = @_;
	q1("ALTER SYSTEM SET bv_audit.wal_mode = " . ($on ? 'on' : 'off'));
	q1('SELECT pg_reload_conf()');
	return;
}

# Background load for the busy rounds: short writing transactions on a
# table of its own, until told to stop.
q1(q{CREATE TABLE public.noise (id int PRIMARY KEY, v int);
     INSERT INTO public.noise SELECT g, 0 FROM generate_series(1, 50) g;});

sub start_noise
{
	my @h;
	for my $k (1 .. 2)
	{
		my $sql = q{DO $$ BEGIN FOR i IN 1..200000 LOOP
			UPDATE public.noise SET v = v + 1 WHERE id = 1 + (random() * 49)::int;
			COMMIT;
			EXIT WHEN EXISTS (SELECT FROM pg_stat_activity WHERE application_name = 'race_stop');
		END LOOP; END $$;};
		push @h, IPC::Run::start([ $node->installed_command('psql'), '-XAtq', '-d', $node->connstr($db), '-c', $sql ],
			'>', \my $out, '2>', \my $err);
	}
	return @h;
}

sub stop_noise
{
	my @h = @_;
	my $stopper = $node->background_psql($db, extra_params => [ '-v', 'x=1' ]);
	$stopper->query_safe(q{SET application_name = 'race_stop'});
	$_->finish for @h;
	$stopper->quit;
	return;
}

# One round's writes: SQL for the writer and the records the model expects.
sub plan_round
{
	my ($tbl, $nbase) = @_;
	my %live = map { $_ => 0 } 1 .. $nbase;
	my $next = $nbase + 1;
	my (@sql, @expect);
	my $n = 5 + int(rand(20));
	for (1 .. $n)
	{
		my @stmts;
		for (1 .. 1 + int(rand(3)))
		{
			my $r = rand();
			my @ids = sort { $a <=> $b } keys %live;
			if ($r < 0.4 || !@ids)
			{
				my $v = int(rand(1000));
				push @stmts, "INSERT INTO $tbl VALUES ($next, $v)";
				push @expect, "I:$next:$v";
				$live{ $next++ } = $v;
			}
			elsif ($r < 0.8)
			{
				my $id = $ids[ int(rand(@ids)) ];
				my $v = int(rand(1000));
				push @stmts, "UPDATE $tbl SET v = $v WHERE id = $id";
				push @expect, "U:$id:$v";
				$live{$id} = $v;
			}
			else
			{
				my $id = $ids[ int(rand(@ids)) ];
				push @stmts, "DELETE FROM $tbl WHERE id = $id";
				push @expect, "D:$id:$live{$id}";
				delete $live{$id};
			}
		}
		push @sql, @stmts == 1 ? "$stmts[0];" : 'BEGIN; ' . join('; ', @stmts) . '; COMMIT;';
	}
	return (\@sql, \@expect, \%live);
}

my $lost_rounds = 0;
for my $round (1 .. $rounds)
{
	my $kind = $round % 2 ? 'fresh' : 'busy';
	my $tbl = "public.race_$round";
	my $nbase = 1 + int(rand(4));
	q1("CREATE TABLE $tbl (id int PRIMARY KEY, v int);
	    INSERT INTO $tbl SELECT g, 0 FROM generate_series(1, $nbase) g;");
	my ($sql, $expect, $live) = plan_round($tbl, $nbase);
	my $script = "SET application_name = 'race_writer';\n"
	  . "SELECT bv_audit.enable('$tbl', mode => 'wal') IS NOT NULL;\n"
	  . "SELECT 'after enable ' || pg_current_wal_insert_lsn();\n"
	  . join("\n", @$sql) . "\n"
	  . "SELECT 'after writes ' || pg_current_wal_insert_lsn();\n";

	my ($holder, @noise);
	if ($kind eq 'fresh')
	{
		# No table in WAL mode and WAL mode off: the worker drops the slot.
		set_wal_mode(0);
		$node->poll_query_until($db, q{SELECT count(*) = 0 FROM pg_replication_slots WHERE slot_name = 'bv_audit_wal'})
		  or die 'the slot was not dropped';
		$holder = $node->background_psql($db);
		$holder->query_safe('BEGIN');
		$holder->query_safe('SELECT pg_current_xact_id()');
		set_wal_mode(1);
		$node->poll_query_until($db, q{SELECT count(*) = 1 FROM pg_replication_slots WHERE slot_name = 'bv_audit_wal'})
		  or die 'no slot';
	}
	else
	{
		set_wal_mode(1);
		$node->poll_query_until($db, q{SELECT count(*) = 1 FROM pg_replication_slots
		                                WHERE slot_name = 'bv_audit_wal' AND confirmed_flush_lsn IS NOT NULL})
		  or die 'no slot';
		@noise = start_noise();
	}

	my ($out, $err) = ('', '');
	# From a file: IPC::Run feeds a string to stdin only while pumped.
	my $file = $node->basedir . "/race_$round.sql";
	PostgreSQL::Test::Utils::append_to_file($file, $script);
	my $writer = IPC::Run::start(
		[ $node->installed_command('psql'), '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr($db), '-f', $file ],
		'>', \$out, '2>', \$err);
	if ($holder)
	{
		# Until the writer is done, or waits in enable() for the slot.
		$node->poll_query_until($db, qq{
			SELECT (EXISTS (SELECT FROM bv_audit.tracked WHERE relid = '$tbl'::regclass AND mode = 'wal')
			        AND NOT EXISTS (SELECT FROM pg_stat_activity WHERE application_name = 'race_writer'))
			    OR EXISTS (SELECT FROM pg_stat_activity WHERE application_name = 'race_writer'
			                  AND query LIKE '%bv_audit.enable%' AND wait_event = 'PgSleep')})
		  or die 'the writer neither finished nor waited';
		$holder->query_safe('COMMIT');
		$holder->quit;
	}
	$writer->finish;
	stop_noise(@noise) if @noise;
	is($?, 0, "round $round ($kind): the writer ran") or diag($err);

	is(q1(q{SELECT bv_audit.wait_for(pg_current_wal_insert_lsn(), '120 seconds')}), 't',
		"round $round ($kind): the history covers every commit");
	my $got = q1("SELECT coalesce(string_agg(audit_op || ':' || id || ':' || coalesce(v::text, '-'), ' ' ORDER BY audit_id), '')
	                FROM bv_audit.public__race_$round WHERE audit_op <> 'S'");
	my $ok = is($got, join(' ', @$expect), "round $round ($kind): the history equals the model");
	unless ($ok)
	{
		$lost_rounds++;
		diag("writer: $out");
		diag(q1("SELECT format('tracked: wal_lsn %s wal_until %s', wal_lsn, wal_until) FROM bv_audit.tracked WHERE relid = '$tbl'::regclass"));
		diag(q1(q{SELECT format('status: applied %s records %s quarantined %s', applied_lsn, records, quarantined) FROM bv_audit.wal_status()}));
		diag(q1(q{SELECT format('progress: %s', to_jsonb(p)) FROM bv_audit.wal_progress p}));
	}
	my $asof = q1("SELECT coalesce(string_agg((j->>'id') || '=' || (j->>'v'), ' ' ORDER BY (j->>'id')::int), '')
	                 FROM bv_audit.as_of('$tbl', now()) j");
	is($asof, join(' ', map { "$_=$live->{$_}" } sort { $a <=> $b } keys %$live),
		"round $round ($kind): as_of(now) equals the table");
	# Leave WAL mode so that the next fresh round can start without a slot.
	q1("SELECT bv_audit.disable('$tbl')");
}
is($lost_rounds, 0, "no round lost a change (seed $seed)");

$node->stop;
done_testing();
