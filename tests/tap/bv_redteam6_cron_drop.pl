# Red-team round 6: pg_cron jobs must not outlive the extension that
# scheduled them.  pg_cron's jobs are rows of cron.job, not extension
# members: DROP EXTENSION bv_iot (bv_commerce, bv_ml's materialization
# jobs, ...) left them scheduled, and each failed at every run ("function
# iot.refresh_rollups() does not exist", every minute) as the superuser.
# bv_core 0.6.0's sql_drop event trigger unschedules the jobs that call a
# function the dropped extension took with it, and keeps every other job.
# Finally every remaining job is forced to run in the shipped configuration
# and none may fail.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('redteam6_cron_drop');
BvTest::create_suite_db($node);

my $jobs = sub {
	$node->safe_psql('bitvelocity', "SELECT string_agg(jobname, ',' ORDER BY jobname) FROM cron.job");
};

# A feature view with a materialization job (bv_ml schedules per view), and
# two jobs of an operator: one names no extension, one calls a function of
# bv_audit that stays.
$node->safe_psql('bitvelocity', q{
CREATE TABLE public.cust_stats (customer_id bigint, event_ts timestamptz, spend double precision);
SELECT ml.define_entity('customer', ARRAY['customer_id']);
SELECT ml.define_feature_view('cust', 'customer', 'public.cust_stats', ARRAY['spend'],
                              event_ts_column => 'event_ts');
SELECT ml.schedule_materialization('cust', '*/5 * * * *');
SELECT cron.schedule('operator-vacuum', '0 4 * * *', 'VACUUM public.cust_stats');
SELECT cron.schedule('operator-seal', '0 5 * * *', 'SELECT bv_audit.seal()');
});
like($jobs->(), qr/bv_ml-materialize-cust/, 'the materialization job is scheduled');

my ($rc, $out, $err) = $node->psql('bitvelocity', 'DROP EXTENSION bv_iot CASCADE');
is($rc, 0, 'bv_iot drops');
unlike($jobs->(), qr/iot-/, 'bv_iot\'s jobs went with it');
like($err, qr/unscheduled pg_cron job \d+ \(iot-rollups\)/, 'a notice names each unscheduled job');

$node->safe_psql('bitvelocity', 'DROP EXTENSION bv_commerce CASCADE');
$node->safe_psql('bitvelocity', 'DROP EXTENSION bv_ml CASCADE');
is($jobs->(),
	'bv_audit-partitions,bv_audit-purge,bv_audit-seal,chat-digests,chat-purge,chat-redact,'
	  . 'operator-seal,operator-vacuum,social-fanout,social-maintenance',
	'bv_commerce\'s and bv_ml\'s jobs went too; the others stay');

# A rolled-back drop keeps the jobs.
$node->safe_psql('bitvelocity', 'BEGIN; DROP EXTENSION bv_social CASCADE; ROLLBACK;');
like($jobs->(), qr/social-fanout,social-maintenance/, 'a rolled-back drop keeps the jobs');

# Installing again schedules the jobs again.
$node->safe_psql('bitvelocity', 'CREATE EXTENSION bv_iot CASCADE');
like($jobs->(), qr/iot-partitions,.*iot-rollups/, 'CREATE EXTENSION schedules the jobs again');

# Every job that is left runs in the shipped configuration, and succeeds.
my $since = $node->safe_psql('bitvelocity', 'SELECT now()');
$node->safe_psql('bitvelocity',
	q{SELECT count(cron.alter_job(jobid, schedule => '* * * * *')) FROM cron.job});
ok($node->poll_query_until('bitvelocity', qq{
SELECT bool_and(EXISTS (SELECT 1 FROM cron.job_run_details d
                         WHERE d.jobid = j.jobid AND d.start_time >= '$since'
                           AND d.status IN ('succeeded', 'failed')))
  FROM cron.job j}), 'every job ran once after the change');
is($node->safe_psql('bitvelocity', qq{
SELECT coalesce(string_agg(j.jobname || ': ' || left(d.return_message, 100), '; '), '')
  FROM cron.job_run_details d JOIN cron.job j USING (jobid)
 WHERE d.start_time >= '$since' AND d.status <> 'succeeded'}), '', 'no job run failed');
is($node->safe_psql('bitvelocity',
		qq{SELECT count(*) FROM cron.job_run_details WHERE jobid NOT IN (SELECT jobid FROM cron.job) AND start_time >= '$since'}),
	'0', 'no unscheduled job ran');

done_testing();
