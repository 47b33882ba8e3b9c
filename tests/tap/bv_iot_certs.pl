# bv_iot device identity by client certificate, as make run ships it: a
# mosquitto TLS listener that requires a certificate from the project's CA
# and names each client by its certificate's subject
# (use_subject_as_username), with its own ACL that the bridge writes from
# the registry (iot.mosquitto_acl_certs): a certificate may use its
# device's topics only while it is the certificate recorded for that device
# and the device is active.  Checked against a real mosquitto:
#  - the registered certificate publishes without a password and lands;
#  - another certificate of the same CA for the same device (same CN, not
#    the registered one), an unregistered id, another device's topic: the
#    broker refuses the publish ("Not authorized" with MQTT 5);
#  - replacing or removing the registration, or disabling the device, cuts
#    off the old certificate, also on a connection that is already open;
#  - another CA's certificate with the very same subject, and no
#    certificate: refused at the TLS handshake;
#  - a seeded random sequence of registrations, removals, disables and
#    enables against a model of who may publish;
#  - hostile subjects (newline, '#', '+', non-ASCII, oversized) and PEM input.
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

my $seed = $ENV{BV_SEED} // time();
srand($seed);
diag("seed $seed (rerun with BV_SEED=$seed)");

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

# A client certificate with any subject (openssl -subj syntax).
sub cert
{
	my ($name, $subj, $ca, @opt) = @_;
	BvTest::openssl('req', '-new', '-nodes', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', @opt, '-subj', $subj,
		'-keyout', "$pki/$name.key", '-out', "$pki/$name.csr");
	open my $fh, '>', "$pki/$name.ext" or die $!;
	print $fh "extendedKeyUsage=clientAuth\n";
	close $fh;
	BvTest::openssl('x509', '-req', '-in', "$pki/$name.csr", '-CA', "$pki/$ca.crt", '-CAkey', "$pki/$ca.key",
		'-CAcreateserial', '-days', '2', '-extfile', "$pki/$name.ext", '-out', "$pki/$name.crt");
	chmod 0600, "$pki/$name.key";
	return;
}
cert('k1a', '/CN=k1/serialNumber=A', 'ca');
cert('k1b', '/CN=k1/serialNumber=B', 'ca');
cert('k1a_rogue', '/CN=k1/serialNumber=A', 'rogue_ca');
cert('k1b_dup', '/CN=k1/serialNumber=B', 'ca');
cert('k2', '/CN=k2', 'ca');
cert('k2b', '/CN=k2/serialNumber=B', 'ca');
cert('ghost', '/CN=ghost', 'ca');

my $tls_port = PostgreSQL::Test::Cluster::get_free_port();
my $b = BvIot::start_broker($node, $dir, managed => 1,
	tls => { port => $tls_port, ca => "$pki/ca.crt", cert => "$pki/broker.crt", key => "$pki/broker.key" });
BvIot::provision($node, undef, $_, 'alice') for qw(k1 k2 k3);
BvIot::provision($node, undef, 'b1', 'bob');
BvIot::enable_bridge($node, $b, batch_ms => 20);
BvIot::wait_auth_applied($node, $b, 0);

sub fingerprint
{
	my ($name) = @_;
	my $out = BvTest::openssl('x509', '-in', "$pki/$name.crt", '-noout', '-fingerprint', '-sha256');
	$out =~ s/.*=//s;
	$out =~ s/[:\s]//g;
	return lc $out;
}

