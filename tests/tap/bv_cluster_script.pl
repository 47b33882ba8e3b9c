# tools/cluster.sh, which `make run`, `make status` and `make stop` use:
# idempotent start, status, stop, and clear messages for a stale pid file
# and a busy port.
use strict;
use warnings;

use IO::Socket::INET;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;
use BvStack;

my $stack = BvStack->new();
my ($home, $port, $rest_port) = ($stack->home, $stack->port, $stack->rest_port);
sub cluster { return $stack->cluster(@_); }
sub query   { return $stack->query(@_); }

my ($rc, $out, $err) = cluster('start');
is($rc, 0, 'start: succeeds') or diag($err);
like($out, qr/cluster: started/, 'start: says it started');
like($out, qr/psql -h \Q$home\E\/run -p $port -U postgres bitvelocity/,
	'start: prints how to connect');
is(query("SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension WHERE extname IN ('bv_core', 'pg_cron')"),
	'bv_core,pg_cron', 'start: database bitvelocity has the extensions');
is(query('SHOW wal_level'), 'logical', 'start: wal_level is logical');
like(query('SHOW output_plugin_libraries'), qr/wal2json/, 'start: wal2json may be used');
like(query('SHOW shared_preload_libraries'), qr/pg_cron.*bv_core/, 'start: suite preloaded');
is(query('SHOW listen_addresses'), '127.0.0.1', 'start: listens on loopback only');

# Every scheduled job of the suite runs, and succeeds, in the cluster that
# `make run` starts (its configuration is the one the tests use).  The jobs
# are moved to every minute so that each runs within the test's time.
is(query("SELECT string_agg(jobname, ',' ORDER BY jobname) FROM cron.job"),
	'bv_audit-partitions,bv_audit-purge,bv_audit-seal,chat-digests,chat-purge,chat-redact,'
	  . 'commerce-purge-idempotency-keys,commerce-release-reservations,'
	  . 'iot-partitions,iot-quarantine-purge,iot-rollups,ml-purge-prediction-log,'
	  . 'social-fanout,social-maintenance',
	'start: the suite schedules its maintenance jobs');
# First, untouched: the every-minute job runs as the extensions scheduled it
# (pg_cron must have picked up jobs inserted by CREATE EXTENSION).
my $minute_ok = "SELECT count(*) FROM cron.job_run_details d JOIN cron.job j USING (jobid) "
  . "WHERE j.jobname = 'commerce-release-reservations' AND d.status = 'succeeded'";
my $until = time() + 150;
sleep 1 while query($minute_ok) eq '0' && time() < $until;
isnt(query($minute_ok), '0', 'start: the every-minute job runs as scheduled by CREATE EXTENSION');
query("SELECT count(cron.alter_job(jobid, schedule => '* * * * *')) FROM cron.job");
my $pending = "SELECT count(*) FROM cron.job j WHERE NOT EXISTS "
  . "(SELECT 1 FROM cron.job_run_details d WHERE d.jobid = j.jobid AND d.status = 'succeeded')";
my $deadline = time() + 180;
sleep 1 while query($pending) ne '0' && time() < $deadline;
is(query($pending), '0', 'start: every scheduled job has a successful run');
is(query("SELECT coalesce(string_agg(DISTINCT left(return_message, 120), '; '), '') "
	  . "FROM cron.job_run_details WHERE status <> 'succeeded' AND status <> 'running'"),
	'', 'start: no scheduled job failed');

($rc, $out, $err) = cluster('start');
is($rc, 0, 'second start: succeeds');
like($out, qr/already running/, 'second start: leaves the running server alone');
is($err, '', 'second start: no warnings');

($rc, $out) = cluster('status');
like($out, qr/PostgreSQL 15: running, pid \d+, port $port/, 'status: running');

($rc, $out) = cluster('stop');
like($out, qr/PostgreSQL: stopped/, 'stop: stops');
($rc, $out) = cluster('status');
like($out, qr/PostgreSQL: stopped/, 'status: stopped');
($rc, $out) = cluster('stop');
like($out, qr/not running/, 'stop when stopped: says so');

# A pid file left by a crash names a process that no longer exists.
my $dead = fork() // die "fork: $!";
exit 0 if $dead == 0;
waitpid($dead, 0);
PostgreSQL::Test::Utils::append_to_file("$home/data/postmaster.pid",
	"$dead\n$home/data\n");
($rc, $out, $err) = cluster('start');
is($rc, 0, 'stale pid: start succeeds');
like($err, qr/removing stale .*postmaster\.pid: process $dead is not a running server/,
	'stale pid: says what it removed and why');
is(query('SELECT 1'), '1', 'stale pid: server answers');
cluster('stop');

# Another program on the port: one clear line, no server started.
my $squatter = IO::Socket::INET->new(
	LocalAddr => '127.0.0.1', LocalPort => $port,
	Listen => 1, ReuseAddr => 1) or die "cannot listen on $port: $!";
($rc, $out, $err) = cluster('start');
isnt($rc, 0, 'busy port: start fails');
is( $err,
	"bitvelocity: error: port $port on 127.0.0.1 is in use by another program; stop it, or choose another port: make run BV_PORT="
	  . ($port + 1) . "\n",
	'busy port: exactly one clear message');
ok(!-f "$home/data/postmaster.pid", 'busy port: no server was started');
close $squatter;

($rc, $out, $err) = cluster('start');
is($rc, 0, 'after the port is freed: start succeeds') or diag($err);
cluster('stop');

done_testing();
