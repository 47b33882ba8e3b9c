# bv_audit's seal under concurrent commits (issue #18 item 9): writers whose
# transactions start long before they take a transaction id, short and long
# transactions interleaved, while another session seals every few
# milliseconds and a third verifies.  At the end every record must be
# covered by exactly one seal whose transaction-id range holds it, and
# verify() must be clean.
#
# BV_SEAL_SECONDS sets how long the writers run (default 60, the CI size);
# run it longer to look for rarer interleavings, e.g. BV_SEAL_SECONDS=600.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use BvTest;

my $seconds = $ENV{BV_SEAL_SECONDS} // 60;
my $node = BvTest::new_node('seal_concurrency');
BvTest::create_suite_db($node);
my $db = 'bitvelocity';

$node->safe_psql($db, q{
CREATE TABLE public.sc_acc (id int PRIMARY KEY, balance bigint NOT NULL);
INSERT INTO public.sc_acc SELECT g, 0 FROM generate_series(1, 200) g;
CREATE TABLE public.sc_log (id bigserial PRIMARY KEY, acc int NOT NULL, at timestamptz);
SELECT bv_audit.enable('public.sc_acc');
SELECT bv_audit.enable('public.sc_log');
});

# A writer transaction starts (its audit_ts are at least this start), waits, and only
# then takes its transaction id; some wait long, so that transactions with
# older start times commit after younger ones and the oldest running
# transaction changes under the sealer all the time.
my $writer = "$PostgreSQL::Test::Utils::tmp_check/seal_writer.sql";
open my $fh, '>', $writer or die "cannot write $writer: $!";
print $fh <<'SQL';
\set id random(1, 200)
\set before random_exponential(0, 60, 4)
\set after random(0, 3)
BEGIN;
SELECT 1;
\sleep :before ms
UPDATE public.sc_acc SET balance = balance + 1 WHERE id = :id;
INSERT INTO public.sc_log (acc, at) VALUES (:id, clock_timestamp());
\sleep :after ms
INSERT INTO public.sc_log (acc, at) VALUES (:id, clock_timestamp());
END;
SQL
close $fh;

my $sealer = "$PostgreSQL::Test::Utils::tmp_check/sealer.sql";
open $fh, '>', $sealer or die "cannot write $sealer: $!";
print $fh "SELECT bv_audit.seal();\n\\sleep 3 ms\n";
close $fh;

my @conn = ('-h', $node->host, '-p', $node->port, $db);
my ($wout, $werr, $sout, $serr) = ('', '', '', '');
my $writers = IPC::Run::start(
	[ 'pgbench', '-n', '-c', '4', '-j', '4', '-T', $seconds, '-f', $writer, @conn ],
	'>', \$wout, '2>', \$werr);
my $sealing = IPC::Run::start(
	[ 'pgbench', '-n', '-c', '1', '-j', '1', '-T', $seconds, '-f', $sealer, @conn ],
	'>', \$sout, '2>', \$serr);

# verify() while both run: what is sealed must always check out.
my $deadline = time() + $seconds;
my ($verifies, @bad) = (0);
while (time() < $deadline - 1)
{
	foreach my $t ('public.sc_acc', 'public.sc_log')
	{
		my $r = $node->safe_psql($db,
			"SELECT ok, problem, audit_id, seal_no FROM bv_audit.verify('$t')");
		$verifies++;
		push @bad, "$t: $r" unless $r =~ /^t\|/;
	}
	usleep(2_000_000);
}
$writers->finish;
is($?, 0, 'writers ran without errors') or diag("pgbench stderr: $werr");
$sealing->finish;
is($?, 0, 'the sealer ran without errors') or diag("pgbench stderr: $serr");
is_deeply(\@bad, [], "verify() was clean each of the $verifies times it ran during the load");

# Seal until each table's last seal ends above its newest record; with the
# writers gone, every transaction that wrote has ended.
foreach my $t ('sc_acc', 'sc_log')
{
	$node->poll_query_until($db, qq{
SELECT bv_audit.seal() >= 0
   AND (SELECT max(s.xid_hi) FROM bv_audit.seals s JOIN bv_audit.tracked t ON t.id = s.tracked_id
         WHERE t.relid = 'public.$t'::regclass)
       > (SELECT max(audit_xid) FROM bv_audit.public__$t)})
	  or die "the seal of $t did not catch up";
}

foreach my $t ('sc_acc', 'sc_log')
{
	my ($records, $seals) = split /\|/, $node->safe_psql($db, qq{
SELECT (SELECT count(*) FROM bv_audit.public__$t),
       (SELECT count(*) FROM bv_audit.seals s JOIN bv_audit.tracked t ON t.id = s.tracked_id
         WHERE t.relid = 'public.$t'::regclass)});
	cmp_ok($seals, '>', 10, "$t: $records records under $seals seals");
	is( $node->safe_psql($db, qq{
SELECT count(*) FROM bv_audit.public__$t a
 WHERE NOT EXISTS (SELECT FROM bv_audit.seal_entries e JOIN bv_audit.tracked t ON t.id = e.tracked_id
                    WHERE t.relid = 'public.$t'::regclass AND e.audit_id = a.audit_id)}),
		'0', "$t: every record is covered by a seal");
	# The entries' primary key is (tracked_id, audit_id): at most one each.
	is( $node->safe_psql($db, qq{
SELECT count(*) FROM bv_audit.seal_entries e
  JOIN bv_audit.tracked t ON t.id = e.tracked_id AND t.relid = 'public.$t'::regclass
  JOIN bv_audit.seals s ON s.tracked_id = e.tracked_id AND s.seal_no = e.seal_no
  LEFT JOIN bv_audit.public__$t a ON a.audit_id = e.audit_id
 WHERE a.audit_id IS NULL OR NOT (a.audit_xid >= s.xid_lo AND a.audit_xid < s.xid_hi)}),
		'0', "$t: each record's seal is the one whose transaction-id range holds it");
	is( $node->safe_psql($db, qq{
SELECT sum(s.row_count) = (SELECT count(*) FROM bv_audit.public__$t)
  FROM bv_audit.seals s JOIN bv_audit.tracked t ON t.id = s.tracked_id
 WHERE t.relid = 'public.$t'::regclass AND s.kind = 'seal'}),
		't', "$t: the seals' record counts add up to the records");
	is( $node->safe_psql($db,
			"SELECT ok, problem, records_checked = $records FROM bv_audit.verify('public.$t')"),
		't||t', "$t: verify() checks every record and finds nothing");
}

$node->stop;
done_testing();
