# bv_realtime authentication and authorization, with real clients
# (python3-websockets, curl -N): bv_core's tokens at connect (header, query
# parameter, first WebSocket message), refusals with clear reasons (bad,
# forged, expired, superuser role, oversize, none), closing at expiry and at
# revocation, topic grants checked at join under the client's role, and
# hostile inputs from clients.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvRealtime;
use JSON::PP;

my $json_encode = sub { JSON::PP->new->canonical->encode($_[0]) };

my $node = BvTest::new_node('rtauth',
	extra_conf => "bv_realtime.auth_timeout = 2\nbv_realtime.revocation_check_interval = 200\n");
BvTest::create_suite_db($node);
my $rt = BvRealtime->new($node);

$rt->sql(q{
INSERT INTO bv_realtime.topic_grants (topic_pattern, action, grantee) VALUES
  ('room:*', 'subscribe', 'bv_user'),
  ('user:{sub}', 'subscribe', 'bv_user'),
  ('public', 'subscribe', 'bv_anon');
CREATE FUNCTION public.vip_only(topic text, action text) RETURNS boolean LANGUAGE sql STABLE
  AS $$ SELECT coalesce(current_setting('request.jwt.claims', true)::jsonb ->> 'tier', '') = 'vip' $$;
GRANT EXECUTE ON FUNCTION public.vip_only(text, text) TO bv_anon;
INSERT INTO bv_realtime.topic_grants (topic_pattern, action, grantee, check_function)
  VALUES ('vip:*', 'subscribe', 'bv_user', 'public.vip_only(text, text)');
});

my $user = $rt->token(role => 'bv_user', sub => 'u1');

# ---- plain HTTP ----
my ($st, $body) = $rt->get('/health');
is($st, '200', 'GET /health answers 200');
($st, $body) = $rt->get('/');
ok($st eq '200' && $body =~ /EventSource/ && $body =~ /WebSocket/, 'GET / serves the demo page');
($st, $body) = $rt->get('/nope');
is($st, '404', 'an unknown path is 404');

# ---- SSE refusals (HTTP status and a JSON reason) ----
sub sse_refusal
{
	my ($query, @headers) = @_;
	my ($s, $b) = $rt->get("/events?$query", @headers);
	return ($s, $b);
}
($st, $body) = sse_refusal('topics=room:1');
is_deeply([ $st, $body ], [ '401', qq({"error":"a token is required"}\n) ], 'SSE without a token: 401, token required');
($st, $body) = sse_refusal('topics=room:1&access_token=abc.def.ghi');
ok($st eq '401' && $body =~ /invalid token: the token is malformed/, 'SSE with a malformed token: 401') or diag($body);
# change one character inside the signature (the last one may be a
# non-canonical base64url ending, which is "malformed", not "forged")
my $forged = $user;
substr($forged, -10, 1) = substr($user, -10, 1) eq 'A' ? 'B' : 'A';
($st, $body) = sse_refusal("topics=room:1&access_token=$forged");
ok($st eq '401' && $body =~ /signature, algorithm or key is not accepted/, 'SSE with a forged signature: 401') or diag($body);
my $expired = $rt->token(role => 'bv_user', sub => 'u1', ttl => -120);
($st, $body) = sse_refusal("topics=room:1&access_token=$expired");
ok($st eq '401' && $body =~ /expired/, 'SSE with an expired token: 401, says expired') or diag($body);
my $super = $rt->token(role => $node->safe_psql('postgres', 'SELECT current_user'), sub => 'x');
($st, $body) = sse_refusal("topics=room:1&access_token=$super");
ok($st eq '401' && $body =~ /role is not allowed/, 'SSE with a superuser role claim: 401') or diag($body);
my $ghost = $rt->token(role => 'no_such_role', sub => 'x');
($st, $body) = sse_refusal("topics=room:1&access_token=$ghost");
ok($st eq '401' && $body =~ /role is not allowed/, 'SSE with an unknown role: 401');
($st, $body) = sse_refusal('topics=room:1&access_token=' . ('a' x 9000));
ok($st eq '401' || $st eq '431' || $st eq '414' || $st eq '400', "SSE with a 9000-byte token is refused ($st)");
($st, $body) = sse_refusal("topics=admin:1&access_token=$user");
ok($st eq '403' && $body =~ /not allowed/, 'SSE on a topic without a grant: 403');
($st, $body) = sse_refusal("topics=user:u2&access_token=$user");
is($st, '403', "SSE on another user's topic (user:{sub} grant): 403");
($st, $body) = sse_refusal("topics=room:1,bad%20topic&access_token=$user");
ok($st eq '400' && $body =~ /invalid topic name/, 'SSE with an invalid topic name: 400');
($st, $body) = sse_refusal("access_token=$user");
is($st, '400', 'SSE without topics: 400');
($st, $body) = sse_refusal("topics=vip:1&access_token=$user");
is($st, '403', 'a grant with a check_function refuses when the function says no');

