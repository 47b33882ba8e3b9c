# bv_chat live, end to end: REST through PostgREST, WebSocket clients of
# bv_realtime (python3-websockets), an MQTT subscriber (mosquitto_sub) fed by
# bv_cdc's MQTT sink, and a signature-checking webhook receiver fed by
# bv_cdc's webhook sink (the push service).  Two users see each other's
# messages live, with edit, delete, reaction, receipt and typing events; a
# non-member and a banned user cannot subscribe; an offline member gets the
# webhook push; the MQTT topic of the room carries the same events at QoS 1.
use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvMqtt;
use BvRealtime;
use BvWebhook;

my $node = BvTest::new_node('chat_live',
	extra_conf => "bv_cdc.naptime = 200\nbv_realtime.keepalive = 60\nbv.request_rate = 100000\nbv.request_burst = 100000\n");
BvTest::create_suite_db($node);
my $dir = $node->basedir;
sub sql { return $node->safe_psql('bitvelocity', $_[0]); }

# ---- peers: PostgREST, the gateway, an MQTT broker, the push receiver ----
my $secret = join '', map { ('a' .. 'z', 0 .. 9)[ rand 36 ] } 1 .. 48;
sql("INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('postgrest', 'HS256', '$secret')");
my ($pgrst, $url) = BvTest::start_postgrest($node, jwt_secret => $secret);
my $exp = time() + 3600;
my %rest = map { $_ => BvTest::jwt_hs256($secret, qq({"role":"bv_user","sub":"$_","exp":$exp})) } qw(alice bob carol eve);
sub rpc
{
	my ($who, $fn, $body) = @_;
	my ($status, $out) = BvTest::http('POST', "$url/rpc/$fn", token => $rest{$who}, body => $body);
	return ($status, $out);
}

my $rt = BvRealtime->new($node);
my %ws_tok = map { $_ => $rt->token(role => 'bv_user', sub => $_) } qw(alice bob eve);

my $broker = BvMqtt::start_broker($dir);
my $push_secret = 'whsec_' . join('', map { sprintf '%02x', int(rand(256)) } 1 .. 24);
my $hook = BvWebhook::start($dir, secrets => [$push_secret]);
sql("SELECT bv.secret_set('chat.push', '$push_secret')");
sql(qq{SELECT bv_cdc.add_sink('chat_mqtt', 'mqtt', '{"host": "127.0.0.1", "port": $broker->{port}, "keepalive_s": 5}')});
sql(qq{SELECT bv_cdc.add_sink('chat_push', 'webhook', '{"url": "$hook->{url}", "secret": "chat.push", "retry_base_ms": 100, "retry_max_ms": 500}')});
ok(sql("SELECT chat.route_mqtt('chat_mqtt')") > 0, 'chat.route_mqtt routes the live events to MQTT');
ok(sql("SELECT chat.route_push('chat_push')") > 0, 'chat.route_push routes notifications to the push webhook');
ok($node->poll_query_until('bitvelocity',
		"SELECT count(*) = 2 FROM bv_cdc.stats WHERE sink IN ('chat_mqtt', 'chat_push') AND worker_state = 'streaming'"),
	'bv_cdc streams to both sinks');

# ---- a room of alice, bob and carol (carol is never online) ----
my ($st, $body) = rpc('alice', 'chat_create_room', '{"kind": "group", "name": "live", "members": ["bob", "carol"]}');
is($st, '200', 'alice creates the room over REST');
my $room = decode_json($body)->{id};
($st) = rpc('bob', 'chat_read', qq({"room_id": $room}));
is($st, '200', 'bob is online (a receipt)');

my $sub = BvMqtt::subscribe($broker, "chat/rooms/$room/#", id => 'chatsub', persistent => 0);
ok(BvMqtt::wait_ready($sub), 'an MQTT subscriber on the room topic is ready');

