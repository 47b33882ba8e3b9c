# bv_audit WAL mode (#19): the worker loses and duplicates nothing across
# kill -9 of the worker, an immediate shutdown and a long pause; the actor
# of every record is the one that wrote it, over SQL and over PostgREST
# with two users; TRUNCATE and DELETE carry it too; a forged context
# message changes nothing.
use strict;
use warnings;

use IPC::Run;
use Time::HiRes qw(usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

# The test harness turns restart_after_crash off; the server's default (on,
# as make run ships it) is what a kill -9 of the worker meets in production.
my $node = BvTest::new_node('walaudit', extra_conf => "restart_after_crash = on\nbv_audit.wal_mode = on\n");
BvTest::create_suite_db($node);
my $db = 'bitvelocity';

sub q1 { return $node->safe_psql($db, $_[0]); }

sub caught_up
{
	my ($what) = @_;
	is(q1(q{SELECT bv_audit.wait_for(pg_current_wal_insert_lsn(), '120 seconds')}), 't',
		"the history covers every commit ($what)");
	return;
}

# The worker makes its slot as soon as the extension exists.
$node->poll_query_until($db, q{SELECT count(*) = 1 FROM pg_replication_slots WHERE slot_name = 'bv_audit_wal'})
  or die 'no slot';

q1(q{
CREATE TABLE public.w (id int PRIMARY KEY, v int, note text);
INSERT INTO public.w SELECT g, g, 'before' FROM generate_series(1, 5) g;
SELECT bv_audit.enable('public.w', mode => 'wal');
});
is(q1(q{SELECT audit_op || count(*) FROM bv_audit.public__w GROUP BY audit_op}), 'S5',
	'enable() on a table with rows records them as the baseline');
is(q1(q{SELECT mode || ' ' || history_index FROM bv_audit.tracked WHERE source_table = 'w'}), 'wal btree',
	'the table is in WAL mode with the btree history index');
is(q1(q{SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.w'::regclass AND tgname LIKE 'bv_audit_capture%'}),
	'0', 'no capture trigger in WAL mode');

# ---- the actor over SQL: per statement, DELETE and TRUNCATE included ----
# A forged context message (pg_logical_emit_message() is anybody's) in the
# middle of a statement: the worker ignores it (no valid MAC).
q1(q{
CREATE FUNCTION public.forge(v int) RETURNS int LANGUAGE sql AS $$
    SELECT v + 1 + 0 * length(pg_logical_emit_message(true, 'bv_audit', '{"a":"mallory","s":0}')::text)
$$;
});
q1(q{
BEGIN;
SELECT bv.set_actor('alice');
UPDATE public.w SET v = 10 WHERE id = 1;
SELECT bv.set_actor('bob');
DELETE FROM public.w WHERE id = 2;
SAVEPOINT s;
SELECT bv.set_actor('mallory');
UPDATE public.w SET v = 99 WHERE id = 3;
ROLLBACK TO SAVEPOINT s;
UPDATE public.w SET v = 30 WHERE id = 3;
UPDATE public.w SET v = public.forge(v) WHERE id IN (4, 5);
COMMIT;
BEGIN;
SELECT bv.set_actor('carol');
TRUNCATE public.w;
COMMIT;
});
caught_up('SQL writers');
is(q1(q{SELECT string_agg(audit_op || ':' || coalesce(id::text, '-') || ':' || audit_actor || ':' || coalesce(v::text, '-'), ' ' ORDER BY audit_id)
          FROM bv_audit.public__w WHERE audit_op <> 'S'}),
	'U:1:alice:10 D:2:bob:2 U:3:bob:30 U:4:bob:5 U:5:bob:6 T:-:carol:-',
	'each record names the actor of its statement; the rolled-back one left nothing; a forged message is ignored');
is(q1(q{SELECT count(DISTINCT audit_ts) || ' ' || bool_and(audit_changed = '{v}') FILTER (WHERE audit_op = 'U')
          FROM bv_audit.public__w WHERE audit_op IN ('U', 'D')}),
	'1 true', 'records carry their transaction commit time and the changed columns');

# ---- kill -9 of the worker while writers commit ----
my $connstr = $node->connstr($db);
my $script = "$PostgreSQL::Test::Utils::tmp_check/writes.sql";

# n autocommitted INSERTs of ids from..to, then an UPDATE of each.
sub writer
{
	my ($from, $to) = @_;
	open my $fh, '>', $script or die $!;
	print $fh "INSERT INTO public.w VALUES ($_, $_, 'x');\n" for $from .. $to;
	print $fh "UPDATE public.w SET v = v + 1 WHERE id = $_;\n" for $from .. $to;
	close $fh;
	return IPC::Run::start([ 'psql', '-X', '-q', '-d', $connstr, '-f', $script ],
		'>', \my $out, '2>', \my $err);
}

# Nothing missing, nothing twice: every row has exactly one I record and
# one U record per UPDATE it got (v - id of them), and no other.
sub exact
{
	my ($what) = @_;
	caught_up($what);
	is(q1(q{
		SELECT count(*) FROM public.w t
		 WHERE (SELECT count(*) FROM bv_audit.public__w a
		         WHERE a.id = t.id AND a.audit_op = 'I' AND a.audit_id > (SELECT max(audit_id) FROM bv_audit.public__w WHERE audit_op = 'T')) <> 1
		    OR (SELECT count(*) FROM bv_audit.public__w a
		         WHERE a.id = t.id AND a.audit_op = 'U' AND a.audit_id > (SELECT max(audit_id) FROM bv_audit.public__w WHERE audit_op = 'T')) <> t.v - t.id}),
		'0', "every committed change has exactly one record ($what)");
	is(q1(q{SELECT count(*) FROM bv_audit.public__w a
	         WHERE a.audit_op IN ('I', 'U') AND NOT EXISTS (SELECT FROM public.w t WHERE t.id = a.id)
	           AND a.audit_id > (SELECT max(audit_id) FROM bv_audit.public__w WHERE audit_op = 'T')}),
		'0', "no record of a change that did not commit ($what)");
	return;
}

my $h = writer(10000, 19999);
$node->poll_query_until($db, q{SELECT count(*) > 200 FROM public.w}) or die 'no writes';
my $pid = q1(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'bv_audit wal'});
ok($pid =~ /^\d+$/, 'the worker runs');
kill 'KILL', $pid;
$h->finish;    # the writer loses its connection in the crash restart
# Wait for the restart; connections fail (or break mid-write) until then.
{
	local $SIG{PIPE} = 'IGNORE';
	my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;
	until (eval { q1('SELECT 1') eq '1' })
	{
		die 'the server did not come back after the crash' if time() > $deadline;
		usleep(100_000);
	}
}
$node->poll_query_until($db, q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'bv_audit wal'})
  or die 'no worker after the restart';
isnt(q1(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'bv_audit wal'}), $pid,
	'the killed worker was replaced (crash restart)');
