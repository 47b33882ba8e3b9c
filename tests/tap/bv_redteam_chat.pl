# bv_chat red team, live side (real WebSocket and SSE clients of
# bv_realtime):
#  - a member who leaves, is kicked or is banned stops receiving the room's
#    live events at once (bv_realtime.revoke() from chat.remove_member_row,
#    applied by the gateway after commit), loses its presence there, and
#    cannot publish client messages on the room afterwards (the cached
#    publish decision is dropped), although its connection stays open;
#  - members publish "typing" as a client message on the room topic (no
#    table write); non-members and former members cannot;
#  - bv_realtime.revoke(): rolled back -> nothing; privileges; hostile input.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvRealtime;

my $node = BvTest::new_node('redteam_chat', extra_conf => "bv_realtime.keepalive = 60\n");
BvTest::create_suite_db($node);
sub sql { return $node->safe_psql('bitvelocity', $_[0]); }

# run SQL as a chat user (as PostgREST would: role bv_user, claims with sub)
sub as_user
{
	my ($u, $q) = @_;
	return sql("SET ROLE bv_user; SELECT set_config('request.jwt.claims', '{\"role\":\"bv_user\",\"sub\":\"$u\"}', false) \\g /dev/null\n$q");
}

my $rt = BvRealtime->new($node);
my %tok = map { $_ => $rt->token(role => 'bv_user', sub => $_) } qw(alice bob carol dave erin eve);

my $room = as_user('alice', q{SELECT (api.chat_create_room('group', 'red', '', ARRAY['bob','carol','dave','erin']))->>'id'});
ok($room =~ /^\d+$/, "room $room created");
my $topic = "chat:room:$room";

