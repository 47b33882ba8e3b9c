# Red-team review of bv_cdc's Kafka sink properties: bv_admin (not a
# superuser) must not gain the server's OS account through them.
#
# bv_cdc passes every property of a Kafka sink to librdkafka, which can run
# programs and load code: "sasl.kerberos.kinit.cmd" is a shell command that
# the worker (the postgres OS user) runs when it starts a GSSAPI producer,
# "ssl.engine.location" and "ssl.providers" load shared objects.  bv_admin
# may call add_sink()/alter_sink(): with the first property it ran
# `id > file` as postgres (seen in the red-team review), even without a
# route.  Such properties must be refused when the sink is set, and never
# reach librdkafka.
#
# bv_cdc refuses them (22023) in cdc_kafka_conf(), when a sink is set and
# again in the worker; properties naming files the worker reads need a
# superuser.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use BvTest;

my $node = BvTest::new_node('rtkprops', extra_conf => "bv_cdc.naptime = 200\n");
BvTest::create_suite_db($node);
$node->safe_psql('bitvelocity', 'CREATE EXTENSION IF NOT EXISTS bv_cdc CASCADE');
my $dir = PostgreSQL::Test::Utils::tempdir('kprops');
chmod 0777, $dir;
my $marker = "$dir/kinit-ran";

sub as_admin
{
	my ($sql) = @_;
	my ($ret, $out, $err) = $node->psql('bitvelocity', "SET ROLE bv_admin; $sql");
	return ($ret, $err);
}

my %hostile = (
	'sasl.kerberos.kinit.cmd' => qq{{"bootstrap.servers": "127.0.0.1:1", "security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "GSSAPI", "sasl.kerberos.kinit.cmd": "id > $marker"}},
	'ssl.engine.location' => q{{"bootstrap.servers": "127.0.0.1:1", "ssl.engine.location": "/nonexistent/engine.so"}},
	'ssl.providers' => q{{"bootstrap.servers": "127.0.0.1:1", "ssl.providers": "legacy"}},
);
# librdkafka (as Debian builds it) already refuses plugins.
my ($pret) = as_admin(q{SELECT bv_cdc.add_sink('kp', 'kafka', '{"bootstrap.servers": "127.0.0.1:1", "plugin.library.paths": "/nonexistent/plugin"}')});
isnt($pret, 0, 'bv_admin cannot set "plugin.library.paths"');

{
my $n = 0;
for my $prop (sort keys %hostile)
{
	$n++;
	my ($ret, $err) = as_admin("SELECT bv_cdc.add_sink('k$n', 'kafka', '$hostile{$prop}')");
	isnt($ret, 0, "bv_admin cannot set \"$prop\" with add_sink");
	like($err, qr/invalid Kafka sink property "\Q$prop\E"/, "... refused naming \"$prop\"");
}
# alter_sink on a harmless sink
as_admin(q{SELECT bv_cdc.add_sink('kok', 'kafka', '{"bootstrap.servers": "127.0.0.1:1"}')});
my ($ret) = as_admin(qq{SELECT bv_cdc.alter_sink('kok', '$hostile{"sasl.kerberos.kinit.cmd"}')});
isnt($ret, 0, 'bv_admin cannot set "sasl.kerberos.kinit.cmd" with alter_sink');

# Whatever was accepted: the command must never have run.  (The worker
# starts a sink within a few naptimes; the kinit command runs when the
# producer is created.)
$node->poll_query_until('bitvelocity',
	q{SELECT count(*) = (SELECT count(*) FROM bv_cdc.sinks) FROM bv_cdc.stats WHERE state IS NOT NULL})
  or diag('not every sink was started');
my $deadline = time() + 10;
usleep(200_000) while !-e $marker && time() < $deadline;
ok(!-e $marker, 'no Kafka property made the worker run a command as the server\'s OS user')
  or diag('the command ran: ' . PostgreSQL::Test::Utils::slurp_file($marker));
}

# Properties naming files the worker reads: bv_admin may not set them, a
# superuser may (TLS to Kafka needs them).
for my $prop (qw(ssl.ca.location ssl.key.location sasl.kerberos.keytab))
{
	my ($ret, $err) = as_admin(qq{SELECT bv_cdc.add_sink('kf', 'kafka', '{"bootstrap.servers": "127.0.0.1:1", "$prop": "/etc/passwd"}')});
	isnt($ret, 0, "bv_admin cannot set \"$prop\"");
	like($err, qr/only a superuser may set it/, '... only a superuser may');
}
# ... and the file properties of the other kinds (the worker reads them as
# the server's OS user; checking them would tell bv_admin which files exist)
for my $kind (qw(mqtt amqp nats))
{
	my ($ret, $err) = as_admin(qq{SELECT bv_cdc.add_sink('f$kind', '$kind', '{"host": "127.0.0.1", "tls_ca_file": "/etc/passwd"}')});
	isnt($ret, 0, "bv_admin cannot set the $kind sink's \"tls_ca_file\"");
	like($err, qr/only a superuser may set $kind sink property "tls_ca_file"/, '... only a superuser may');
}
$node->safe_psql('bitvelocity',
	q{SELECT bv_cdc.add_sink('kfs', 'kafka', '{"bootstrap.servers": "127.0.0.1:1", "ssl.ca.location": "probe"}')});
is($node->safe_psql('bitvelocity', q{SELECT config->>'ssl.ca.location' FROM bv_cdc.sinks WHERE name = 'kfs'}),
	'probe', 'a superuser sets "ssl.ca.location"');

$node->stop;
done_testing();
