# mTLS for services: PostgreSQL client-certificate authentication
# (pg_hba "hostssl ... cert") with a test CA generated here, as documented
# in docs/security.md.  A service whose certificate's CN is its role name
# connects without a password; everything else is refused.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('mtls', no_start => 1);
my $dir = $node->basedir . '/pki';
mkdir $dir or die "$dir: $!";

BvTest::make_ca($dir, 'ca', 'BitVelocity test CA');
BvTest::make_ca($dir, 'rogue_ca', 'Rogue CA');
BvTest::make_cert($dir, 'server', 'localhost', 'ca', "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n");
BvTest::make_cert($dir, 'svc', 'svc_billing', 'ca', "extendedKeyUsage=clientAuth\n");
BvTest::make_cert($dir, 'other', 'svc_other', 'ca', "extendedKeyUsage=clientAuth\n");
BvTest::make_cert($dir, 'rogue', 'svc_billing', 'rogue_ca', "extendedKeyUsage=clientAuth\n");

$node->append_conf('postgresql.conf', qq{
listen_addresses = '127.0.0.1'
ssl = on
ssl_cert_file = '$dir/server.crt'
ssl_key_file = '$dir/server.key'
ssl_ca_file = '$dir/ca.crt'
ssl_min_protocol_version = 'TLSv1.3'
});
# Local admin connections for the test framework; TCP only with TLS and a
# client certificate whose CN is the role name ("cert" implies
# clientcert=verify-full).
open my $hba, '>', $node->data_dir . '/pg_hba.conf' or die $!;
print $hba "local all all trust\nhostssl all all 127.0.0.1/32 cert\n";
close $hba;
$node->start;
BvTest::create_suite_db($node);
$node->safe_psql('bitvelocity', 'CREATE ROLE svc_billing LOGIN IN ROLE bv_service; CREATE ROLE svc_other LOGIN');

my $base = "host=localhost hostaddr=127.0.0.1 port=" . $node->port
  . " dbname=bitvelocity sslmode=verify-full sslrootcert=$dir/ca.crt";

$node->connect_ok("$base user=svc_billing sslcert=$dir/svc.crt sslkey=$dir/svc.key",
	'a service with a certificate signed by the CA connects, without a password',
	sql => q{SELECT current_user || '|' || ssl::text || '|' || client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()},
	expected_stdout => qr{^svc_billing\|true\|/CN=svc_billing$});
$node->connect_ok("$base user=svc_billing sslcert=$dir/svc.crt sslkey=$dir/svc.key",
	'the service gets its API role (bv_service) through membership',
	sql => q{SELECT pg_has_role('bv_service', 'MEMBER')},
	expected_stdout => qr/^t$/);
$node->connect_fails("$base user=svc_billing sslcert=$dir/other.crt sslkey=$dir/other.key",
	'a certificate for another role is refused',
	expected_stderr => qr/certificate authentication failed for user "svc_billing"/);
$node->connect_fails("$base user=svc_billing sslcert=$dir/rogue.crt sslkey=$dir/rogue.key",
	'a certificate from another CA is refused',
	expected_stderr => qr/certificate verify failed|unknown ca|SSL error/i);
$node->connect_fails("$base user=svc_billing sslcert=/nonexistent sslkey=/nonexistent",
	'no client certificate: refused',
	expected_stderr => qr/connection requires a valid client certificate|certificate authentication failed|SSL error|no pg_hba.conf entry/);
$node->connect_fails("host=localhost hostaddr=127.0.0.1 port=" . $node->port . " dbname=bitvelocity user=svc_billing sslmode=disable",
	'plain TCP without TLS: refused',
	expected_stderr => qr/no pg_hba.conf entry for host "127.0.0.1", user "svc_billing", database "bitvelocity", no encryption/);
$node->connect_fails("host=127.0.0.1 port=" . $node->port . " dbname=bitvelocity user=svc_billing sslmode=verify-full sslrootcert=$dir/ca.crt sslcert=$dir/svc.crt sslkey=$dir/svc.key",
	'the client checks the server name (verify-full)',
	expected_stderr => qr/server certificate for "localhost".* does not match host name "127.0.0.1"/);

$node->stop;
done_testing();
