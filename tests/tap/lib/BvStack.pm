# BvStack: the stack `make run` starts (tools/cluster.sh: the cluster and its
# peers) in a temporary BV_HOME on free ports, for tests that check the
# product the way a user gets it.
#
#   my $stack = BvStack->new(BV_IOT_MQTT_PORT => $port);   # extra environment
#   my ($rc, $out, $err) = $stack->cluster('start');
#   my $n = $stack->query('SELECT count(*) FROM cron.job');
#
# A test that dies half-way must not leave its stack running (the next
# make-run test would find the peers' ports taken): every stack that has a
# data directory is stopped when the test ends.
package BvStack;

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use BvTest;

my @stacks;

END
{
	local $?;
	$_->cluster('stop') for grep { -d "$_->{home}/data" } @stacks;
}

sub new
{
	my ($class, %env) = @_;
	my $self = bless {
		home      => PostgreSQL::Test::Utils::tempdir('bvhome'),
		port      => PostgreSQL::Test::Cluster::get_free_port(),
		rest_port => PostgreSQL::Test::Cluster::get_free_port(),
		env       => \%env,
	}, $class;
	$self->{url} = "http://127.0.0.1:$self->{rest_port}";
	push @stacks, $self;
	return $self;
}

sub home      { return $_[0]{home}; }
sub port      { return $_[0]{port}; }
sub rest_port { return $_[0]{rest_port}; }
sub url       { return $_[0]{url}; }

# Run tools/cluster.sh $cmd (start, status, stop...) for this stack.
# Returns (exit code, stdout, stderr).
sub cluster
{
	my ($self, $cmd) = @_;
	my ($stdout, $stderr);
	IPC::Run::run([ 'bash', BvTest::src() . '/tools/cluster.sh', $cmd ],
		'>', \$stdout, '2>', \$stderr,
		init => sub {
			$ENV{BV_HOME} = $self->{home};
			$ENV{BV_PORT} = $self->{port};
			$ENV{BV_REST_PORT} = $self->{rest_port};
			$ENV{$_} = $self->{env}{$_} for keys %{ $self->{env} };
		});
	return ($? >> 8, $stdout, $stderr);
}

# One statement in database bitvelocity as postgres; its unaligned output.
sub query
{
	my ($self, $sql) = @_;
	my ($out, $err);
	IPC::Run::run([ 'psql', '-X', '-At', '-h', "$self->{home}/run",
			'-p', $self->{port}, '-U', 'postgres', '-d', 'bitvelocity',
			'-c', $sql ], '>', \$out, '2>', \$err);
	$out //= '';
	chomp $out;
	return $out;
}

1;
