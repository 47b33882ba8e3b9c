# Counters stay exact under concurrency: 8 pgbench clients follow, unfollow,
# block, unblock and like/unlike a hot post among 12 users, crossing each
# other (A follows B while B follows A, A blocks B while B follows A).  No
# client may fail (no deadlock, no raw unique violation), and afterwards
# every counter equals the count of its rows; the events replayed give the
# same follower counts.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('social_hammer');
BvTest::create_suite_db($node);

$node->safe_psql('bitvelocity', q{
SELECT cron.unschedule(jobname) FROM cron.job WHERE jobname LIKE 'social-%';
CREATE TABLE public.outcomes (code text);
CREATE FUNCTION public.hammer(p_client int, p_a int, p_b int, p_kind int) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('request.jwt.claims', json_build_object('sub', 'h' || p_a)::text, true);
    CASE p_kind % 6
    WHEN 0 THEN PERFORM social.follow('h' || p_b);
    WHEN 1 THEN PERFORM social.unfollow('h' || p_b);
    WHEN 2 THEN PERFORM social.block('h' || p_b, p_kind % 4 = 2);
    WHEN 3 THEN PERFORM social.like_post((SELECT min(id) FROM social.posts));
    WHEN 4 THEN PERFORM social.unlike_post((SELECT min(id) FROM social.posts));
    ELSE PERFORM social.follow('h' || p_b);
    END CASE;
    INSERT INTO public.outcomes VALUES ('ok');
EXCEPTION WHEN SQLSTATE 'PT403' OR SQLSTATE '22023' OR SQLSTATE 'PT404' THEN
    INSERT INTO public.outcomes VALUES (SQLSTATE);
END $$;
GRANT INSERT ON public.outcomes TO bv_user;
GRANT USAGE ON SCHEMA public TO bv_user;
GRANT EXECUTE ON FUNCTION public.hammer(int, int, int, int) TO bv_user;
});
$node->safe_psql('bitvelocity', join '', map {
	"SELECT set_config('request.jwt.claims', '{\"sub\": \"h$_\"}', false), social.create_profile('h$_');\n" } 1 .. 12);
$node->safe_psql('bitvelocity',
	"SELECT set_config('request.jwt.claims', '{\"sub\": \"h1\"}', false), social.create_post('the hot post')");

my $script = "$PostgreSQL::Test::Utils::tmp_check/hammer.sql";
PostgreSQL::Test::Utils::append_to_file($script, q{
\set a random(1, 12)
\set b random(1, 12)
\set kind random(0, 1000)
SET ROLE bv_user;
SELECT public.hammer(:client_id, :a, :b, :kind);
RESET ROLE;
});
$node->command_ok(
	[ 'pgbench', '-n', '-c', '8', '-j', '8', '-t', '300', '-f', $script,
	  '-h', $node->host, '-p', $node->port, 'bitvelocity' ],
	'8 clients x 300 graph operations: no deadlock, no error');
is($node->safe_psql('bitvelocity', 'SELECT count(*) FROM public.outcomes'), '2400', 'every operation answered');
cmp_ok($node->safe_psql('bitvelocity', "SELECT count(*) FROM public.outcomes WHERE code = 'ok'"), '>', 1000,
	'most operations succeeded');
is($node->safe_psql('bitvelocity', q{
SELECT count(*) FROM social.profiles pr
 WHERE followers_count <> (SELECT count(*) FROM social.follows f WHERE f.followee_id = pr.id AND f.state = 'accepted')
    OR following_count <> (SELECT count(*) FROM social.follows f WHERE f.follower_id = pr.id AND f.state = 'accepted')}),
	'0', 'follower and following counts are exact');
is($node->safe_psql('bitvelocity', q{
SELECT likes_count = (SELECT count(*) FROM social.likes l WHERE l.post_id = p.id) FROM social.posts p ORDER BY id LIMIT 1}),
	't', "the hot post's like count is exact");
is($node->safe_psql('bitvelocity', q{
SELECT count(*) FROM social.follows f JOIN social.blocks b
    ON (b.blocker_id = f.follower_id AND b.blocked_id = f.followee_id)
    OR (b.blocker_id = f.followee_id AND b.blocked_id = f.follower_id)}),
	'0', 'no follow survives a block, even a racing one');
is($node->safe_psql('bitvelocity', q{
WITH rebuilt AS (
    SELECT (payload->>'followee_id')::bigint AS followee,
           sum(CASE type WHEN 'follow.created' THEN 1 ELSE -1 END) AS n
      FROM social.outbox WHERE type IN ('follow.created', 'follow.deleted') GROUP BY 1)
SELECT count(*) FROM social.profiles pr LEFT JOIN rebuilt r ON r.followee = pr.id
 WHERE pr.followers_count <> coalesce(r.n, 0)}),
	'0', 'follower counts replayed from the outbox agree');

done_testing();
