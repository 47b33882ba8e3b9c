# BvKafka: the Kafka side of bv_cdc's TAP tests and benchmarks.
#
#   use lib "$ENV{BV_SRC}/tests/tools";  use BvKafka;
#   my $mock = BvKafka::start_mock($dir);        # bv_kafka_mock in the background
#   $mock->{bootstrap}                           # 127.0.0.1:<port>
#   BvKafka::broker_down($mock); BvKafka::broker_up($mock);
#   my @m = BvKafka::consume($mock, $topic, $n); # wait until >= $n messages
#   BvKafka::stop_mock($mock);
#
# Messages are read with kcat (Debian 1.7.1) from the beginning of every
# partition; each is returned as { partition, offset, key, headers => {..},
# payload, env => decoded payload }.
package BvKafka;

use strict;
use warnings;

use JSON::PP;
use Time::HiRes qw(usleep);
use PostgreSQL::Test::Utils;

# Mocks still running when the test ends (it died, or forgot) are stopped.
my @running;
END { kill 'TERM', $_->{pid} for grep { !$_->{stopped} } @running; }

sub tools_dir { return ($ENV{BV_SRC} // die "BV_SRC is not set\n") . '/tests/tools'; }

sub start_mock
{
	my ($dir) = @_;
	my $out = "$dir/kafka_mock.out";
	my $pid = fork() // die "fork: $!";
	if ($pid == 0)
	{
		open STDOUT, '>', $out or die;
		open STDERR, '>', "$dir/kafka_mock.log" or die;
		exec(tools_dir() . '/bv_kafka_mock') or die "exec bv_kafka_mock: $!";
	}
	for (1 .. 200)
	{
		if (-s $out)
		{
			open my $fh, '<', $out or die;
			my $line = <$fh>;
			if (defined $line && $line =~ /\n$/)
			{
				chomp $line;
				my $mock = { pid => $pid, bootstrap => $line, dir => $dir };
				push @running, $mock;
				return $mock;
			}
		}
		usleep(50_000);
	}
	die "bv_kafka_mock did not print its bootstrap address";
}

sub broker_down { kill 'USR1', $_[0]->{pid}; return; }
sub broker_up { kill 'USR2', $_[0]->{pid}; return; }

sub stop_mock
{
	my ($mock) = @_;
	kill 'TERM', $mock->{pid};
	waitpid($mock->{pid}, 0);
	$mock->{stopped} = 1;
	return;
}

# Every message of a topic now (kcat -e stops at the end of each partition).
sub read_topic
{
	my ($mock, $topic) = @_;
	my ($stdout, $stderr) = run_command(
		[
			'kcat', '-b', $mock->{bootstrap}, '-C', '-t', $topic, '-o', 'beginning',
			'-e', '-q', '-f', '%p\t%o\t%k\t%h\t%s\n'
		]);
	my @msgs;
	for my $line (split /\n/, $stdout)
	{
		my ($p, $o, $k, $h, $s) = split /\t/, $line, 5;
		next unless defined $s;
		my %headers = map { my ($hk, $hv) = split /=/, $_, 2; ($hk => $hv) } split /,/, $h;
		push @msgs,
		  {
			partition => $p,
			offset => $o,
			key => $k,
			headers => \%headers,
			payload => $s,
			env => decode_json($s)
		  };
	}
	return @msgs;
}

# Wait (up to $timeout s) until the topic holds at least $n messages.
sub consume
{
	my ($mock, $topic, $n, $timeout) = @_;
	$timeout //= $PostgreSQL::Test::Utils::timeout_default;
	my @msgs;
	my $deadline = time() + $timeout;
	while (1)
	{
		@msgs = read_topic($mock, $topic);
		last if @msgs >= $n || time() > $deadline;
		usleep(200_000);
	}
	return @msgs;
}

# Messages in commit order: by LSN, then position in the transaction, with
# the delete before the create of a primary key change.
sub lsn_num
{
	my ($hi, $lo) = split m{/}, $_[0];
	return hex($hi) * 2**32 + hex($lo);
}

sub in_commit_order
{
	return sort {
		lsn_num($a->{env}{source}{lsn}) <=> lsn_num($b->{env}{source}{lsn})
		  || $a->{env}{source}{seq} <=> $b->{env}{source}{seq}
		  || ($a->{env}{op} eq 'd' ? 0 : 1) <=> ($b->{env}{op} eq 'd' ? 0 : 1)
	} @_;
}

# The payload with its run-dependent parts (LSN, xid, timestamps) replaced.
sub normalized
{
	my ($payload) = @_;
	(my $s = $payload) =~ s{"lsn":"[0-9A-F]+/[0-9A-F]+"}{"lsn":"LSN"};
	$s =~ s{"xid":\d+}{"xid":XID};
	$s =~ s{"ts_us":\d+}{"ts_us":TS};
	$s =~ s{"ts_ms":\d+}{"ts_ms":TS};
	return $s;
}

1;
