# bv_iot rollups against a direct aggregate over the raw readings, after a
# seeded randomized workload of late, out-of-order and duplicate readings
# with refreshes in between (and one refresh racing an uncommitted batch);
# then pg_cron, with the cluster configuration `make run` uses, runs the
# rollup job; partition maintenance creates days ahead and drops old ones.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $seed = $ENV{BV_SEED} // time() ^ $$;
srand($seed);
note("seed $seed (rerun with BV_SEED=$seed)");

my $node = BvTest::new_node('iotroll');
BvTest::create_suite_db($node);

sub sql { return $node->safe_psql('bitvelocity', $_[0]); }
sub poll { return $node->poll_query_until('bitvelocity', $_[0]); }

sql("SELECT iot.provision_device(d) FROM unnest(ARRAY['r1', 'r2', 'r3']) d");
my $now = int(sql("SELECT extract(epoch FROM now())"));

# The model: the first reading of each (device, metric, ts) counts.
my %model;
sub random_batch
{
	my @r;
	for (1 .. 1 + int(rand(40)))
	{
		my $dev = ('r1', 'r2', 'r3')[ int(rand(3)) ];
		my $metric = ('a', 'b')[ int(rand(2)) ];
		# Mostly recent, some an hour or more late, all in random order;
		# timestamps on a 10 ms grid so that duplicates happen.
		my $age = rand() < 0.2 ? 3600 + rand(7200) : rand(600);
		my $ts = sprintf('%.2f', $now - $age);
		my $v = sprintf('%.3f', rand(2000) - 1000);
		$model{"$dev|$metric|$ts"} //= $v;
		push @r, qq({"device":"$dev","metric":"$metric","value":$v,"ts":$ts});
	}
	return '[' . join(',', @r) . ']';
}

for my $round (1 .. 60)
{
	my $batch = random_batch();
	# Duplicates of earlier readings come back now and then (redelivery).
	sql("SELECT iot.ingest('$batch')");
	sql("SELECT iot.refresh_rollups()") if rand() < 0.3;
}

# A refresh while a batch is uncommitted: that batch's buckets must be
# refreshed later, not lost.
my $open = $node->background_psql('bitvelocity');
my $late = random_batch();
$open->query_safe("BEGIN; SELECT iot.ingest('$late');");
sql("SELECT iot.refresh_rollups()");
$open->query_safe('COMMIT');
$open->quit;
for (1 .. 5)
{
	sql("SELECT iot.ingest('" . random_batch() . "')");
}
sql("SELECT iot.refresh_rollups()");

is(sql("SELECT count(*) FROM iot.telemetry"), scalar(keys %model), 'raw readings: one per (device, metric, ts)');

sub mismatches
{
	my ($table, $unit) = @_;
	return sql(qq{
WITH direct AS (
    SELECT device_id, metric, date_trunc('$unit', ts) AS bucket, count(*) AS n,
           min(value) AS min, max(value) AS max, avg(value) AS avg
      FROM iot.telemetry GROUP BY 1, 2, 3)
SELECT count(*) FROM direct d FULL JOIN $table r USING (device_id, metric, bucket)
 WHERE d.n IS DISTINCT FROM r.n OR d.min IS DISTINCT FROM r.min OR d.max IS DISTINCT FROM r.max
    OR abs(d.avg - r.avg) > 1e-9 * greatest(1, abs(d.avg)) OR d.avg IS NULL OR r.avg IS NULL
});
}
is(mismatches('iot.rollup_minute', 'minute'), 0, "minute rollups equal the direct aggregate (seed $seed)");
is(mismatches('iot.rollup_hour', 'hour'), 0, "hour rollups equal the direct aggregate (seed $seed)");
ok(sql("SELECT count(*) FROM iot.rollup_hour") > 1, 'several hours covered (late readings)');

# The query API: rollups for the old range, raw data for the recent one.
my $q = sql(qq{
SELECT count(*) FROM iot.query('r1', 'a', now() - interval '4 hours', now() + interval '1 minute', 'minute', '30 minutes') q
  FULL JOIN (SELECT date_trunc('minute', ts) AS bucket, count(*) AS n FROM iot.telemetry
              WHERE device_id = 'r1' AND metric = 'a' GROUP BY 1) d USING (bucket)
 WHERE q.n IS DISTINCT FROM d.n});
is($q, 0, 'iot.query returns every minute bucket with its count');

# ---- pg_cron runs the rollup job (every minute) ----
# pg_cron 1.4 sometimes misses the invalidation of jobs scheduled while its
# scheduler was starting (seen in this test, not in `make run`); scheduling
# the job again by name (iot.schedule_jobs(), an upsert) makes it reload.
sql("SELECT iot.schedule_jobs()");
sql("SELECT iot.ingest('" . random_batch() . "')");
ok(sql("SELECT count(*) FROM iot.rollup_dirty") > 0, 'dirty buckets pending');
ok($node->poll_query_until('bitvelocity',
	"SELECT count(*) = 0 FROM iot.rollup_dirty"), 'pg_cron refreshed the rollups');
# pg_cron records the run's status after the job's own transaction commits.
ok($node->poll_query_until('bitvelocity',
	"SELECT count(*) > 0 FROM cron.job_run_details r JOIN cron.job j USING (jobid) "
	  . "WHERE j.jobname = 'iot-rollups' AND r.status = 'succeeded'"), 'the iot-rollups job succeeded');
is(mismatches('iot.rollup_minute', 'minute'), 0, 'still equal after the scheduled refresh');

# ---- partitions: ahead and retention ----
is(sql("SELECT schedule FROM cron.job WHERE jobname = 'iot-partitions'"), '7 0 * * *', 'partition job scheduled daily');
my $cmd = sql("SELECT command FROM cron.job WHERE jobname = 'iot-partitions'");
sql($cmd);
my $ahead = sql("SELECT partitions_ahead FROM iot.settings");
ok(sql("SELECT to_regclass('iot.telemetry_' || to_char((now() AT TIME ZONE 'UTC')::date + $ahead, 'YYYYMMDD')) IS NOT NULL") eq 't',
	"a partition $ahead days ahead exists");
is(sql("SELECT count(*) FROM iot.maintain_partitions() WHERE action = 'created'"), 0, 'idempotent');
# 40 days later, with 30 days of retention: today's partitions go, rollups stay.
my $rollups = sql("SELECT count(*) FROM iot.rollup_hour");
my $today = sql("SELECT 'telemetry_' || to_char((now() AT TIME ZONE 'UTC')::date, 'YYYYMMDD')");
like(sql("SELECT string_agg(action || ' ' || partition, ',') FROM iot.maintain_partitions((now() AT TIME ZONE 'UTC')::date + 40)"),
	qr/dropped $today/, 'retention drops old partitions');
is(sql("SELECT to_regclass('iot.$today')"), '', 'gone');
is(sql("SELECT count(*) FROM iot.rollup_hour"), $rollups, 'rollups outlive the raw data');

$node->stop;
done_testing();
