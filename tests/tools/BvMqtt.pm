# BvMqtt: the MQTT side of bv_cdc's TAP tests and benchmarks (mosquitto 2.0).
#
#   use lib "$ENV{BV_SRC}/tests/tools";  use BvMqtt;
#   my $b = BvMqtt::start_broker($dir);          # mosquitto on a free 127.0.0.1 port
#   $b->{port}
#   my $s = BvMqtt::subscribe($b, 'bv/#', qos => 1, id => 'bvsub');
#   BvMqtt::wait_ready($s);                      # the subscription is live
#   BvMqtt::wait_persisted($b);                  # ... and saved to the broker's disk
#   my @m = BvMqtt::consume($s, $n);             # wait until >= $n messages
#   BvMqtt::kill_broker($b, 'KILL');  BvMqtt::restart_broker($b);   # same port
#   my $r = BvMqtt::retained($b, 'bv/public/kv/1');   # the retained message, or undef
#   BvMqtt::stop_subscriber($s);  BvMqtt::stop_broker($b);
#
# Each message is { topic, qos, retain, payload, env => decoded payload
# (undef if not JSON) }, in arrival order.  The subscriber is mosquitto_sub
# with -F %j, one JSON object per message; "qos" is the QoS of the delivery,
# min(publish QoS, subscription QoS): subscribe at QoS 2 to see a route's QoS.
#
# Making "mosquitto killed and restarted mid-stream, nothing lost" testable
# without flakiness:
#
# - The subscriber has a persistent session (mosquitto_sub -c with a fixed
#   client id, clean session off) and the broker persists its state
#   (persistence true, autosave every second, no queue limits).  After a
#   restart the broker restores the session with its subscription, so
#   messages the worker publishes after the restart are queued for the
#   subscriber even before mosquitto_sub has reconnected (it reconnects and
#   resubscribes on its own): there is no race between the worker's and the
#   subscriber's reconnections.  wait_persisted() waits until the broker has
#   saved its state after the subscription, so even a kill -9 right after
#   start-up restores it.
# - A graceful stop (SIGTERM) saves everything the broker acknowledged:
#   messages queued for or in flight to the subscriber survive the restart.
#   So with SIGTERM mid-stream, "every committed row arrives" is exactly
#   the worker's promise (publish until PUBACK, replay the rest).
# - A kill -9 loses what mosquitto acknowledged since its last autosave but
#   had not yet written to the subscriber: mosquitto does not make a message
#   durable before its PUBACK.  That is the broker's durability, not the
#   worker's; a test that kills with -9 mid-stream can only demand exactly
#   the rows committed after the kill (which no dead broker acknowledged),
#   plus at-least-once for everything when the kill happens while nothing is
#   in flight.  bv_cdc_mqtt.pl does both.
# - Probes: wait_ready() publishes QoS 1 messages on bvtest/probe/<n> (the
#   subscriber always subscribes to bvtest/probe/# too) until one arrives,
#   an end-to-end check that the subscriber is connected and subscribed.
#   Probes are left out of messages().
package BvMqtt;

use strict;
use warnings;

use JSON::PP;
use Time::HiRes qw(usleep);
use PostgreSQL::Test::Utils;
use PostgreSQL::Test::Cluster;

# Brokers and subscribers still running when the test ends are stopped.
my @running;
END
{
	for my $p (grep { !$_->{stopped} && $_->{pid} } @running)
	{
		kill 'TERM', $p->{pid};
	}
}

my $probe_seq = 0;

sub _timeout { return $PostgreSQL::Test::Utils::timeout_default; }

