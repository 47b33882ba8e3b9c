# bv_social over real HTTP through PostgREST, and its domain events on Kafka.
#  - REST: profiles, posts, follows, likes, a reply, the feeds with keyset
#    cursors; a blocked user sees none of the blocker's posts by any REST
#    path (views, embedding in both directions, every feed RPC); errors map
#    to the right HTTP statuses with hints, hostile inputs are refused.
#  - Kafka: the outbox streams through bv_cdc to the mock broker (topic
#    bv.social.events); every event carries its type and schema version, and
#    a consumer rebuilds follower counts from the messages alone.
use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvKafka;

my $node = BvTest::new_node('social_rest');
BvTest::create_suite_db($node);
$node->safe_psql('bitvelocity', "SELECT cron.unschedule(jobname) FROM cron.job WHERE jobname LIKE 'social-%'");

my $mock = BvKafka::start_mock($PostgreSQL::Test::Utils::tmp_check);
$node->safe_psql('bitvelocity', qq{
SELECT bv_cdc.add_sink('events', 'kafka', jsonb_build_object('bootstrap.servers', '$mock->{bootstrap}'));
SELECT social.route_events('events');
});
ok($node->poll_query_until('bitvelocity',
		"SELECT worker_state = 'streaming' AND state = 'up' FROM bv_cdc.stats WHERE sink = 'events'"),
	'bv_cdc streams the outbox to the Kafka mock');

my $secret = join '', map { ('a' .. 'z', 0 .. 9)[ rand 36 ] } 1 .. 48;
$node->safe_psql('bitvelocity',
	"INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('postgrest', 'HS256', '$secret')");
my ($pgrst, $url) = BvTest::start_postgrest($node, jwt_secret => $secret);
my $exp = time() + 600;
my %tok = map { $_ => BvTest::jwt_hs256($secret, qq({"role":"bv_user","sub":"$_","exp":$exp})) }
  qw(alice bob carol dave);

