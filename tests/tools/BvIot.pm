# BvIot: the IoT side of bv_iot's TAP tests and benchmark.
#
#   use lib "$ENV{BV_SRC}/tests/tools";  use BvIot;
#   my $b = BvIot::start_broker($node, $dir);   # mosquitto with password file + ACL from iot.devices
#   my $secret = BvIot::provision($node, 'dev-1');   # and the broker reloads its password file
#   BvIot::enable_bridge($node, $b, batch_ms => 20);
#   BvIot::publish($b, 'dev-1', $secret, 'devices/dev-1/telemetry', @payloads);   # QoS 1, one per line
#
# The broker is tests/tools/BvMqtt.pm's (persistence, its own port), with
# anonymous access off, the password file written from
# iot.mosquitto_passwd() (every active device plus the bridge's user) and
# the ACL from iot.mosquitto_acl(): devices/%u/... only.  reload_auth()
# rewrites the password file and sends the broker SIGHUP.
#
# start_broker(..., managed => 1) is the shipped set-up instead: per-listener
# settings, a pid file, and the bridge itself (iot.bridge_config.auth_dir,
# broker_pid_file) rewrites passwd, acl and acl_certs and signals the broker
# after each registry change; tls => { port, ca, cert, key } adds the
# certificate listener (use_subject_as_username, acl_certs).
# wait_auth_applied() waits until the bridge has written the current
# registry (iot.broker_auth.in_sync) and the broker has reloaded it.
package BvIot;

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Utils;
use lib "$ENV{BV_SRC}/tests/tools";
use BvMqtt;

our $BRIDGE_USER = 'bv_iot_bridge';
our $BRIDGE_PASSWORD = 'bridge-' . int(rand(1e9));

sub _sql { my ($node, $q) = @_; return $node->safe_psql('bitvelocity', $q); }

sub write_auth
{
	my ($node, $b) = @_;
	my $pw = _sql($node, "SELECT * FROM iot.mosquitto_passwd('$BRIDGE_USER', '$BRIDGE_PASSWORD')");
	my $acl = _sql($node, "SELECT * FROM iot.mosquitto_acl('$BRIDGE_USER')");
	my $acl_certs = _sql($node, "SELECT * FROM iot.mosquitto_acl_certs()");
	for ([ "$b->{dir}/passwd", $pw ], [ "$b->{dir}/acl", $acl ], [ "$b->{dir}/acl_certs", $acl_certs ])
	{
		open my $fh, '>', "$_->[0].tmp" or die "$_->[0]: $!";
		print $fh "$_->[1]\n";
		close $fh;
		rename "$_->[0].tmp", $_->[0] or die "rename $_->[0]: $!";
	}
	return;
}

sub start_broker
{
	my ($node, $dir, %o) = @_;
	mkdir "$dir/mqtt";
	my $b = { dir => "$dir/mqtt" };
	write_auth($node, $b);
	my $extra = "allow_anonymous false\npassword_file $dir/mqtt/passwd\nacl_file $dir/mqtt/acl\n"
	  . "max_inflight_messages 0\n";
	my $head;
	if ($o{managed})
	{
		$head = "per_listener_settings true";
		$extra .= "pid_file $dir/mqtt/mosquitto.pid\n";
		if (my $t = $o{tls})
		{
			$extra .= "listener $t->{port} 127.0.0.1\nallow_anonymous false\n"
			  . "cafile $t->{ca}\ncertfile $t->{cert}\nkeyfile $t->{key}\nrequire_certificate true\n"
			  . "use_subject_as_username true\nacl_file $dir/mqtt/acl_certs\n";
		}
		_sql($node, "UPDATE iot.bridge_config SET auth_dir = '$dir/mqtt', broker_pid_file = '$dir/mqtt/mosquitto.pid'");
	}
	$extra .= $o{extra} // '';
	my $mb = BvMqtt::start_broker($dir, extra => $extra, head => $head);
	$mb->{$_} //= $b->{$_} for keys %$b;
	$mb->{managed} = $o{managed};
	return $mb;
}

# Rewrite the password file and make the broker read it again.
sub reload_auth
{
	my ($node, $b) = @_;
	write_auth($node, $b);
	my $pos = BvMqtt::log_position($b);
	kill 'HUP', $b->{pid};
	BvMqtt::wait_until(sub { BvMqtt::log_since($b, $pos) =~ /Reloading config/ }, 30);
	return;
}

