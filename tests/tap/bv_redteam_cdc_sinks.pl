# Red-team review of bv_cdc's sink isolation (issue #27 §0, ADR 0032): one
# bad sink of *each* kind must not stop the others.  The fix tested only
# MQTT sinks that cannot start; here a healthy webhook sink shares a routed
# table with a bad sink of every kind, at start and at run time:
#   kafka    bootstrap server on a closed port (librdkafka starts, but
#            nothing is ever acknowledged)
#   mqtt     a host that does not resolve
#   amqp     a host that does not resolve; a closed port
#   nats     a host that does not resolve; a closed port
#   webhook  a closed port
# The healthy sink must get every change; each bad sink must say it is not
# up.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvWebhook;

my $node = BvTest::new_node('rtsinks',
	extra_conf => "bv_cdc.heartbeat_interval = 500\nbv_cdc.naptime = 200\n"
	  . "bv_cdc.retry_max = 1000\nbv_cdc.stall_timeout = 1000\n");
BvTest::create_suite_db($node);
$node->safe_psql('bitvelocity', 'CREATE EXTENSION IF NOT EXISTS bv_cdc CASCADE');
my $dir = $node->basedir;

sub sql { return $node->safe_psql('bitvelocity', $_[0]); }
sub poll { return $node->poll_query_until('bitvelocity', $_[0]); }

my $closed = PostgreSQL::Test::Cluster::get_free_port();   # nobody listens there
my $secret = 'whsec_' . join '', map { ('a' .. 'z', 0 .. 9)[ rand 36 ] } 1 .. 32;
my $hook = BvWebhook::start($dir, secrets => [$secret]);
sql("SELECT bv.secret_set('cdc.good', '$secret')");
sql("SELECT bv.secret_set('cdc.bad', '$secret')");

my %bad = (
	'bad_kafka' => qq{'kafka', '{"bootstrap.servers": "127.0.0.1:$closed", "message.timeout.ms": 2000}'},
	'bad_mqtt' => qq{'mqtt', '{"host": "bv-cdc-redteam.invalid", "connect_timeout_ms": 500}'},
	'bad_amqp_host' => qq{'amqp', '{"host": "bv-cdc-redteam.invalid"}'},
	'bad_amqp_port' => qq{'amqp', '{"host": "127.0.0.1", "port": $closed}'},
	'bad_nats_host' => qq{'nats', '{"host": "bv-cdc-redteam.invalid", "stream": "BV"}'},
	'bad_nats_port' => qq{'nats', '{"host": "127.0.0.1", "port": $closed, "stream": "BV"}'},
	'bad_webhook' => qq{'webhook', '{"url": "http://127.0.0.1:$closed/hook", "secret": "cdc.bad", "timeout_ms": 500, "connect_timeout_ms": 500, "retry_base_ms": 100, "retry_max_ms": 500, "max_attempts": 100000, "circuit_failures": 3, "circuit_cooldown_ms": 500}'},
);

sql(qq{
CREATE TABLE public.iso (id int PRIMARY KEY, v text);
SELECT bv_cdc.add_sink('good', 'webhook', '{"url": "$hook->{url}", "secret": "cdc.good", "timeout_ms": 2000}');
SELECT bv_cdc.add_route('public.iso', 'good', 'iso');
});
ok(poll("SELECT worker_state = 'streaming' AND state = 'up' FROM bv_cdc.stats WHERE sink = 'good'"),
	'the good sink streams alone');
sql("INSERT INTO public.iso VALUES (0, 'before')");
sub ids_delivered
{
	my %ids = map { ($_->{env}{after}{id} // -1) => 1 } BvWebhook::delivered($hook);
	return %ids;
}
BvWebhook::wait_for($hook, sub { my %i = ids_delivered(); exists $i{0} });
my %first = ids_delivered();
ok(exists $first{0}, 'the good sink delivers a change');

# Each bad sink joins with a route on the same table.
for my $name (sort keys %bad)
{
	sql("SELECT bv_cdc.add_sink('$name', $bad{$name}); SELECT bv_cdc.add_route('public.iso', '$name')");
}
# The worker has taken every bad sink in and tried it: none is up (a
# webhook sink connects when it has something to deliver).
for my $name (grep { $_ ne 'bad_webhook' } sort keys %bad)
{
	ok(poll("SELECT state IS NOT NULL AND state <> 'up' AND last_error IS NOT NULL FROM bv_cdc.stats WHERE sink = '$name'"),
		"$name is known to the worker and not up");
}
ok(poll("SELECT state IS NOT NULL FROM bv_cdc.stats WHERE sink = 'bad_webhook'"), 'bad_webhook is known to the worker');
# Changes in three batches, each once the previous one arrived: the bad
# sinks are failing, backing off and retrying meanwhile.
for my $batch (0 .. 2)
{
	sql("INSERT INTO public.iso SELECT i, 'v' || i FROM generate_series($batch * 10 + 1, $batch * 10 + 10) i");
	my $n = $batch * 10 + 10;
	BvWebhook::wait_for($hook, sub { my %i = ids_delivered(); (grep { $_ >= 1 } keys %i) == $n }, 90);
	my %got = ids_delivered();
	is(scalar(grep { $_ >= 1 } keys %got), $n,
		"batch $batch: the good webhook sink gets every change while a bad sink of every kind is routed too");
}

for my $name (sort keys %bad)
{
	is(sql("SELECT state <> 'up' FROM bv_cdc.stats WHERE sink = '$name'"), 't', "$name still does not report up");
}
diag(sql("SELECT string_agg(sink || ' ' || state || ' ' || coalesce(left(last_error, 80), ''), E'\\n' ORDER BY sink) FROM bv_cdc.stats"));

$node->stop;
BvWebhook::stop($hook);
done_testing();
