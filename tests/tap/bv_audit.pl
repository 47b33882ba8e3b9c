# bv_audit under concurrency and over time: concurrent writers while the
# table is altered, TRUNCATE, retention purge run by pg_cron, and seal +
# verify catching a record altered by a superuser.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

# The node has exactly the suite's configuration (tools/bitvelocity.conf).
my $node = BvTest::new_node('audit');
BvTest::create_suite_db($node);
my $db = 'bitvelocity';

$node->safe_psql($db, q{
CREATE TABLE public.acc (id bigint PRIMARY KEY, balance bigint NOT NULL, note text);
INSERT INTO public.acc SELECT g, 0, 'n' FROM generate_series(1, 1000) g;
CREATE SEQUENCE public.acc_ins START 1000001;
SELECT bv_audit.stamp('public.acc');
SELECT bv_audit.enable('public.acc');
});

# ---- concurrent writers, and ALTER TABLE while they run ----
my $script = "$PostgreSQL::Test::Utils::tmp_check/audit_writers.sql";
open my $fh, '>', $script or die "cannot write $script: $!";
print $fh <<'SQL';
\set id random(1, 1000)
UPDATE public.acc SET balance = balance + 1 WHERE id = :id;
INSERT INTO public.acc (id, balance) VALUES (nextval('public.acc_ins'), 0);
SQL
close $fh;

my ($out, $err) = ('', '');
my $writers = IPC::Run::start(
	[
		'pgbench', '-n', '-M', 'prepared', '-c', '4', '-j', '4', '-T', '8',
		'-f', $script, '-h', $node->host, '-p', $node->port, $db
	],
	'>', \$out, '2>', \$err);

$node->poll_query_until($db,
	q{SELECT count(*) > 300 FROM bv_audit.public__acc WHERE audit_op = 'I'})
  or die 'writers did not start';
# Each ALTER waits for the writers' row locks and then every writer must
# pick up the new shape of the table (relcache invalidation of its cache).
$node->safe_psql($db, q{ALTER TABLE public.acc ADD COLUMN extra text NOT NULL DEFAULT 'x'});
my $after_add = $node->safe_psql($db, q{SELECT max(audit_id) FROM bv_audit.public__acc});
$node->safe_psql($db, q{ALTER TABLE public.acc RENAME COLUMN note TO remark});
$node->poll_query_until($db,
	qq{SELECT count(*) > 100 FROM bv_audit.public__acc WHERE audit_op = 'I' AND audit_id > $after_add})
  or die 'writers stopped after ALTER TABLE';
$writers->finish;
is($?, 0, 'writers ran through ALTER TABLE without errors')
  or diag("pgbench stderr: $err");

my ($inserted, $updated) = split /\|/, $node->safe_psql($db, q{
SELECT (SELECT count(*) FROM public.acc WHERE id > 1000),
       (SELECT sum(balance) FROM public.acc)});
cmp_ok($inserted, '>', 0, "writers inserted $inserted rows");
is( $node->safe_psql($db, q{SELECT count(*) FROM bv_audit.public__acc WHERE audit_op = 'I'}),
	$inserted, 'one audit record per insert, none lost or doubled');
# ADD COLUMN ... DEFAULT records one U per row naming the new column (#18 item 2).
is( $node->safe_psql($db, q{SELECT count(*) FROM bv_audit.public__acc WHERE audit_op = 'U' AND audit_changed <> '{extra}'}),
	$updated, 'one audit record per update, none lost or doubled');
is( $node->safe_psql($db,
		qq{SELECT count(*) FROM bv_audit.public__acc WHERE audit_id > $after_add AND audit_op IN ('I', 'U') AND extra IS DISTINCT FROM 'x'}),
	'0', 'every record written after ADD COLUMN carries the new column');
is( $node->safe_psql($db,
		q{SELECT string_agg(attname, ',' ORDER BY attname) FROM pg_attribute WHERE attrelid = 'bv_audit.public__acc'::regclass AND attname IN ('note', 'remark', 'extra')}),
	'extra,remark', 'ADD and RENAME COLUMN are mirrored');
is( $node->safe_psql($db,
		q{SELECT count(*) FROM public.acc a WHERE a.created_by IS NULL AND a.id > 1000}),
	'0', 'stamp trigger filled every inserted row');


# ---- audit_id order across backends and restarts ----
# The writers took their ids from one block in shared memory (audit_id.c):
# every row's versions, in audit_id order, show its balance growing by one.
is( $node->safe_psql($db, q{
SELECT count(*) FROM (
    SELECT balance - lag(balance) OVER (PARTITION BY id ORDER BY audit_id) AS step
      FROM bv_audit.public__acc WHERE audit_op IN ('S', 'U') AND audit_changed IS DISTINCT FROM '{extra}') s
 WHERE step IS DISTINCT FROM 1 AND step IS NOT NULL}),
	'0', "concurrent writers' versions of a row are in audit_id order");
# A crash loses the rest of the block in shared memory; ids go on above
# every id written before it, from a new block of the sequence.
my $before_crash = $node->safe_psql($db, q{SELECT max(audit_id) FROM bv_audit.public__acc});
$node->stop('immediate');
$node->start;
$node->safe_psql($db, q{UPDATE public.acc SET balance = balance + 1 WHERE id = 1});
cmp_ok($node->safe_psql($db, q{SELECT max(audit_id) FROM bv_audit.public__acc}),
	'>', $before_crash, 'after a crash, new audit ids are above every earlier one');