# ---- SSE accepted: header and query parameter ----
my $s1 = $rt->sse('topics=room:1,user:u1', "Authorization: Bearer $user");
my $vip = $rt->token(role => 'bv_user', sub => 'u9', tier => 'vip');
my $s2 = $rt->sse("topics=vip:1&access_token=$vip");
$rt->wait_for(sub { $s1->text =~ /retry: 2000/ && $s2->text =~ /retry: 2000/ }, 'SSE streams open');
is($s1->status, '200', 'SSE with the token in the Authorization header: 200');
like(BvRealtime::slurp_file_lines("$s1->{file}.headers"), qr{content-type: text/event-stream}i,
	'SSE content type is text/event-stream');
is($s2->status, '200', 'the check_function grant admits a vip token');

# ---- WebSocket refusals: close codes and reasons ----
my $w = $rt->ws(query => 'access_token=abc');
$rt->wait_for(sub { $w->closed }, 'ws closed');
is_deeply($w->closed, { closed => 4001, reason => 'invalid token: the token is malformed' },
	'WS with a bad token in the URL: close 4001 with the reason');
$w = $rt->ws(send => [ '{"type":"auth","token":"' . $expired . '"}' ]);
$rt->wait_for(sub { $w->closed }, 'ws closed');
is_deeply($w->closed, { closed => 4001, reason => 'invalid token: the token has expired' },
	'WS with an expired token in the auth message: close 4001, expired');
$w = $rt->ws(send => ['{"type":"subscribe","topic":"room:1"}']);
$rt->wait_for(sub { $w->closed }, 'ws closed');
is_deeply($w->closed, { closed => 4001, reason => 'authenticate first' },
	'WS subscribing before authenticating: close 4001');
$w = $rt->ws();
$rt->wait_for(sub { $w->closed }, 'ws closed');
is_deeply($w->closed, { closed => 4001, reason => 'authentication timeout' },
	'WS that never authenticates: close 4001 after bv_realtime.auth_timeout');

# ---- WebSocket accepted; hostile messages answered, not fatal ----
$w = $rt->ws(header => ["Authorization: Bearer $user"],
	send => [
		'{"type":"subscribe","topic":"room:1"}',
		'not json',
		'{"type":42}',
		'{"type":"subscribe","topic":"room 1"}',
		'{"type":"subscribe","topic":"' . ('r' x 201) . '"}',
		'{"type":"subscribe","topic":"user:u2"}',
		'{"type":"subscribe","topic":"user:u1","last_id":"garbage"}',
		'{"type":"subscribe"}',
		'{"type":"nope","topic":"room:1"}',
		'{"type":"ping"}',
		'{"type":"unsubscribe","topic":"user:u1"}',
		'{"type":"ping","pad":"' . ('é' x 1000) . '"}',
	]);
