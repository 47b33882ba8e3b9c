# Red-team round 6: ml.prediction_log kept every sampled prediction for
# ever: the caller's subject, the features they sent and the answer, one
# row per sampled POST /rpc/predict, never deleted.  bv_ml 0.4.0 gives each
# model a log_retention (default 30 days) and pg_cron's
# ml-purge-prediction-log deletes older rows, as the owner, in the shipped
# configuration.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('redteam6_ml_log');
BvTest::create_suite_db($node);
sub q1 { return $node->safe_psql('bitvelocity', $_[0]); }

my $model = BvTest::src() . '/sql/bv_ml/demo-model.json';
q1(qq{
SELECT ml.register_model('churn', 'sklearn_logistic', pg_read_file('$model')::jsonb, stage => 'production');
SELECT ml.register_model('keep', 'sklearn_logistic', pg_read_file('$model')::jsonb, stage => 'production');
UPDATE ml.models SET api_enabled = true, log_sample_rate = 1;
});
is(q1(q{SELECT string_agg(DISTINCT log_retention::text, ',') FROM ml.models}), '30 days',
	'a model keeps its log 30 days by default');

# Two users' sampled predictions (through the function api.predict calls).
q1(q{
BEGIN;
SET LOCAL ROLE bv_user;
SELECT set_config('request.jwt.claims', '{"sub": "alice", "role": "bv_user"}', true);
SELECT ml.api_predict(m, '{"orders_90d": 3, "spend_90d": 120.5, "days_since_last_order": 9, "support_tickets": 1, "is_subscriber": 0}') FROM unnest(ARRAY['churn', 'keep', 'churn']) m;
COMMIT;
});
is(q1(q{SELECT count(*) FROM ml.prediction_log}), '3', 'sampled predictions are logged');

# Age them: 2 of churn's rows are 2 days old, keep's row too; churn keeps
# its log 1 day, keep the default.
q1(q{
UPDATE ml.prediction_log SET at = now() - interval '2 days';
INSERT INTO ml.prediction_log (model_id, actor, features, prediction)
SELECT id, 'alice', '{}', 0.5 FROM ml.models WHERE name = 'churn';
UPDATE ml.models SET log_retention = '1 day' WHERE name = 'churn';
});
my ($rc, $out, $err) = $node->psql('bitvelocity', q{UPDATE ml.models SET log_retention = '1 minute' WHERE name = 'keep'});
isnt($rc, 0, 'a retention under 1 hour is refused');

is(q1(q{SELECT has_function_privilege('bv_user', 'ml.purge_prediction_log()', 'EXECUTE')
            OR has_function_privilege('bv_admin', 'ml.schedule_jobs()', 'EXECUTE')}),
	'f', 'API roles cannot run the purge or schedule jobs');

is(q1(q{SELECT schedule || ' ' || command FROM cron.job WHERE jobname = 'ml-purge-prediction-log'}),
	'41 * * * * SELECT ml.purge_prediction_log()', 'the purge is scheduled hourly at install');
my $since = q1('SELECT now()');
q1(q{SELECT cron.alter_job(jobid, schedule => '* * * * *') FROM cron.job WHERE jobname = 'ml-purge-prediction-log'});
ok($node->poll_query_until('bitvelocity', qq{
SELECT EXISTS (SELECT 1 FROM cron.job_run_details d JOIN cron.job j USING (jobid)
                WHERE j.jobname = 'ml-purge-prediction-log' AND d.start_time >= '$since'
                  AND d.status IN ('succeeded', 'failed'))}), 'the purge job ran');
is(q1(qq{
SELECT d.status FROM cron.job_run_details d JOIN cron.job j USING (jobid)
 WHERE j.jobname = 'ml-purge-prediction-log' AND d.start_time >= '$since' ORDER BY d.start_time LIMIT 1}),
	'succeeded', 'the purge job succeeded');
is(q1(q{
SELECT string_agg(m.name || ':' || (l.at > now() - interval '1 hour'), ',' ORDER BY m.name, l.at)
  FROM ml.prediction_log l JOIN ml.models m ON m.id = l.model_id}),
	'churn:true,keep:false', 'churn\'s old rows are gone; its new row and keep\'s 2-day-old row stay');

done_testing();