# Wait (up to $timeout s) until $cond->() is true; returns its last value.
sub wait_until
{
	my ($cond, $timeout) = @_;
	my $deadline = time() + ($timeout // _timeout());
	while (1)
	{
		my $v = $cond->();
		return $v if $v || time() > $deadline;
		usleep(50_000);
	}
}

sub _spawn
{
	my ($out, $err, @cmd) = @_;
	my $pid = fork() // die "fork: $!";
	if ($pid == 0)
	{
		open STDIN, '<', '/dev/null';
		open STDOUT, '>>', $out or die "$out: $!";
		open STDERR, '>>', $err or die "$err: $!";
		exec(@cmd) or die "exec $cmd[0]: $!";
	}
	return $pid;
}

sub _port_open
{
	my ($port) = @_;
	return IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp')
	  ? 1 : 0;
}

# Start mosquitto on a free port of 127.0.0.1 with a configuration written
# to $dir/mqtt/mosquitto.conf.  Options: port, extra (lines appended to the
# configuration, e.g. "max_inflight_messages 1000"), head (lines written
# first, e.g. "per_listener_settings true", which must precede the rest).
sub start_broker
{
	my ($dir, %o) = @_;
	require IO::Socket::INET;
	my $bdir = "$dir/mqtt";
	mkdir $bdir unless -d $bdir;
	my $port = $o{port} // PostgreSQL::Test::Cluster::get_free_port();
	my $b = {
		dir => $bdir,
		port => $port,
		conf => "$bdir/mosquitto.conf",
		log => "$bdir/mosquitto.log",
		db => "$bdir/mosquitto.db",
	};
	my $user = getpwuid($<);
	open my $fh, '>', $b->{conf} or die "$b->{conf}: $!";
	print $fh "$o{head}\n" if $o{head};
	print $fh <<"EOF";
# written by tests/tools/BvMqtt.pm
listener $port 127.0.0.1
allow_anonymous true
user $user
persistence true
persistence_location $bdir/
persistence_file mosquitto.db
autosave_interval 1
max_queued_messages 0
max_queued_bytes 0
max_inflight_messages 100
log_dest file $b->{log}
log_type error
log_type warning
log_type notice
log_type information
log_type subscribe
log_timestamp true
EOF
	print $fh "$o{extra}\n" if $o{extra};
	close $fh;
	push @running, $b;
	_start($b);
	return $b;
}

sub _start
{
	my ($b) = @_;
	$b->{pid} = _spawn("$b->{dir}/mosquitto.out", "$b->{dir}/mosquitto.out", 'mosquitto', '-c', $b->{conf});
	$b->{stopped} = 0;
	wait_until(sub { _port_open($b->{port}) }, 30)
	  or die "mosquitto did not listen on 127.0.0.1:$b->{port}; see $b->{log}";
	return;
}

# Kill the broker with $sig (default KILL) and wait until it is gone.
sub kill_broker
{
	my ($b, $sig) = @_;
	kill $sig // 'KILL', $b->{pid};
	waitpid($b->{pid}, 0);
	$b->{stopped} = 1;
	return;
}

# Start the broker again, same configuration, port and persistence file.
sub restart_broker
{
	my ($b) = @_;
	die "the broker still runs" unless $b->{stopped};
	# The listening port may linger in TIME_WAIT; mosquitto sets SO_REUSEADDR.
	_start($b);
	return;
}

sub stop_broker
{
	my ($b) = @_;
	kill_broker($b, 'TERM') unless $b->{stopped};
	return;
}

# Length of the broker's log now (to look for lines written after a point).
sub log_position
{
	my ($b) = @_;
	return -s $b->{log} // 0;
}

# Lines of the broker's log after $offset.
sub log_since
{
	my ($b, $offset) = @_;
	open my $fh, '<', $b->{log} or return '';
	seek $fh, $offset // 0, 0;
	local $/;
	my $s = <$fh>;
	return $s // '';
}

# Wait until the broker saved its state (autosave) after now.
sub wait_persisted
{
	my ($b) = @_;
	my $pos = log_position($b);
	return wait_until(sub { log_since($b, $pos) =~ /Saving in-memory database/ });
}

# A subscriber: mosquitto_sub in the background.  Options: qos (default 1),
# id (client id; with a persistent session, default "bvsub$$"), persistent
# (default 1: clean session off), more_topics (array ref).
sub subscribe
{
	my ($b, $topic, %o) = @_;
	my $id = $o{id} // "bvsub$$";
	my $s = {
		broker => $b,
		id => $id,
		out => "$b->{dir}/sub_$id.jsonl",
		err => "$b->{dir}/sub_$id.err",
		offset => 0,
		buffer => '',
		messages => [],
		probes => {},
	};
	my @topics = map { ('-t', $_) } ($topic, 'bvtest/probe/#', @{ $o{more_topics} // [] });
	my @cmd = (
		'mosquitto_sub', '-h', '127.0.0.1', '-p', $b->{port}, '-i', $id,
		'-q', $o{qos} // 1, '-F', '%j', '-k', 10, @topics);
	push @cmd, '-c' if $o{persistent} // 1;
	$s->{pid} = _spawn($s->{out}, $s->{err}, @cmd);
	push @running, $s;
	return $s;
}

sub stop_subscriber
{
	my ($s) = @_;
	kill 'TERM', $s->{pid};
	waitpid($s->{pid}, 0);
	$s->{stopped} = 1;
	return;
}

# Read what the subscriber printed since last time.
sub _read_new
{
	my ($s) = @_;
	open my $fh, '<', $s->{out} or return;
	seek $fh, $s->{offset}, 0;
	local $/;
	my $chunk = <$fh> // '';
	$s->{offset} += length $chunk;
	$s->{buffer} .= $chunk;
	while ($s->{buffer} =~ s/\A([^\n]*)\n//)
	{
		my $line = $1;
		next unless length $line;
		my $j = eval { JSON::PP->new->decode($line) };
		die "cannot parse subscriber output line: $line" unless $j;
		if ($j->{topic} =~ m{^bvtest/probe/(\d+)$})
		{
			$s->{probes}{$1} = 1;
			next;
		}
		my $env = eval { decode_json($j->{payload}) };
		push @{ $s->{messages} },
		  {
			topic => $j->{topic},
			qos => $j->{qos},
			retain => $j->{retain},
			payload => $j->{payload},
			env => $env,
		  };
	}
	return;
}

# Every message received so far (probes excluded).
sub messages
{
	my ($s) = @_;
	_read_new($s);
	return @{ $s->{messages} };
}

# Wait (up to $timeout s) until the subscriber holds at least $n messages;
# returns them all.
sub consume
{
	my ($s, $n, $timeout) = @_;
	wait_until(sub { scalar(messages($s)) >= $n }, $timeout);
	return messages($s);
}

# Wait until the subscriber receives a probe: it is connected and its
# subscription is live (end to end through the broker).
sub wait_ready
{
	my ($s, $timeout) = @_;
	my $b = $s->{broker};
	my $n = ++$probe_seq;
	my $last = 0;
	return wait_until(
		sub {
			if (time() - $last >= 1)    # publish again every second
			{
				system('mosquitto_pub', '-h', '127.0.0.1', '-p', $b->{port}, '-q', 1,
					'-t', "bvtest/probe/$n", '-m', 'probe', '--quiet');
				$last = time();
			}
			_read_new($s);
			return $s->{probes}{$n};
		},
		$timeout);
}

# The message retained on $topic (a hash as in messages(), retain = 1), or
# undef when there is none.
sub retained
{
	my ($b, $topic) = @_;
	my ($out, $err) = run_command(
		[
			'mosquitto_sub', '-h', '127.0.0.1', '-p', $b->{port}, '-t', $topic,
			'-F', '%j', '--retained-only', '-C', 1, '-W', 2
		]);
	my ($line) = grep { length } split /\n/, $out;
	return undef unless $line;
	my $j = decode_json($line);
	return {
		topic => $j->{topic},
		qos => $j->{qos},
		retain => $j->{retain},
		payload => $j->{payload},
		env => eval { decode_json($j->{payload}) },
	};
}

1;