sub subscribed { my ($c, $t) = @_; return grep { ($_->{type} // '') eq 'subscribed' && $_->{topic} eq $t } $c->frames; }
sub events_of { my ($c, $ev) = @_; return grep { ($_->{event} // '') eq $ev } $c->messages; }
sub revoked { my ($c) = @_; return grep { ($_->{type} // '') eq 'error' && ($_->{reason} // '') eq 'access revoked' } $c->frames; }
sub errors { my ($c) = @_; return grep { ($_->{type} // '') eq 'error' } $c->frames; }

# ---- typing through client messages ----
my $typing = qq({"type":"broadcast","topic":"$topic","event":"typing","payload":{"thread":0}});
my $A = $rt->ws(query => "access_token=$tok{alice}&topics=$topic");
my %W;
for my $u (qw(bob carol dave))
{
	# each one tracks presence and, once it sees the ban/kick/leave of
	# itself, tries to publish "typing" again (must be refused)
	$W{$u} = $rt->ws(query => "access_token=$tok{$u}&topics=$topic",
		send => [qq({"type":"presence","topic":"$topic","state":{"status":"online"}})],
		send_when => [ [ qq("user_id": "$u"), $typing ] ]);
}
my $S = $rt->sse("topics=$topic&access_token=$tok{erin}");
ok($rt->wait_for(sub { subscribed($A, $topic) && !grep { !subscribed($W{$_}, $topic) } keys %W }, 'members subscribed'),
	'members subscribe over WebSocket');
ok($rt->wait_for(sub { BvRealtime::slurp_file_lines($S->{file}) =~ /retry:/ }, 'erin SSE'), 'erin subscribes over SSE');
ok($rt->wait_for(sub { sql("SELECT count(*) FROM bv_realtime.presence('$topic')") == 3 }, 'presence'),
	'bob, carol and dave are present in the room');

my $events_before = sql('SELECT count(*) FROM chat.events');
my $T = $rt->ws(query => "access_token=$tok{alice}", send => [$typing]);
ok($rt->wait_for(sub { events_of($W{bob}, 'typing') }, 'bob sees typing'), 'a member publishes typing: members receive it');
my ($t) = events_of($W{bob}, 'typing');
is($t->{from}, 'alice', 'with from = the sender\'s sub');
ok(!defined $t->{id}, 'ephemeral: no position');
is(sql('SELECT count(*) FROM chat.events'), $events_before, 'no table write for typing');
ok(!errors($T), 'no error for the member');

# a member cannot forge server events (message.created as if from another
# sender): the room's publish policy allows "typing" only
my $F = $rt->ws(query => "access_token=$tok{alice}",
	send => [qq({"type":"broadcast","topic":"$topic","event":"message.created","payload":{"sender":"bob","body":"forged"}})]);
ok($rt->wait_for(sub { grep { ($_->{reason} // '') eq 'not allowed' } errors($F) }, 'forgery refused'),
	'a member cannot publish other events than typing on the room topic');
ok(!grep({ ($_->{payload}{body} // '') eq 'forged' } events_of($W{bob}, 'message.created')), 'nobody got the forged event');
# the decision is per event: typing from the same connection still passes
my $F2 = $rt->ws(query => "access_token=$tok{alice}",
	send => [qq({"type":"broadcast","topic":"$topic","event":"member.banned","payload":{}}), $typing]);
ok($rt->wait_for(sub { grep { ($_->{reason} // '') eq 'not allowed' } errors($F2) }, 'forgery 2 refused'),
	'member.banned refused');
ok($rt->wait_for(sub { 2 <= events_of($W{bob}, 'typing') }, 'second typing'), 'typing from that connection still passes');

my $E = $rt->ws(query => "access_token=$tok{eve}", send => [$typing]);
ok($rt->wait_for(sub { grep { ($_->{reason} // '') eq 'not allowed' } errors($E) }, 'eve refused'),
	'a non-member cannot publish typing on the room');
my $E2 = $rt->ws(query => "access_token=$tok{eve}",
	send => [qq({"type":"presence","topic":"$topic","state":{"status":"online"}})]);
ok($rt->wait_for(sub { grep { ($_->{reason} // '') eq 'not allowed' } errors($E2) }, 'eve presence refused'),
	'a non-member cannot track presence in the room');

# ---- revocation at once: ban, kick, leave ----
as_user('alice', "SELECT api.chat_ban($room, 'bob')");
as_user('alice', "SELECT api.chat_kick($room, 'carol')");
as_user('dave', "SELECT api.chat_leave($room)");
as_user('alice', "SELECT api.chat_kick($room, 'erin')");
for my $u (qw(bob carol dave))
{
	ok($rt->wait_for(sub { revoked($W{$u}) }, "$u revoked"), "$u is told: access revoked");
}
ok($rt->wait_for(sub { BvRealtime::slurp_file_lines($S->{file}) =~ /access revoked/ && !$S->running }, 'erin SSE ends'),
	'the SSE stream of a kicked member (its only topic) ends with "access revoked"');
ok($rt->wait_for(sub { sql("SELECT count(*) FROM bv_realtime.presence('$topic')") == 0 }, 'presence gone'),
	'their presence left the room');

# a message after the removals: alice gets it, the removed ones do not
as_user('alice', "SELECT api.chat_send($room, 'after the ban')");
ok($rt->wait_for(sub { grep { $_->{payload}{body} eq 'after the ban' } events_of($A, 'message.created') }, 'alice gets it'),
	'alice receives the next message');
# a second marker through a still-open connection of each removed user: a
# broadcast they are subscribed to, sent after the message
sql("INSERT INTO bv_realtime.topic_grants (topic_pattern, action, grantee) VALUES ('marker', 'subscribe', 'bv_user')");
my %M = map { $_ => $rt->ws(query => "access_token=$tok{$_}&topics=marker") } qw(bob carol dave);
ok($rt->wait_for(sub { !grep { !subscribed($M{$_}, 'marker') } keys %M }, 'markers'), 'marker subscriptions');
sql("SELECT bv_realtime.send('marker', 'done', '{}')");
ok($rt->wait_for(sub { !grep { !events_of($M{$_}, 'done') } keys %M }, 'marker delivered'), 'marker delivered');
for my $u (qw(bob carol dave))
{
	ok(!grep({ ($_->{payload}{body} // '') eq 'after the ban' } events_of($W{$u}, 'message.created')),
		"$u (removed) does not receive the room's later messages on its open connection");
	ok($W{$u}->running, "$u\'s connection stays open");
}
ok(BvRealtime::slurp_file_lines($S->{file}) !~ /after the ban/, 'nor does the kicked SSE client');

# the removed users tried "typing" again after seeing their removal: refused
for my $u (qw(bob carol dave))
{
	ok($rt->wait_for(sub { grep { ($_->{reason} // '') eq 'not allowed' } errors($W{$u}) }, "$u typing refused"),
		"$u cannot publish typing after its removal (cached decision dropped)");
}
ok(!grep({ ($_->{from} // '') ne 'alice' } events_of($A, 'typing')), 'alice never got typing from a removed member');

# re-subscribing is refused too
my $B2 = $rt->ws(query => "access_token=$tok{bob}&topics=$topic");
ok($rt->wait_for(sub { errors($B2) }, 'bob refused'), 'a banned member cannot subscribe again');

# ban evasion: a connection cannot switch to another user's token (same
# role) and so escape a revoke() that names its first user
my $R = $rt->ws(query => "access_token=$tok{alice}", send => [qq({"type":"auth","token":"$tok{eve}"})]);
ok($rt->wait_for(sub { $R->closed }, 'refresh closed'), 'a refreshed token of another sub closes the connection');
is(($R->closed // {})->{closed}, 4001, 'with 4001');
my $R2 = $rt->ws(query => "access_token=$tok{alice}", send => [qq({"type":"auth","token":"$tok{alice}"}), '{"type":"ping"}']);
ok($rt->wait_for(sub { grep { ($_->{type} // '') eq 'pong' } $R2->frames }, 'same sub refresh'), 'a refreshed token of the same sub is accepted');

# presence exhaustion: one connection cannot take every presence entry
# (bv_realtime.max_presence is shared by all): at most max_subscriptions
sql("INSERT INTO bv_realtime.topic_grants (topic_pattern, action, grantee) VALUES ('p:*', 'presence', 'bv_user')");
my $P = $rt->ws(query => "access_token=$tok{eve}",
	send => [ map { qq({"type":"presence","topic":"p:$_","state":{}}) } 1 .. 105 ]);
ok($rt->wait_for(sub { grep { ($_->{reason} // '') =~ /too many presence topics/ } errors($P) }, 'presence cap'),
	'a connection cannot track presence in more topics than max_subscriptions');
is(scalar(grep { ($_->{reason} // '') =~ /too many presence topics/ } errors($P)), 5, 'the 5 beyond 100 are refused');
is(sql("SELECT count(*) FROM bv_realtime.stats WHERE presence = 100"), 1, 'it holds 100 entries');
$P->stop;
ok($rt->wait_for(sub { sql("SELECT presence FROM bv_realtime.stats") == 0 }, 'presence freed'), 'freed when it closes');

# ---- bv_realtime.revoke() itself ----
my $X = $rt->ws(query => "access_token=$tok{alice}&topics=marker");
ok($rt->wait_for(sub { subscribed($X, 'marker') }, 'alice marker'), 'alice subscribes to marker');
sql("BEGIN; SELECT bv_realtime.revoke('marker', 'alice'); ROLLBACK;");
sql("SELECT bv_realtime.send('marker', 'again', '{}')");
ok($rt->wait_for(sub { events_of($X, 'again') }, 'still subscribed'), 'a rolled back revoke() drops nothing');
ok(!revoked($X), 'no "access revoked" for it');
sql("SELECT bv_realtime.revoke('marker', 'alice')");
ok($rt->wait_for(sub { revoked($X) }, 'revoked'), 'a committed revoke() drops the subscription');

my ($rc, $out, $err) = $node->psql('bitvelocity', "SET ROLE bv_user; SELECT bv_realtime.revoke('marker', 'alice')");
like($err, qr/permission denied/, 'bv_user cannot call revoke()');
($rc, $out, $err) = $node->psql('bitvelocity', "SELECT bv_realtime.revoke('bad topic', 'x')", extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/22023.*invalid topic name/s, 'revoke(): an invalid topic is 22023');
($rc, $out, $err) = $node->psql('bitvelocity', "SELECT bv_realtime.revoke('marker', '')", extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/22023.*invalid sub/s, 'revoke(): an empty sub is 22023');
($rc, $out, $err) = $node->psql('bitvelocity', "SELECT bv_realtime.revoke('marker', repeat('x', 2000))", extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/22023.*invalid sub/s, 'revoke(): a huge sub is 22023');
($rc, $out, $err) = $node->psql('bitvelocity', "SELECT bv_realtime.revoke(NULL, 'x')", extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/22004/, 'revoke(): null is 22004');
like(sql("SELECT state FROM bv_realtime.stats"), qr/running/, 'the gateway runs on');

$_->stop for ($R, $R2, $A, $T, $F, $F2, $E, $E2, $B2, $X, values %W, values %M);
$S->stop;
$node->stop;
done_testing();
