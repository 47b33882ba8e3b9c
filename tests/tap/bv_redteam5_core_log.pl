# Red-team round 5, bv_core: a password given in clear, and refused, was
# written to the server log.  bv_cdc.add_sink() refuses "sasl.password" (and
# an MQTT/AMQP/NATS "password") in clear so that it is never stored, but
# log_min_error_statement (default: error) wrote the refused statement,
# password included, to the server log; bv_core's redaction hook only hid
# statements naming "jwt_", "secret" or "api_key".  Now it also hides
# statements containing "password", "passwd" or "_sink(" (sink
# configurations may hold tokens, e.g. in a webhook URL's path).  The
# cluster runs with the shipped configuration (PostgreSQL's default
# log_min_error_statement = error, which it does not change).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

# PostgreSQL's test framework turns on log_statement = all; the product
# leaves PostgreSQL's default (none), which is what is tested here.
my $node = BvTest::new_node('rt5corelog', extra_conf => "log_statement = none\n");
BvTest::create_suite_db($node);
is($node->safe_psql('bitvelocity', 'SHOW log_min_error_statement'), 'error', 'the shipped log_min_error_statement');

my $offset = -s $node->logfile;
my @cases = (
	[ q{SELECT bv_cdc.add_sink('k1', 'kafka', '{"bootstrap.servers": "broker:9092", "sasl.password": "hunter2-kafka"}')},
		'hunter2-kafka', 'a Kafka sasl.password refused in clear' ],
	[ q{SELECT bv_cdc.add_sink('m1', 'mqtt', '{"host": "broker", "password": "hunter2-mqtt"}')},
		'hunter2-mqtt', 'an MQTT password refused in clear' ],
	[ q{SELECT bv_cdc.add_sink('w1', 'webhook', '{"url": "https://hooks.example.com/services/hunter2-token", "timeout_ms": "x"}')},
		'hunter2-token', 'a webhook URL with a token in its path, refused for another property' ],
	[ q{SELECT bv_cdc.alter_sink('nope', '{"ssl.key.password": "hunter2-alter"}')},
		'hunter2-alter', 'alter_sink of an unknown sink with a password' ],
	[ q{ALTER ROLE bv_nobody PASSWORD 'hunter2-role'}, 'hunter2-role', 'a role password in a failing statement' ],
);
for my $c (@cases)
{
	my ($rc, $out, $err) = $node->psql('bitvelocity', $c->[0]);
	isnt($rc, 0, "$c->[2]: refused");
}
# A statement that names nothing secret keeps its STATEMENT line: the hook
# hides only what it must (and the test sees the log).
$node->psql('bitvelocity', 'SELECT 1/0 AS rt5_marker');
$node->poll_query_until('bitvelocity', 'SELECT true') or die;
my $log = slurp_file($node->logfile, $offset);
for my $c (@cases)
{
	unlike($log, qr/\Q$c->[1]\E/, "$c->[2]: not in the server log");
}
like($log, qr/STATEMENT:  SELECT 1\/0 AS rt5_marker/, 'other failing statements are still logged');

$node->stop;
done_testing();
