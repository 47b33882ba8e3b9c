# Red-team round 6b (bv_chat over bv_realtime): the gateway's history
# serves deleted messages, to users who were not members when they existed.
#
# Finding 9: docs/bv_chat.md: "Deletes are tombstones: text, attachments,
#   mentions, reactions and pins go"; chat_history shows a deleted message
#   without text.  But every message.created event (the whole message, its
#   body included) stays in bv_realtime's history for history_retention
#   (1 h), and a client may resume a topic from any position in it
#   (docs/bv_realtime.md, "Positions and resume"; ids are WAL positions,
#   "0/1-0" is before all of them).  A user who joins a channel after a
#   message was posted and deleted connects with
#   topics=chat:room:<id>&last_id=0/1-0 and receives the deleted text, and
#   every earlier event of the room since the history began.  (Earlier
#   live messages are no leak: chat_history shows a channel's whole past.)
#   Expected: the deleted text never reaches a client after the delete
#   (e.g. deletes purge or mask the history's copies, or a resume does not
#   go back before the user's join).
# Fixed in bv_chat 0.4.0 (ADR 0101): a delete rewrites the message's copies
#   in the history into its tombstone, and a join re-applies the redactions
#   of copies stored after the delete.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvRealtime;

my $node = BvTest::new_node('red6bchist');
BvTest::create_suite_db($node);
my $rt = BvRealtime->new($node);

sub as_user
{
	my ($sub, $q) = @_;
	return $node->safe_psql('bitvelocity', qq{
SELECT set_config('request.jwt.claims', '{"role": "bv_user", "sub": "$sub"}', false) IS NULL;
SET ROLE bv_user;
$q});
}

my $room = as_user('r6b_alice', q{SELECT (api.chat_create_room('channel', 'r6b-chan', 'resume')) ->> 'id'});
($room) = $room =~ /(\d+)\s*$/;
as_user('r6b_alice', qq{SELECT api.chat_send($room, 'R6B-DELETED-SECRET')});
as_user('r6b_alice', qq{SELECT api.chat_delete($room, 1)});
# The gateway stores a message after it decodes the commit: wait until it
# has stored the delete (and so, in commit order, the message before it).
# A copy stored before the delete is redacted by the delete, one stored
# after it by the join below (chat.members_joined); a gateway lagging
# behind the join itself is the window docs/bv_chat.md leaves open.
$node->poll_query_until('bitvelocity', qq{
SELECT count(*) = 1 FROM bv_realtime.messages WHERE topic = 'chat:room:$room' AND event = 'message.deleted'})
	or die 'the gateway did not store the delete';
as_user('r6b_newbie', qq{SELECT api.chat_join($room)});
is($node->safe_psql('bitvelocity', qq{
SELECT count(*) FROM bv_realtime.messages WHERE topic = 'chat:room:$room' AND payload::text LIKE '%R6B-DELETED-SECRET%'}), '0',
	'no copy of the deleted text is left in the history');
like(as_user('r6b_newbie', qq{SELECT api.chat_history($room)::text}), qr/"deleted": true/,
	'control: chat_history shows the message as deleted');
unlike(as_user('r6b_newbie', qq{SELECT string_agg(h::text, ' ') FROM api.chat_history($room) h}), qr/R6B-DELETED-SECRET/,
	'control: chat_history does not show the deleted text');

my $tok = $rt->token(role => 'bv_user', sub => 'r6b_newbie');
my $ws = $rt->ws(query => "access_token=$tok&topics=chat:room:$room&last_id=0/1-0");
$rt->wait_for(sub { grep { ($_->{type} // '') eq 'subscribed' } $ws->frames }, 'the newbie subscribed');
# A live message after the subscription: once it arrives, whatever the
# resume replays has arrived before it (delivery is in commit order).
as_user('r6b_alice', qq{SELECT api.chat_send($room, 'r6b-live-after-connect')});
$rt->wait_for(sub { grep { $_->{payload} && ($_->{payload}{body} // '') eq 'r6b-live-after-connect' } $ws->frames },
	'the newbie got the live message sent after it connected');
ok((grep { ($_->{type} // '') eq 'subscribed' } $ws->frames), 'control: the new member may subscribe to the room');
# Fixed in bv_chat 0.4.0 (finding 9): a delete replaces the message's
# copies in the history by its tombstone (chat.redact_history).
is(scalar(grep { $_->{payload} && ($_->{payload}{body} // '') =~ /R6B-DELETED-SECRET/ } $ws->frames), 0,
	'a member who joined after the delete does not receive the deleted text by resuming');
ok((grep { ($_->{event} // '') eq 'message.created' && $_->{payload} && ($_->{payload}{seq} // 0) == 1
		&& $_->{payload}{deleted} && ($_->{payload}{body} // 'x') eq '' } $ws->frames),
	'the resume replays the deleted message as its tombstone');
$ws->stop;

# Held: a non-member cannot resume the room at all.
my $tok2 = $rt->token(role => 'bv_user', sub => 'r6b_stranger');
my $ws2 = $rt->ws(query => "access_token=$tok2&topics=chat:room:$room&last_id=0/1-0");
$rt->wait_for(sub { scalar($ws2->frames) >= 1 }, 'the stranger got an answer');
is(scalar(grep { ($_->{type} // '') eq 'message' } $ws2->frames), 0, 'a non-member resuming gets no event of the room');
$ws2->stop;

done_testing();