# ---- TRUNCATE ----
$node->safe_psql($db, 'TRUNCATE public.acc');
is( $node->safe_psql($db,
		q{SELECT audit_op FROM bv_audit.public__acc ORDER BY audit_id DESC LIMIT 1}),
	'T', 'TRUNCATE is recorded');
is($node->safe_psql($db, q{SELECT count(*) FROM bv_audit.as_of('public.acc', now())}),
	'0', 'as_of() after TRUNCATE is empty');

# ---- seal + verify, a superuser alters a record ----
$node->safe_psql($db, 'SELECT bv_audit.seal()');
$node->poll_query_until($db, q{
SELECT bv_audit.seal() IS NOT NULL
   AND (SELECT max(e.audit_id) FROM bv_audit.seal_entries e JOIN bv_audit.tracked t ON t.id = e.tracked_id
         WHERE t.relid = 'public.acc'::regclass) = (SELECT max(audit_id) FROM bv_audit.public__acc)})
  or die 'seal did not catch up';
is($node->safe_psql($db, q{SELECT ok FROM bv_audit.verify('public.acc')}),
	't', 'verify() accepts the sealed history');
my $victim = $node->safe_psql($db,
	q{SELECT audit_id FROM bv_audit.public__acc WHERE audit_op = 'U' ORDER BY audit_id LIMIT 1 OFFSET 10});
my ($ret, $stdout, $stderr) = $node->psql($db,
	qq{UPDATE bv_audit.public__acc SET balance = balance + 1000 WHERE audit_id = $victim});
like($stderr, qr/append-only/, 'a plain UPDATE of the audit table is refused');
$node->safe_psql($db, qq{
SET session_replication_role = replica;
UPDATE bv_audit.public__acc SET balance = balance + 1000 WHERE audit_id = $victim;
});
is( $node->safe_psql($db, q{SELECT ok, problem, audit_id FROM bv_audit.verify('public.acc')}),
	"f|record altered|$victim", 'verify() names the record the superuser altered');

# ---- retention purge run by pg_cron ----
# purge() removes sealed records only (0.4.0): the imported old record goes
# to a table of its own, whose first seal covers it (public.acc was
# tampered with above, and a seal never covers a backdated record later).
$node->safe_psql($db, q{
CREATE TABLE public.acc_old (id int PRIMARY KEY, balance int);
SELECT bv_audit.enable('public.acc_old');
SELECT bv_audit._create_partition(t, '2020-01-01') FROM bv_audit.tracked t WHERE t.relid = 'public.acc_old'::regclass;
INSERT INTO bv_audit.public__acc_old (audit_op, audit_xid, audit_actor, audit_ts, id, balance)
VALUES ('I', '1', 'import', '2020-01-05 00:00+00', 1, 1);
});
$node->safe_psql($db, q{SELECT bv_audit.seal()});
$node->safe_psql($db, q{
SELECT bv_audit.set_retention('public.acc', '365 days');
SELECT bv_audit.set_retention('public.acc_old', '365 days');
SELECT cron.schedule('bv_audit-purge-test', '* * * * *', 'SELECT * FROM bv_audit.purge()');
});
ok( $node->poll_query_until($db,
		q{SELECT to_regclass('bv_audit.public__acc_old_p202001') IS NULL}),
	'pg_cron ran purge(), which dropped the expired partition');
ok( $node->poll_query_until($db, q{
SELECT bool_or(status = 'succeeded') FROM cron.job_run_details d JOIN cron.job j ON j.jobid = d.jobid
 WHERE j.jobname = 'bv_audit-purge-test'}),
	'the pg_cron run succeeded');
cmp_ok($node->safe_psql($db, q{SELECT count(*) FROM bv_audit.public__acc WHERE audit_ts > now() - interval '1 day'}),
	'>', 0, 'recent records survive the purge');

# ---- bv_audit not preloaded: ids from nextval(), still increasing ----
my $before_fallback = $node->safe_psql($db, q{SELECT max(audit_id) FROM bv_audit.public__acc});
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_cron, bv_core, bv_cdc'\n");
$node->restart;
$node->safe_psql($db, q{INSERT INTO public.acc (id, balance) VALUES (1, 0);
UPDATE public.acc SET balance = balance + 1 WHERE id = 1;
UPDATE public.acc SET balance = balance + 1 WHERE id = 1;});
is( $node->safe_psql($db, qq{
SELECT string_agg(balance::text, ',' ORDER BY audit_id) FROM bv_audit.public__acc
 WHERE id = 1 AND audit_id > $before_fallback}),
	'0,1,2', 'without shared memory, ids still follow the order of the writes');
is( $node->safe_psql($db, qq{
SELECT string_agg((audit_id - first)::text, ',' ORDER BY audit_id)
  FROM (SELECT audit_id, min(audit_id) OVER () AS first FROM bv_audit.public__acc
         WHERE audit_id > $before_fallback) s}),
	'0,1024,2048', 'without shared memory, each id is one nextval(): a block of its own');

done_testing();
