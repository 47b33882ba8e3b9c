# bv_cdc MQTT sinks over TLS with a client certificate (mTLS), against a
# mosquitto listener that requires one, with a test CA generated here.  A
# sink without a client certificate is refused by the broker: the worker
# says why, keeps the slot, and once alter_sink adds the certificate the
# change committed meanwhile arrives.  A broker certificate from another CA
# is refused by the worker (no "insecure" mode exists).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvMqtt;

my $node = BvTest::new_node('mqtt_tls',
	extra_conf => "bv_cdc.heartbeat_interval = 500\nbv_cdc.naptime = 200\nbv_cdc.retry_max = 1000\n");
BvTest::create_suite_db($node);
$node->safe_psql('bitvelocity', 'CREATE EXTENSION IF NOT EXISTS bv_cdc CASCADE');

my $pki = $node->basedir . '/pki';
mkdir $pki or die "$pki: $!";
BvTest::make_ca($pki, 'ca', 'BitVelocity test CA');
BvTest::make_ca($pki, 'rogue_ca', 'Rogue CA');
BvTest::make_cert($pki, 'broker', '127.0.0.1', 'ca', "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
BvTest::make_cert($pki, 'rogue_broker', '127.0.0.1', 'rogue_ca', "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
BvTest::make_cert($pki, 'worker', 'bv_cdc', 'ca', "extendedKeyUsage=clientAuth\n");

# A plain listener (for the subscriber) and two TLS listeners that require a
# client certificate from the CA: one with a broker certificate from the
# CA, one with a certificate from another CA.
my $tls_port = PostgreSQL::Test::Cluster::get_free_port();
my $rogue_port = PostgreSQL::Test::Cluster::get_free_port();
my $broker = BvMqtt::start_broker(
	$node->basedir, extra => qq{
listener $tls_port 127.0.0.1
cafile $pki/ca.crt
certfile $pki/broker.crt
keyfile $pki/broker.key
require_certificate true
tls_version tlsv1.2
listener $rogue_port 127.0.0.1
cafile $pki/ca.crt
certfile $pki/rogue_broker.crt
keyfile $pki/rogue_broker.key
require_certificate true
});
my $sub = BvMqtt::subscribe($broker, 'bv/#', qos => 1, id => 'tlssub');
ok(BvMqtt::wait_ready($sub), 'subscriber on the plain listener');

$node->safe_psql(
	'bitvelocity', qq{
CREATE TABLE public.t (id int PRIMARY KEY, v text);
SELECT bv_cdc.add_sink('tls', 'mqtt', '{"host": "127.0.0.1", "port": $tls_port, "tls_ca_file": "$pki/ca.crt"}');
SELECT bv_cdc.add_route('public.t', 'tls');
});

# No client certificate: the broker refuses the handshake.  The slot exists
# all the same (the worker creates it before it starts its sinks).
ok($node->poll_query_until('bitvelocity', "SELECT count(*) = 1 FROM pg_replication_slots WHERE slot_name = 'bv_cdc'"),
	'the slot exists while the sink cannot start');
ok( $node->poll_query_until(
		'bitvelocity', "SELECT state = 'failed' AND last_error IS NOT NULL FROM bv_cdc.stats WHERE sink = 'tls'"),
	'without a client certificate the sink cannot start: failed (it never delivered), with a reason');
$node->safe_psql('bitvelocity', "INSERT INTO public.t VALUES (1, 'while refused')");
my $lsn = $node->safe_psql('bitvelocity', 'SELECT pg_current_wal_lsn()');
is( $node->safe_psql(
		'bitvelocity', "SELECT confirmed_flush_lsn < '$lsn' FROM pg_replication_slots WHERE slot_name = 'bv_cdc'"),
	't', 'the slot keeps the change the broker did not take');

# With the worker's certificate the change committed meanwhile arrives.
$node->safe_psql('bitvelocity',
	qq{SELECT bv_cdc.alter_sink('tls', '{"host": "127.0.0.1", "port": $tls_port, "tls_ca_file": "$pki/ca.crt", "tls_cert_file": "$pki/worker.crt", "tls_key_file": "$pki/worker.key"}')});
$node->safe_psql('bitvelocity', "INSERT INTO public.t VALUES (2, 'over mTLS')");
my @m = BvMqtt::consume($sub, 2);
is(join(',', sort map { $_->{env}{key}{id} } @m), '1,2', 'over mTLS: the refused change and the next one arrive');
is($m[0]{topic}, 'bv/public/t/1', 'on the route topic');
ok($node->poll_query_until('bitvelocity', "SELECT state = 'up' AND events >= 2 FROM bv_cdc.stats WHERE sink = 'tls'"),
	'the sink is up and counts the acknowledged events');

# A broker whose certificate another CA signed is not trusted.
$node->safe_psql('bitvelocity',
	qq{SELECT bv_cdc.alter_sink('tls', '{"host": "127.0.0.1", "port": $rogue_port, "tls_ca_file": "$pki/ca.crt", "tls_cert_file": "$pki/worker.crt", "tls_key_file": "$pki/worker.key"}')});
$node->safe_psql('bitvelocity', "INSERT INTO public.t VALUES (3, 'to a rogue broker')");
ok( $node->poll_query_until(
		'bitvelocity', "SELECT state = 'down' FROM bv_cdc.stats WHERE sink = 'tls'"),
	'a broker certificate from another CA is refused: the sink is down');
is(scalar(grep { $_->{env}{key}{id} == 3 } BvMqtt::messages($sub)), 0, 'and nothing was published to it');

# Unreadable files are refused when the sink starts, naming the file.
my ($rc, $out, $err) = $node->psql('bitvelocity',
	qq{SELECT bv_cdc.add_sink('bad', 'mqtt', '{"host": "127.0.0.1", "port": $tls_port, "tls_cert_file": "$pki/worker.crt", "tls_key_file": "$pki/worker.key"}')});
like($err, qr/requires "tls_ca_file"/, 'a client certificate without a CA is refused when set');

BvMqtt::stop_subscriber($sub);
BvMqtt::stop_broker($broker);
$node->stop;
done_testing();
