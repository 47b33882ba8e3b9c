# BvRealtime: helpers for bv_realtime's TAP tests: WebSocket clients
# (tests/tools/bv_realtime_client.py, python3-websockets), SSE clients
# (curl -N), tokens from bv_core, waits on conditions.
#
#   my $rt = BvRealtime->new($node);                 # gateway is running
#   my $tok = $rt->token(role => 'bv_user', sub => 'u1', ttl => 3600);
#   my $ws = $rt->ws(query => "access_token=$tok&topics=a");   # background
#   $rt->wait_for(sub { grep { $_->{type} eq 'message' } $ws->frames }, 'got one');
#   my $sse = $rt->sse("topics=a&access_token=$tok");
#   my @events = $sse->events;
package BvRealtime;

use strict;
use warnings;

use IPC::Run;
use JSON::PP;
use Time::HiRes qw(usleep);
use PostgreSQL::Test::Utils;
use Test::More;

my $json = JSON::PP->new->canonical;
my $seq = 0;
my @handles;
END { $_->kill_kill for grep { $_->pumpable } @handles; }

sub new
{
	my ($class, $node) = @_;
	my $self = bless { node => $node }, $class;
	$node->poll_query_until('bitvelocity',
		"SELECT state = 'running' FROM bv_realtime.stats")
	  or die 'the gateway did not start';
	$self->{port} = $node->safe_psql('bitvelocity', 'SHOW bv_realtime.port');
	$self->{base} = "127.0.0.1:$self->{port}";
	$node->safe_psql('bitvelocity',
		"INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('rt', 'HS256', 'rt-test-secret-' || repeat('x', 40)) ON CONFLICT DO NOTHING");
	return $self;
}

sub sql { my ($self, $q) = @_; return $self->{node}->safe_psql('bitvelocity', $q); }
sub url { my ($self, $path) = @_; return "http://$self->{base}$path"; }

# A token signed by bv_core: claims from %c; ttl (seconds from now, may be
# negative) sets exp unless exp is given.
sub token
{
	my ($self, %c) = @_;
	my $ttl = delete $c{ttl} // 3600;
	my $kid = delete $c{kid} // 'rt';
	$c{exp} //= time() + $ttl;
	my $claims = $json->encode(\%c);
	$claims =~ s/'/''/g;
	return $self->sql("SELECT bv.jwt_sign('$claims'::jsonb, '$kid')");
}

# Wait until $cond returns true (checked every 50 ms, up to the suite's timeout).
sub wait_for
{
	my ($self, $cond, $what) = @_;
	my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;
	while (time() < $deadline)
	{
		return 1 if $cond->();
		usleep(50_000);
	}
	diag("timed out waiting for: $what");
	return 0;
}

sub slurp_file_lines
{
	my ($file) = @_;
	open my $fh, '<', $file or return '';
	local $/;
	my $t = <$fh> // '';
	return $t;
}

# A WebSocket client in the background.  Options: path (/socket), query,
# send (array ref of texts), send_when (array ref of [substring, text]: sent
# once after the first frame containing substring), slow, idle,
# max_messages, header.
sub ws
{
	my ($self, %o) = @_;
	my $file = "$PostgreSQL::Test::Utils::tmp_check/ws_" . ++$seq . '.out';
	my $url = "ws://$self->{base}" . ($o{path} // '/socket') . (defined $o{query} ? "?$o{query}" : '');
	my @cmd = ('/usr/bin/python3', "$ENV{BV_SRC}/tests/tools/bv_realtime_client.py", $url,
		'--out', $file, '--idle', $o{idle} // 120);
	push @cmd, '--send', $_ for @{ $o{send} // [] };
	push @cmd, '--send-when', @$_ for @{ $o{send_when} // [] };
	push @cmd, '--slow' if $o{slow};
	push @cmd, '--max-messages', $o{max_messages} if $o{max_messages};
	push @cmd, '--header', $_ for @{ $o{header} // [] };
	my $h = IPC::Run::start(\@cmd, '<', \undef, '>>', "$file.log", '2>>', "$file.log");
	push @handles, $h;
	my $c = bless { file => $file, h => $h }, 'BvRealtime::Ws';
	$self->wait_for(sub { $c->lines >= 1 }, "ws client $seq opens");
	return $c;
}

# An SSE client (curl -N) in the background; query string, extra headers.
sub sse
{
	my ($self, $query, @headers) = @_;
	my $file = "$PostgreSQL::Test::Utils::tmp_check/sse_" . ++$seq . '.out';
	# The shell notes curl's end in $file.done (the stream's end is
	# observable, and IPC::Run does not reap a child without pipes).
	my @cmd = ('sh', '-c', 'f=$1; shift; curl -sN -o "$f" -D "$f.headers" "$@"; echo $? > "$f.done"', 'sh', $file,
		map({ ('-H', $_) } @headers), $self->url("/events?$query"));
	my $h = IPC::Run::start(\@cmd, '<', \undef, '>', "$file.log", '2>&1');
	push @handles, $h;
	return bless { file => $file, h => $h }, 'BvRealtime::Sse';
}

# One HTTP GET with curl: (status, body).
sub get
{
	my ($self, $path, @headers) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'curl', '-s', '-m', '20', '-w', "\n%{http_code}", map({ ('-H', $_) } @headers),
			$self->url($path) ], '>', \$out, '2>', \$err);
	my ($body, $status) = $out =~ /\A(.*)\n(\d+)\z/s ? ($1, $2) : ($out, '000');
	return ($status, $body);
}

package BvRealtime::Ws;

sub lines
{
	my ($self) = @_;
	return grep { length } split /\n/, BvRealtime::slurp_file_lines($self->{file});
}

# Every frame received, decoded (the client's own status lines included).
sub frames
{
	my ($self) = @_;
	return map { my $d = eval { $json->decode($_) }; defined $d ? ($d) : ({ raw => $_ }) } $self->lines;
}

sub messages { my ($self) = @_; return grep { ($_->{type} // '') eq 'message' } $self->frames; }
sub closed { my ($self) = @_; my ($c) = grep { exists $_->{closed} } $self->frames; return $c; }
sub stop { my ($self) = @_; $self->{h}->kill_kill if $self->{h}->pumpable; return; }
sub running { my ($self) = @_; return $self->{h}->pumpable; }

package BvRealtime::Sse;

sub text { my ($self) = @_; return BvRealtime::slurp_file_lines($self->{file}); }

# Events as hashes {id, event, data (decoded when JSON)}; comments skipped.
sub events
{
	my ($self) = @_;
	my @ev;
	for my $block (split /\n\n/, $self->text)
	{
		my %e;
		for my $l (split /\n/, $block)
		{
			next if $l =~ /^:/;
			$e{$1} = $2 if $l =~ /^(\w[\w-]*): ?(.*)$/;
		}
		next unless exists $e{data};
		$e{json} = eval { $json->decode($e{data}) };
		push @ev, \%e;
	}
	return @ev;
}

sub messages { my ($self) = @_; return grep { $_->{json} && ($_->{json}{type} // '') eq 'message' } $self->events; }
sub stop { my ($self) = @_; $self->{h}->kill_kill if $self->{h}->pumpable; return; }
sub running { my ($self) = @_; return !-e "$self->{file}.done"; }
sub status
{
	my ($self) = @_;
	my $h = BvRealtime::slurp_file_lines("$self->{file}.headers");
	return $h =~ m{^HTTP/\S+ (\d+)}m ? $1 : undef;
}

1;
