# Red-team round 5b (bv_realtime), through the gateway with real clients.
#
# Finding 7, end to end (see pgtap/bv_redteam5b_chat_realtime): with a
#   grant 'inbox:{sub}*', a token whose sub is "al" subscribes to
#   'inbox:alice' and receives alice's messages; so does a token whose sub
#   is "" (the gateway accepts any string sub).
# Finding 13: a sub longer than 64 bytes is not the sender's key.  The
#   gateway keeps the sub as the presence key only up to 64 bytes (auth.c)
#   and otherwise uses the role: a client broadcast of such a user reaches
#   the others with "from": "bv_user", and its presence entry is keyed
#   "bv_user", shared by every such user and by a user whose sub is the
#   string "bv_user".  docs/bv_realtime.md: broadcasts are relayed "with
#   from (the sender's sub claim, else its role)"; bv_chat relies on it for
#   typing ("from (the sender's sub, set by the gateway)"); chat user ids
#   may have 200 characters, bv_core actors 256.
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
my $node = BvTest::new_node('red5brt');
BvTest::create_suite_db($node);
my $rt = BvRealtime->new($node);
$rt->sql(q{
INSERT INTO bv_realtime.topic_grants (topic_pattern, action, grantee) VALUES
  ('r5b:*', 'subscribe', 'bv_user'), ('r5b:*', 'publish', 'bv_user'), ('r5b:*', 'presence', 'bv_user'),
  ('inbox:{sub}*', 'subscribe', 'bv_user');
});
sub tok { return $rt->token(role => 'bv_user', sub => $_[0]); }
sub of_type { my ($type, @f) = @_; return grep { ($_->{type} // '') eq $type } @f; }
sub ws
{
	my ($sub, $topics, @send) = @_;
	return $rt->ws(query => 'access_token=' . tok($sub) . "&topics=$topics", send => [ map { ref $_ ? $J->encode($_) : $_ } @send ]);
}

# ---- finding 7: {sub} prefix grants ----
my $alice = ws('alice', 'inbox:alice');
my $al = ws('al', 'inbox:alice');
my $empty = ws('', 'inbox:alice');
$rt->wait_for(sub { of_type('subscribed', $alice->frames) == 1 && ($al->frames) >= 2 && ($empty->frames) >= 2 },
	'the three clients answered');
$rt->sql(q{SELECT bv_realtime.send('inbox:alice', 'dm', '{"text": "for alice only"}')});
$rt->wait_for(sub { $alice->messages >= 1 }, 'alice got her message');
is(scalar($alice->messages), 1, 'control: alice receives her own topic');
{
	
	is(scalar(of_type('subscribed', $al->frames)), 0, 'sub "al" is refused inbox:alice');
	is(scalar(of_type('subscribed', $empty->frames)), 0, 'an empty sub is refused inbox:alice');
	is(scalar($al->messages) + scalar($empty->messages), 0, '... and they receive none of alice\'s messages');
}
$_->stop for ($alice, $al, $empty);

# ---- finding 13: a long sub as the sender's key ----
my $long1 = 'u' x 100;
my $long2 = 'v' x 100;
my $watcher = ws('watcher', 'r5b:room');
$rt->wait_for(sub { of_type('subscribed', $watcher->frames) == 1 }, 'the watcher subscribed');
my $short = ws('shorty', 'r5b:room', { type => 'broadcast', topic => 'r5b:room', event => 'typing', payload => { n => 1 } });
$rt->wait_for(sub { $watcher->messages >= 1 }, 'the short sub\'s broadcast arrived');
is(($watcher->messages)[0]{from}, 'shorty', 'control: a short sub is the broadcast\'s from');
my $l1 = ws($long1, 'r5b:room', { type => 'broadcast', topic => 'r5b:room', event => 'typing', payload => { n => 2 } },
	{ type => 'presence', topic => 'r5b:room', state => { who => 1 } });
$rt->wait_for(sub { $watcher->messages >= 2 }, 'the long sub\'s broadcast arrived');
my $l2 = ws($long2, 'r5b:room', { type => 'presence', topic => 'r5b:room', state => { who => 2 } });
$rt->wait_for(sub { of_type('presence_state', $l2->frames) >= 1 || of_type('error', $l2->frames) >= 1 }, 'the second long sub tracked presence');
my @keys = split /\n/, $rt->sql(q{SELECT key FROM bv_realtime.presence('r5b:room') ORDER BY key});
{
	
	is(($watcher->messages)[1]{from}, $long1, 'a 100-character sub is the broadcast\'s from');
	is(scalar(grep { $_ eq 'bv_user' } @keys), 0, 'no presence entry is keyed by the role');
	ok((grep { $_ eq $long1 } @keys) && (grep { $_ eq $long2 } @keys), 'each long sub has its own presence entry');
}
$_->stop for ($watcher, $short, $l1, $l2);

done_testing();
