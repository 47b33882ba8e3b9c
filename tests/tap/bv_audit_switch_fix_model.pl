# bv_audit 0.7.0, red-team 6b finding 7 against a model: random
# transactions mix UPDATEs of one row with enable() (either mode) and
# disable() of its table.  Model of the 0.7.0 rule:
#   - the table's WAL window is "open" while it is enabled in WAL mode; a
#     call that opens or closes it (enable(wal) from closed, enable(trigger)
#     or disable() from open) after an UPDATE of the same transaction is
#     refused (55000), and the transaction rolls back;
#   - an UPDATE is recorded exactly once when, at the UPDATE, the table is
#     enabled (trigger or WAL mode), and never otherwise.
# Every UPDATE writes a fresh token, so the U records must be exactly the
# recorded tokens, each once.  Seeded: BV_SEED=<n> repeats a run.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $seed = $ENV{BV_SEED} // int(rand(1_000_000));
srand($seed);
note "seed $seed (BV_SEED=$seed repeats this run)";

my $node = BvTest::new_node('auditswitchmodel', extra_conf => "bv_audit.wal_mode = on\n");
BvTest::create_suite_db($node);
my $db = 'bitvelocity';
sub sql { return $node->safe_psql($db, $_[0]); }

$node->poll_query_until($db, q{SELECT count(*) = 1 FROM pg_replication_slots WHERE slot_name = 'bv_audit_wal'})
  or die 'no slot';

sql(q{CREATE TABLE public.m (id int PRIMARY KEY, v text); INSERT INTO public.m VALUES (1, 't0');
      SELECT bv_audit.enable('public.m', mode => 'trigger');});
my %st = (enabled => 1, mode => 'trigger');
my @expected;
my ($token, $refusals, $mismatch) = (0, 0, 0);

for my $x (1 .. 40)
{
	my %s = %st;
	my ($wrote, $refused, @rec, @sql) = (0, 0);
	for (1 .. 1 + int(rand(4)))
	{
		my $r = rand();
		if ($r < 0.5)
		{
			$token++;
			push @sql, "UPDATE public.m SET v = 't$token'";
			push @rec, "t$token" if $s{enabled};
			$wrote = 1;
			next;
		}
		my $open = $s{enabled} && $s{mode} eq 'wal';
		my ($call, $now_open);
		if ($r < 0.7) { $call = "SELECT bv_audit.enable('public.m', mode => 'wal')"; @s{qw(enabled mode)} = (1, 'wal'); }
		elsif ($r < 0.85) { $call = "SELECT bv_audit.enable('public.m', mode => 'trigger')"; @s{qw(enabled mode)} = (1, 'trigger'); }
		else { $call = "SELECT bv_audit.disable('public.m')"; $s{enabled} = 0; }
		$now_open = $s{enabled} && $s{mode} eq 'wal';
		$refused = 1 if $wrote && ($open xor $now_open);
		push @sql, $call;
	}
	my ($rc, undef, $err) = $node->psql($db, "\\set VERBOSITY verbose\nBEGIN;\n" . join(";\n", @sql) . ";\nCOMMIT;", on_error_stop => 1);
	my $got_refused = $rc != 0;
	if ($got_refused != $refused || ($got_refused && $err !~ /55000/))
	{
		$mismatch++;
		diag "transaction $x: model says " . ($refused ? 'refused' : 'committed') . ", got rc $rc $err; " . join('; ', @sql);
	}
	$refusals++ if $got_refused;
	next if $got_refused;
	%st = %s;
	push @expected, @rec;
}
die 'the WAL worker did not catch up'
  unless sql(q{SELECT bv_audit.wait_for(pg_current_wal_insert_lsn(), '120 seconds')}) eq 't';
is($mismatch, 0, "seed $seed: every transaction committed or was refused as the model says");
is(sql(q{SELECT coalesce(string_agg(v, ' ' ORDER BY audit_id), '') FROM bv_audit.public__m WHERE audit_op = 'U'}),
	join(' ', @expected), "seed $seed: each UPDATE made while tracked recorded once, in order, and no other");
if ($st{enabled})
{
	is(sql(q{SELECT r->>'v' FROM bv_audit.as_of('public.m', now()) r}), sql('SELECT v FROM public.m'),
		"seed $seed: as_of(now()) agrees with the table");
}
is(sql('SELECT count(*) FROM bv_audit.wal_quarantine'), '0', 'nothing quarantined');
note "transactions refused: $refusals";

done_testing();
