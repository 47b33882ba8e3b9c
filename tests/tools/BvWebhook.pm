# BvWebhook: the webhook side of bv_cdc's TAP tests and benchmarks.
#
#   use lib "$ENV{BV_SRC}/tests/tools";  use BvWebhook;
#   my $r = BvWebhook::start($dir, secrets => ['s3cret']);  # bv_webhook_receiver
#   $r->{url}                                  # http://127.0.0.1:<port>/hook
#   BvWebhook::control($r, status => 500, count => 3);     # misbehave on request
#   BvWebhook::control($r, reset => 1);
#   my $st = BvWebhook::stats($r);             # {requests, ok, verified, ...}
#   my @ev = BvWebhook::events($r);            # every request logged so far
#   my @ev = BvWebhook::wait_for($r, sub { grep { $_->{status} == 200 } @_ });
#   my @d = BvWebhook::wait_delivered($r, 10);  # >= 10 event ids answered 2xx
#   my $h = BvWebhook::sign($t, $body, @secrets);  # a BV-Signature value
#   BvWebhook::stop($r);
#
# The receiver (tests/tools/bv_webhook_receiver.c) verifies every
# BV-Signature with the secrets given and answers 401 when it does not
# verify; see its header for the control endpoint.  Each logged request is
# { received_ms, event_id, status, verified, verify, signature, topic, op,
# table, lsn, traceparent, user_agent, content_type, hang_ms, body,
# env => decoded body (undef if not JSON) }, in the order the receiver
# finished them.
package BvWebhook;

use strict;
use warnings;

use Digest::SHA qw(hmac_sha256_hex);
use JSON::PP;
use Time::HiRes qw(usleep);
use PostgreSQL::Test::Utils;

my @running;
END { kill 'TERM', $_->{pid} for grep { !$_->{stopped} } @running; }

sub tools_dir { return ($ENV{BV_SRC} // die "BV_SRC is not set\n") . '/tests/tools'; }

# Start the receiver.  Options: secrets (array ref of secret strings,
# required), port (default 0: a free one), tolerance (s), name (file prefix,
# default "webhook"), latency (1: also write the commit-to-receipt file).
sub start
{
	my ($dir, %o) = @_;
	my $name = $o{name} // 'webhook';
	my @secrets = @{ $o{secrets} // die "secrets => [...] is required" };
	my @args = ('--port', $o{port} // 0, '--log', "$dir/$name.jsonl", '--quiet');
	push @args, '--tolerance', $o{tolerance} if defined $o{tolerance};
	push @args, '--latency', "$dir/$name.latency" if $o{latency};
	my $i = 0;
	for my $secret (@secrets)
	{
		my $f = "$dir/$name.secret" . $i++;
		open my $fh, '>', $f or die "$f: $!";
		chmod 0600, $f;
		print $fh $secret;
		close $fh;
		push @args, '--secret-file', $f;
	}
	my $out = "$dir/$name.out";
	unlink $out;
	my $pid = fork() // die "fork: $!";
	if ($pid == 0)
	{
		open STDIN, '<', '/dev/null';
		open STDOUT, '>', $out or die;
		open STDERR, '>', "$dir/$name.err" or die;
		exec(tools_dir() . '/bv_webhook_receiver', @args)
		  or die "exec bv_webhook_receiver: $!";
	}
	my $r = {
		pid => $pid,
		dir => $dir,
		log => "$dir/$name.jsonl",
		latency => "$dir/$name.latency",
		offset => 0,
		buffer => '',
		events => [],
	};
	push @running, $r;
	for (1 .. 200)
	{
		if (-s $out)
		{
			open my $fh, '<', $out or die;
			my $line = <$fh>;
			if (defined $line && $line =~ /^([\d.]+:\d+)\n/)
			{
				$r->{addr} = $1;
				$r->{base} = "http://$1";
				$r->{url} = "http://$1/hook";
				return $r;
			}
		}
		usleep(50_000);
	}
	die "bv_webhook_receiver did not print its address; see $dir/$name.err";
}

sub stop
{
	my ($r) = @_;
	return if $r->{stopped};
	kill 'TERM', $r->{pid};
	waitpid($r->{pid}, 0);
	$r->{stopped} = 1;
	return;
}

# An HTTP request with curl; returns (status, body).
sub _curl
{
	my ($method, $url) = @_;
	my ($out, $err) = run_command([ 'curl', '-s', '-X', $method, '-w', "\n%{http_code}", $url ]);
	my ($body, $status) = $out =~ /\A(.*)\n(\d+)\z/s ? ($1, $2) : ($out, '000');
	return ($status, $body);
}

# Change the receiver's behaviour: control($r, status => 500, count => 3),
# control($r, hang_ms => 15000), control($r, down => 1), control($r, reset => 1).
# Returns the receiver's stats after the change.
sub control
{
	my ($r, %q) = @_;
	my $qs = join '&', map { "$_=$q{$_}" } sort keys %q;
	my ($status, $body) = _curl('POST', "$r->{base}/_control?$qs");
	die "control $qs: HTTP $status $body" unless $status eq '200';
	return decode_json($body);
}

sub stats
{
	my ($r) = @_;
	my ($status, $body) = _curl('GET', "$r->{base}/_stats");
	die "stats: HTTP $status $body" unless $status eq '200';
	return decode_json($body);
}

# Every request logged so far, oldest first.
sub events
{
	my ($r) = @_;
	if (open my $fh, '<', $r->{log})
	{
		seek $fh, $r->{offset}, 0;
		local $/;
		my $chunk = <$fh> // '';
		$r->{offset} += length $chunk;
		$r->{buffer} .= $chunk;
		while ($r->{buffer} =~ s/\A([^\n]*)\n//)
		{
			my $e = decode_json($1);
			$e->{env} = eval { decode_json($e->{body}) };
			push @{ $r->{events} }, $e;
		}
	}
	return @{ $r->{events} };
}

# Requests answered 2xx, one per event id (the first), in order of receipt.
sub delivered
{
	my ($r) = @_;
	my %seen;
	return grep { $_->{status} >= 200 && $_->{status} < 300 && !$seen{ $_->{event_id} // '' }++ }
	  events($r);
}

# Wait (up to $timeout s) until $cond->(@events) returns true; returns the
# events then (all of them, even if the condition never held: the caller's
# assertions say what is missing).
sub wait_for
{
	my ($r, $cond, $timeout) = @_;
	my $deadline = time() + ($timeout // $PostgreSQL::Test::Utils::timeout_default);
	while (1)
	{
		my @ev = events($r);
		return @ev if $cond->(@ev) || time() > $deadline;
		usleep(50_000);
	}
}

# Wait until at least $n distinct event ids were answered 2xx.
sub wait_delivered
{
	my ($r, $n, $timeout) = @_;
	wait_for($r, sub { scalar(delivered($r)) >= $n }, $timeout);
	return delivered($r);
}

# A BV-Signature header value: t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
# (one v1 per secret given).
sub sign
{
	my ($t, $body, @secrets) = @_;
	return "t=$t," . join ',', map { 'v1=' . hmac_sha256_hex("$t.$body", $_) } @secrets;
}

1;
