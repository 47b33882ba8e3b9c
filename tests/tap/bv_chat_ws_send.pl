# bv_chat 0.3.0: sending over the WebSocket through bv_realtime's handlers
# (chat.ws_send on chat:room:<id>, event message.send), with real WebSocket
# clients (python3-websockets):
#   - alice sends on her socket and gets a reply with the message chat.send()
#     returns; bob, subscribed to the room, receives message.created live;
#     the message is in chat.messages once, with alice as its sender;
#   - eve (not a member) is refused with 403 and chat's hint, and nothing is
#     written; malformed payloads get 400 with a hint; typing stays a plain
#     client message (broadcast, no handler);
#   - a reply in a thread (reply_to) and attachments pass through.
use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvRealtime;

my $J = JSON::PP->new->canonical->ascii;
my $node = BvTest::new_node('chat_ws_send', extra_conf => "bv_realtime.keepalive = 60\n");
BvTest::create_suite_db($node);
sub sql { return $node->safe_psql('bitvelocity', $_[0]); }
my $rt = BvRealtime->new($node);
my %tok = map { $_ => $rt->token(role => 'bv_user', sub => $_) } qw(alice bob eve);

# a room of alice and bob, created as alice (the claims PostgREST would set)
my $room = sql(q{
SET ROLE bv_user;
SET request.jwt.claims = '{"role":"bv_user","sub":"alice"}';
SELECT (chat.create_room('group', 'ws', '', ARRAY['bob'])) ->> 'id';
});
like($room, qr/^\d+$/, "alice created room $room");
my $topic = "chat:room:$room";

sub of_type { my ($type, @f) = @_; return grep { ($_->{type} // '') eq $type } @f; }
sub send_msg { my ($ref, $payload, $event) = @_;
	return $J->encode({ type => 'broadcast', topic => $topic, event => $event // 'message.send', ref => $ref, payload => $payload }); }
sub reply_to
{
	my ($c, $ref) = @_;
	$rt->wait_for(sub { grep { ($_->{ref} // '') eq $ref } of_type('reply', $c->frames) }, "reply $ref");
	my ($r) = grep { ($_->{ref} // '') eq $ref } of_type('reply', $c->frames);
	return $r // {};
}

my $B = $rt->ws(query => "access_token=$tok{bob}&topics=$topic");
$rt->wait_for(sub { of_type('subscribed', $B->frames) }, 'bob subscribed');
ok(of_type('subscribed', $B->frames), 'bob subscribes to the room');

# ---- alice sends over her socket ----
my $A = $rt->ws(query => "access_token=$tok{alice}&topics=$topic",
	send_when => [ [ 'subscribed', send_msg('m1', { body => "hello bob, \x{6771}\x{4eac}" }) ] ]);
my $r = reply_to($A, 'm1');
is($r->{status}, 200, 'alice\'s message.send is answered with 200');
my $seq = $r->{result}{seq};
ok($seq && $r->{result}{room_id} == $room, "... with chat.send()'s result (seq $seq)");
$rt->wait_for(sub { grep { $_->{event} eq 'message.created' } $B->messages }, 'bob gets message.created');
my ($m) = grep { $_->{event} eq 'message.created' } $B->messages;
ok($m, 'bob receives the message live over his WebSocket');
is($m->{payload}{seq}, $seq, '... the same message');
is($m->{payload}{body}, "hello bob, \xe6\x9d\xb1\xe4\xba\xac", '... with its text (multibyte intact)');
ok(!grep({ ($_->{event} // '') eq 'message.send' } $B->frames), 'the client message itself is not relayed');
is(sql("SELECT count(*) || ' ' || min(sender) FROM chat.messages WHERE room_id = $room"), '1 alice',
	'one row in chat.messages, sent by alice');

# ---- a reply in a thread, with an attachment ----
my $att = [ { name => 'a.png', mime => 'image/png', size => 12, url => 'https://example.org/a.png' } ];
my $A2 = $rt->ws(query => "access_token=$tok{alice}",
	send => [ send_msg('m2', { body => 'in the thread', reply_to => $seq + 0, attachments => $att }) ]);
$r = reply_to($A2, 'm2');
is($r->{status}, 200, 'a reply with an attachment is sent');
is($r->{result}{thread_root}, $seq, '... in the thread of the first message');

# ---- hostile ----
my $E = $rt->ws(query => "access_token=$tok{eve}", send => [ send_msg('e1', { body => 'let me in' }) ]);
$r = reply_to($E, 'e1');
is($r->{status}, 403, 'a non-member is refused with 403');
ok($r->{error}{hint}, '... with chat\'s hint (' . ($r->{error}{hint} // '') . ')');
is(sql("SELECT count(*) FROM chat.messages WHERE room_id = $room AND sender = 'eve'"), 0, '... and nothing is written');
my $E2 = $rt->ws(query => "access_token=$tok{eve}", send => [ $J->encode({ type => 'broadcast', topic => 'chat:room:999999',
	event => 'message.send', ref => 'e2', payload => { body => 'probe' } }) ]);
is(reply_to($E2, 'e2')->{status}, 403, 'a room that does not exist answers 403 as well (no probing)');
$E2->stop;
my $H = $rt->ws(query => "access_token=$tok{alice}",
	send => [ send_msg('h1', 'a string'), send_msg('h2', { body => [1] }), send_msg('h3', { body => 'x', reply_to => 'abc' }),
		send_msg('h4', { body => 'x', attachments => { no => 1 } }), send_msg('h5', { body => 'x', reply_to => -1 }),
		send_msg('h6', { body => '' }) ]);
for my $ref (qw(h1 h2 h3 h4 h5 h6))
{
	$r = reply_to($H, $ref);
	ok($r->{status} == 400 && $r->{error}{hint}, "malformed payload $ref: 400 with a hint ($r->{error}{message})");
}
is(sql("SELECT count(*) FROM chat.messages WHERE room_id = $room"), 2, 'no malformed message was written');
# typing is still a plain client message
my $T = $rt->ws(query => "access_token=$tok{alice}&topics=$topic",
	send_when => [ [ 'subscribed', $J->encode({ type => 'broadcast', topic => $topic, event => 'typing', payload => { on => JSON::PP::true } }) ] ]);
$rt->wait_for(sub { grep { $_->{event} eq 'typing' && ($_->{from} // '') eq 'alice' } $B->messages }, 'typing relayed');
ok((grep { $_->{event} eq 'typing' && ($_->{from} // '') eq 'alice' } $B->messages), 'typing is still relayed as a client message');
ok(!of_type('reply', $T->frames), '... without a handler reply');

$_->stop for ($A, $A2, $B, $E, $H, $T);
done_testing();
