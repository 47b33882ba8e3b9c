# bv_realtime's limits against one abusive client, with real clients
# (python3-websockets, curl -N):
#   - bv_realtime.max_connections_per_ip: one address holds at most that
#     many WebSocket + SSE connections; more are refused (WebSocket close
#     1008, SSE HTTP 429), counted in stats.ip_refused; a closed connection
#     frees its place;
#   - bv_realtime.client_messages_per_second / client_messages_burst: a
#     client flooding broadcasts gets its burst relayed, then error replies,
#     then is closed with 1008 (stats.rate_limited, rate_limit_closes); the
#     other subscribers get no more than the burst (plus what the rate
#     refills), and a client within its burst is never limited.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvRealtime;
use JSON::PP;

my $J = JSON::PP->new->canonical;
my $node = BvTest::new_node('rtlimits', extra_conf => "bv_realtime.keepalive = 60\n"
	  . "bv_realtime.max_connections_per_ip = 3\n"
	  . "bv_realtime.client_messages_per_second = 2\n"
	  . "bv_realtime.client_messages_burst = 5\n");
BvTest::create_suite_db($node);
my $rt = BvRealtime->new($node);
$rt->sql(q{
INSERT INTO bv_realtime.topic_grants (topic_pattern, action, grantee) VALUES
  ('room:*', 'subscribe', 'bv_user'), ('room:*', 'publish', 'bv_user'), ('room:*', 'presence', 'bv_user');
});
sub tok { return $rt->token(role => 'bv_user', sub => $_[0]); }
sub of_type { my ($type, @f) = @_; return grep { ($_->{type} // '') eq $type } @f; }
sub st { return $rt->sql("SELECT $_[0] FROM bv_realtime.stats"); }

# ---- client message rate ----
my $B = $rt->ws(query => 'access_token=' . tok('b') . '&topics=room:1');
$rt->wait_for(sub { of_type('subscribed', $B->frames) }, 'B subscribed');
# a client within its burst: all relayed, no error
my $polite = $rt->ws(query => 'access_token=' . tok('polite') . '&topics=room:1',
	send => [ map { $J->encode({ type => 'broadcast', topic => 'room:1', event => 'polite', payload => { n => $_ } }) } 1 .. 4 ]);
$rt->wait_for(sub { grep({ $_->{event} eq 'polite' } $B->messages) == 4 }, 'B got the polite client\'s 4 messages');
is(scalar(of_type('error', $polite->frames)), 0, 'a client within its burst gets no error');
# a hostile client: 40 broadcasts at once
my $limited0 = st('rate_limited');
my $A = $rt->ws(query => 'access_token=' . tok('a') . '&topics=room:1',
	send => [ map { $J->encode({ type => 'broadcast', topic => 'room:1', event => 'flood', payload => { n => $_ } }) } 1 .. 40 ]);
$rt->wait_for(sub { $A->closed }, 'the flooding client is closed');
# The gateway sends close 1008; a client still writing its flood may see the
# connection reset (1006) before it reads that frame (the server's counters
# below are the proof either way).
ok($A->closed && ($A->closed->{closed} == 1008 || $A->closed->{closed} == 1006),
	'a client that keeps flooding is closed (' . $J->encode($A->closed) . ')');
is($A->closed->{reason}, 'rate limit exceeded (bv_realtime.client_messages_per_second)', '... with the setting named')
  if $A->closed->{closed} == 1008;
my @flood = grep { $_->{event} eq 'flood' } $B->messages;
ok(@flood >= 5 && @flood < 40, 'the other subscriber got the burst and not the flood (' . scalar(@flood) . ' of 40)');
is(join(',', map { $_->{payload}{n} } @flood), join(',', 1 .. scalar(@flood)), '... the first ones, in order');
ok(st('rate_limited') - $limited0 >= 6, 'stats.rate_limited counts the refused messages');
is(st('rate_limit_closes'), 1, 'stats.rate_limit_closes counts the close');
ok(!$B->closed, 'the other subscriber stays connected');
# a client a little over its burst: error replies, still connected
my $over = $rt->ws(query => 'access_token=' . tok('over') . '&topics=room:3',
	send => [ map { $J->encode({ type => 'broadcast', topic => 'room:3', event => 'x', payload => { n => $_ } }) } 1 .. 8 ]);
$rt->wait_for(sub { of_type('error', $over->frames) >= 1 }, 'error replies');
my @err = of_type('error', $over->frames);
ok(@err >= 1 && @err <= 3 && !grep({ $_->{reason} ne 'rate limit: message dropped, slow down (bv_realtime.client_messages_per_second)' } @err),
	'messages over the burst get an error reply saying why (' . scalar(@err) . ')');
ok(!$over->closed, 'a client a little over its burst stays connected');
$over->stop;
$rt->wait_for(sub { st('connections') == 2 }, 'back to B and the polite client');
# presence messages count as well: a presence flood is limited the same way
my $P = $rt->ws(query => 'access_token=' . tok('pr') . '&topics=room:2',
	send => [ map { $J->encode({ type => 'presence', topic => 'room:2', state => { n => $_ } }) } 1 .. 40 ]);
$rt->wait_for(sub { $P->closed }, 'the presence flood is closed');
# 1008, or a reset (1006) seen before that frame, as for the broadcast flood
ok($P->closed->{closed} == 1008 || $P->closed->{closed} == 1006,
	'a presence flood is closed (' . $J->encode($P->closed) . ')');
is(st('rate_limit_closes'), 2, 'stats.rate_limit_closes counts it');
$_->stop for ($B, $polite, $P);
$rt->wait_for(sub { st('connections') == 0 }, 'the WebSocket clients are gone');

# ---- connections per address ----
my @ws = map { $rt->ws(query => 'access_token=' . tok("p$_") . '&topics=room:ip') } 1 .. 2;
my $sse = $rt->sse('topics=room:ip&access_token=' . tok('p3'));
$rt->wait_for(sub { st('connections') == 3 }, 'three connections from 127.0.0.1');
my $fourth = $rt->ws(query => 'access_token=' . tok('p4') . '&topics=room:ip');
$rt->wait_for(sub { $fourth->closed }, 'the fourth WebSocket is closed');
is_deeply($fourth->closed,
	{ closed => 1008, reason => 'too many connections from this address (bv_realtime.max_connections_per_ip)' },
	'a WebSocket over max_connections_per_ip is closed with 1008 and the setting named');
my ($status, $body) = $rt->get('/events?topics=room:ip&access_token=' . tok('p5'));
is($status, 429, 'an SSE request over max_connections_per_ip gets HTTP 429');
like($body, qr/too many connections from this address/, '... with the reason');
is(st('ip_refused'), 2, 'stats.ip_refused counts both refusals');
is(st('connections'), 3, 'the refused connections are not held');
# a closed connection frees its place
$ws[0]->stop;
$rt->wait_for(sub { st('connections') == 2 }, 'one connection closed');
my $again = $rt->ws(query => 'access_token=' . tok('p6') . '&topics=room:ip');
$rt->wait_for(sub { of_type('subscribed', $again->frames) || $again->closed }, 'a new connection');
ok(!$again->closed && of_type('subscribed', $again->frames), 'after a close the address may connect again');

$_->stop for ($ws[1], $sse, $again, $fourth);
done_testing();