sub call
{
	my ($method, $path, %o) = @_;
	my ($status, $body) = BvTest::http($method, "$url$path",
		token => ($o{as} ? $tok{ $o{as} } : undef), body => $o{body});
	my $json = eval { decode_json($body) };
	return ($status, $json // $body);
}
sub ids { return join ',', map { $_->{id} } @{ $_[0] }; }

# Profiles and the graph.
for my $u (qw(alice bob carol dave))
{
	my ($s) = call('POST', '/rpc/create_profile', as => $u, body => qq({"handle":"$u"}));
	is($s, '200', "$u creates a profile");
}
my ($s, $b) = call('POST', '/rpc/create_profile', as => 'alice', body => '{"handle":"alice2"}');
is($s, '409', 'a second profile: 409');
($s, $b) = call('POST', '/rpc/create_profile', as => 'dave', body => qq({"handle":"x\\u0000y"}));
is($s, '400', 'hostile handle (NUL): 400');
($s, $b) = call('POST', '/rpc/create_profile', body => '{"handle":"anon"}');
is($s, '401', 'anonymous cannot create a profile');
for my $u (qw(bob carol dave)) { call('POST', '/rpc/follow', as => $u, body => '{"handle":"alice"}'); }
($s, $b) = call('POST', '/rpc/follow', as => 'bob', body => '{"handle":"nobody"}');
is($s, '404', 'following an unknown handle: 404');
like($b->{hint}, qr/Check the handle/, 'with a hint');

# Posts, a reply, likes.
my @posts;
for my $i (1 .. 5)
{
	($s, $b) = call('POST', '/rpc/create_post', as => 'alice', body => qq({"body":"post $i #pg","visibility":"public"}));
	push @posts, $b->{id};
}
is($s, '200', 'alice posts');
($s, $b) = call('POST', '/rpc/create_post', as => 'alice', body => '{"body":"just followers","visibility":"followers"}');
my $fo = $b->{id};
($s, $b) = call('POST', '/rpc/create_post', as => 'bob', body => qq({"body":"a reply","reply_to":$posts[0]}));
my $reply = $b->{id};
is($s, '200', 'bob replies');
($s, $b) = call('POST', '/rpc/create_post', as => 'alice', body => qq({"body":"alice answers","reply_to":$reply}));
my $areply = $b->{id};
($s, $b) = call('POST', '/rpc/create_post', as => 'bob', body => '{"body":"' . ('x' x 501) . '"}');
is($s, '400', 'a 501-character post: 400');
($s, $b) = call('POST', '/rpc/create_post', as => 'bob', body => '{"body":"hi","visibility":"secret"}');
is($s, '400', 'unknown visibility: 400');
like($b->{hint}, qr/public, followers or mentioned/, 'the hint lists the visibilities');
($s, $b) = call('POST', '/rpc/create_post', as => 'bob', body => '{"body":"x","media":[{"url":"javascript:alert(1)"}]}');
is($s, '400', 'a hostile media URL: 400');
for my $u (qw(bob carol dave)) { call('POST', '/rpc/like_post', as => $u, body => qq({"post_id":$posts[0]})); }
($s, $b) = call('GET', "/social_posts?id=eq.$posts[0]&select=likes_count,replies_count");
is_deeply($b, [ { likes_count => 3, replies_count => 1 } ], 'exact counters over REST (anonymous read of a public post)');

# Keyset pagination of the home timeline (merged at read time before any drain).
($s, $b) = call('GET', '/rpc/home_timeline?page_size=4', as => 'bob');
is($s, '200', 'home timeline: 200');
is(ids($b), "$areply,$reply,$fo,$posts[4]", 'home page 1: newest first');
my $last = $b->[-1]{id};
($s, $b) = call('GET', "/rpc/home_timeline?page_size=4&before=$last", as => 'bob');
is(ids($b), join(',', reverse @posts[0 .. 3]), 'home page 2 continues after the cursor');
($s, $b) = call('GET', '/rpc/home_timeline?page_size=1000', as => 'bob');
is($s, '400', 'page size over 100: 400');
($s, $b) = call('GET', '/rpc/hashtag_feed?tag=PG&page_size=2');
is(ids($b), "$posts[4],$posts[3]", 'hashtag feed, anonymous, case-insensitive, paged');
($s, $b) = call('GET', "/rpc/thread?post_id=$reply", as => 'bob');
is(ids($b), "$posts[0],$reply,$areply", 'thread view from the reply');

# Blocks: no REST path shows alice's posts to carol.
my @paths = (
	'/social_posts?select=id,author_id',
	'/social_posts?select=id,author:social_profiles(handle)',
	'/social_profiles?handle=eq.alice&select=handle,social_posts(id)',
	'/social_posts?id=eq.' . $reply . '&select=id,replies(id)',
	'/social_posts?id=eq.' . $reply . '&select=id,reply_to_id,root_id,reply_to(id),root(id)',
	'/rpc/author_feed?handle=bob',
	'/rpc/home_timeline?page_size=100',
	'/rpc/author_feed?handle=alice',
	'/rpc/hashtag_feed?tag=pg',
	'/rpc/search_posts?q=post',
	"/rpc/thread?post_id=$reply");
my $alice_id = $node->safe_psql('bitvelocity', "SELECT id FROM social.profiles WHERE handle = 'alice'");
my %alice_posts = map { $_ => 1 } (@posts, $fo, $areply);
for my $p (@paths)
{
	($s, $b) = call('GET', $p, as => 'carol');
	my $json = encode_json($b);
	ok($s eq '200' && (grep { $json =~ /"(?:id|reply_to_id|root_id|quote_of_id|repost_of_id)":$_\b/ } keys %alice_posts), "before the block, carol reaches alice's posts through $p") or diag("$s $json");
}
call('POST', '/rpc/block', as => 'alice', body => '{"handle":"carol"}');
for my $p (@paths)
{
	($s, $b) = call('GET', $p, as => 'carol');
	my $json = encode_json($b);
	# 0.3.0: references to alice's posts leak nothing either
	my @leak = grep { $json =~ /"(?:id|reply_to_id|root_id|quote_of_id|repost_of_id)":$_\b/ } keys %alice_posts;
	ok($s eq '200' && !@leak, "blocked: nothing of alice's through $p") or diag("$s $json");
}
($s, $b) = call('GET', "/rpc/thread?post_id=$posts[0]", as => 'carol');
is($s, '404', "blocked: thread of alice's post is 404");
($s, $b) = call('POST', '/rpc/follow', as => 'carol', body => '{"handle":"alice"}');
is($s, '403', 'blocked: follow refused with 403');
($s, $b) = call('GET', '/social_posts?select=id', as => 'bob');
ok((grep { $_->{id} == $fo } @$b), 'a follower still sees the followers-only post');
($s, $b) = call('GET', '/social_posts?select=id');
ok(!(grep { $_->{id} == $fo } @$b), 'anonymous does not');

# Domain events on Kafka: rebuild follower counts from the messages alone.
call('POST', '/rpc/unfollow', as => 'dave', body => '{"handle":"alice"}');
call('POST', '/rpc/follow', as => 'alice', body => '{"handle":"bob"}');
my $n_events = $node->safe_psql('bitvelocity', 'SELECT count(*) FROM social.outbox');
my @msgs = BvKafka::consume($mock, 'bv.social.events', $n_events);
is(scalar(@msgs), $n_events, 'every outbox event reached Kafka');
my (%followers, %types, $bad);
for my $m (@msgs)
{
	my $row = $m->{env}{after};
	my $payload = ref $row->{payload} ? $row->{payload} : decode_json($row->{payload});
	$types{ $row->{type} }++;
	$bad++ unless $row->{version} == 1 && $row->{event_id} =~ /^[0-9a-f-]{36}$/;
	$followers{ $payload->{followee_id} }++ if $row->{type} eq 'follow.created';
	$followers{ $payload->{followee_id} }-- if $row->{type} eq 'follow.deleted';
}
ok(!$bad, 'every event has version 1 and an event id');
ok($types{$_}, "event type $_ on Kafka")
  for qw(profile.created post.created follow.created follow.deleted like.created block.created);
my $db_counts = $node->safe_psql('bitvelocity',
	"SELECT string_agg(id || '=' || followers_count, ' ' ORDER BY id) FROM social.profiles");
my $rebuilt = join ' ', map { "$_=" . ($followers{$_} // 0) }
  split / /, $node->safe_psql('bitvelocity', "SELECT string_agg(id::text, ' ' ORDER BY id) FROM social.profiles");
is($rebuilt, $db_counts, 'follower counts rebuilt from the Kafka events equal the database');

BvKafka::stop_mock($mock);
$pgrst->kill_kill;
$node->stop;
done_testing();
