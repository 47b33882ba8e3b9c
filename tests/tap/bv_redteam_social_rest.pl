# Second red-team pass over bv_social's REST surface (PostgREST): every way
# a signed-in user could reach a post they must not see -- a followers-only
# post of a locked account they only asked to follow, posts of an account
# that blocked them -- through the view (filters, embedding, CSV, counts),
# the feeds (author, hashtag, search, thread, home), and every write that
# takes a post id (like, repost, quote, reply, bookmark, delete, visibility).
# The answer must be the one a post that does not exist gets.  (No gap was
# found in this pass; this test keeps it so.)
use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('socred', extra_conf => "bv.request_rate = 1000\nbv.request_burst = 1000\n");
BvTest::create_suite_db($node);
sub sql { return $node->safe_psql('bitvelocity', $_[0]); }
my $secret = join '', map { ('a' .. 'z', 0 .. 9)[ rand 36 ] } 1 .. 48;
sql("INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('postgrest', 'HS256', '$secret')");
my ($pgrst, $url) = BvTest::start_postgrest($node, jwt_secret => $secret);
my $exp = time() + 600;
my %tok = map { $_ => BvTest::jwt_hs256($secret, qq({"role":"bv_user","sub":"$_","exp":$exp})) } qw(alice bob carol);

sub call
{
	my ($as, $method, $path, $body, @headers) = @_;
	my ($status, $resp) = BvTest::http($method, "$url$path", token => ($as ? $tok{$as} : undef),
		body => (defined $body ? encode_json($body) : undef), headers => \@headers);
	my $json = eval { decode_json($resp) };
	return ($status, $json // $resp, $resp);
}
sub rpc { my ($as, $fn, $body) = @_; return call($as, 'POST', "/rpc/$fn", $body); }

rpc('alice', 'create_profile', { handle => 'alice' });
rpc('bob', 'create_profile', { handle => 'bob', locked => JSON::PP::true });
rpc('carol', 'create_profile', { handle => 'carol' });
my (undef, $p) = rpc('bob', 'create_post', { body => 'zebra followers only #sekrit', visibility => 'followers' });
my $hidden = $p->{id};
(undef, $p) = rpc('bob', 'create_post', { body => 'yak public #sekrit' });
my $bob_public = $p->{id};
(undef, $p) = rpc('carol', 'create_post', { body => 'llama before the block #open' });
my $carol_old = $p->{id};
rpc('carol', 'block', { handle => 'alice' });
(undef, $p) = rpc('carol', 'create_post', { body => 'moose after the block #open' });
my $carol_new = $p->{id};
my ($s) = rpc('alice', 'follow', { handle => 'bob' });
is($s, '200', 'alice asks to follow locked bob (pending)');

my $missing = 999999;
my @invisible = ([ $hidden, 'bob\'s followers-only post (request pending)' ], [ $carol_new, 'a post of carol, who blocked alice' ],
	[ $carol_old, 'carol\'s post from before the block' ]);

# ---- reads ----
my ($st, $rows) = call('alice', 'GET', '/social_posts?select=id');
is_deeply([ sort { $a <=> $b } map { $_->{id} } @$rows ], [$bob_public], 'the view: only bob\'s public post');
for my $q ("/social_posts?id=eq.$hidden", "/social_posts?id=in.($hidden,$carol_new)", "/social_posts?body=like.*zebra*",
	"/social_posts?select=id,social_profiles(handle)&author_id=eq.2", "/social_profiles?select=handle,social_posts(id,body)")
{
	my (undef, undef, $raw) = call('alice', 'GET', $q);
	unlike($raw, qr/zebra|moose|llama/, "GET $q: no hidden body");
}
my (undef, undef, $csv) = call('alice', 'GET', '/social_posts', undef, 'Accept: text/csv');
unlike($csv, qr/zebra|moose|llama/, 'CSV output: no hidden body');
(undef, undef, $csv) = call('alice', 'GET', '/social_posts?select=id', undef, 'Prefer: count=exact', 'Range: 0-0');
unlike($csv, qr/zebra/, 'Prefer count / Range');
for my $f ('/rpc/hashtag_feed?tag=sekrit', '/rpc/hashtag_feed?tag=open', '/rpc/search_posts?q=zebra', '/rpc/search_posts?q=moose',
	'/rpc/author_feed?handle=carol', '/rpc/author_feed?handle=bob', '/rpc/home_timeline', '/rpc/trending_hashtags')
{
	my (undef, undef, $raw) = call('alice', 'GET', $f);
	unlike($raw, qr/zebra|moose|llama/, "GET $f: no hidden post");
}
for my $c (@invisible)
{
	my ($s1, $b1) = call('alice', 'GET', "/rpc/thread?post_id=$c->[0]");
	is($s1, '404', "thread of $c->[1]: 404");
}
(undef, $p) = call('alice', 'GET', "/rpc/thread?post_id=$missing");
my $missing_answer = $p->{hint};

# ---- writes that take a post id: the same answer as a missing post ----
for my $c (@invisible, [ $missing, 'a post that does not exist' ])
{
	my $id = $c->[0];
	for my $w ([ 'like_post', { post_id => $id } ], [ 'repost', { post_id => $id } ], [ 'bookmark_post', { post_id => $id } ],
		[ 'create_post', { body => 'q', quote_of => $id } ], [ 'create_post', { body => 'r', reply_to => $id } ],
		[ 'delete_post', { post_id => $id } ], [ 'set_post_visibility', { post_id => $id, visibility => 'public' } ])
	{
		my ($s1, $b1) = rpc('alice', @$w);
		is("$s1 " . ($b1->{hint} // ''), "404 $missing_answer", "$w->[0] on $c->[1]: 404 like a missing post");
	}
}
is(sql("SELECT likes_count || '/' || reposts_count || '/' || replies_count FROM social.posts WHERE id = $hidden"), '0/0/0',
	'no count moved on the hidden post');
is(sql("SELECT count(*) FROM social.posts WHERE author_id = (SELECT id FROM social.profiles WHERE handle = 'alice')"), 0,
	'alice wrote nothing');

# ---- follow approval and other users' data ----
($s) = rpc('alice', 'answer_follow_request', { handle => 'alice', approve => JSON::PP::true });
is($s, '404', 'alice cannot approve her own request');
is(sql(q{SELECT state FROM social.follows WHERE follower_id = 1 AND followee_id = 2}), 'pending', 'still pending');
(undef, $rows) = call('alice', 'GET', '/rpc/follow_requests');
is_deeply($rows, [], 'alice does not see bob\'s follow requests');
(undef, $rows) = call('bob', 'GET', '/rpc/follow_requests');
is(join(',', map { $_->{handle} } @$rows), 'alice', 'bob does');
($s) = rpc('alice', 'follow', { handle => 'carol' });
is($s, '403', 'following an account that blocked you: 403');
($s) = rpc(undef, 'create_post', { body => 'anon' });
is($s, '401', 'anonymous writes: 401');
for my $m ('PATCH', 'DELETE')
{
	($s) = call('alice', $m, "/social_posts?id=eq.$bob_public", $m eq 'PATCH' ? { body => 'x' } : undef);
	ok($s eq '401' || $s eq '403' || $s eq '405', "$m on the view: refused ($s)");
}
($s) = call('alice', 'POST', '/social_posts', { body => 'x', author_id => 2 });
ok($s eq '401' || $s eq '403' || $s eq '405', "POST on the view: refused ($s)");
is(sql("SELECT body FROM social.posts WHERE id = $bob_public"), 'yak public #sekrit', 'bob\'s post is untouched');

$pgrst->kill_kill;
$node->stop;
done_testing();