$rt->wait_for(sub { grep { ($_->{type} // '') eq 'unsubscribed' } $w->frames }, 'ws answers');
my @f = grep { !exists $_->{open} } $w->frames;
is_deeply(
	[ map { $json_encode->($_) } @f ],
	[
		'{"resumed":false,"topic":"room:1","type":"subscribed"}',
		'{"reason":"a message is a JSON object with a \"type\"","type":"error"}',
		'{"reason":"a message is a JSON object with a \"type\"","type":"error"}',
		'{"reason":"invalid topic name","topic":"room 1","type":"error"}',
		'{"reason":"invalid topic name","topic":"' . ('r' x 120) . '","type":"error"}',
		'{"reason":"not allowed","topic":"user:u2","type":"error"}',
		'{"resumed":false,"topic":"user:u1","type":"subscribed"}',
		'{"reason":"position not in the history","topic":"user:u1","type":"resync"}',
		'{"reason":"topic is required","type":"error"}',
		'{"reason":"unknown message type","type":"error"}',
		'{"type":"pong"}',
		'{"topic":"user:u1","type":"unsubscribed"}',
	],
	'WS: hostile and malformed messages get an error reply in order; the connection stays open');
$w->stop;
$w = $rt->ws(header => ["Authorization: Bearer $user"], send => [ '{"type":"ping","pad":"' . ('x' x 5000) . '"}' ]);
$rt->wait_for(sub { $w->closed }, 'ws closed');
is($w->closed->{closed}, 1009, 'WS: a message over 4096 bytes closes with 1009');

# ---- expiry and revocation close open connections with a reason ----
my $short = $rt->token(role => 'bv_user', sub => 'u1', ttl => 3);
my $ws_short = $rt->ws(query => "access_token=$short&topics=room:1");
my $sse_short = $rt->sse("topics=room:1&access_token=$short");
my $revocable = $rt->token(role => 'bv_user', sub => 'u1', jti => 'jti-revoke-me');
my $ws_rev = $rt->ws(query => "access_token=$revocable&topics=room:1");
my $sse_rev = $rt->sse("topics=room:1&access_token=$revocable");
$rt->wait_for(sub { $sse_rev->text =~ /retry/ && grep { ($_->{type} // '') eq 'subscribed' } $ws_rev->frames },
	'revocable clients subscribed');
$rt->sql("SELECT bv.jwt_revoke('jti-revoke-me')");
$rt->wait_for(sub { $ws_rev->closed && !$sse_rev->running }, 'revoked clients closed');
is_deeply($ws_rev->closed, { closed => 4001, reason => 'token revoked' }, 'WS: a revoked token closes with 4001 "token revoked"');
my ($rev_err) = grep { ($_->{event} // '') eq 'error' } $sse_rev->events;
is($rev_err->{json}{reason}, 'token revoked', 'SSE: a revoked token ends the stream with "event: error"');
$rt->wait_for(sub { $ws_short->closed && !$sse_short->running }, 'expired clients closed');
is_deeply($ws_short->closed, { closed => 4001, reason => 'token expired' }, 'WS: closed with 4001 "token expired" at exp');
my ($exp_err) = grep { ($_->{event} // '') eq 'error' } $sse_short->events;
is_deeply($exp_err->{json}, { type => 'error', code => 4001, reason => 'token expired' },
	'SSE: "event: error" with the reason at exp, then the stream ends');
ok($s1->running && $s2->running, 'connections with valid tokens stay open');

# ---- counters ----
my ($failures, $denied, $closes) = split /\|/, $rt->sql('SELECT auth_failures, joins_denied, expired_closes FROM bv_realtime.stats');
cmp_ok($failures, '>=', 9, "auth failures counted ($failures)");
cmp_ok($denied, '>=', 4, "denied joins counted ($denied)");
is($closes, '4', 'four connections closed at expiry or revocation');

$_->stop for ($s1, $s2);
done_testing();
