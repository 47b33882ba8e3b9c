# bv_realtime client messages and presence, with real clients
# (python3-websockets, curl -N): client broadcasts relayed to the topic's
# other subscribers (WebSocket and SSE) when bv_realtime.authorize(topic,
# 'publish') allows, decided once per connection (no database write per
# message); presence join/update/leave events and state, in shared memory
# (bv_realtime.presence()), checked against a model by a seeded randomized
# sequence of clients coming and going; hostile client messages.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvRealtime;
use JSON::PP;

my $seed = $ENV{BV_SEED} // time();
srand($seed);
diag("seed $seed (rerun with BV_SEED=$seed)");
my $J = JSON::PP->new->canonical;

my $node = BvTest::new_node('rtpres', extra_conf => "bv_realtime.keepalive = 60\n");
BvTest::create_suite_db($node);
my $rt = BvRealtime->new($node);
$rt->sql(q{
INSERT INTO bv_realtime.topic_grants (topic_pattern, action, grantee) VALUES
  ('room:*', 'subscribe', 'bv_user'), ('room:*', 'publish', 'bv_user'), ('room:*', 'presence', 'bv_user'),
  ('ro:*', 'subscribe', 'bv_user');
});
sub tok { return $rt->token(role => 'bv_user', sub => $_[0]); }
sub of_type { my ($type, @f) = @_; return grep { ($_->{type} // '') eq $type } @f; }
sub ws
{
	my ($sub, @send) = @_;
	return $rt->ws(query => 'access_token=' . tok($sub) . '&topics=room:1,ro:1', send => [ map { ref $_ ? $J->encode($_) : $_ } @send ]);
}

# ---- client broadcasts ----
my $msgs0 = $rt->sql('SELECT count(*) FROM bv_realtime.messages');
my $B = ws('u2');
my $C = $rt->sse('topics=room:1&access_token=' . tok('u3'));
$rt->wait_for(sub { of_type('subscribed', $B->frames) == 2 && $C->text =~ /retry/ }, 'B and C subscribed');
my $A = ws('u1',
	{ type => 'broadcast', topic => 'room:1', event => 'typing', payload => { on => JSON::PP::true, n => [1, 2] } },
	{ type => 'broadcast', topic => 'room:1', event => 'typing', payload => { on => JSON::PP::false } },
	{ type => 'broadcast', topic => 'ro:1', event => 'typing', payload => {} });
$rt->wait_for(sub { $B->messages >= 2 && $C->messages >= 2 && of_type('error', $A->frames) >= 1 }, 'broadcasts relayed');
is(join(' ', map { $J->encode($_) } $B->messages),
	'{"event":"typing","from":"u1","payload":{"n":[1,2],"on":true},"topic":"room:1","type":"message"} '
	  . '{"event":"typing","from":"u1","payload":{"on":false},"topic":"room:1","type":"message"}',
	'a WebSocket subscriber receives the client broadcasts, in order, with the sender\'s key, no position');
is(join(' ', map { $_->{event} . ':' . $J->encode($_->{json}{payload}) } $C->messages), 'typing:{"n":[1,2],"on":true} typing:{"on":false}',
	'an SSE subscriber receives them as events named after the event');
ok(!$A->messages, 'the sender does not get its own broadcasts back');
is((of_type('error', $A->frames))[0]{reason}, 'not allowed', 'broadcast on a topic without a publish grant: not allowed');
is($rt->sql('SELECT count(*) FROM bv_realtime.messages'), $msgs0, 'client broadcasts are not stored');

# decided once per connection: revoking the grant affects new connections only
$rt->sql(q{DELETE FROM bv_realtime.topic_grants WHERE action = 'publish'});
my $A2 = ws('u1', { type => 'broadcast', topic => 'room:1', event => 'late', payload => 1 });
$rt->wait_for(sub { of_type('error', $A2->frames) >= 1 }, 'new connection refused');
is((of_type('error', $A2->frames))[0]{reason}, 'not allowed', 'after the grant is gone a new connection may not publish');
my ($cb) = $rt->sql('SELECT client_broadcasts FROM bv_realtime.stats');
is($cb, 2, 'client_broadcasts counts relayed messages');
$_->stop for ($A, $A2);

# ---- presence ----
my $P1 = ws('u1', { type => 'presence', topic => 'room:1', state => { status => 'away' } },
	{ type => 'presence', topic => 'room:1', state => { status => 'online' } });
$rt->wait_for(sub { of_type('presence', $B->frames) >= 2 }, 'B sees u1 join and update');
is(join(' ', map { "$_->{event}:$_->{key}:" . $J->encode($_->{state}) } of_type('presence', $B->frames)),
	'join:u1:{"status":"away"} update:u1:{"status":"online"}', 'subscribers see join, then update, with state');
my @ps = of_type('presence_state', $P1->frames);
is($J->encode($ps[-1]{members}), '[{"key":"u1","state":{"status":"online"}}]', 'the tracking client gets the topic\'s presence');
is($rt->sql(q{SELECT string_agg(key || '=' || state::text, ',') FROM bv_realtime.presence('room:1')}), 'u1={"status": "online"}',
	'bv_realtime.presence() shows it from shared memory');
$P1->stop;
$rt->wait_for(sub { grep { $_->{event} eq 'leave' } of_type('presence', $B->frames) }, 'B sees u1 leave');
is($rt->sql(q{SELECT count(*) FROM bv_realtime.presence('room:1')}), 0, 'a closed connection leaves');
my $P2 = ws('u4', { type => 'presence', topic => 'room:1', state => {} }, { type => 'untrack', topic => 'room:1' });
$rt->wait_for(sub { (grep { $_->{key} eq 'u4' } of_type('presence', $B->frames)) >= 2 }, 'u4 joins and untracks');
is(join(' ', map { $_->{event} } grep { $_->{key} eq 'u4' } of_type('presence', $B->frames)), 'join leave', 'untrack: a leave event');
$P2->stop;

# ---- randomized: clients come and go; presence() must match the model ----
my %open;    # n -> { key, state, c }
my $n = 0;
my $model = sub { join ',', sort map { "$_->{key}=$_->{state}" } values %open };
my $actual = sub {
	$rt->sql(q{SELECT coalesce(string_agg(key || '=' || (state->>'s'), ',' ORDER BY key || '=' || (state->>'s')), '') FROM bv_realtime.presence('room:2')});
};
for my $step (1 .. 16)
{
	if (!%open || (keys(%open) < 5 && rand() < 0.6))
	{
		my $key = 'k' . int(rand(3));
		my $state = 's' . int(rand(100));
		my $c = ws($key, { type => 'presence', topic => 'room:2', state => { s => $state } });
		$open{ ++$n } = { key => $key, state => $state, c => $c };
	}
	else
	{
		my @k = sort keys %open;
		my $victim = $k[ int(rand(@k)) ];
		$open{$victim}{c}->stop;
		delete $open{$victim};
	}
	my $want = $model->();
	$rt->wait_for(sub { $actual->() eq $want }, "step $step: presence is [$want]") or last;
}
is($actual->(), $model->(), 'after 16 random joins and leaves, bv_realtime.presence() equals the model');
$_->{c}->stop for values %open;
$rt->wait_for(sub { $actual->() eq '' }, 'everyone left');
is($actual->(), '', 'all left: presence is empty');

# ---- hostile client messages ----
my @bad = (
	[ { type => 'presence', topic => 'room:1', state => 'x' }, 'state: a JSON object' ],
	[ { type => 'presence', topic => 'room:1', state => { pad => 'x' x 600 } }, 'state over 512 bytes' ],
	[ { type => 'presence', topic => 'table:public.t', state => {} }, 'table topics carry table changes only' ],
	[ { type => 'presence', topic => 'bad topic', state => {} }, 'invalid topic name' ],
	[ { type => 'broadcast', topic => 'room:1', event => 'has space' }, 'event: 1-100 bytes of printable ASCII' ],
	[ { type => 'broadcast', topic => 'room:1', event => 'e' x 101 }, 'event: 1-100 bytes of printable ASCII' ],
	[ { type => 'broadcast', topic => 'room:1' }, 'event: 1-100 bytes of printable ASCII' ],
	[ { type => 'presence', topic => 'ro:1', state => {} }, 'not allowed' ],
);
$rt->sql(q{INSERT INTO bv_realtime.topic_grants (topic_pattern, action, grantee) VALUES ('room:*', 'publish', 'bv_user')});
# a payload with raw line breaks (JSON whitespace) must not break SSE framing
push @bad, [ qq({"type":"broadcast","topic":"room:1","event":"nl","payload":\n{"a":\r\n1,\n"b":"id: 666"}}), undef ];
my $H = ws('u5', map { $_->[0] } @bad);
pop @bad;
$rt->wait_for(sub { of_type('error', $H->frames) >= @bad }, 'hostile messages answered');
my @e = of_type('error', $H->frames);
is($e[$_]{reason}, $bad[$_][1], "refused: $bad[$_][1] (" . $J->encode($bad[$_][0]) . ')') for 0 .. $#bad;
is($rt->sql(q{SELECT count(*) FROM bv_realtime.presence('room:1')}), 0, 'no hostile message left a presence entry');
$rt->wait_for(sub { grep { $_->{event} eq 'nl' } $C->events }, 'SSE client got the multi-line payload');
my ($nl) = grep { $_->{event} eq 'nl' } $C->events;
ok($nl && !exists $nl->{id} && $J->encode($nl->{json}{payload}) eq '{"a":1,"b":"id: 666"}',
	'SSE: a client payload with raw line breaks arrives as one event, without forged fields');
my ($pj, $pl, $pc) = split /\|/, $rt->sql('SELECT presence_joins, presence_leaves, presence FROM bv_realtime.stats');
cmp_ok($pj, '>=', 3, "presence_joins counted ($pj)");
is($pj, $pl, 'every join was followed by a leave');
is($pc, 0, 'no presence entry left');
$_->stop for ($B, $H);
$C->stop;
done_testing();