# Managed brokers: wait until the bridge wrote the registry as it is now
# and the broker reloaded: a "Reloading config" line in its log after $pos
# (the log position taken before the change; mosquitto logs it and then
# applies the files before it serves any client again).
sub wait_auth_applied
{
	my ($node, $b, $pos) = @_;
	$node->poll_query_until('bitvelocity', 'SELECT in_sync FROM iot.broker_auth')
	  or die 'the bridge did not write the broker\'s files: '
	  . _sql($node, 'SELECT error FROM iot.broker_auth');
	BvMqtt::wait_until(sub { BvMqtt::log_since($b, $pos // 0) =~ /Reloading config/ }, 30)
	  or die 'the broker did not reload its files';
	return;
}

# Provision a device, return its secret; the broker learns it.
sub provision
{
	my ($node, $b, $id, $owner) = @_;
	# set_actor lasts a transaction: one for both statements
	my $set = $owner ? "SELECT bv.set_actor('$owner');" : '';
	my $pos = $b ? BvMqtt::log_position($b) : 0;
	my $secret = _sql($node, "BEGIN; $set SELECT secret FROM iot.provision_device('$id'); COMMIT;");
	$secret =~ s/.*\n//s;
	if ($b && $b->{managed}) { wait_auth_applied($node, $b, $pos); }
	elsif ($b) { reload_auth($node, $b); }
	return $secret;
}

sub enable_bridge
{
	my ($node, $b, %o) = @_;
	my $batch_ms = $o{batch_ms} // 20;
	my $batch_size = $o{batch_size} // 2000;
	_sql($node, qq{
SELECT bv.secret_set('iot_bridge_password', '$BRIDGE_PASSWORD');
UPDATE iot.bridge_config SET enabled = true, host = '127.0.0.1', port = $b->{port},
       username = '$BRIDGE_USER', password_secret = 'iot_bridge_password',
       batch_ms = $batch_ms, batch_size = $batch_size;
});
	$node->poll_query_until('bitvelocity', "SELECT state = 'running' FROM iot.bridge_stats")
	  or die "the bridge did not start";
	return;
}

# The test device program (tests/tools/bv_iot_pub.c), built by `make
# build`; compiled here if missing.
sub pub_program
{
	my $bin = "$ENV{BV_SRC}/tests/tools/bv_iot_pub";
	return $bin if -x $bin;
	my $tmp = "$PostgreSQL::Test::Utils::tmp_check/bv_iot_pub";
	return $tmp if -x $tmp;
	system('cc', '-O2', '-o', $tmp, "$ENV{BV_SRC}/tests/tools/bv_iot_pub.c", '-lmosquitto') == 0
	  or die "cannot build bv_iot_pub";
	return $tmp;
}

# Publish payloads (one message each, QoS 1) as $user; returns (exit code,
# stderr).  Returns after the broker acknowledged every message.
sub publish
{
	my ($b, $user, $secret, $topic, @payloads) = @_;
	# The payloads go through a file, not a pipe: a publisher the broker
	# refuses exits before reading them, and writing to its pipe would
	# kill the test with SIGPIPE.
	my $in = "$PostgreSQL::Test::Utils::tmp_check/bv_iot_pub_in." . $$ . '.' . int(rand(1e9));
	open my $fh, '>', $in or die "cannot write $in: $!";
	print $fh join('', map { "$_\n" } @payloads);
	close $fh;
	my ($out, $err) = ('', '');
	IPC::Run::run([ pub_program(), '-p', $b->{port}, '-u', $user, '-P', $secret, '-t', $topic ],
		'<', $in, '>', \$out, '2>', \$err);
	unlink $in;
	return ($? >> 8, $err);
}

# Generated readings (bv_iot_pub -n/-b/-s/-m); returns (exit code, acked).
sub publish_generated
{
	my ($b, $user, $secret, $topic, %o) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run(
		[
			pub_program(), '-p', $b->{port}, '-u', $user, '-P', $secret, '-t', $topic,
			'-n', $o{messages}, '-b', $o{readings} // 1, '-s', $o{start}, '-m', $o{metric} // 'm'
		],
		'>', \$out, '2>', \$err);
	my ($acked) = $out =~ /acked (\d+)/;
	return ($? >> 8, $acked // 0);
}

1;
