# bv_audit against a model (#18 "Done when"): a seeded random workload of
# inserts, updates, key changes (single moves, swaps and shifts in one
# statement under a deferred key), deletes, TRUNCATE, rolled-back
# transactions and DDL (ADD COLUMN with and without defaults, DROP COLUMN,
# a new column with a dropped one's name, RENAME COLUMN, ALTER COLUMN TYPE
# with and without USING, a key type change that rewrites every key) runs
# against a tracked table while this test keeps its own copy of the table
# (the model).  At several points in time the model's copy is saved; at the
# end, for every point, three readings of the history must equal it:
#
#   as_of(t, ts)                       the rows at ts
#   history(t, key) up to ts           folded per key, for every key used
#   changes(t, -infinity, ts)          folded from the empty table
#
# The model stores values by column identity, so renames after a point in
# time are compared under the column's current name; a column added after a
# point reads NULL at it; dropped columns are not compared.
#
#   BV_MODEL_SEED=<n>   replay a run (the seed is printed on failure)
#   BV_MODEL_STEPS=<n>  transactions per run (CI: the default, 160)
#   BV_MODEL_MODE=wal   record the table in WAL mode (#19; trigger mode
#                       otherwise); BV_MODEL_SWITCH=1 also switches modes
#                       back and forth at random points of the run
#                       (tests/tap/bv_audit_wal_model*.pl set these)
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $seed = $ENV{BV_MODEL_SEED} // (time() ^ ($$ << 8)) % 1_000_000;
my $steps = $ENV{BV_MODEL_STEPS} // 160;
my $mode = $ENV{BV_MODEL_MODE} // 'trigger';
my $switch = $ENV{BV_MODEL_SWITCH} // 0;
srand($seed);
note("seed $seed, $steps steps, $mode mode" . ($switch ? ', switching' : ''));

# WAL mode is opt-in (bv_audit.wal_mode); trigger mode runs with the
# configuration make run ships, untouched.
my $node = BvTest::new_node('model',
	($mode eq 'wal' || $switch) ? (extra_conf => "bv_audit.wal_mode = on\n") : ());
BvTest::create_suite_db($node);
my $db = 'bitvelocity';

# The table starts empty (no snapshot records): every record is a change.
$node->safe_psql($db, qq{
CREATE TABLE public.m (id int, a int, b text);
ALTER TABLE public.m ADD PRIMARY KEY (id) DEFERRABLE INITIALLY DEFERRED;
-- WAL mode follows rows by the key that deletes and key changes log: a
-- deferrable key is no replica identity, so the whole old row is logged.
ALTER TABLE public.m REPLICA IDENTITY FULL;
SELECT bv_audit.enable('public.m', mode => '$mode');
});

# ---- the model ----
# Columns by identity: cid -> { name, type ('int' | 'text'), live }.
my %col = (
	1 => { name => 'id', type => 'int', live => 1 },
	2 => { name => 'a', type => 'int', live => 1 },
	3 => { name => 'b', type => 'text', live => 1 });
my $next_cid = 4;
my %rows;    # key -> { cid -> value (undef: NULL) }
my @points;  # [ ts, copy of %rows ]
my %keys_used;
my $key_retyped = 0;
my $fresh = 0;
my %ops;        # what the run did, by kind (printed)

sub live_cols { return grep { $col{$_}{live} } sort { $a <=> $b } keys %col; }
sub data_cols { return grep { $_ != 1 } live_cols(); }
sub cid_of { my ($name) = @_; my ($c) = grep { $col{$_}{live} && $col{$_}{name} eq $name } keys %col; return $c; }
sub rand_val { my ($type) = @_; return $type eq 'int' ? int(rand(1000)) : 'v' . int(rand(1000)); }
sub sql_val { my ($v, $type) = @_; return 'NULL' unless defined $v; return $type eq 'int' ? $v : "'$v'"; }
sub free_key { my $k; do { $k = 1 + int(rand(300)) } while exists $rows{$k}; return $k; }
sub pick { my @a = @_; return $a[ int(rand(@a)) ]; }

