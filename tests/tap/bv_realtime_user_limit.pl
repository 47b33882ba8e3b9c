# bv_realtime 0.4.0: bv_realtime.max_connections_per_user, with real clients
# (python3-websockets, curl -N):
#   - a user (the token's sub claim) holds at most that many WebSocket + SSE
#     connections; more are refused (WebSocket close 1008, SSE HTTP 429) with
#     the setting named, counted in stats.user_refused;
#   - hostile clients: many connections with one token, with many tokens of
#     one sub (other exp, other jti), with the token in the first message,
#     with 1,000-byte subs that share their first 900 bytes;
#   - a token refresh on a connection keeps counting for the same user (no
#     second place taken, none freed);
#   - tokens without a sub count for no user;
#   - a seeded randomized run of opens and closes by three users, checked
#     against a model (accepted exactly while the user is under the limit).
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
my $LIMIT = 3;
my $REASON = 'too many connections for this user (bv_realtime.max_connections_per_user)';
my $node = BvTest::new_node('rtuserlimit', extra_conf => "bv_realtime.keepalive = 60\n"
	  . "bv_realtime.max_connections_per_user = $LIMIT\n");
BvTest::create_suite_db($node);
my $rt = BvRealtime->new($node);
$rt->sql(q{INSERT INTO bv_realtime.topic_grants (topic_pattern, action, grantee) VALUES ('room:*', 'subscribe', 'bv_user'), ('lobby', 'subscribe', 'bv_user');});
my $jti = 0;
sub tok { my ($sub, %o) = @_; return $rt->token(role => 'bv_user', (defined $sub ? (sub => $sub) : ()), jti => 'j' . ++$jti, %o); }
sub of_type { my ($type, @f) = @_; return grep { ($_->{type} // '') eq $type } @f; }
sub st { return $rt->sql("SELECT $_[0] FROM bv_realtime.stats"); }
# open a WebSocket and wait until it is subscribed or closed
sub open_ws
{
	my ($token, $topic) = @_;
	my $c = $rt->ws(query => "access_token=$token&topics=" . ($topic // 'room:1'));
	$rt->wait_for(sub { of_type('subscribed', $c->frames) || $c->closed }, 'subscribed or closed');
	return $c;
}
sub refused { my ($c) = @_; return $c->closed && $c->closed->{closed} == 1008 && $c->closed->{reason} eq $REASON; }

# ---- one token, many connections ----
my $t1 = tok('u1');
my @u1 = map { open_ws($t1) } 1 .. $LIMIT;
ok(!grep({ $_->closed } @u1), "$LIMIT connections with one token are accepted");
my $c = open_ws($t1);
ok(refused($c), 'one more with the same token is closed with 1008 and the setting named') or diag($J->encode([ $c->frames ]));
# ---- many tokens of one sub ----
$c = open_ws(tok('u1', ttl => 7200));
ok(refused($c), 'another token of the same sub (other exp and jti) is refused too');
# ---- the token in the first message ----
$c = $rt->ws(query => 'topics=', send => [ $J->encode({ type => 'auth', token => tok('u1') }) ]);
$rt->wait_for(sub { $c->closed }, 'closed after the auth message');
ok(refused($c), 'a token given in the auth message is counted the same way');
# ---- SSE ----
my ($status, $body) = $rt->get('/events?topics=room:1&access_token=' . tok('u1'));
is($status, 429, 'an SSE request over the limit gets HTTP 429');
like($body, qr/too many connections for this user \(bv_realtime\.max_connections_per_user\)/, '... with the reason');
is(st('user_refused'), 4, 'stats.user_refused counts the four refusals');
is(st('connections'), $LIMIT, 'the refused connections are not held');
# ---- other users are not affected ----
my $u2 = open_ws(tok('u2'));
ok(!$u2->closed, 'another user connects');
# ---- a token refresh keeps counting for the same user ----
my $fresh = tok('u1', ttl => 9000);
my $r = $rt->ws(query => "access_token=$t1&topics=room:1", send_when => [ [ 'subscribed', $J->encode({ type => 'auth', token => $fresh }) ] ]);
$rt->wait_for(sub { $r->closed }, 'the 4th u1 connection');
ok(refused($r), 'refresh test: u1 is full');
$u1[0]->stop;
$rt->wait_for(sub { st('connections') == $LIMIT }, 'one u1 connection closed');
$r = $rt->ws(query => "access_token=$t1&topics=room:1", send_when => [ [ 'subscribed', $J->encode({ type => 'auth', token => $fresh }) ] ]);
$rt->wait_for(sub { of_type('authenticated', $r->frames) || $r->closed }, 'the refresh answered');
ok(of_type('authenticated', $r->frames) && !$r->closed, 'a connection that refreshes its token stays open');
$c = open_ws(tok('u1'));
ok(refused($c), 'after the refresh u1 still holds exactly its limit (the refresh took no second place)');
$r->stop;
$rt->wait_for(sub { st('connections') == $LIMIT }, 'the refreshed connection closed');
$c = open_ws(tok('u1'));
ok(!$c->closed, 'closing the refreshed connection frees exactly one place');
$_->stop for (@u1, $c, $u2);
$rt->wait_for(sub { st('connections') == 0 }, 'all closed');

# ---- long subs: counted by the whole claim ----
my $long_a = ('x' x 900) . ('a' x 100);
my $long_b = ('x' x 900) . ('b' x 100);
my @la = map { open_ws(tok($long_a)) } 1 .. $LIMIT;
ok(!grep({ $_->closed } @la), '1,000-byte sub: the limit\'s worth of connections accepted');
ok(refused(open_ws(tok($long_a))), '... and one more refused');
my $lb = open_ws(tok($long_b));
ok(!$lb->closed, 'a 1,000-byte sub that shares its first 900 bytes is another user');
# ---- no sub: counted for no user ----
my @anon = map { open_ws(tok(undef), $_ % 2 ? 'lobby' : 'room:1') } 1 .. $LIMIT + 2;
ok(!grep({ $_->closed } @anon), 'tokens without a sub claim are not limited per user');
# 0.4.0 fix: a prefix pattern ("room:*") matches a token without a sub (it matched none)
is(scalar(grep { of_type('subscribed', $_->frames) } @anon), $LIMIT + 2, '... and join exact and prefix topics');
$_->stop for (@la, $lb, @anon);
$rt->wait_for(sub { st('connections') == 0 }, 'all closed');

# ---- randomized opens and closes against a model ----
my $seed = $ENV{BV_SEED} // int(rand(1 << 30));
diag("bv_realtime_user_limit: seed $seed (BV_SEED=$seed to repeat)");
srand($seed);
my %open = (ra => [], rb => [], rc => []);
my %tokens = map { ($_ => tok($_)) } keys %open;
my $refused0 = st('user_refused');
my ($expected_refusals, $mismatch) = (0, 0);
for my $step (1 .. 24)
{
	my $user = (sort keys %open)[ int(rand(3)) ];
	my $n = scalar(@{ $open{$user} });
	if ($n > 0 && rand() < 0.4)
	{
		my $victim = splice(@{ $open{$user} }, int(rand($n)), 1);
		my $total = 0;
		$total += scalar(@{ $open{$_} }) for keys %open;
		$victim->stop;
		$rt->wait_for(sub { st('connections') == $total }, "step $step: close");
		next;
	}
	my $c = open_ws(rand() < 0.5 ? $tokens{$user} : tok($user));
	my $want_ok = $n < $LIMIT;
	my $got_ok = !$c->closed;
	if ($want_ok != $got_ok)
	{
		$mismatch++;
		diag("seed $seed step $step: $user with $n open: expected " . ($want_ok ? 'accept' : 'refuse'));
	}
	if ($got_ok) { push @{ $open{$user} }, $c; }
	else { $expected_refusals++; }
}
is($mismatch, 0, "randomized opens and closes match the model (seed $seed)");
is(st('user_refused') - $refused0, $expected_refusals, 'stats.user_refused counts every refusal of the run');
$_->stop for map { @$_ } values %open;

done_testing();
