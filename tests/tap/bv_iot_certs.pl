# bv_iot device identity by client certificate: a mosquitto TLS listener
# that requires a certificate from the project's CA and takes the device id
# from its CN (use_identity_as_username), beside the password listener the
# bridge uses.  A device with a certificate publishes without a password
# and lands; it cannot speak as another device (the ACL, even when it sends
# another user name); a certificate from another CA and a connection
# without one are refused; a certificate for an unregistered id is
# quarantined by the bridge.  iot.set_device_certificate records the
# fingerprint openssl prints, and refuses hostile input.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvMqtt;
use BvIot;

my $node = BvTest::new_node('iotcerts', extra_conf => "bv_iot.naptime = 200\n");
BvTest::create_suite_db($node);
my $dir = $node->basedir;
sub sql { return $node->safe_psql('bitvelocity', $_[0]); }
sub poll { return $node->poll_query_until('bitvelocity', $_[0]); }

my $pki = "$dir/pki";
mkdir $pki;
BvTest::make_ca($pki, 'ca', 'BitVelocity device CA');
BvTest::make_ca($pki, 'rogue_ca', 'Rogue CA');
BvTest::make_cert($pki, 'broker', '127.0.0.1', 'ca', "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
BvTest::make_cert($pki, $_->[0], $_->[1], $_->[2], "extendedKeyUsage=clientAuth\n")
  for ([ 'k1', 'k1', 'ca' ], [ 'k1_rogue', 'k1', 'rogue_ca' ], [ 'ghost', 'ghost', 'ca' ], [ 'k2', 'k2', 'ca' ]);

my $tls_port = PostgreSQL::Test::Cluster::get_free_port();
my $b = BvIot::start_broker($node, $dir, extra => <<"EOF");
listener $tls_port 127.0.0.1
cafile $pki/ca.crt
certfile $pki/broker.crt
keyfile $pki/broker.key
require_certificate true
use_identity_as_username true
EOF
BvIot::provision($node, undef, $_, 'alice') for qw(k1 k2);
BvIot::provision($node, undef, 'b1', 'bob');
BvIot::reload_auth($node, $b);
BvIot::enable_bridge($node, $b, batch_ms => 20);

# ---- recording certificates ----
sub fingerprint
{
	my ($name) = @_;
	my $out = BvTest::openssl('x509', '-in', "$pki/$name.crt", '-noout', '-fingerprint', '-sha256');
	$out =~ s/.*=//s;
	$out =~ s/[:\s]//g;
	return lc $out;
}
my $pem = slurp_file("$pki/k1.crt");
my ($rc, $out, $err) = $node->psql('bitvelocity',
	"SELECT bv.set_actor('alice'); SELECT iot.set_device_certificate('k1', \$pem\$$pem\$pem\$)");
is($rc, 0, 'alice records k1\'s certificate') or diag($err);
is((split /\n/, $out)[-1], fingerprint('k1'), 'the fingerprint openssl prints');
is(sql("SELECT fingerprint FROM iot.device_certificates WHERE device_id = 'k1'"), fingerprint('k1'), 'stored');
my $pem2 = slurp_file("$pki/k2.crt");
($rc, $out, $err) = $node->psql('bitvelocity', "BEGIN; SELECT bv.set_actor('bob'); SET ROLE bv_user; SELECT iot.set_device_certificate('k1', \$pem\$$pem2\$pem\$); COMMIT;");
like($err, qr/device 'k1' does not exist/, 'bob cannot set alice\'s device\'s certificate');
($rc, $out, $err) = $node->psql('bitvelocity', "BEGIN; SELECT bv.set_actor('bob'); SET ROLE bv_user; SELECT iot.set_device_certificate('b1', \$pem\$$pem\$pem\$); COMMIT;");
like($err, qr/registered for another device/, 'nor register k1\'s certificate for his device');
for my $bad (
	[ 'garbage', 'not PEM' ],
	[ "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----", 'bad base64 characters' ],
	[ "-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----", 'not DER' ],
	[ "-----BEGIN CERTIFICATE-----\nQUJ\n-----END CERTIFICATE-----", 'truncated base64' ],
	[ $pem . $pem2, 'two certificates' ],
	[ "-----BEGIN CERTIFICATE-----\n" . ('QUJD' x 5000) . "\n-----END CERTIFICATE-----", 'over 16 kB' ],
	[ slurp_file("$pki/k1.key"), 'a private key' ],)
{
	($rc, $out, $err) = $node->psql('bitvelocity',
		"SELECT bv.set_actor('alice'); SELECT iot.set_device_certificate('k2', \$pem\$$bad->[0]\$pem\$)",
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	like($err, qr/22023: invalid certificate/, "$bad->[1]: 22023");
}
unlike($err, qr/PRIVATE KEY|MIG/, 'the refused input is not echoed');
is(sql("SELECT count(*) FROM iot.device_certificates WHERE device_id = 'k2'"), 0, 'nothing recorded for k2');

# ---- the TLS listener ----
sub tls_pub
{
	my ($cert, $topic, $payload, @extra) = @_;
	my ($o, $e) = ('', '');
	my @cmd = ('mosquitto_pub', '-h', '127.0.0.1', '-p', $tls_port, '--cafile', "$pki/ca.crt", '-q', 1, '-t', $topic,
		'-m', $payload, @extra);
	push @cmd, '--cert', "$pki/$cert.crt", '--key', "$pki/$cert.key" if $cert;
	IPC::Run::run(\@cmd, '>', \$o, '2>', \$e);
	return ($? >> 8, $e);
}

my $ts = sql("SELECT to_char(now() AT TIME ZONE 'UTC' - interval '1 minute', 'YYYY-MM-DD HH24:MI:SS')") =~ s/ /T/r . 'Z';
my ($prc, $perr) = tls_pub('k1', 'devices/k1/telemetry', qq({"metric":"temp","value":1,"ts":"$ts"}));
is($prc, 0, 'k1 publishes with its certificate and no password') or diag($perr);
ok(poll("SELECT count(*) = 1 FROM iot.telemetry WHERE device_id = 'k1' AND value = 1"), 'the reading lands as k1');

# Speaking as k2: on k2's topic, also with user name k2 (the CN wins).
($prc) = tls_pub('k1', 'devices/k2/telemetry', qq({"metric":"temp","value":2,"ts":"$ts"}));
is($prc, 0, 'k1 publishes on k2\'s topic (the broker acknowledges and drops it)');
($prc) = tls_pub('k1', 'devices/k2/telemetry', qq({"metric":"temp","value":3,"ts":"$ts"}), '-u', 'k2');
is($prc, 0, 'k1\'s certificate with user name k2');
($prc) = tls_pub('k2', 'devices/k2/telemetry', qq({"metric":"probe","value":4,"ts":"$ts"}));
is($prc, 0, 'k2 itself publishes (a marker after the others)');
ok(poll("SELECT count(*) = 1 FROM iot.telemetry WHERE device_id = 'k2' AND metric = 'probe'"), 'k2\'s own reading lands');
is(sql("SELECT count(*) FROM iot.telemetry WHERE device_id = 'k2' AND metric = 'temp'"), 0,
	'nothing k1 sent on k2\'s topic landed');

($prc, $perr) = tls_pub('k1_rogue', 'devices/k1/telemetry', qq({"metric":"rogue","value":5,"ts":"$ts"}));
isnt($prc, 0, 'a certificate from another CA (CN k1) is refused');
($prc, $perr) = tls_pub(undef, 'devices/k1/telemetry', qq({"metric":"nocert","value":6,"ts":"$ts"}), '-u', 'k1', '-P', 'x');
isnt($prc, 0, 'no certificate on the TLS listener: refused');
($prc) = tls_pub('ghost', 'devices/ghost/telemetry', qq({"metric":"temp","value":7,"ts":"$ts"}));
is($prc, 0, 'a valid certificate for an unregistered id publishes on its own topic');
ok(poll("SELECT count(*) = 1 FROM iot.quarantine WHERE device_id = 'ghost' AND reason = 'unknown_device'"),
	'the bridge quarantines it: unknown_device');
is(sql("SELECT count(*) FROM iot.telemetry WHERE metric IN ('rogue', 'nocert')"), 0, 'nothing from refused connections');

# Disabled devices: the bridge refuses what a certificate still lets through.
sql("UPDATE iot.devices SET status = 'disabled' WHERE device_id = 'k1'");
($prc) = tls_pub('k1', 'devices/k1/telemetry', qq({"metric":"late","value":8,"ts":"$ts"}));
ok(poll("SELECT count(*) = 1 FROM iot.quarantine WHERE device_id = 'k1' AND reason = 'disabled_device'"),
	'a disabled device with a certificate: quarantined (disabled_device)');

BvMqtt::stop_broker($b);
$node->stop;
done_testing();
