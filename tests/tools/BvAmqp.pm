# BvAmqp: the AMQP side of bv_cdc's TAP tests and benchmarks: a real
# rabbitmq-server (Debian's), started by the test as the test's user.
#
#   use lib "$ENV{BV_SRC}/tests/tools";  use BvAmqp;
#   my $b = BvAmqp::start_broker($dir);       # node bvt<port>@localhost, 127.0.0.1:$b->{port}
#   BvAmqp::bind($b, 'q', 'amq.topic', 'bv.#');   # a durable queue, bound
#   my $c = BvAmqp::consume($b, 'q');          # a consumer writing JSON lines
#   my @m = BvAmqp::messages($c);              # what it received so far
#   BvAmqp::stop_broker($b);  BvAmqp::restart_broker($b);   # same node, port, data
#   BvAmqp::stop_consumer($c);
#
# Each message is the consumer's JSON line (tests/tools/bv_amqp_tool.c):
# { rk, exchange, message_id, content_type, delivery_mode, redelivered,
#   headers => {...}, body => the decoded envelope }.
#
# RabbitMQ is slow to start (an Erlang VM: 5-40 s on a loaded machine), so
# a test starts one broker per file.  Everything the broker writes (Mnesia
# database, logs, Erlang cookie, its own epmd on a free port) is under
# $dir/amqp; the node name carries the port, so tests running at the same
# time do not meet.  The queue is durable and the messages persistent: a
# stopped (or killed) broker keeps what it confirmed, and the consumer
# reconnects on its own, so "nothing lost" depends only on the worker.
package BvAmqp;

use strict;
use warnings;

use JSON::PP;
use Time::HiRes qw(usleep);
use PostgreSQL::Test::Utils;
use PostgreSQL::Test::Cluster;

my @running;
END
{
	for my $p (@running)
	{
		next unless ref $p eq 'HASH';
		if ($p->{consumer}) { kill 'TERM', -$p->{pid} if $p->{pid} && !$p->{stopped}; next; }
		_stop($p) unless $p->{stopped};
		system("ERL_EPMD_PORT=$p->{epmd_port} epmd -kill >/dev/null 2>&1");
	}
}

sub _timeout { return $PostgreSQL::Test::Utils::timeout_default; }