# Run SQL in one transaction; on success apply the model change.
sub step
{
	my ($sql, $apply) = @_;
	my ($ret, $out, $err) = $node->psql($db, "BEGIN;\n$sql\nCOMMIT;", on_error_stop => 1);
	if ($ret != 0)
	{
		fail("step failed (seed $seed): $sql\n$err");
		diag($node->safe_psql($db, q{SELECT s::text FROM bv_audit.wal_status() s}))
		  if $mode eq 'wal' || $switch;
		done_testing();
		exit 1;
	}
	$apply->();
	$ops{ $1 . ($2 // '') }++ if $sql =~ /^ALTER TABLE public\.m (ADD|DROP|RENAME|ALTER) COLUMN (?:\w+ TYPE \w+( USING)?)?/;
	return;
}

# One random transaction of one to three statements.
sub dml_statement
{
	my $r = rand();
	my @keys = sort { $a <=> $b } keys %rows;
	if ($r < 0.30 || @keys < 4)
	{
		my $k = free_key();
		my @c = live_cols();
		my %v = map { $_ => ($_ == 1 ? $k : (rand() < 0.15 ? undef : rand_val($col{$_}{type}))) } @c;
		my $sql = sprintf('INSERT INTO public.m (%s) VALUES (%s);',
			join(', ', map { $col{$_}{name} } @c),
			join(', ', map { sql_val($v{$_}, $col{$_}{type}) } @c));
		$rows{$k} = \%v;
		$keys_used{$k} = 1;
		$ops{insert}++;
		return $sql;
	}
	if ($r < 0.55 && data_cols())
	{
		my $k = pick(@keys);
		my $c = pick(data_cols());
		my $v = rand() < 0.1 ? undef : rand_val($col{$c}{type});
		$rows{$k}{$c} = $v;
		$ops{update}++;
		return sprintf('UPDATE public.m SET %s = %s WHERE id = %d;', $col{$c}{name}, sql_val($v, $col{$c}{type}), $k);
	}
	if ($r < 0.67)
	{
		# A move, sometimes with another column changed in the same UPDATE.
		my $k = pick(@keys);
		my $n = free_key();
		my $set = "id = $n";
		my $row = delete $rows{$k};
		$row->{1} = $n;
		if (rand() < 0.5 && data_cols())
		{
			my $c = pick(data_cols());
			$row->{$c} = rand_val($col{$c}{type});
			$set .= sprintf(', %s = %s', $col{$c}{name}, sql_val($row->{$c}, $col{$c}{type}));
		}
		$rows{$n} = $row;
		$keys_used{$n} = 1;
		$ops{move}++;
		return "UPDATE public.m SET $set WHERE id = $k;";
	}
	if ($r < 0.74)
	{
		# A swap of two keys in one statement (the key is deferred).
		my ($x, $y) = (pick(@keys), pick(@keys));
		return 'SELECT 1;' if $x == $y;
		($rows{$x}, $rows{$y}) = ($rows{$y}, $rows{$x});
		$rows{$x}{1} = $x;
		$rows{$y}{1} = $y;
		$ops{swap}++;
		return "UPDATE public.m SET id = CASE id WHEN $x THEN $y ELSE $x END WHERE id IN ($x, $y);";
	}
	if ($r < 0.80)
	{
		# A shift of a run of keys by one, in whatever row order.
		my $lo = pick(@keys);
		my @run = grep { $_ >= $lo && $_ < $lo + 4 } @keys;
		my %moving = map { $_ => 1 } @run;
		return 'SELECT 1;' if grep { exists $rows{ $_ + 1 } && !$moving{ $_ + 1 } } @run;
		my %new = map { ($_ + 1) => $rows{$_} } @run;
		delete $rows{$_} for @run;
		for my $k (keys %new) { $new{$k}{1} = $k; $rows{$k} = $new{$k}; $keys_used{$k} = 1; }
		$ops{shift}++;
		return sprintf('UPDATE public.m SET id = id + 1 WHERE id IN (%s);', join(', ', @run));
	}
	if ($r < 0.97)
	{
		my $k = pick(@keys);
		delete $rows{$k};
		$ops{delete}++;
		return "DELETE FROM public.m WHERE id = $k;";
	}
	%rows = ();
	$ops{truncate}++;
	# TRUNCATE refuses to run while deferred key checks are pending.
	return "SET CONSTRAINTS ALL IMMEDIATE;\nTRUNCATE public.m;\nSET CONSTRAINTS ALL DEFERRED;";
}

sub dml_step
{
	my %before = map { $_ => { %{ $rows{$_} } } } keys %rows;
	my $sql = join "\n", map { dml_statement() } 1 .. 1 + int(rand(3));
	if (rand() < 0.08)
	{
		# Rolled back: nothing recorded, the model unchanged.
		%rows = %before;
		$ops{rollback}++;
		my ($ret, $out, $err) = $node->psql($db, "BEGIN;\n$sql\nROLLBACK;", on_error_stop => 1);
		fail("rolled-back step failed (seed $seed): $err") if $ret != 0;
		return;
	}
	my %after = %rows;
	%rows = %before;
	step($sql, sub { %rows = %after; });
	return;
}

sub ddl_step
{
	my $r = rand();
	my @data = data_cols();
	my @dropped = grep { !$col{$_}{live} && !cid_of($col{$_}{name}) } keys %col;
	if ($r < 0.25 || !@data)
	{
		# ADD COLUMN: an int with a default (every row gets it) or a text.
		my $cid = $next_cid++;
		my $name = 'c' . $cid;
		if (@dropped && rand() < 0.5)
		{
			$name = $col{ pick(@dropped) }{name};    # a dropped one's name
		}
		my $with_default = rand() < 0.6;
		my $type = $with_default ? 'int' : pick('int', 'text');
		my $def = int(rand(100));
		step("ALTER TABLE public.m ADD COLUMN $name $type" . ($with_default ? " DEFAULT $def;" : ';'),
			sub {
				$col{$cid} = { name => $name, type => $type, live => 1 };
				$_->{$cid} = $with_default ? $def : undef for values %rows;
			});
		return;
	}
	if ($r < 0.40)
	{
		my $c = pick(@data);
		step("ALTER TABLE public.m DROP COLUMN $col{$c}{name};", sub { $col{$c}{live} = 0; });
		return;
	}
	if ($r < 0.60)
	{
		my $c = pick(@data);
		my $name = (@dropped && rand() < 0.4) ? $col{ pick(@dropped) }{name} : 'r' . ++$fresh;
		step("ALTER TABLE public.m RENAME COLUMN $col{$c}{name} TO $name;", sub { $col{$c}{name} = $name; });
		return;
	}
	if ($r < 0.85)
	{
		# A type change of an int column: bigint, with or without a USING
		# that rewrites every value.
		my @ints = grep { $col{$_}{type} eq 'int' } @data;
		return unless @ints;
		my $c = pick(@ints);
		my $how = pick('none', 'double', 'plus');
		my $using = { none => '', double => " USING $col{$c}{name} * 2", plus => " USING $col{$c}{name} + 1" }->{$how};
		step("ALTER TABLE public.m ALTER COLUMN $col{$c}{name} TYPE bigint$using;",
			sub {
				for my $row (values %rows)
				{
					next unless defined $row->{$c};
					$row->{$c} *= 2 if $how eq 'double';
					$row->{$c} += 1 if $how eq 'plus';
				}
			});
		return;
	}
	if (!$key_retyped)
	{
		# The key's type changes and a USING rewrites every key.
		$key_retyped = 1;
		step('ALTER TABLE public.m ALTER COLUMN id TYPE bigint USING id + 1000;',
			sub {
				my %new;
				for my $k (keys %rows) { $new{ $k + 1000 } = $rows{$k}; $new{ $k + 1000 }{1} = $k + 1000; $keys_used{ $k + 1000 } = 1; }
				%rows = %new;
			});
		return;
	}
	return;
}

for my $i (1 .. $steps)
{
	if ($switch && rand() < 0.05)
	{
		# A switch of mode is a point in the WAL: nothing lost or doubled.
		$mode = $mode eq 'wal' ? 'trigger' : 'wal';
		step("SELECT bv_audit.enable('public.m', mode => '$mode');", sub { });
		$ops{"switch to $mode"}++;
		next;
	}
	rand() < 0.15 ? ddl_step() : dml_step();
	if ($i % int($steps / 6 || 1) == 0 || $i == $steps)
	{
		my $ts = $node->safe_psql($db, 'SELECT clock_timestamp()');
		push @points, [ $ts, { map { $_ => { %{ $rows{$_} } } } keys %rows } ];
	}
}

note('workload: ' . join(', ', map { "$_ $ops{$_}" } sort keys %ops));

# WAL mode: the history lags the commits; wait until it covers them all.
is($node->safe_psql($db, q{SELECT bv_audit.wait_for(pg_current_wal_insert_lsn(), '120 seconds')}),
	't', "the history covers every commit (seed $seed)");
is($node->safe_psql($db, q{SELECT count(*) FROM bv_audit.wal_quarantine}), '0',
	"nothing quarantined (seed $seed)");

# The table itself agrees with the model (a check of the test).
my %table;
for my $line (split /\n/, $node->safe_psql($db,
	q{SELECT j->>'id', e.key, e.value FROM (SELECT to_jsonb(m) AS j FROM public.m) x, jsonb_each_text(x.j) e}))
{
	my ($k, $name, $v) = split /\|/, $line, -1;
	$table{$k}{$name} = $v eq '' ? undef : $v;
}
is_deeply(\%table, { map { my $k = $_; $k => { map { $col{$_}{name} => $rows{$k}{$_} } live_cols() } } keys %rows },
	"the table is the model's copy (seed $seed)");

# Rows as name -> value over the columns live now, from a model copy.
sub expected
{
	my ($copy) = @_;
	return { map { my $k = $_; $k => { map { $col{$_}{name} => $copy->{$k}{$_} } live_cols() } } keys %$copy };
}

# Fold records (operation, key, jsonb text pairs) into rows.
sub fold
{
	my ($sql) = @_;
	my %state;
	my @names = map { $col{$_}{name} } live_cols();
	for my $line (split /\n/, $node->safe_psql($db, $sql))
	{
		my ($op, $k, $json) = split /\|/, $line, 3;
		if ($op eq 'T') { %state = (); next; }
		if ($op eq 'D') { delete $state{$k}; next; }
		my %img;
		for my $pair (split /\x1f/, $json // '')
		{
			my ($n, $v) = split /\x1e/, $pair, -1;
			$img{$n} = $v eq "\x1d" ? undef : $v;
		}
		$state{$k} = { map { $_ => $img{$_} } @names };
	}
	return \%state;
}

# jsonb object -> "name RS value" pairs separated by US; NULL as GS.
my $pairs = q{(SELECT string_agg(e.key || chr(30) || coalesce(e.value, chr(29)), chr(31)) FROM jsonb_each_text(%s) e)};
my $keylist = join ',', sort { $a <=> $b } keys %keys_used;

for my $p (@points)
{
	my ($ts, $copy) = @$p;
	my $want = expected($copy);

	my $as_of = fold(sprintf(q{SELECT 'S', j->>'id', %s FROM bv_audit.as_of('public.m', '%s') j}, sprintf($pairs, 'j'), $ts));
	is_deeply($as_of, $want, "as_of() at $ts is the model's copy (seed $seed)")
	  or diag(explain({ got => $as_of, want => $want }));

	my $changes = fold(sprintf(q{SELECT c.operation, c.row_data->>'id', %s FROM bv_audit.changes('public.m', '-infinity', '%s'::timestamptz + interval '1 microsecond') c ORDER BY c.audit_id},
		sprintf($pairs, 'c.row_data'), $ts));
	is_deeply($changes, $want, "changes() up to $ts, folded, is the model's copy (seed $seed)")
	  or diag(explain({ got => $changes, want => $want }));

	# history() of every key ever used, each folded on its own.
	my %hist;
	for my $line (split /\n/, $node->safe_psql($db, sprintf(
		q{SELECT k, string_agg(h.operation || chr(2) || coalesce(%s, ''), chr(3) ORDER BY h.audit_id)
		    FROM unnest('{%s}'::bigint[]) k
		    CROSS JOIN LATERAL bv_audit.history('public.m', jsonb_build_object('id', k)) h
		   WHERE h.changed_at <= '%s' GROUP BY k},
		sprintf($pairs, 'h.row_data'), $keylist, $ts)))
	{
		my ($k, $recs) = split /\|/, $line, 2;
		my $present;
		for my $rec (split /\x03/, $recs)
		{
			my ($op, $json) = split /\x02/, $rec, 2;
			if ($op eq 'D' || $op eq 'T') { $present = undef; next; }
			my %img;
			for my $pair (split /\x1f/, $json) { my ($n, $v) = split /\x1e/, $pair, -1; $img{$n} = $v eq "\x1d" ? undef : $v; }
			$present = { map { $col{$_}{name} => $img{ $col{$_}{name} } } live_cols() };
		}
		$hist{$k} = $present if $present;
	}
	is_deeply(\%hist, $want, "history() of every key up to $ts is the model's copy (seed $seed)")
	  or diag(explain({ got => \%hist, want => $want }));
}

diag("bv_audit model test failed; replay with BV_MODEL_SEED=$seed BV_MODEL_STEPS=$steps")
  if grep { !$_ } Test::More->builder->summary;
$node->stop;
done_testing();
