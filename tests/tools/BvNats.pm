# BvNats: the NATS side of bv_cdc's TAP tests and benchmarks: a real
# nats-server (Debian's) with JetStream, started by the test.
#
#   use lib "$ENV{BV_SRC}/tests/tools";  use BvNats;
#   my $s = BvNats::start_server($dir);            # 127.0.0.1:$s->{port}, -js
#   BvNats::stream($s, 'BV', 'bv.>' [, $max_msgs]); # a file-stored stream
#   BvNats::stream_limit($s, 'BV', 'bv.>', $max_msgs); # its limit changed
#   my @m = BvNats::dump($s, 'BV');                # its messages, in order
#   BvNats::count($s, 'BV');
#   BvNats::stop_server($s, 'TERM'|'KILL');  BvNats::restart_server($s);
#
# Each message is { seq, subject, headers => {...}, body => the decoded
# envelope } (tests/tools/bv_nats_tool.c reads the stream with direct
# gets, so no consumer state is involved).  JetStream's store is under
# $dir/nats; a restarted server keeps the stream and what it acknowledged.
package BvNats;

use strict;
use warnings;

use JSON::PP;
use Time::HiRes qw(usleep);
use PostgreSQL::Test::Utils;
use PostgreSQL::Test::Cluster;

my @running;
END
{
	for my $s (grep { !$_->{stopped} && $_->{pid} } @running)
	{
		kill 'TERM', $s->{pid};
		waitpid($s->{pid}, 0);
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
		usleep(50_000);
	}
}

sub _port_open
{
	my ($port) = @_;
	require IO::Socket::INET;
	return IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp')
	  ? 1 : 0;
}

sub tool { return "$ENV{BV_SRC}/tests/tools/bv_nats_tool"; }

sub _start
{
	my ($s) = @_;
	my $pid = fork() // die "fork: $!";
	if ($pid == 0)
	{
		open STDIN, '<', '/dev/null';
		open STDOUT, '>>', "$s->{dir}/server.out";
		open STDERR, '>&', \*STDOUT;
		exec('nats-server', '-js', '-a', '127.0.0.1', '-p', $s->{port}, '-sd', "$s->{dir}/js",
			@{ $s->{args} })
		  or die "exec nats-server: $!";
	}
	$s->{pid} = $pid;
	$s->{stopped} = 0;
	wait_until(sub { _port_open($s->{port}) }, 30)
	  or die "nats-server did not open port $s->{port}; see $s->{dir}/server.out";
	return $s;
}

# Options: args (more nats-server arguments, e.g. ['-c', $conf]); tool_env
# (environment for bv_nats_tool: BV_NATS_CA, BV_NATS_CERT, BV_NATS_KEY for a
# TLS server).
sub start_server
{
	my ($dir, %o) = @_;
	my $d = "$dir/nats";
	mkdir $d unless -d $d;
	my $s = {
		dir => $d,
		port => PostgreSQL::Test::Cluster::get_free_port(),
		args => $o{args} // [],
		tool_env => $o{tool_env} // {} };
	push @running, $s;
	return _start($s);
}

sub stop_server
{
	my ($s, $sig) = @_;
	return if $s->{stopped};
	kill $sig // 'TERM', $s->{pid};
	waitpid($s->{pid}, 0);
	$s->{stopped} = 1;
}

sub restart_server { my ($s) = @_; return _start($s); }

sub _tool
{
	my ($s, @args) = @_;
	local %ENV = (%ENV, %{ $s->{tool_env} // {} });
	my $out = `'@{[tool()]}' @{[ join ' ', map { "'$_'" } @args ]}`;
	die "bv_nats_tool @args failed" if $?;
	return $out;
}

sub stream
{
	my ($s, $name, $subject, $max_msgs) = @_;
	_tool($s, 'stream', '127.0.0.1', $s->{port}, $name, $subject, defined $max_msgs ? ($max_msgs) : ());
}
# A stream's message limit (refusing new ones when full), changed in place.
sub stream_limit
{
	my ($s, $name, $subject, $max_msgs) = @_;
	_tool($s, 'stream-limit', '127.0.0.1', $s->{port}, $name, $subject, $max_msgs);
}
sub count { my ($s, $name) = @_; my $n = _tool($s, 'count', '127.0.0.1', $s->{port}, $name); chomp $n; return $n; }

sub dump
{
	my ($s, $name) = @_;
	my @m;
	for my $l (split /\n/, _tool($s, 'dump', '127.0.0.1', $s->{port}, $name))
	{
		my $m = eval { JSON::PP->new->decode($l) } or next;
		push @m, $m;
	}
	return @m;
}

1;