sub wait_until
{
	my ($cond, $timeout) = @_;
	my $deadline = time() + ($timeout // _timeout());
	while (1)
	{
		my $v = $cond->();
		return $v if $v || time() > $deadline;
		usleep(100_000);
	}
}

sub _port_open
{
	my ($port) = @_;
	require IO::Socket::INET;
	return IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp')
	  ? 1 : 0;
}

sub tool { return "$ENV{BV_SRC}/tests/tools/bv_amqp_tool"; }

sub _env
{
	my ($b) = @_;
	my $d = $b->{dir};
	return (
		HOME => $d,
		RABBITMQ_NODENAME => "bvt$b->{port}\@localhost",
		RABBITMQ_NODE_IP_ADDRESS => '127.0.0.1',
		RABBITMQ_NODE_PORT => $b->{port},
		RABBITMQ_DIST_PORT => $b->{dist_port},
		ERL_EPMD_PORT => $b->{epmd_port},
		RABBITMQ_MNESIA_BASE => "$d/mnesia",
		RABBITMQ_LOG_BASE => "$d/log",
		RABBITMQ_LOGS => "$d/log/rabbit.log",
		RABBITMQ_ENABLED_PLUGINS_FILE => "$d/enabled_plugins",
		RABBITMQ_CONFIG_FILE => "$d/rabbitmq",
		RABBITMQ_ADVANCED_CONFIG_FILE => "$d/advanced.config",
		RABBITMQ_CONF_ENV_FILE => "$d/rabbitmq-env.conf",
		RABBITMQ_PID_FILE => "$d/rabbit.pid");
}

sub _start
{
	my ($b) = @_;
	my %env = _env($b);
	my $pid = fork() // die "fork: $!";
	if ($pid == 0)
	{
		$ENV{$_} = $env{$_} for keys %env;
		setpgrp(0, 0);
		open STDIN, '<', '/dev/null';
		open STDOUT, '>>', "$b->{dir}/server.out";
		open STDERR, '>&', \*STDOUT;
		exec('/usr/lib/rabbitmq/bin/rabbitmq-server') or die "exec rabbitmq-server: $!";
	}
	$b->{pid} = $pid;
	$b->{stopped} = 0;
	wait_until(sub { _port_open($b->{port}) }, 180)
	  or die "rabbitmq-server did not open port $b->{port}; see $b->{dir}/server.out";
	return $b;
}

# Start a broker on free ports, its data in $dir/amqp.  Options: extra
# (lines appended to rabbitmq.conf).
sub start_broker
{
	my ($dir, %o) = @_;
	my $d = "$dir/amqp";
	mkdir $d unless -d $d;
	my $b = {
		dir => $d,
		port => PostgreSQL::Test::Cluster::get_free_port(),
		dist_port => PostgreSQL::Test::Cluster::get_free_port(),
		epmd_port => PostgreSQL::Test::Cluster::get_free_port(),
	};
	open my $f, '>', "$d/enabled_plugins" or die $!;
	print $f "[].\n";
	close $f;
	open $f, '>', "$d/rabbitmq.conf" or die $!;
	print $f "loopback_users = none\n", ($o{extra} // '');
	close $f;
	open $f, '>', "$d/rabbitmq-env.conf" or die $!;
	close $f;
	push @running, $b;
	return _start($b);
}

# SIGTERM to the Erlang VM: a graceful stop (confirmed persistent messages
# are on disk).  'KILL' kills the whole process group.
sub _stop
{
	my ($b, $sig) = @_;
	$sig //= 'TERM';
	if ($sig eq 'KILL') { kill 'KILL', -$b->{pid}; }
	else
	{
		my $beam = `pgrep -P $b->{pid} beam.smp`;
		chomp $beam;
		kill 'TERM', ($beam || $b->{pid});
	}
	waitpid($b->{pid}, 0);
	kill 'KILL', -$b->{pid};    # leftovers (erl_child_setup, inet_gethost)
	wait_until(sub { !_port_open($b->{port}) }, 30);
	$b->{stopped} = 1;
}

sub stop_broker { my ($b, $sig) = @_; _stop($b, $sig) unless $b->{stopped}; }
sub restart_broker { my ($b) = @_; return _start($b); }

sub bind
{
	my ($b, $queue, $exchange, $key) = @_;
	system(tool(), 'bind', '127.0.0.1', $b->{port}, $queue, $exchange, $key) == 0
	  or die "bv_amqp_tool bind $queue failed";
}

# A consumer of $queue that reconnects when the broker goes away.
sub consume
{
	my ($b, $queue) = @_;
	my $c = { consumer => 1, file => "$b->{dir}/consumer-$queue.jsonl", queue => $queue };
	my $pid = fork() // die "fork: $!";
	if ($pid == 0)
	{
		setpgrp(0, 0);
		open STDIN, '<', '/dev/null';
		open STDERR, '>>', "$b->{dir}/consumer-$queue.err";
		while (1)
		{
			system("'" . tool() . "' consume 127.0.0.1 $b->{port} '$queue' >> '$c->{file}'");
			sleep 1;
		}
	}
	$c->{pid} = $pid;
	push @running, $c;
	return $c;
}

sub stop_consumer
{
	my ($c) = @_;
	kill 'TERM', -$c->{pid};    # its process group: the loop and the tool
	waitpid($c->{pid}, 0);
	$c->{stopped} = 1;
}

sub messages
{
	my ($c) = @_;
	open my $f, '<', $c->{file} or return ();
	my @m;
	while (my $l = <$f>)
	{
		next unless $l =~ /\n\z/;
		my $m = eval { JSON::PP->new->decode($l) } or next;
		push @m, $m;
	}
	return @m;
}

1;
