# bv_social against a model: a seeded randomized workload (posts, replies,
# reposts, deletes, follows and unfollows, locked accounts and approvals,
# blocks, mutes, visibility changes, partial fan-out drains, timelines
# dropped for inactivity and rebuilt) by 30 users, with a fan-out threshold
# of 8 so that authors on both sides of it (and authors that cross it) post.
# Then every user's home timeline, read in two keyset pages, must equal the
# timeline recomputed by a plain query from the base tables (same posts,
# same order): once with work still queued, once after the queue drained.
# Counters must equal counts of the base tables, and follower counts
# rebuilt from the outbox's events alone must equal them too.
# BV_SOCIAL_SEED=<n> replays a run; the seed is printed on failure.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $seed = $ENV{BV_SOCIAL_SEED} // int(rand(1_000_000_000));
my $ops = $ENV{BV_SOCIAL_OPS} // 3000;
srand($seed);
note("seed $seed ($ops operations)");

my $node = BvTest::new_node('social_model');
BvTest::create_suite_db($node);
# The model run drains by itself: take pg_cron's jobs out of the way.
$node->safe_psql('bitvelocity', q{
SELECT cron.unschedule(jobname) FROM cron.job WHERE jobname LIKE 'social-%';
UPDATE social.settings SET value = 8 WHERE name = 'fanout_threshold';
CREATE SCHEMA t;
CREATE TABLE t.refusals (code text PRIMARY KEY, n bigint NOT NULL DEFAULT 0);
-- The k-th pick among the rows of a query, stable for a given k.
CREATE FUNCTION t.act(p_user int) RETURNS void LANGUAGE sql AS $$
    SELECT NULL::void FROM set_config('request.jwt.claims', json_build_object('sub', 'u' || p_user)::text, false) $$;
CREATE FUNCTION t.pick_post(p_k bigint, p_author text DEFAULT NULL) RETURNS bigint LANGUAGE sql AS $$
    SELECT p.id FROM social.posts p JOIN social.profiles a ON a.id = p.author_id
     WHERE p_author IS NULL OR a.handle = p_author
     ORDER BY md5(p.id::text || p_k::text) LIMIT 1 $$;
-- One operation of the workload; an expected refusal is counted, not raised.
CREATE FUNCTION t.op(p_user int, p_kind text, p_k bigint, p_other int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    me text := 'u' || p_user;
    other text := 'u' || p_other;
    vis text := (ARRAY['public', 'public', 'public', 'followers', 'followers', 'mentioned'])[1 + p_k % 6];
BEGIN
    PERFORM t.act(p_user);
    CASE p_kind
    WHEN 'post' THEN
        PERFORM social.create_post(format('post %s by %s @%s #t%s', p_k, me, other, p_k % 5), vis);
    WHEN 'reply' THEN
        PERFORM social.create_post(format('reply %s @%s', p_k, other), vis, t.pick_post(p_k));
    WHEN 'quote' THEN
        PERFORM social.create_post(format('quote %s', p_k), vis, NULL, t.pick_post(p_k));
    WHEN 'repost' THEN
        PERFORM social.repost(t.pick_post(p_k));
    WHEN 'delete' THEN
        PERFORM social.delete_post(t.pick_post(p_k, me));
    WHEN 'visibility' THEN
        PERFORM social.set_visibility(t.pick_post(p_k, me), vis);
    WHEN 'follow' THEN
        PERFORM social.follow(other);
    WHEN 'unfollow' THEN
        PERFORM social.unfollow(other);
    WHEN 'approve' THEN
        PERFORM social.answer_follow(other, p_k % 4 <> 0);
    WHEN 'block' THEN
        PERFORM social.block(other, p_k % 3 <> 0);
    WHEN 'mute' THEN
        PERFORM social.mute(other, p_k % 2 = 0);
    WHEN 'lock' THEN
        PERFORM social.update_profile(p_locked => p_k % 2 = 0);
    WHEN 'like' THEN
        PERFORM social.like_post(t.pick_post(p_k));
    WHEN 'unlike' THEN
        PERFORM social.unlike_post(t.pick_post(p_k));
    WHEN 'drain' THEN
        PERFORM social.fanout_drain(1 + (p_k % 7)::int);
    WHEN 'sleep' THEN   -- the user goes away: the timeline is dropped
        UPDATE social.profiles SET last_seen_at = now() - interval '400 days' WHERE handle = me;
        PERFORM social.drop_inactive_timelines();
    END CASE;
EXCEPTION WHEN SQLSTATE 'PT403' OR SQLSTATE 'PT404' OR SQLSTATE 'PT409' OR SQLSTATE '22023' THEN
    INSERT INTO t.refusals AS r VALUES (SQLSTATE, 1) ON CONFLICT (code) DO UPDATE SET n = r.n + 1;
END $$;
-- The home timeline recomputed from the base tables by a plain query,
-- written independently of social.can_see and social.home.
CREATE FUNCTION t.expected_home(v bigint, n int) RETURNS bigint[] LANGUAGE sql AS $$
    SELECT coalesce(array_agg(id ORDER BY id DESC), '{}') FROM (
    SELECT p.id FROM social.posts p
      LEFT JOIN social.posts o ON o.id = p.repost_of_id
     WHERE p.deleted_at IS NULL
       AND (p.author_id = v OR p.author_id IN (SELECT followee_id FROM social.follows WHERE follower_id = v AND state = 'accepted'))
       AND p.author_id NOT IN (SELECT muted_id FROM social.mutes WHERE muter_id = v)
       AND (o.id IS NULL OR o.author_id NOT IN (SELECT muted_id FROM social.mutes WHERE muter_id = v))
       AND (p.author_id = v OR (
              p.author_id NOT IN (SELECT blocked_id FROM social.blocks WHERE blocker_id = v)
          AND p.author_id NOT IN (SELECT blocker_id FROM social.blocks WHERE blocked_id = v)
          AND (p.visibility = 'public'
               OR (p.visibility = 'followers' AND p.author_id IN (SELECT followee_id FROM social.follows WHERE follower_id = v AND state = 'accepted'))
               OR v IN (SELECT profile_id FROM social.mentions WHERE post_id = p.id))))
       AND (o.id IS NULL OR (o.deleted_at IS NULL AND (o.author_id = v OR (
              o.author_id NOT IN (SELECT blocked_id FROM social.blocks WHERE blocker_id = v)
          AND o.author_id NOT IN (SELECT blocker_id FROM social.blocks WHERE blocked_id = v)
          AND (o.visibility = 'public'
               OR (o.visibility = 'followers' AND o.author_id IN (SELECT followee_id FROM social.follows WHERE follower_id = v AND state = 'accepted'))
               OR v IN (SELECT profile_id FROM social.mentions WHERE post_id = o.id))))))
     ORDER BY p.id DESC LIMIT n) x $$;
-- May viewer v (NULL: anonymous) see post x?  The rule of expected_home,
-- written again for one post (reposts: with their original).
CREATE FUNCTION t.sees(v bigint, x bigint) RETURNS boolean LANGUAGE sql AS $$
    SELECT coalesce(bool_and(q.deleted_at IS NULL AND (q.author_id IS NOT DISTINCT FROM v OR (
              (v IS NOT NULL OR q.visibility = 'public')
          AND q.author_id NOT IN (SELECT blocked_id FROM social.blocks WHERE blocker_id = v)
          AND q.author_id NOT IN (SELECT blocker_id FROM social.blocks WHERE blocked_id = v)
          AND (q.visibility = 'public'
               OR (q.visibility = 'followers' AND q.author_id IN (SELECT followee_id FROM social.follows WHERE follower_id = v AND state = 'accepted'))
               OR v IN (SELECT profile_id FROM social.mentions WHERE post_id = q.id))))), false)
      FROM social.posts p JOIN social.posts q ON q.id = p.id OR q.id = p.repost_of_id
     WHERE p.id = x $$;
-- Feed items whose references disagree with the model: a reference must be
-- shown exactly when the referenced post is visible to the viewer.
CREATE FUNCTION t.ref_mismatches() RETURNS TABLE (viewer bigint, post bigint, col text, shown bigint, raw bigint) LANGUAGE sql AS $$
    WITH viewers AS (SELECT id FROM social.profiles UNION ALL SELECT NULL),
    items AS (
        SELECT v.id AS viewer, i.* FROM viewers v, social.profiles a,
               LATERAL social.author_feed(v.id, a.id, NULL, 100) i
        UNION ALL
        SELECT v.id, i.* FROM social.profiles v, LATERAL social.home(v.id, NULL, 100) i)
    SELECT i.viewer, i.id, c.col, c.shown, c.raw
      FROM items i JOIN social.posts p ON p.id = i.id,
           LATERAL (VALUES ('reply_to_id', i.reply_to_id, p.reply_to_id), ('root_id', i.root_id, p.root_id),
                           ('quote_of_id', i.quote_of_id, p.quote_of_id), ('repost_of_id', i.repost_of_id, p.repost_of_id)) c(col, shown, raw)
     WHERE c.shown IS DISTINCT FROM CASE WHEN c.raw IS NOT NULL AND t.sees(i.viewer, c.raw) THEN c.raw END $$;
-- What social.home serves, in two keyset pages.
CREATE FUNCTION t.served_home(v bigint, n int) RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    first bigint[] := ARRAY(SELECT id FROM social.home(v, NULL, n / 2));
    rest bigint[] := CASE WHEN cardinality(first) = n / 2
                          THEN ARRAY(SELECT id FROM social.home(v, first[cardinality(first)], n - n / 2)) ELSE '{}' END;
BEGIN
    RETURN first || rest;
END $$;
CREATE FUNCTION t.mismatches(n int) RETURNS TABLE (handle text, served bigint[], expected bigint[]) LANGUAGE sql AS $$
    SELECT pr.handle, t.served_home(pr.id, n), t.expected_home(pr.id, n)
      FROM social.profiles pr
     WHERE t.served_home(pr.id, n) IS DISTINCT FROM t.expected_home(pr.id, n)
     ORDER BY pr.id $$;
});

# 30 users; some start locked.
my $users = 30;
my $setup = '';
for my $u (1 .. $users)
{
	my $locked = ($u % 7 == 0) ? 'true' : 'false';
	$setup .= "SELECT t.act($u), social.create_profile('u$u', 'User $u', $locked);\n";
}
$node->safe_psql('bitvelocity', $setup);

# The workload: a popular few get most follows (so they cross the threshold).
my @kinds = (
	[ post => 22 ], [ reply => 6 ], [ quote => 3 ], [ repost => 5 ], [ delete => 5 ],
	[ visibility => 4 ], [ follow => 22 ], [ unfollow => 6 ], [ approve => 5 ],
	[ block => 4 ], [ mute => 3 ], [ lock => 1 ], [ like => 6 ], [ unlike => 2 ],
	[ drain => 3 ], [ sleep => 1 ]);
my $total = 0;
$total += $_->[1] for @kinds;
sub pick_kind
{
	my $r = rand($total);
	for my $k (@kinds) { return $k->[0] if ($r -= $k->[1]) < 0; }
	return 'post';
}
sub pick_user
{
	# power law-ish: user 1..3 are chosen as "other" far more often
	return 1 + int($users * (rand()**3));
}

my $script = '';
my %count;
for my $i (1 .. $ops)
{
	my $kind = pick_kind();
	$count{$kind}++;
	my $user = 1 + int(rand($users));
	my $other = pick_user();
	my $k = int(rand(1_000_000));
	$script .= "SELECT t.op($user, '$kind', $k, $other);\n";
}
note(join ', ', map { "$_ $count{$_}" } sort keys %count);
my ($ret, $out, $err) = $node->psql('bitvelocity', $script, on_error_stop => 1);
note($node->safe_psql('bitvelocity', q{
SELECT format('followers per author: %s; pending post jobs %s, backfills %s',
              (SELECT string_agg(followers_count::text, ' ' ORDER BY id) FROM social.profiles),
              (SELECT count(*) FROM social.fanout_queue WHERE kind = 'p'),
              (SELECT count(*) FROM social.fanout_queue WHERE kind = 'b'))}));
is($ret, 0, 'the workload ran') or diag("seed $seed: $err");

# Two users go away at the end: their timelines are dropped (read by merging).
$node->safe_psql('bitvelocity', "SELECT t.op(29, 'sleep', 0, 1); SELECT t.op(30, 'sleep', 0, 1);");
cmp_ok($node->safe_psql('bitvelocity', 'SELECT count(*) FROM social.profiles WHERE NOT timeline_active'), '>=', 2,
	'timelines were dropped for inactivity');
cmp_ok($node->safe_psql('bitvelocity', 'SELECT count(*) FROM social.fanout_queue'), '>', 0,
	'fan-out work is still queued at the first comparison');
cmp_ok($node->safe_psql('bitvelocity', 'SELECT avg(cardinality(t.expected_home(id, 40))) FROM social.profiles'), '>', 10,
	'home timelines are not trivially short');
cmp_ok($node->safe_psql('bitvelocity', "SELECT count(DISTINCT delivery) FROM social.posts"), '==', 2,
	'posts were both pushed and merged at read time');
note($node->safe_psql('bitvelocity', "SELECT string_agg(code || ' ' || n, ', ') FROM t.refusals"));

my $mism = $node->safe_psql('bitvelocity', 'SELECT * FROM t.mismatches(40)');
is($mism, '', 'every home timeline equals the plain query (work still queued)')
  or diag("seed $seed\n$mism");

$node->safe_psql('bitvelocity', 'SELECT social.fanout_run(60)');
is($node->safe_psql('bitvelocity', 'SELECT count(*) FROM social.fanout_queue'), '0', 'the queue drained');
$mism = $node->safe_psql('bitvelocity', 'SELECT * FROM t.mismatches(40)');
is($mism, '', 'every home timeline equals the plain query (queue drained)')
  or diag("seed $seed\n$mism");

# The timeline's key is not unique (0.3.0): a post job and a backfill may
# both deliver a post.  Duplicated rows change no home timeline.
$node->safe_psql('bitvelocity', 'INSERT INTO social.timelines SELECT * FROM social.timelines WHERE post_id % 3 = 0');
$mism = $node->safe_psql('bitvelocity', 'SELECT * FROM t.mismatches(40)');
is($mism, '', 'every home timeline equals the plain query (with duplicated timeline rows)')
  or diag("seed $seed\n$mism");

# Dropped timelines are rebuilt on return, and still agree.
my $dropped = $node->safe_psql('bitvelocity',
	"SELECT string_agg(substr(handle, 2), ' ') FROM social.profiles WHERE NOT timeline_active");
note("dropped timelines: " . ($dropped || 'none'));
$node->safe_psql('bitvelocity', join '', map { "SELECT t.act($_), social.update_profile(p_bio => 'back');\n" } split / /, $dropped)
  if $dropped;
is($node->safe_psql('bitvelocity', 'SELECT count(*) FROM social.profiles WHERE NOT timeline_active'), '0',
	'returning users have their timelines rebuilt');
$mism = $node->safe_psql('bitvelocity', 'SELECT * FROM t.mismatches(40)');
is($mism, '', 'every home timeline equals the plain query (after rebuilds)')
  or diag("seed $seed\n$mism");

# The two writings of the visibility rule agree on every (viewer, post)
# pair: social.can_see (row-level security, most feeds) and the inlined
# social.visible_items (home), anonymous viewers included.
is($node->safe_psql('bitvelocity', q{
SELECT count(*) FROM (SELECT id FROM social.profiles UNION ALL SELECT NULL) v CROSS JOIN social.posts p
 WHERE social.can_see(v.id, p.author_id, p.visibility, p.id, p.deleted_at, p.repost_of_id)
       <> EXISTS (SELECT 1 FROM social.visible_items(v.id, ARRAY[p.id]))}),
	'0', 'social.can_see and social.visible_items agree on every viewer and post');

# References to other posts (reply_to_id, root_id, quote_of_id, repost_of_id)
# in every author feed and home timeline, for every viewer and anonymous:
# shown exactly when the model says the viewer may see the referenced post.
cmp_ok($node->safe_psql('bitvelocity', q{
SELECT count(*) FROM social.posts p WHERE (p.reply_to_id IS NOT NULL OR p.quote_of_id IS NOT NULL)
   AND EXISTS (SELECT 1 FROM social.profiles v WHERE NOT t.sees(v.id, coalesce(p.quote_of_id, p.reply_to_id)) AND t.sees(v.id, p.id))}),
	'>', 0, 'some visible posts reference posts their viewer may not see (the check below is not vacuous)');
my $refs = $node->safe_psql('bitvelocity', 'SELECT * FROM t.ref_mismatches() LIMIT 20');
is($refs, '', 'every reference in every feed is shown exactly when the viewer may see the referenced post')
  or diag("seed $seed\n$refs");

# Counters equal the counts of the base tables (replies: live public ones).
is($node->safe_psql('bitvelocity', q{
SELECT count(*) FROM social.profiles pr
 WHERE followers_count <> (SELECT count(*) FROM social.follows f WHERE f.followee_id = pr.id AND f.state = 'accepted')
    OR following_count <> (SELECT count(*) FROM social.follows f WHERE f.follower_id = pr.id AND f.state = 'accepted')
    OR posts_count <> (SELECT count(*) FROM social.posts p WHERE p.author_id = pr.id AND p.deleted_at IS NULL)}),
	'0', 'profile counters are exact');
is($node->safe_psql('bitvelocity', q{
SELECT count(*) FROM social.posts p
 WHERE likes_count <> (SELECT count(*) FROM social.likes l WHERE l.post_id = p.id)
    OR replies_count <> (SELECT count(*) FROM social.posts r WHERE r.reply_to_id = p.id AND r.deleted_at IS NULL AND r.visibility = 'public')
    OR reposts_count <> (SELECT count(*) FROM social.posts r WHERE r.repost_of_id = p.id AND r.deleted_at IS NULL)}),
	'0', 'post counters are exact');

# A consumer that has only the events rebuilds the follower counts.
is($node->safe_psql('bitvelocity', q{
WITH ev AS (
    SELECT (payload->>'followee_id')::bigint AS followee,
           CASE type WHEN 'follow.created' THEN 1 ELSE -1 END AS d
      FROM social.outbox WHERE type IN ('follow.created', 'follow.deleted')),
rebuilt AS (SELECT followee, sum(d) AS n FROM ev GROUP BY followee)
SELECT count(*) FROM social.profiles pr LEFT JOIN rebuilt r ON r.followee = pr.id
 WHERE pr.followers_count <> coalesce(r.n, 0)}),
	'0', 'follower counts rebuilt from the events alone equal the counters');
cmp_ok($node->safe_psql('bitvelocity', "SELECT count(*) FROM social.outbox WHERE type = 'follow.deleted' AND payload->>'reason' = 'block'"),
	'>', 0, 'blocks ended follows, with follow.deleted events');

done_testing();
