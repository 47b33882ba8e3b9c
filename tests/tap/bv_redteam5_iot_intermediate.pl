# Red-team round 5, bv_iot: a client certificate issued by an intermediate
# CA that our device CA signed (a certificate with CA:TRUE that the
# operator never approved, e.g. a CSR signed with the wrong extensions)
# completed the TLS handshake with the broker, and since the broker names
# clients by subject, a leaf with the subject of a recorded device
# certificate could publish as that device.  The CA that make run creates
# (tools/peers/iot.sh make-pki) now has pathLenConstraint 0 and signs
# CA:FALSE certificates only, so such chains are refused at the handshake.
# Checked against a real mosquitto configured as make run's TLS listener,
# with the PKI made by the same script.
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

my $node = BvTest::new_node('rt5iotca', extra_conf => "bv_iot.naptime = 200\n");
BvTest::create_suite_db($node);
my $dir = $node->basedir;
sub sql { return $node->safe_psql('bitvelocity', $_[0]); }

# The PKI make run ships.
my $home = "$dir/home";
mkdir $home;
my ($o, $e) = ('', '');
IPC::Run::run([ 'env', "BV_HOME=$home", 'SOCK=/nonexistent', "$ENV{BV_SRC}/tools/peers/iot.sh", 'make-pki' ],
	'>', \$o, '2>', \$e)
  or die "iot.sh make-pki: $e";
my $pki = "$home/iot/pki";
like(BvTest::openssl('x509', '-in', "$pki/ca.crt", '-noout', '-ext', 'basicConstraints'),
	qr/CA:TRUE, pathlen:0/, 'the demo CA may sign leaf certificates only');

# Sign a CSR for $subj with $ca's key and the given extensions.
sub cert
{
	my ($name, $subj, $ca, $ext) = @_;
	BvTest::openssl('req', '-new', '-nodes', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-subj', $subj,
		'-keyout', "$dir/$name.key", '-out', "$dir/$name.csr");
	open my $fh, '>', "$dir/$name.ext" or die $!;
	print $fh $ext;
	close $fh;
	my $cadir = $ca eq 'ca' ? $pki : $dir;
	BvTest::openssl('x509', '-req', '-in', "$dir/$name.csr", '-CA', "$cadir/$ca.crt", '-CAkey', "$cadir/$ca.key",
		'-CAcreateserial', '-days', '2', '-extfile', "$dir/$name.ext", '-out', "$dir/$name.crt");
	chmod 0600, "$dir/$name.key";
	return;
}
my $leaf = "basicConstraints=critical,CA:FALSE\nextendedKeyUsage=clientAuth\n";
cert('k1', '/CN=k1/serialNumber=AA', 'ca', $leaf);
# The intermediate our CA signed by mistake, and what its holder issues:
# a leaf with the recorded device's exact subject.
cert('inter', '/CN=Partner CA', 'ca', "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n");
cert('k1_forged', '/CN=k1/serialNumber=AA', 'inter', $leaf);
{
	open my $fh, '>', "$dir/k1_forged_chain.crt" or die $!;
	print $fh slurp_file("$dir/k1_forged.crt"), slurp_file("$dir/inter.crt");
	close $fh;
}
# The same chain under a CA without a path length (what make run made
# before): openssl accepts it, so the refusal below is the path length's.
BvTest::make_ca($dir, 'legacy_ca', 'Legacy CA');
cert('inter_legacy', '/CN=Partner CA', 'legacy_ca', "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n");
cert('k1_legacy', '/CN=k1/serialNumber=AA', 'inter_legacy', $leaf);
my ($vo, $ve);
IPC::Run::run([ 'openssl', 'verify', '-CAfile', "$dir/legacy_ca.crt", '-untrusted', "$dir/inter_legacy.crt",
		'-purpose', 'sslclient', "$dir/k1_legacy.crt" ], '>', \$vo, '2>', \$ve);
like($vo, qr/OK/, 'control: under a CA without path length the intermediate chain verifies');
IPC::Run::run([ 'openssl', 'verify', '-CAfile', "$pki/ca.crt", '-untrusted', "$dir/inter.crt",
		'-purpose', 'sslclient', "$dir/k1_forged.crt" ], '>', \$vo, '2>', \$ve);
like($vo . $ve, qr/path length/i, 'under the demo CA openssl refuses it: path length exceeded');

my $tls_port = PostgreSQL::Test::Cluster::get_free_port();
my $b = BvIot::start_broker($node, $dir, managed => 1,
	tls => { port => $tls_port, ca => "$pki/ca.crt", cert => "$pki/broker.crt", key => "$pki/broker.key" });
BvIot::provision($node, undef, 'k1', 'alice');
BvIot::enable_bridge($node, $b, batch_ms => 20);
BvIot::wait_auth_applied($node, $b, 0);
my $pos = BvMqtt::log_position($b);
sql("SELECT bv.set_actor('alice'); SELECT iot.set_device_certificate('k1', \$pem\$" . slurp_file("$dir/k1.crt") . "\$pem\$)");
BvIot::wait_auth_applied($node, $b, $pos);

# 'ok', 'denied' (connected, publish refused) or 'refused' (no connection).
sub tls_pub
{
	my ($cert, $key, $topic) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'mosquitto_pub', '-V', 'mqttv5', '-h', '127.0.0.1', '-p', $tls_port, '--cafile', "$pki/ca.crt",
			'-q', 1, '-t', $topic, '-m', '{"metric":"t","value":1}', '--cert', $cert, '--key', $key ],
		'>', \$out, '2>', \$err, IPC::Run::timeout(60));
	return 'refused' if $? >> 8;
	return $err =~ /Not authorized/ ? 'denied' : 'ok';
}
is(tls_pub("$dir/k1.crt", "$dir/k1.key", 'devices/k1/telemetry'), 'ok', 'the recorded certificate publishes');
is(tls_pub("$dir/k1_forged_chain.crt", "$dir/k1_forged.key", 'devices/k1/telemetry'), 'refused',
	'a leaf with the same subject from an intermediate of our CA: refused at the handshake');
is(tls_pub("$dir/inter.crt", "$dir/inter.key", 'devices/k1/telemetry'), 'refused',
	'the intermediate itself (no clientAuth leaf): refused');
# A device's own key cannot act as a CA either (its certificate says CA:FALSE).
cert('k1_child', '/CN=k1/serialNumber=AA', 'k1', $leaf);
{
	open my $fh, '>', "$dir/k1_child_chain.crt" or die $!;
	print $fh slurp_file("$dir/k1_child.crt"), slurp_file("$dir/k1.crt");
	close $fh;
}
is(tls_pub("$dir/k1_child_chain.crt", "$dir/k1_child.key", 'devices/k1/telemetry'), 'refused',
	'a certificate signed with a device key: refused');

$node->stop;
done_testing();
