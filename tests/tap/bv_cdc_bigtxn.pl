# bv_cdc and a 1M-row transaction: every row is delivered, and the worker's
# memory stays bounded (it stops reading while bv_cdc.max_inflight messages
# await acknowledgement; wal2json hands over one row at a time).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvKafka;

my $rows = 1_000_000;
my $node = BvTest::new_node('bigtxn',
	extra_conf => "bv_cdc.heartbeat_interval = 500\nbv_cdc.max_inflight = 20000\n");
BvTest::create_suite_db($node);
$node->safe_psql('bitvelocity', 'CREATE EXTENSION IF NOT EXISTS bv_cdc CASCADE');
my $mock = BvKafka::start_mock($node->basedir);
$node->safe_psql(
	'bitvelocity', qq{
CREATE TABLE public.big (id int PRIMARY KEY, payload text);
SELECT bv_cdc.add_sink('main', 'kafka', '{"bootstrap.servers": "$mock->{bootstrap}"}');
SELECT bv_cdc.add_route('public.big', 'main', 'big');
});
ok($node->poll_query_until('bitvelocity', "SELECT state = 'streaming' FROM bv_cdc.worker()"), 'streaming');

sub vm
{
	my ($pid, $field) = @_;
	open my $fh, '<', "/proc/$pid/status" or die "cannot read /proc/$pid/status: $!";
	while (<$fh>) { return $1 if /^$field:\s+(\d+) kB/; }
	die "no $field";
}
my $pid = $node->safe_psql('bitvelocity', 'SELECT pid FROM bv_cdc.worker()');
my $hwm_before = vm($pid, 'VmHWM');

$node->safe_psql('bitvelocity',
	"INSERT INTO public.big SELECT g, repeat('x', 100) || g FROM generate_series(1, $rows) g");
my $lsn = $node->safe_psql('bitvelocity', 'SELECT pg_current_wal_lsn()');

# While it streams, the window stays within its bound.
my $max_inflight = 0;
my $deadline = time() + 600;
while (time() < $deadline)
{
	my ($inflight, $events) = split /\|/,
	  $node->safe_psql('bitvelocity', "SELECT inflight, events FROM bv_cdc.stats WHERE sink = 'main'");
	$max_inflight = $inflight if $inflight > $max_inflight;
	last if $events >= $rows;
	select(undef, undef, undef, 0.2);
}
is($node->safe_psql('bitvelocity', "SELECT events FROM bv_cdc.stats WHERE sink = 'main'"),
	$rows, "all $rows rows of the transaction acknowledged");
cmp_ok($max_inflight, '<=', 20000, "in flight never above bv_cdc.max_inflight (max seen $max_inflight)");
my $hwm_after = vm($pid, 'VmHWM');
is($node->safe_psql('bitvelocity', 'SELECT pid FROM bv_cdc.worker()'), $pid, 'same worker, no restart');
my $growth_mb = ($hwm_after - $hwm_before) / 1024;
cmp_ok($growth_mb, '<', 150, sprintf('worker peak memory grew by %.0f MB only (bounded)', $growth_mb));
ok( $node->poll_query_until(
		'bitvelocity', "SELECT confirmed_flush_lsn >= '$lsn' FROM pg_replication_slots WHERE slot_name = 'bv_cdc'"),
	'the slot confirms the transaction');

# The mock broker keeps only the newest messages of each partition, so count
# what it received by its high watermarks (no restart here: no duplicates).
my $total = 0;
for my $p (0 .. 3)
{
	my ($out) = run_command([ 'kcat', '-b', $mock->{bootstrap}, '-Q', '-t', "big:$p:-1" ]);
	$total += $1 if $out =~ /offset (\d+)/;
}
is($total, $rows, "the broker's high watermarks add up to $rows messages");

BvKafka::stop_mock($mock);
$node->stop;
done_testing();