$h = writer(2000, 2299);
$h->finish;
exact('kill -9 of the worker');

# ---- immediate shutdown while writers commit ----
$h = writer(3000, 3999);
$node->poll_query_until($db, q{SELECT count(*) > 50 FROM public.w WHERE id >= 3000}) or die 'no writes';
$node->stop('immediate');
$h->finish;
$node->start;
exact('immediate shutdown');

# ---- the worker paused for a while (a long naptime, no wake-up at commit) ----
$node->append_conf('postgresql.conf', "bv_audit.wal_naptime_ms = 60000\nbv_audit.wal_wakeup = off\n");
$node->reload;
# Once the worker has taken the setting, it sleeps: writes pile up.
$node->poll_query_until($db, q{SELECT setting = '60000' FROM pg_settings WHERE name = 'bv_audit.wal_naptime_ms'});
$node->poll_query_until($db, q{SELECT setting = 'off' FROM pg_settings WHERE name = 'bv_audit.wal_wakeup'});
sleep 1;    # the worker's own pass after the reload ends in its long wait
$h = writer(4000, 4499);
$h->finish;
my $lag = q1(q{SELECT lag_bytes > 0 FROM bv_audit.wal_status()});
is($lag, 't', 'while the worker sleeps, wal_status() shows the lag');
is(q1(q{SELECT bv_audit.wait_for(pg_current_wal_insert_lsn(), '1 second')}), 'f',
	'wait_for() gives up after its timeout while the history lags');
$node->append_conf('postgresql.conf', "bv_audit.wal_naptime_ms = 10\nbv_audit.wal_wakeup = on\n");
$node->reload;    # wakes the worker (SIGHUP sets its latch)
exact('a paused worker');
is(q1(q{SELECT count(*) FROM bv_audit.wal_quarantine}), '0', 'nothing quarantined');
like(q1(q{SELECT retained_bytes >= 0 AND records > 0 FROM bv_audit.wal_status()}), qr/^t$/,
	'wal_status() reports retained WAL and records');

# ---- the actor over PostgREST, two users ----
my $secret = join '', map { ('a' .. 'z', 0 .. 9)[ rand 36 ] } 1 .. 48;
q1(qq{
INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('postgrest', 'HS256', '$secret');
CREATE TABLE api.wal_notes (id int PRIMARY KEY, body text);
GRANT SELECT, INSERT, UPDATE, DELETE ON api.wal_notes TO bv_user;
SELECT bv_audit.enable('api.wal_notes', mode => 'wal');
});
my ($pgrst, $url) = BvTest::start_postgrest($node, jwt_secret => $secret);
my %tok = map { $_ => BvTest::jwt_hs256($secret, qq({"role":"bv_user","sub":"$_","exp":9999999999})) } qw(ann ben);
my @calls = (
	[ 'ann', 'POST',   '/wal_notes',       '{"id":1,"body":"a"}' ],
	[ 'ben', 'POST',   '/wal_notes',       '{"id":2,"body":"b"}' ],
	[ 'ben', 'PATCH',  '/wal_notes?id=eq.1', '{"body":"a2"}' ],
	[ 'ann', 'DELETE', '/wal_notes?id=eq.2', undef ]);
for my $c (@calls)
{
	my ($who, $method, $path, $body) = @$c;
	my ($status, $resp) = BvTest::http($method, "$url$path", token => $tok{$who},
		headers => ['Content-Type: application/json'], defined $body ? (body => $body) : ());
	like($status, qr/^20[14]$/, "$who $method $path") or diag($resp);
}
caught_up('PostgREST writers');
is(q1(q{SELECT string_agg(audit_op || ':' || id || ':' || audit_actor, ' ' ORDER BY audit_id) FROM bv_audit.api__wal_notes}),
	'I:1:ann I:2:ben U:1:ben D:2:ann', 'over PostgREST each record names the JWT subject that wrote it');

$pgrst->kill_kill;
$node->stop;
done_testing();
