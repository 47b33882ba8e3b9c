-- bv_social: every visibility rule, by every read path (home, author feed,
-- hashtag feed, thread, search, the tables under row-level security, the
-- REST views, mentions and likes), acting as PostgREST requests do (role +
-- JWT claims).  A blocked user, on either side of the block, never sees a
-- post of the other.
BEGIN;
SELECT plan(72);

CREATE FUNCTION pg_temp.act(p_role text, p_sub text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RESET ROLE;
    PERFORM set_config('request.jwt.claims',
                       CASE WHEN p_sub IS NULL THEN json_build_object('role', p_role)
                            ELSE json_build_object('role', p_role, 'sub', p_sub) END::text, true);
    EXECUTE format('SET LOCAL ROLE %I', p_role);
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.act(text, text) TO PUBLIC;
-- Post ids by label, kept across role switches.
CREATE TABLE pg_temp.ids (label text PRIMARY KEY, id bigint);
GRANT ALL ON pg_temp.ids TO PUBLIC;
CREATE FUNCTION pg_temp.id(text) RETURNS bigint LANGUAGE sql AS $$ SELECT id FROM pg_temp.ids WHERE label = $1 $$;
GRANT EXECUTE ON FUNCTION pg_temp.id(text) TO PUBLIC;
CREATE FUNCTION pg_temp.keep(p_label text, p jsonb) RETURNS bigint LANGUAGE sql AS $$
    INSERT INTO pg_temp.ids VALUES (p_label, (p->>'id')::bigint) RETURNING id $$;
GRANT EXECUTE ON FUNCTION pg_temp.keep(text, jsonb) TO PUBLIC;
-- Every id of alice's posts (and reposts of them) that viewer p_sub can
-- reach by any path; must be empty for the blocked sides.
CREATE FUNCTION pg_temp.alice_paths(p_sub text) RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    me bigint;
    alice bigint := (SELECT id FROM social.profiles WHERE handle = 'alice');
    r bigint[] := '{}';
BEGIN
    PERFORM pg_temp.act('bv_user', p_sub);
    me := social.me();
    r := r || ARRAY(SELECT id FROM api.home_timeline(NULL, 100) WHERE author_id = alice OR repost_of_id IN (SELECT id FROM pg_temp.ids));
    r := r || ARRAY(SELECT id FROM api.author_feed('alice', NULL, 100));
    r := r || ARRAY(SELECT id FROM api.hashtag_feed('tagx', NULL, 100) WHERE author_id = alice);
    r := r || ARRAY(SELECT id FROM api.search_posts('hello OR followers OR secret', NULL, 100) WHERE author_id = alice);
    r := r || ARRAY(SELECT id FROM api.thread(pg_temp.id('bob_reply'), NULL, 100) WHERE author_id = alice);
    r := r || ARRAY(SELECT id FROM social.posts WHERE author_id = alice);
    r := r || ARRAY(SELECT id FROM api.social_posts WHERE author_id = alice OR repost_of_id IN (SELECT id FROM pg_temp.ids WHERE label LIKE 'a_%'));
    r := r || ARRAY(SELECT post_id FROM social.mentions WHERE post_id IN (SELECT id FROM pg_temp.ids WHERE label LIKE 'a_%'));
    r := r || ARRAY(SELECT post_id FROM social.post_tags WHERE post_id IN (SELECT id FROM pg_temp.ids WHERE label LIKE 'a_%'));
    r := r || ARRAY(SELECT post_id FROM social.likes WHERE post_id IN (SELECT id FROM pg_temp.ids WHERE label LIKE 'a_%'));
    r := r || ARRAY(SELECT quote_of_id FROM api.author_feed('bob', NULL, 100) WHERE quote_of_id IS NOT NULL);
    RESET ROLE;
    RETURN r;
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.alice_paths(text) TO PUBLIC;
CREATE FUNCTION pg_temp.sees(p_sub text, p_label text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v boolean;
BEGIN
    IF p_sub IS NULL THEN
        PERFORM pg_temp.act('bv_anon', NULL);
    ELSE
        PERFORM pg_temp.act('bv_user', p_sub);
    END IF;
    v := EXISTS (SELECT 1 FROM social.posts WHERE id = pg_temp.id(p_label))
         AND EXISTS (SELECT 1 FROM api.author_feed((SELECT handle FROM social.profiles pr JOIN social.posts p ON p.author_id = pr.id
                                                    WHERE p.id = pg_temp.id(p_label)), NULL, 100) WHERE id = pg_temp.id(p_label));
    RESET ROLE;
    RETURN v;
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.sees(text, text) TO PUBLIC;
CREATE FUNCTION pg_temp.home_ids(p_sub text) RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    r bigint[];
BEGIN
    PERFORM pg_temp.act('bv_user', p_sub);
    r := ARRAY(SELECT id FROM api.home_timeline(NULL, 100));
    RESET ROLE;
    RETURN r;
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.home_ids(text) TO PUBLIC;

-- ---- the cast ----
SELECT pg_temp.act('bv_user', u), api.create_profile(u)
  FROM unnest(ARRAY['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'gina']) u;
SELECT pg_temp.act('bv_user', 'gina'), api.update_profile(locked => true);
SELECT pg_temp.act('bv_user', u), api.follow('alice') FROM unnest(ARRAY['bob', 'carol', 'dave', 'frank']) u;
SELECT pg_temp.act('bv_user', 'alice'), api.follow('gina');     -- pending: gina is locked
SELECT pg_temp.act('bv_user', 'alice');
SELECT pg_temp.keep('a_public', api.create_post('hello world #tagx'));
SELECT pg_temp.keep('a_followers', api.create_post('followers only #tagx', 'followers'));
SELECT pg_temp.keep('a_mentioned', api.create_post('secret for @erin #tagx', 'mentioned'));
SELECT pg_temp.act('bv_user', 'bob');
SELECT pg_temp.keep('bob_reply', api.create_post('hello back', reply_to => pg_temp.id('a_public')));
SELECT pg_temp.keep('bob_repost', api.repost(pg_temp.id('a_public')));
SELECT pg_temp.keep('bob_quote', api.create_post('look at this', quote_of => pg_temp.id('a_public')));
SELECT api.like_post(pg_temp.id('a_public'));
SELECT pg_temp.act('bv_user', 'gina');
SELECT pg_temp.keep('g_followers', api.create_post('gina for followers', 'followers'));
SELECT pg_temp.act('bv_user', 'carol'), api.like_post(pg_temp.id('a_public'));
RESET ROLE;
SELECT * FROM social.fanout_drain(1000);

-- ---- before any block: the rules ----
SELECT ok(pg_temp.sees(NULL, 'a_public'), 'anonymous: sees a public post');
SELECT ok(NOT pg_temp.sees(NULL, 'a_followers'), 'anonymous: no followers-only post');
SELECT ok(NOT pg_temp.sees(NULL, 'a_mentioned'), 'anonymous: no mentioned-only post');
SELECT ok(pg_temp.sees('bob', 'a_followers'), 'follower: sees followers-only');
SELECT ok(NOT pg_temp.sees('bob', 'a_mentioned'), 'follower: not mentioned-only');
SELECT ok(pg_temp.sees('erin', 'a_mentioned'), 'mentioned: sees mentioned-only');
SELECT ok(NOT pg_temp.sees('erin', 'a_followers'), 'non-follower: no followers-only');
SELECT ok(pg_temp.sees('alice', 'a_mentioned'), 'author: sees own mentioned-only post');
SELECT ok(NOT pg_temp.sees('alice', 'g_followers'), 'a pending follow request grants nothing');
SELECT ok(pg_temp.sees('gina', 'g_followers'), 'the locked author sees own post');
SELECT ok(pg_temp.home_ids('bob') @> ARRAY[pg_temp.id('a_public'), pg_temp.id('a_followers'), pg_temp.id('bob_reply')],
          'follower home: public and followers-only posts, and own reply');
SELECT ok(NOT pg_temp.home_ids('bob') @> ARRAY[pg_temp.id('a_mentioned')], 'follower home: not mentioned-only');
SELECT ok(pg_temp.home_ids('carol') @> ARRAY[pg_temp.id('a_public')], 'carol sees alice before the block');
SELECT is(cardinality(pg_temp.alice_paths('carol')) > 0, true, 'carol reaches alice''s posts before the block (the probe works)');

-- ---- blocks, both directions ----
SELECT pg_temp.act('bv_user', 'alice'), api.block('carol');
SELECT pg_temp.act('bv_user', 'dave'), api.block('alice');
RESET ROLE;
SELECT is(pg_temp.alice_paths('carol'), '{}', 'blocked user: no post of the blocker by any path');
SELECT is(pg_temp.alice_paths('dave'), '{}', 'blocker: no post of the blocked author by any path');
SELECT ok(NOT pg_temp.sees('carol', 'a_public'), 'blocked: not even public posts');
SELECT ok(NOT pg_temp.sees('dave', 'a_public'), 'blocker: not even public posts');
SELECT ok(NOT pg_temp.sees('carol', 'bob_repost'), 'blocked: not through a third party''s repost');
SELECT pg_temp.act('bv_user', 'carol');
SELECT is((SELECT quote_of_id FROM api.author_feed('bob') WHERE id = pg_temp.id('bob_quote')), NULL,
          'blocked: a quote does not reference the blocker''s post');
SELECT throws_ok($$SELECT * FROM api.thread(pg_temp.id('a_public'))$$, 'PT404', NULL, 'blocked: thread of the blocker''s post is 404');
SELECT throws_ok($$SELECT api.like_post(pg_temp.id('a_public'))$$, 'PT404', NULL, 'blocked: cannot like');
SELECT throws_ok($$SELECT api.create_post('hi', reply_to => pg_temp.id('a_public'))$$, 'PT404', NULL, 'blocked: cannot reply');
SELECT throws_ok($$SELECT api.repost(pg_temp.id('a_public'))$$, 'PT404', NULL, 'blocked: cannot repost');
SELECT throws_ok($$SELECT api.follow('alice')$$, 'PT403', 'you cannot follow this account', 'blocked: cannot follow again');
SELECT ok(EXISTS (SELECT 1 FROM api.thread(pg_temp.id('bob_reply'))), 'blocked: a third party''s reply stays visible');
SELECT is((SELECT count(*)::int FROM social.blocks), 0, 'blocked: the block row is hidden from the blocked user');
RESET ROLE;
SELECT pg_temp.act('bv_user', 'alice');
SELECT is((SELECT count(*)::int FROM social.blocks), 1, 'blocker: sees own block only');
SELECT is((SELECT array_agg(id) FROM api.author_feed('dave')), NULL, 'blocked author cannot read the blocker''s feed');
SELECT throws_ok($$SELECT api.follow('dave')$$, 'PT403', NULL, 'blocked the other way: cannot follow');
RESET ROLE;
SELECT is((SELECT count(*)::int FROM social.follows WHERE follower_id IN (SELECT id FROM social.profiles WHERE handle IN ('carol', 'dave'))),
          0, 'a block ends the follows');
SELECT is((SELECT followers_count FROM social.profiles WHERE handle = 'alice'), 2::bigint, 'follower count follows the blocks');
SELECT is((SELECT likes_count FROM social.posts WHERE id = pg_temp.id('a_public')), 2::bigint, 'likes count (block keeps past likes)');
SELECT pg_temp.act('bv_user', 'alice');
SELECT ok(NOT EXISTS (SELECT 1 FROM social.likes WHERE profile_id = (SELECT id FROM social.profiles WHERE handle = 'carol')),
          'a blocked user''s like is hidden from the blocker');
RESET ROLE;

-- ---- unblock restores public visibility, not the follow ----
SELECT pg_temp.act('bv_user', 'alice'), api.block('carol', false);
RESET ROLE;
SELECT ok(pg_temp.sees('carol', 'a_public'), 'unblocked: public posts visible again');
SELECT ok(NOT pg_temp.sees('carol', 'a_followers'), 'unblocked: follow not restored');
SELECT ok(NOT pg_temp.home_ids('carol') @> ARRAY[pg_temp.id('a_public')], 'unblocked: not in home without following');

-- ---- mutes ----
SELECT pg_temp.act('bv_user', 'frank'), api.mute('alice');
RESET ROLE;
SELECT ok(NOT pg_temp.home_ids('frank') && ARRAY[pg_temp.id('a_public'), pg_temp.id('a_followers')], 'muted: gone from home');
SELECT pg_temp.act('bv_user', 'frank');
SELECT is((SELECT count(*)::int FROM api.hashtag_feed('tagx')), 0, 'muted: gone from the hashtag feed');
SELECT ok(EXISTS (SELECT 1 FROM api.author_feed('alice')), 'muted: the author feed still shows them');
SELECT pg_temp.act('bv_user', 'frank'), api.follow('bob');
SELECT pg_temp.act('bv_user', 'frank');
SELECT ok(NOT EXISTS (SELECT 1 FROM api.home_timeline() WHERE id = pg_temp.id('bob_repost')), 'muted: a repost of the muted author is gone too');
SELECT api.mute('alice', false);
SELECT ok(EXISTS (SELECT 1 FROM api.home_timeline() WHERE id = pg_temp.id('a_public')), 'unmuted: back in home');
RESET ROLE;

-- ---- unfollow, visibility change, delete: at once, in every feed ----
SELECT pg_temp.act('bv_user', 'bob'), api.unfollow('alice');
RESET ROLE;
SELECT ok(NOT pg_temp.home_ids('bob') && ARRAY[pg_temp.id('a_public'), pg_temp.id('a_followers')], 'unfollowed: gone from home at once');
SELECT ok(NOT pg_temp.sees('bob', 'a_followers'), 'unfollowed: followers-only hidden');
SELECT ok((SELECT count(*) FROM social.timelines t JOIN social.profiles p ON p.id = t.user_id WHERE p.handle = 'bob') > 0,
          '(the materialised rows are still there: the read filters them)');
SELECT pg_temp.act('bv_user', 'alice'), api.set_post_visibility(pg_temp.id('a_followers'), 'public');
RESET ROLE;
SELECT ok(pg_temp.sees('erin', 'a_followers'), 'made public: visible to all');
SELECT pg_temp.act('bv_user', 'alice'), api.set_post_visibility(pg_temp.id('a_public'), 'mentioned');
RESET ROLE;
SELECT ok(NOT pg_temp.sees('frank', 'a_public'), 'made mentioned-only: hidden from followers');
SELECT ok(NOT pg_temp.sees('frank', 'bob_repost'), 'a repost follows its original''s visibility');
SELECT pg_temp.act('bv_user', 'alice'), api.set_post_visibility(pg_temp.id('a_public'), 'public');
SELECT pg_temp.act('bv_user', 'alice'), api.delete_post(pg_temp.id('a_public'));
RESET ROLE;
SELECT ok(NOT pg_temp.sees('alice', 'a_public'), 'deleted: hidden even from the author');
SELECT ok(NOT pg_temp.sees('frank', 'bob_repost'), 'deleted: its reposts are hidden');
SELECT ok(NOT pg_temp.home_ids('frank') && ARRAY[pg_temp.id('a_public'), pg_temp.id('bob_repost')], 'deleted: gone from home');
SELECT pg_temp.act('bv_user', 'frank');
SELECT ok(NOT EXISTS (SELECT 1 FROM api.hashtag_feed('tagx') WHERE id = pg_temp.id('a_public')), 'deleted: gone from the hashtag feed');
SELECT ok(NOT EXISTS (SELECT 1 FROM api.search_posts('hello') WHERE id = pg_temp.id('a_public')), 'deleted: gone from search');
SELECT ok(NOT EXISTS (SELECT 1 FROM api.thread(pg_temp.id('bob_reply')) WHERE id = pg_temp.id('a_public')), 'deleted: gone from its thread');
SELECT ok(EXISTS (SELECT 1 FROM api.thread(pg_temp.id('bob_reply')) WHERE id = pg_temp.id('bob_reply')), 'the thread keeps the reply');
SELECT throws_ok($$SELECT api.like_post(pg_temp.id('a_public'))$$, 'PT404', NULL, 'deleted: cannot be liked');
RESET ROLE;
SELECT is((SELECT body FROM social.posts WHERE id = pg_temp.id('a_public')), '', 'deleted: the text is erased');
SELECT is((SELECT posts_count FROM social.profiles WHERE handle = 'alice'), 2::bigint, 'posts count follows deletes');
SELECT is((SELECT reposts_count FROM social.posts WHERE id = pg_temp.id('a_public')), 1::bigint, 'reposts count');
SELECT is((SELECT replies_count FROM social.posts WHERE id = pg_temp.id('a_public')), 1::bigint, 'replies count');

-- ---- locked accounts ----
SELECT pg_temp.act('bv_user', 'gina');
SELECT is((SELECT array_agg(handle) FROM api.follow_requests()), ARRAY['alice'], 'the locked account sees the request');
SELECT api.answer_follow_request('alice', true);
RESET ROLE;
SELECT ok(pg_temp.sees('alice', 'g_followers'), 'approved: followers-only visible');
SELECT ok(pg_temp.home_ids('alice') @> ARRAY[pg_temp.id('g_followers')], 'approved: in home at once (backfill merged at read time)');
SELECT * FROM social.fanout_drain(1000);
SELECT ok(pg_temp.home_ids('alice') @> ARRAY[pg_temp.id('g_followers')], 'approved: in home after the backfill drained');
SELECT ok((SELECT count(*) FROM social.timelines t WHERE t.post_id = pg_temp.id('g_followers')) = 1, 'the backfill materialised it');
SELECT pg_temp.act('bv_user', 'gina');
SELECT throws_ok($$SELECT api.answer_follow_request('alice', true)$$, 'PT404', NULL, 'answering twice: 404');
RESET ROLE;

-- ---- staff see everything; anonymous cannot write ----
SELECT pg_temp.act('bv_service', 'ops');
SELECT ok((SELECT count(*) FROM social.posts) >= 7, 'staff see every post');
SELECT pg_temp.act('bv_anon', NULL);
SELECT throws_ok($$SELECT api.create_post('x')$$, '42501', NULL, 'anonymous: no write function');
SELECT throws_ok($$SELECT social.home(1)$$, '42501', NULL, 'anonymous: no home of anyone');
SELECT pg_temp.act('bv_user', 'erin');
SELECT throws_ok($$SELECT count(*) FROM social.timelines$$, '42501', NULL, 'nobody reads timeline rows (a cache of candidates), not even their own (0.3.0)');
SELECT throws_ok($$SELECT * FROM social.home(1)$$, '42501', NULL, 'a user cannot read the home of another profile id');
SELECT throws_ok($$SELECT * FROM social.author_feed(1, 1)$$, '42501', NULL, 'nor any feed as another viewer');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