# Record $name's certificate for $device (as its owner); waits until the
# broker has the new ACL.  Returns psql's (rc, stdout, stderr).
sub register
{
	my ($device, $name, $owner) = @_;
	my $pem = defined $name ? '$pem$' . slurp_file("$pki/$name.crt") . '$pem$' : 'NULL';
	my $pos = BvMqtt::log_position($b);
	my @r = $node->psql('bitvelocity',
		"BEGIN; SELECT bv.set_actor('" . ($owner // 'alice') . "'); SELECT iot.set_device_certificate('$device', $pem); COMMIT;",
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	BvIot::wait_auth_applied($node, $b, $pos) if $r[0] == 0;
	return @r;
}
sub set_status
{
	my ($device, $status) = @_;
	my $pos = BvMqtt::log_position($b);
	sql("UPDATE iot.devices SET status = '$status' WHERE device_id = '$device'");
	BvIot::wait_auth_applied($node, $b, $pos);
	return;
}

# Publish once over TLS with MQTT 5 (the broker answers a refused publish
# with "Not authorized"): 'ok', 'denied' (connected, publish refused) or
# 'refused' (no connection).
sub tls_pub
{
	my ($cert, $topic, $payload, @extra) = @_;
	my ($o, $e) = ('', '');
	my @cmd = ('mosquitto_pub', '-V', 'mqttv5', '-h', '127.0.0.1', '-p', $tls_port, '--cafile', "$pki/ca.crt", '-q', 1,
		'-t', $topic, '-m', $payload, @extra);
	push @cmd, '--cert', "$pki/$cert.crt", '--key', "$pki/$cert.key" if $cert;
	IPC::Run::run(\@cmd, '>', \$o, '2>', \$e, IPC::Run::timeout(60));
	return 'refused' if $? >> 8;
	return $e =~ /Not authorized/ ? 'denied' : 'ok';
}
my $ts = sql("SELECT to_char(now() AT TIME ZONE 'UTC' - interval '1 minute', 'YYYY-MM-DD HH24:MI:SS')") =~ s/ /T/r . 'Z';
my $v = 0;
sub reading { my ($metric) = @_; $v++; return qq({"metric":"$metric","value":$v,"ts":"$ts"}); }

# ---- recording certificates ----
my ($rc, $out, $err) = register('k1', 'k1a');
is($rc, 0, 'alice records k1a for k1') or diag($err);
is((split /\n/, $out)[-1], fingerprint('k1a'), 'the fingerprint openssl prints');
is(sql("SELECT fingerprint || ' ' || subject FROM iot.device_certificates WHERE device_id = 'k1'"),
	fingerprint('k1a') . ' serialNumber=A,CN=k1', 'stored with its subject as the broker prints it');
($rc, $out, $err) = $node->psql('bitvelocity', "BEGIN; SELECT bv.set_actor('bob'); SET ROLE bv_user; SELECT iot.set_device_certificate('k1', \$pem\$" . slurp_file("$pki/k2.crt") . "\$pem\$); COMMIT;");
like($err, qr/device 'k1' does not exist/, 'bob cannot set alice\'s device\'s certificate');
($rc, $out, $err) = $node->psql('bitvelocity', "BEGIN; SELECT bv.set_actor('bob'); SET ROLE bv_user; SELECT iot.set_device_certificate('b1', \$pem\$" . slurp_file("$pki/k1a.crt") . "\$pem\$); COMMIT;");
like($err, qr/registered for another device/, 'nor register k1\'s certificate for his device');
my $pem = slurp_file("$pki/k1a.crt");
for my $bad (
	[ 'garbage', 'not PEM' ],
	[ "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----", 'bad base64 characters' ],
	[ "-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----", 'not DER' ],
	[ "-----BEGIN CERTIFICATE-----\nQUJ\n-----END CERTIFICATE-----", 'truncated base64' ],
	[ $pem . slurp_file("$pki/k2.crt"), 'two certificates' ],
	[ "-----BEGIN CERTIFICATE-----\n" . ('QUJD' x 5000) . "\n-----END CERTIFICATE-----", 'over 16 kB' ],
	[ slurp_file("$pki/k1a.key"), 'a private key' ],
	[ "-----BEGIN CERTIFICATE-----\nMIIBAAAA" . ('A' x 400) . "\n-----END CERTIFICATE-----", 'a SEQUENCE header and zeros' ],)
{
	($rc, $out, $err) = $node->psql('bitvelocity',
		"SELECT bv.set_actor('alice'); SELECT iot.set_device_certificate('k3', \$pem\$$bad->[0]\$pem\$)",
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	like($err, qr/22023: invalid certificate/, "$bad->[1]: 22023");
	unlike($err, qr/PRIVATE KEY|MIG|QUJD/, "$bad->[1]: the refused input is not echoed");
}
is(sql("SELECT count(*) FROM iot.device_certificates WHERE device_id = 'k3'"), 0, 'nothing recorded for k3');

# ---- the registered certificate, and every other one ----
is(tls_pub('k1a', 'devices/k1/telemetry', reading('a')), 'ok', 'k1a, k1\'s registered certificate, publishes without a password');
ok(poll("SELECT count(*) = 1 FROM iot.telemetry WHERE device_id = 'k1' AND metric = 'a'"), 'its reading lands as k1');
is(tls_pub('k1b', 'devices/k1/telemetry', reading('b')), 'denied', 'k1b: same CA, same CN, not the registered certificate: refused');
is(tls_pub('k1a', 'devices/k2/telemetry', reading('cross')), 'denied', 'k1a on k2\'s topic: refused');
is(tls_pub('k1a', 'devices/k2/telemetry', reading('cross'), '-u', 'k2', '-P', 'x'), 'denied', 'also with user name k2');
is(tls_pub('ghost', 'devices/ghost/telemetry', reading('ghost')), 'denied', 'a certificate for an unregistered id: refused');
is(tls_pub('k1a_rogue', 'devices/k1/telemetry', reading('rogue')), 'refused',
	'another CA\'s certificate with k1a\'s very subject: refused at the handshake');
is(tls_pub(undef, 'devices/k1/telemetry', reading('nocert'), '-u', 'k1', '-P', 'x'), 'refused', 'no certificate: refused');
is(tls_pub('k1a', 'devices/k1/telemetry', reading('marker1')), 'ok', 'k1a again (a marker after the others)');
ok(poll("SELECT count(*) = 1 FROM iot.telemetry WHERE metric = 'marker1'"), 'the marker lands');
is(sql("SELECT count(*) FROM iot.telemetry WHERE metric IN ('b', 'cross', 'ghost', 'rogue', 'nocert')")
	  + sql("SELECT count(*) FROM iot.quarantine WHERE payload_prefix ~ '\"(b|cross|ghost|rogue|nocert)\"'"),
	0, 'nothing refused reached the bridge');

# ---- replaced while connected: the open connection loses the device ----
my ($lin, $lout, $lerr) = ('', '', '');
my $pos = BvMqtt::log_position($b);
my $live = IPC::Run::start([ 'mosquitto_pub', '-V', 'mqttv5', '-h', '127.0.0.1', '-p', $tls_port, '--cafile', "$pki/ca.crt",
	'--cert', "$pki/k1a.crt", '--key', "$pki/k1a.key", '-i', 'k1a-live', '-q', 1, '-t', 'devices/k1/telemetry', '-l' ],
	'<', \$lin, '>', \$lout, '2>', \$lerr);
BvMqtt::wait_until(sub { BvMqtt::log_since($b, $pos) =~ /as k1a-live / }, 30) or die 'k1a-live did not connect';
$lin .= reading('live1') . "\n";
$live->pump_nb;
ok(poll("SELECT count(*) = 1 FROM iot.telemetry WHERE metric = 'live1'"), 'an open k1a connection publishes');
($rc, $out, $err) = register('k1', 'k1b');
is($rc, 0, 'k1\'s certificate replaced by k1b') or diag($err);
$lin .= reading('live2') . "\n";
ok(BvMqtt::wait_until(sub { $live->pump_nb; $lerr =~ /Not authorized/ }, 60), 'the open k1a connection is refused from now on');
$live->kill_kill;
is(tls_pub('k1a', 'devices/k1/telemetry', reading('old')), 'denied', 'a new k1a connection too');
is(tls_pub('k1b', 'devices/k1/telemetry', reading('marker2')), 'ok', 'k1b publishes');
ok(poll("SELECT count(*) = 1 FROM iot.telemetry WHERE metric = 'marker2'"), 'and lands');
is(sql("SELECT count(*) FROM iot.telemetry WHERE metric IN ('live2', 'old')"), 0, 'nothing k1a sent after the replacement landed');

# ---- disabled, enabled, removed ----
set_status('k1', 'disabled');
is(tls_pub('k1b', 'devices/k1/telemetry', reading('dis')), 'denied', 'k1 disabled: its certificate is refused');
set_status('k1', 'active');
is(tls_pub('k1b', 'devices/k1/telemetry', reading('en')), 'ok', 'enabled again: accepted');
($rc) = register('k1', undef);
is($rc, 0, 'k1\'s certificate removed');
is(tls_pub('k1b', 'devices/k1/telemetry', reading('gone')), 'denied', 'removed: refused');
($rc) = register('k1', 'k1b');
($rc, $out, $err) = register('k2', 'k1b_dup');
like($err, qr/23505: this certificate is registered for another device/, 'a certificate with another device\'s certificate\'s subject: 23505');

# ---- a seeded random sequence against a model ----
# Model: device -> registered certificate (or none), device -> active.  A
# certificate may publish on its device's topic iff it is registered for it
# and the device is active.
my %reg = (k1 => 'k1b', k2 => undef);
my %active = (k1 => 1, k2 => 1);
my %cert_dev = (k1a => 'k1', k1b => 'k1', k2 => 'k2', k2b => 'k2');
my $mismatch = 0;
my $steps = 12;
for my $step (1 .. $steps)
{
	my $dev = (qw(k1 k2))[ int(rand(2)) ];
	my @op = ('register', 'register', 'remove', 'disable', 'enable');
	my $op = $op[ int(rand(@op)) ];
	if ($op eq 'register')
	{
		my @c = grep { $cert_dev{$_} eq $dev } sort keys %cert_dev;
		my $c = $c[ int(rand(@c)) ];
		my ($r, undef, $e) = register($dev, $c);
		if ($r != 0) { $mismatch++; diag("step $step: register $c for $dev failed: $e"); }
		$reg{$dev} = $c;
	}
	elsif ($op eq 'remove') { register($dev, undef); $reg{$dev} = undef; }
	else { set_status($dev, $op eq 'disable' ? 'disabled' : 'active'); $active{$dev} = $op eq 'enable' ? 1 : 0; }
	for my $c (sort keys %cert_dev)
	{
		my $d = $cert_dev{$c};
		my $want = (defined $reg{$d} && $reg{$d} eq $c && $active{$d}) ? 'ok' : 'denied';
		my $got = tls_pub($c, "devices/$d/telemetry", reading('model'));
		next if $got eq $want;
		$mismatch++;
		diag("step $step ($op $dev): $c on devices/$d: $got, model says $want");
	}
}
is($mismatch, 0, "$steps random certificate changes: the broker agrees with the model (seed $seed)");

# ---- hostile subjects ----
cert('evil_nl', "/CN=k3\nuser bv_iot_bridge\ntopic readwrite #", 'ca');
cert('evil_chars', '/CN=#k3 \\+x/O=a,b=c\\/d', 'ca');
cert('evil_space', '/CN=k3 ', 'ca');
cert('evil_utf8', "/CN=k3\x{c3}\x{a9}\x{e2}\x{80}\x{8b}", 'ca', '-utf8');
cert('evil_long', join('', map { "/OU=" . ('o' x 60) } 1 .. 20) . '/CN=k3', 'ca');
for my $c ('evil_nl', 'evil_chars', 'evil_utf8')
{
	($rc, $out, $err) = register('k3', $c);
	is($rc, 0, "$c: recorded") or diag($err);
	my $subject = sql("SELECT subject FROM iot.device_certificates WHERE device_id = 'k3'");
	unlike($subject, qr/[\x00-\x1f\x7f-\xff]/, "$c: the stored subject is printable ASCII");
	is(tls_pub($c, 'devices/k3/telemetry', reading("hostile_$c")), 'ok', "$c: the broker names it as we do and lets it publish as k3");
	is(tls_pub($c, 'devices/k1/telemetry', reading('hostile_cross')), 'denied', "$c: and nothing else");
	my @odd = grep { length && !/^(#.*|user [\x21-\x7e][\x20-\x7e]*|topic (read|write) devices\/[A-Za-z0-9_-]{1,64}\/(commands|telemetry|ack|result|status))$/ }
	  split /\n/, slurp_file("$b->{dir}/acl_certs");
	is(scalar(@odd), 0, "$c: acl_certs holds only well-formed lines") or diag(join("\n", @odd));
	unlike(slurp_file("$b->{dir}/acl_certs"), qr/^(user bv_iot_bridge|topic readwrite)/m, "$c: no line injected");
}
ok(poll("SELECT count(*) = 3 FROM iot.telemetry WHERE metric LIKE 'hostile_evil%'"), 'the hostile subjects\' readings land as k3');
($rc, $out, $err) = register('k3', 'evil_long');
like($err, qr/22023: invalid certificate subject/, 'a subject over 1024 characters: 22023');
($rc, $out, $err) = register('k3', 'evil_space');
like($err, qr/22023: invalid certificate subject/, 'a subject ending in a space (the broker would trim it): 22023');
set_status('k1', 'active');
register('k1', 'k1b');
is(tls_pub('k1b', 'devices/k1/telemetry', reading('still')), 'ok', 'the broker still serves k1b after all this');

# ---- upgraded certificates without a subject are not accepted ----
sql("UPDATE iot.device_certificates SET subject = NULL WHERE device_id = 'k1'");
ok(poll("SELECT in_sync FROM iot.broker_auth"), 'the bridge writes the change');
ok(BvMqtt::wait_until(sub { tls_pub('k1b', 'devices/k1/telemetry', reading('nosubject')) eq 'denied' }, 60),
	'a certificate recorded without a subject (before 0.3.0) is refused until recorded again');

BvMqtt::stop_broker($b);
$node->stop;
done_testing();
