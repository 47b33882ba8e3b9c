# Red-team round 6: the IoT quarantine had no bound.  Every refused reading
# (a device's malformed messages through the bridge, or a signed-in user's
# iot.ingest() / POST /rpc/iot_ingest of junk) added a row with up to 256
# bytes of payload, and nothing ever deleted one: a single user filled the
# disk at 1,000 rows per call.  bv_iot 0.5.0 stores at most
# iot.settings.quarantine_per_minute rows per minute (the rest are counted in
# iot.quarantine_overflow) and pg_cron's iot-quarantine-purge deletes rows
# older than iot.settings.quarantine_retention.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('redteam6_iot_quarantine');
BvTest::create_suite_db($node);

# Mallory, a signed-in user, sends 3 calls of 1,000 junk readings (the
# most one call may carry) in one transaction, so in one minute.
my $calls = $node->safe_psql('bitvelocity', q{
BEGIN;
SET LOCAL ROLE bv_user;
SELECT set_config('request.jwt.claims', '{"sub": "mallory", "role": "bv_user"}', true);
SELECT string_agg(quarantined::text, ',')
  FROM generate_series(1, 3) c,
       LATERAL iot.ingest((SELECT jsonb_agg(jsonb_build_object('metric', 'm', 'value', 'j',
                                                               'device', 'n-' || c || '-' || g))
                             FROM generate_series(1, 1000) g));
COMMIT;
});
like($calls, qr/^1000,1000,1000$/m, 'each call reports its 1,000 refused readings');
is($node->safe_psql('bitvelocity', 'SELECT count(*) FROM iot.quarantine'),
	'1000', 'the quarantine kept 1,000 rows (quarantine_per_minute) of the 3,000');
is($node->safe_psql('bitvelocity', 'SELECT sum(dropped) FROM iot.quarantine_overflow'),
	'2000', 'the 2,000 others are counted in iot.quarantine_overflow');

# A lower cap, in the next transaction (same minute or a new one: the
# stored rows of a minute never pass the cap).
$node->safe_psql('bitvelocity', 'UPDATE iot.settings SET quarantine_per_minute = 10');
$node->safe_psql('bitvelocity', q{
SELECT * FROM iot.ingest('[{"metric": "m"}, {"metric": "m"}, {"metric": "m"}]');
});
is($node->safe_psql('bitvelocity', q{
SELECT max(n) <= greatest(1000, 10) AND bool_and(n <= 10 OR m = (SELECT min(date_trunc('minute', received_at)) FROM iot.quarantine))
  FROM (SELECT date_trunc('minute', received_at) m, count(*) n FROM iot.quarantine GROUP BY 1) x}),
	't', 'no minute holds more rows than its cap');

# API roles cannot call the maintenance functions.
is($node->safe_psql('bitvelocity', q{
SELECT has_function_privilege('bv_user', 'iot.schedule_jobs()', 'EXECUTE')
    OR has_function_privilege('bv_user', 'iot.purge_quarantine()', 'EXECUTE')
    OR has_function_privilege('bv_service', 'iot.purge_quarantine()', 'EXECUTE')}),
	'f', 'iot.schedule_jobs() and iot.purge_quarantine() are not executable by API roles');

# Retention, by the pg_cron job in the shipped configuration: rows older
# than quarantine_retention go, younger ones stay.
$node->safe_psql('bitvelocity', q{
UPDATE iot.settings SET quarantine_retention = '1 day';
INSERT INTO iot.quarantine (received_at, source, reason) VALUES (now() - interval '25 hours', 'sql', 'old');
INSERT INTO iot.quarantine_overflow VALUES (date_trunc('minute', now() - interval '25 hours'), 7);
});
is($node->safe_psql('bitvelocity',
		"SELECT schedule FROM cron.job WHERE jobname = 'iot-quarantine-purge'"),
	'23 * * * *', 'iot-quarantine-purge is scheduled hourly at install');
my $since = $node->safe_psql('bitvelocity', 'SELECT now()');
$node->safe_psql('bitvelocity',
	"SELECT cron.alter_job(jobid, schedule => '* * * * *') FROM cron.job WHERE jobname = 'iot-quarantine-purge'");
ok($node->poll_query_until('bitvelocity', qq{
SELECT EXISTS (SELECT 1 FROM cron.job_run_details d JOIN cron.job j USING (jobid)
                WHERE j.jobname = 'iot-quarantine-purge' AND d.start_time >= '$since'
                  AND d.status IN ('succeeded', 'failed'))}), 'the purge job ran');
is($node->safe_psql('bitvelocity', qq{
SELECT d.status FROM cron.job_run_details d JOIN cron.job j USING (jobid)
 WHERE j.jobname = 'iot-quarantine-purge' AND d.start_time >= '$since' ORDER BY d.start_time LIMIT 1}),
	'succeeded', 'the purge job succeeded');
is($node->safe_psql('bitvelocity', q{
SELECT (SELECT count(*) FROM iot.quarantine WHERE reason = 'old') || ',' ||
       (SELECT count(*) FROM iot.quarantine_overflow WHERE minute < now() - interval '1 day') || ',' ||
       (SELECT count(*) >= 1000 FROM iot.quarantine)}),
	'0,0,true', 'rows past the retention are gone, recent ones stay');

done_testing();