my $A = $rt->ws(query => "access_token=$ws_tok{alice}&topics=chat:room:$room");
my $B = $rt->ws(query => "access_token=$ws_tok{bob}&topics=chat:room:$room");
my $E = $rt->ws(query => "access_token=$ws_tok{eve}", send => [qq({"type":"subscribe","topic":"chat:room:$room"})]);
sub subscribed { return grep { ($_->{type} // '') eq 'subscribed' } $_[0]->frames; }
sub events_of { my ($ws, $ev) = @_; return grep { $_->{event} eq $ev } $ws->messages; }
ok($rt->wait_for(sub { subscribed($A) && subscribed($B) }, 'members subscribed'), 'alice and bob subscribe to the room over WebSocket');
ok($rt->wait_for(sub { grep { ($_->{type} // '') eq 'error' } $E->frames }, 'eve refused'), 'a non-member cannot subscribe');
ok(!subscribed($E), 'eve has no subscription');

# ---- messages, live ----
($st, $body) = rpc('alice', 'chat_send', qq({"room_id": $room, "body": "hello \@bob, 東京へようこそ"}));
is($st, '200', 'alice sends over REST');
my $seq = decode_json($body)->{seq};
ok($rt->wait_for(sub { events_of($B, 'message.created') }, 'bob gets it'), 'bob receives the message live');
my ($m) = events_of($B, 'message.created');
is($m->{payload}{body}, "hello \@bob, 東京へようこそ", 'with its text (multibyte intact)');
is_deeply($m->{payload}{mentions}, ['bob'], 'and its mentions');
is($m->{topic}, "chat:room:$room", 'on the room topic');
ok($rt->wait_for(sub { events_of($A, 'message.created') }, 'alice gets it'), 'the sender receives it too');

($st) = rpc('bob', 'chat_send', qq({"room_id": $room, "body": "hi alice", "reply_to": $seq}));
is($st, '200', 'bob replies in a thread');
ok($rt->wait_for(sub { grep { $_->{payload}{sender} eq 'bob' } events_of($A, 'message.created') }, 'alice gets the reply'),
	'alice receives bob\'s reply live');
my ($r) = grep { $_->{payload}{sender} eq 'bob' } events_of($A, 'message.created');
is($r->{payload}{thread_root}, $seq, 'the reply carries its thread');

($st) = rpc('alice', 'chat_edit', qq({"room_id": $room, "seq": $seq, "body": "hello bob (edited)"}));
is($st, '200', 'alice edits');
ok($rt->wait_for(sub { events_of($B, 'message.edited') }, 'edit'), 'bob sees the edit live');
is((events_of($B, 'message.edited'))[0]{payload}{body}, 'hello bob (edited)', 'with the new text');

($st) = rpc('bob', 'chat_react', qq({"room_id": $room, "seq": $seq, "emoji": "🎉"}));
is($st, '200', 'bob reacts');
ok($rt->wait_for(sub { events_of($A, 'reaction.added') }, 'reaction'), 'alice sees the reaction live');
is((events_of($A, 'reaction.added'))[0]{payload}{emoji}, '🎉', 'the emoji');

($st) = rpc('bob', 'chat_read', qq({"room_id": $room}));
ok($rt->wait_for(sub { events_of($A, 'receipt') }, 'receipt'), 'alice sees bob\'s read receipt live');

($st) = BvTest::http('POST', "$url/rpc/chat_typing", token => $rest{bob}, body => qq({"room_id": $room}));
ok($rt->wait_for(sub { events_of($A, 'typing') }, 'typing'), 'typing indicators are ephemeral live events');
is(sql("SELECT count(*) FROM chat.events WHERE event = 'typing'"), '0', 'typing writes no table row');

($st) = rpc('alice', 'chat_delete', qq({"room_id": $room, "seq": $seq}));
is($st, '200', 'alice deletes her message');
ok($rt->wait_for(sub { events_of($B, 'message.deleted') }, 'delete'), 'bob sees the delete live');
ok(!exists((events_of($B, 'message.deleted'))[0]{payload}{body}), 'the delete event carries no text');

# ---- refusals over REST ----
($st, $body) = rpc('eve', 'chat_send', qq({"room_id": $room, "body": "let me in"}));
is($st, '404', 'a non-member gets 404 over REST');
($st, $body) = rpc('alice', 'chat_send', sprintf('{"room_id": %d, "body": "%s"}', $room, 'x' x 4001));
is($st, '413', 'a message over the size limit gets 413');
like($body, qr/"hint":"Split the text/, 'with a hint');
($st) = BvTest::http('POST', "$url/rpc/chat_send", body => qq({"room_id": $room, "body": "anon"}));
like($st, qr/^40[13]$/, 'anonymous sending is refused');

# ---- MQTT carries the same events ----
BvMqtt::wait_until(sub { grep { ($_->{env}{after}{event} // '') eq 'message.deleted' } BvMqtt::messages($sub) });
my @mq = BvMqtt::messages($sub);
my @kinds = map { $_->{env}{after}{event} } @mq;
ok((grep { $_ eq 'message.created' } @kinds) >= 2, 'MQTT: both messages');
ok((grep { $_ eq 'message.edited' } @kinds) && (grep { $_ eq 'reaction.added' } @kinds) && (grep { $_ eq 'message.deleted' } @kinds),
	'MQTT: edit, reaction and delete events');
ok(!(grep { $_->{topic} !~ m{^chat/rooms/$room/\d+$} } @mq), 'MQTT topics are chat/rooms/<room>/<event id>');
ok(!(grep { $_->{qos} != 1 } @mq), 'delivered at QoS 1');

# ---- the offline member gets the push ----
# The notification row of a delivery (BvWebhook decodes bodies as bytes,
# which fails on multibyte text: decode the character string here).
sub pushed
{
	my ($e) = @_;
	my $env = $e->{env} // eval { JSON::PP->new->decode($e->{body}) } // {};
	my $n = $env->{after} // {};
	$n->{payload} = eval { JSON::PP->new->decode($n->{payload}) } // {} unless ref $n->{payload};
	return $n;
}
sub pushes_for { my ($u) = @_; return grep { ($_->{user_id} // '') eq $u } map { pushed($_) } BvWebhook::delivered($hook); }
BvWebhook::wait_for($hook, sub { pushes_for('carol') >= 1 && pushes_for('bob') >= 1 });
my @carol = pushes_for('carol');
is(scalar(@carol), 1, 'carol, offline, gets a push through the webhook (not for the thread reply: she does not follow the thread)');
ok(!(grep { !$_->{verified} } BvWebhook::delivered($hook)), 'every push is signed and verified');
is($carol[0]{kind}, 'message', 'a message notification');
like($carol[0]{payload}{preview}, qr/\x{6771}\x{4eac}/, 'with a preview of the text');
my @bob = pushes_for('bob');
is(scalar(@bob), 1, 'bob, online, is pushed only for his mention');
is($bob[0]{kind}, 'mention', 'a mention notification');
is(scalar(pushes_for('alice')), 0, 'alice, online and not mentioned, gets no push');

# ---- the send rate limit holds over REST, for edits too ----
sql("UPDATE chat.settings SET value = 1 WHERE name IN ('send_rate', 'send_burst')");
($st, $body) = rpc('alice', 'chat_send', qq({"room_id": $room, "body": "rate"}));
my $rseq = decode_json($body)->{seq};
my @edits = map { [ rpc('alice', 'chat_edit', qq({"room_id": $room, "seq": $rseq, "body": "rate $_"})) ] } 1 .. 5;
my @limited = grep { $_->[0] eq '429' } @edits;
ok(@limited, 'editing faster than the send limit gets 429 over REST (' . join(' ', map { $_->[0] } @edits) . ')');
like($limited[0][1] // '', qr/"code":"PT429"/, 'with SQLSTATE PT429');
sql("UPDATE chat.settings SET value = CASE name WHEN 'send_rate' THEN 5 ELSE 30 END WHERE name IN ('send_rate', 'send_burst')");

# ---- a ban is immediate for REST and new subscriptions ----
($st) = rpc('alice', 'chat_ban', qq({"room_id": $room, "user_id": "bob"}));
is($st, '200', 'alice bans bob');
($st) = rpc('bob', 'chat_history', qq({"room_id": $room}));
is($st, '403', 'bob can no longer read the history');
my $B2 = $rt->ws(query => "access_token=$ws_tok{bob}", send => [qq({"type":"subscribe","topic":"chat:room:$room"})]);
ok($rt->wait_for(sub { grep { ($_->{type} // '') eq 'error' } $B2->frames }, 'bob refused'), 'nor subscribe again');

$_->stop for ($A, $B, $E, $B2);
BvMqtt::stop_subscriber($sub);
BvMqtt::stop_broker($broker);
BvWebhook::stop($hook);
$pgrst->kill_kill;
$node->stop;
done_testing();
