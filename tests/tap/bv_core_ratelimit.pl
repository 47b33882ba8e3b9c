# bv_core rate limiter: shared memory across backends, 8 concurrent
# clients never get more than rate x time + burst, READ ONLY transactions,
# ROLLBACK does not refund, eviction with a small table, and a clear error
# when bv_core is not preloaded.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use BvTest;

my $node = BvTest::new_node('ratelimit',
	extra_conf => "bv.rate_limit_buckets = 512\nmax_connections = 40\n");
BvTest::create_suite_db($node);

# 1. Eight concurrent clients on one bucket (rate 200/s, burst 50).
my ($rate, $burst) = (200, 50);
$node->safe_psql('bitvelocity', 'CREATE TABLE public.hits (at timestamptz DEFAULT clock_timestamp())');
my $script = $node->basedir . '/take.sql';
open my $fh, '>', $script or die $!;
print $fh "INSERT INTO public.hits SELECT clock_timestamp() WHERE bv.rate_limit('shared', $rate, $burst);\n";
close $fh;

my $t0 = time();
my ($ret, $out, $err) = $node->psql('postgres', 'SELECT 1');    # warm up the node
$t0 = time();
my @cmd = ('pgbench', '-n', '-c', '8', '-j', '2', '-T', '3', '-f', $script,
	'-h', $node->host, '-p', $node->port, 'bitvelocity');
IPC::Run::run(\@cmd, '>', \$out, '2>', \$err) or die "pgbench failed: $err";
my $elapsed = time() - $t0;
my ($attempts) = $out =~ /number of transactions actually processed: (\d+)/;
my $allowed = $node->safe_psql('bitvelocity', 'SELECT count(*) FROM public.hits');
my $bound = $rate * $elapsed + $burst;
note("attempts $attempts, allowed $allowed in $elapsed s, bound $bound");
ok($attempts > 3 * $allowed, "the clients tried much more than allowed ($attempts attempts)");
cmp_ok($allowed, '<=', $bound, "allowed $allowed <= rate x time + burst = $bound");
# and not far below it: over the span of allowed calls, at least 80% of the
# rate (the limiter does not starve the clients)
my $span = $node->safe_psql('bitvelocity', 'SELECT extract(epoch FROM max(at) - min(at)) FROM public.hits');
cmp_ok($span, '>=', 2, "allowed calls spread over the run ($span s)");
cmp_ok($allowed, '>=', 0.8 * $rate * $span,
	"allowed $allowed is close to the rate over $span s (the limiter does not starve clients)");
# stricter, on the server's clock: between the first and the last allowed
# call, at most burst + rate x (last - first) (+1 for the token at "last")
my $span_bound = $node->safe_psql('bitvelocity',
	"SELECT $burst + $rate * extract(epoch FROM max(at) - min(at)) + 1 FROM public.hits");
cmp_ok($allowed, '<=', $span_bound, "allowed $allowed <= burst + rate x (last - first) = $span_bound");
# per second, after the burst: never more than rate + burst in any 1 s window
my $worst = $node->safe_psql('bitvelocity', qq{
	SELECT max((SELECT count(*) FROM public.hits h2 WHERE h2.at >= h1.at AND h2.at < h1.at + interval '1 second'))
	FROM public.hits h1});
cmp_ok($worst, '<=', $rate + $burst, "no 1-second window allowed more than rate + burst ($worst)");

# 2. READ ONLY transactions work, and ROLLBACK does not give tokens back.
is( $node->safe_psql('bitvelocity', q{
	BEGIN TRANSACTION READ ONLY;
	SELECT string_agg(bv.rate_limit('ro', 0.001, 2)::text, ',' ORDER BY n) FROM generate_series(1, 3) n;
	ROLLBACK;}),
	'true,true,false', 'works in a READ ONLY transaction');
is($node->safe_psql('bitvelocity', q{SELECT bv.rate_limit('ro', 0.001, 2)}),
	'f', 'a rolled-back transaction did not refund its tokens');

# 3. Other backends see the same buckets.
is($node->safe_psql('bitvelocity', q{SELECT bv.rate_limit('ro', 0.001, 2)}),
	'f', 'a new backend sees the drained bucket');

# 4. Eviction: 512 slots, 5000 keys; the table never overflows, and idle
#    buckets go first.
$node->safe_psql('bitvelocity', q{SELECT count(*) FROM generate_series(1, 5000) n WHERE bv.rate_limit('k' || n, 1e6, 1)});
my ($slots, $used, $idle, $active) = split /\|/, $node->safe_psql('bitvelocity',
	'SELECT slots, used, evicted_idle, evicted_active FROM bv.rate_limit_stats()');
is($slots, 512, 'the table has bv.rate_limit_buckets slots');
cmp_ok($used, '<=', $slots, "slots used ($used) never exceed the table");
cmp_ok($idle, '>', 4000, "idle buckets were evicted ($idle), active ones only rarely ($active)");

# 5. Not preloaded: a clear error, SQLSTATE 55000.
my $plain = BvTest::new_node('plain', extra_conf => "shared_preload_libraries = 'pg_cron'\n");
$plain->safe_psql('postgres', 'CREATE EXTENSION bv_core');
($ret, $out, $err) = $plain->psql('postgres', q{\set VERBOSITY verbose
SELECT bv.rate_limit('k', 1, 1)});
like($err, qr/ERROR:  55000: the bv_core rate limiter is not available/, 'not preloaded: SQLSTATE 55000');
like($err, qr/HINT:  Add bv_core to shared_preload_libraries/, 'not preloaded: the hint says what to do');
($ret, $out, $err) = $plain->psql('postgres', q{\set VERBOSITY verbose
SELECT bv.jwt_verify('x')});
like($err, qr/ERROR:  28000: invalid token/, 'JWT verification works without preloading');

$plain->stop;
$node->stop;
done_testing();
