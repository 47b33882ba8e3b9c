-- bv_social: the model, every domain function, its refusals (SQLSTATE and
-- hint, never a raw 23xxx) and hostile inputs; maintenance (trim, inactive
-- timelines, trending), settings, events and audit.
BEGIN;
SELECT plan(85);

CREATE FUNCTION pg_temp.act(p_sub text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RESET ROLE;
    PERFORM set_config('request.jwt.claims', json_build_object('role', 'bv_user', 'sub', p_sub)::text, true);
    SET LOCAL ROLE bv_user;
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.act(text) TO PUBLIC;
CREATE FUNCTION pg_temp.pid(p_handle text) RETURNS bigint LANGUAGE sql SECURITY DEFINER AS $$
    SELECT id FROM social.profiles WHERE handle = p_handle $$;
GRANT EXECUTE ON FUNCTION pg_temp.pid(text) TO PUBLIC;

-- ---- schema, privileges ----
SELECT has_schema('social');
SELECT has_table('social', 'timelines', 'timelines table');
SELECT is((SELECT count(*)::int FROM pg_inherits WHERE inhparent = 'social.timelines'::regclass), 8, 'timelines: 8 hash partitions');
SELECT ok(NOT has_table_privilege('bv_user', 'social.posts', 'INSERT'), 'users write through functions only');
SELECT ok(NOT has_table_privilege('bv_anon', 'social.outbox', 'SELECT'), 'the outbox is not readable by API roles');
SELECT ok(NOT has_function_privilege('bv_user', 'social.fanout_drain(integer,bigint)', 'EXECUTE'), 'users cannot drain the fan-out queue');
SELECT ok(NOT has_function_privilege('bv_anon', 'api.create_post(text,text,bigint,bigint,jsonb)', 'EXECUTE'), 'anonymous cannot post');
SELECT ok((SELECT count(*) FROM cron.job WHERE jobname IN ('social-fanout', 'social-maintenance')) = 2, 'pg_cron jobs scheduled');
SELECT ok(EXISTS (SELECT 1 FROM bv_audit.tracked WHERE relid = 'social.posts'::regclass), 'posts are audited');
SELECT is(ARRAY(SELECT p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.pronamespace IN ('social'::regnamespace, 'api'::regnamespace) AND p.prosecdef
                   AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false) ORDER BY 1),
          '{}', 'every SECURITY DEFINER function sets search_path = pg_catalog, pg_temp');
SELECT is(ARRAY(SELECT p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.pronamespace = 'social'::regnamespace AND obj_description(p.oid, 'pg_proc') IS NULL ORDER BY 1),
          '{}', 'every function is documented');
SELECT is((SELECT count(*)::int FROM pg_proc WHERE oid IN ('social.sees(bigint,bigint,social.visibility,bigint,timestamptz)'::regprocedure,
                  'social.can_see(bigint,bigint,social.visibility,bigint,timestamptz,bigint)'::regprocedure,
                  'social.visible_items(bigint,bigint[],boolean)'::regprocedure)
            AND proconfig IS NULL AND NOT prosecdef), 3, 'the visibility functions can be inlined (no SET, not SECURITY DEFINER)');
SELECT ok(NOT has_function_privilege('bv_anon', 'social.can_see(bigint,bigint,social.visibility,bigint,timestamptz,bigint)', 'EXECUTE')
          AND NOT has_function_privilege('bv_user', 'social.visible_items(bigint,bigint[],boolean)', 'EXECUTE'),
          'the internal visibility functions are not granted to API roles');

-- ---- profiles ----
SELECT pg_temp.act('u-alice');
SELECT is(api.create_profile('Alice')->>'handle', 'alice', 'handles are lower-cased');
SELECT throws_ok($$SELECT api.create_profile('alice2')$$, 'PT409', 'you already have a profile', 'one profile per user');
SELECT pg_temp.act('u-bob');
SELECT throws_ok($$SELECT api.create_profile('ALICE')$$, 'PT409', 'handle "alice" is taken', 'taken handle: 409, not 23505');
SELECT throws_ok($$SELECT api.create_profile(repeat('b', 31))$$, '22023', 'invalid handle', 'a 31-character handle');
SELECT throws_ok($$SELECT api.create_profile('bö')$$, '22023', 'invalid handle', 'a multibyte handle');
SELECT throws_ok($$SELECT api.create_profile('b ob')$$, '22023', 'invalid handle', 'a space in a handle');
SELECT throws_ok($$SELECT api.create_profile(NULL)$$, '22023', 'invalid handle', 'a NULL handle');
SELECT is(api.create_profile(repeat('b', 30))->>'handle', repeat('b', 30), 'a 30-character handle');
SELECT throws_ok($$SELECT api.update_profile(display_name => repeat('é', 101))$$, '22023', NULL, 'a 101-character name');
SELECT pg_temp.act('u-carol');
SELECT is(api.create_profile('carol', 'Carol', true)->>'locked', 'true', 'a locked profile');
SELECT pg_temp.act('u-nobody');
SELECT throws_ok($$SELECT api.create_post('x')$$, 'PT404', 'you have no social profile', 'posting without a profile');
RESET ROLE;
SELECT set_config('request.jwt.claims', '{"role": "bv_anon"}', true);
SET LOCAL ROLE bv_anon;
SELECT throws_ok($$SELECT social.create_profile('anon')$$, '42501', NULL, 'anonymous: no access to the domain function');
RESET ROLE;

-- ---- posts: limits and hostile inputs ----
SELECT pg_temp.act('u-alice');
SELECT is(char_length(api.create_post(repeat('é', 500))->>'body'), 500, '500 multibyte characters are a post');
SELECT throws_ok($$SELECT api.create_post(repeat('é', 501))$$, '22023', 'post too long', '501 characters are not');
SELECT throws_ok($$SELECT api.create_post('  ')$$, '22023', 'empty post', 'blank text without media');
SELECT throws_ok($$SELECT api.create_post(NULL)$$, '22023', 'empty post', 'NULL text');
SELECT is(api.create_post('', media => '[{"url": "https://x.example/a.png", "kind": "image", "alt": "a"}]')->'media'->0->>'kind', 'image', 'media without text');
SELECT throws_ok($$SELECT api.create_post('x', media => '[{"url": "https://a"},{"url": "https://a"},{"url": "https://a"},{"url": "https://a"},{"url": "https://a"}]')$$,
                 '22023', 'invalid media', 'five media');
SELECT throws_ok($$SELECT api.create_post('x', media => '[{"url": "file:///etc/passwd"}]')$$, '22023', 'invalid media reference', 'a file: URL');
SELECT throws_ok($$SELECT api.create_post('x', media => '[{"url": "https://a", "onload": "x"}]')$$, '22023', 'invalid media reference', 'an unknown media key');
SELECT throws_ok($$SELECT api.create_post('x', media => '{"url": "https://a"}')$$, '22023', 'invalid media', 'media not an array');
SELECT throws_ok($$SELECT api.create_post('x', 'Public')$$, '22023', 'invalid visibility "Public"', 'visibility is case-sensitive');
SELECT throws_ok($$SELECT api.create_post('#a #b #c #d #e #f #g #h #i #j #k')$$, '22023', 'too many hashtags', 'eleven hashtags');
SELECT api.create_post('#Ünïcode #ok #OK x#mid') AS tagged \gset
SELECT is((SELECT array_agg(tag ORDER BY tag) FROM social.post_tags WHERE post_id = (:'tagged'::jsonb->>'id')::bigint),
          ARRAY['ok', 'ünïcode'], 'hashtags: unicode, lower-cased, deduplicated, not inside words');
SELECT throws_ok($$SELECT api.create_post('x', reply_to => 999999)$$, 'PT404', 'post 999999 not found', 'reply to a missing post');
SELECT api.create_post('quoted', 'followers') AS fo \gset
SELECT throws_ok(format($$SELECT api.create_post('q', quote_of => %s)$$, :'fo'::jsonb->>'id'), '22023', 'only public posts can be quoted', 'quoting a followers-only post');
SELECT api.create_post('root #trend') AS root \gset
SELECT pg_temp.act('u-bob');
SELECT throws_ok(format($$SELECT api.delete_post(%s)$$, :'root'::jsonb->>'id'), 'PT403', NULL, 'deleting somebody else''s post: 403');
SELECT throws_ok(format($$SELECT api.set_post_visibility(%s, 'followers')$$, :'root'::jsonb->>'id'), 'PT403', NULL, 'changing somebody else''s post: 403');
SELECT api.repost((:'root'::jsonb->>'id')::bigint) AS rp \gset
SELECT is(api.repost((:'root'::jsonb->>'id')::bigint), :'rp'::jsonb, 'reposting twice returns the first repost');
SELECT is(api.repost((:'rp'::jsonb->>'id')::bigint)->>'id', :'rp'::jsonb->>'id', 'reposting a repost reposts the original');
SELECT throws_ok(format($$SELECT api.create_post('r', reply_to => %s)$$, :'rp'::jsonb->>'id'), '22023', 'cannot reply to a repost', 'reply to a repost');
SELECT throws_ok(format($$SELECT api.repost(%s)$$, :'fo'::jsonb->>'id'), 'PT404', NULL, 'reposting an invisible post: 404');
SELECT is(api.like_post((:'root'::jsonb->>'id')::bigint)->>'likes_count', '1', 'like');
SELECT is(api.like_post((:'root'::jsonb->>'id')::bigint)->>'likes_count', '1', 'liking twice counts once');
SELECT is(api.bookmark_post((:'root'::jsonb->>'id')::bigint)->>'bookmarked', 'true', 'bookmark');
SELECT is((SELECT count(*)::int FROM social.bookmarks), 1, 'bob sees his bookmark');
SELECT pg_temp.act('u-alice');
SELECT is((SELECT count(*)::int FROM social.bookmarks), 0, 'bookmarks are private');
SELECT is(api.delete_post((:'root'::jsonb->>'id')::bigint)->>'deleted', 'true', 'delete');
SELECT throws_ok(format($$SELECT api.delete_post(%s)$$, :'root'::jsonb->>'id'), 'PT404', NULL, 'deleting twice: 404');
RESET ROLE;
SELECT throws_ok(format($$UPDATE social.posts SET deleted_at = NULL WHERE id = %s$$, :'root'::jsonb->>'id'), 'PT409', 'a deleted post cannot be restored', 'no resurrection, even for staff');

-- ---- the graph ----
SELECT pg_temp.act('u-bob');
SELECT throws_ok($$SELECT api.follow(repeat('b', 30))$$, '22023', 'you cannot follow yourself', 'self-follow');
SELECT throws_ok($$SELECT api.block(repeat('b', 30))$$, '22023', 'you cannot block yourself', 'self-block');
SELECT throws_ok($$SELECT api.follow(E'alice\n')$$, 'PT404', NULL, 'a handle with a newline');
SELECT is(api.follow('carol')->>'state', 'pending', 'following a locked account: pending');
SELECT is(api.follow('carol')->>'state', 'pending', 'following twice: still one pending request');
SELECT is(api.follow('alice')->>'state', 'accepted', 'following an open account: accepted');
SELECT pg_temp.act('u-carol');
SELECT is((SELECT array_agg(handle) FROM api.follow_requests()), ARRAY[repeat('b', 30)], 'carol sees the request');
SELECT api.update_profile(locked => false);
RESET ROLE;
SELECT is((SELECT state::text FROM social.follows WHERE followee_id = pg_temp.pid('carol')), 'accepted', 'unlocking accepts pending requests');
SELECT is((SELECT followers_count FROM social.profiles WHERE handle = 'carol'), 1::bigint, 'and counts them');
SELECT is((SELECT array_agg(type ORDER BY id) FROM social.outbox WHERE payload->>'followee_id' = pg_temp.pid('carol')::text),
          ARRAY['follow.requested', 'follow.created'], 'events: requested, then created');

-- ---- feeds: pages and limits ----
SELECT pg_temp.act('u-bob');
SELECT throws_ok($$SELECT * FROM api.home_timeline(NULL, 0)$$, '22023', 'invalid page size', 'page size 0');
SELECT throws_ok($$SELECT * FROM api.home_timeline(NULL, 101)$$, '22023', 'invalid page size', 'page size 101');
SELECT throws_ok($$SELECT * FROM api.search_posts(repeat('q', 201))$$, '22023', 'invalid search query', 'a 201-character query');
SELECT lives_ok($$SELECT * FROM api.search_posts('"unbalanced OR -(')$$, 'web-search syntax never errors');
SELECT is(ARRAY(SELECT id FROM api.home_timeline(NULL, 100)), ARRAY(SELECT id FROM api.author_feed('alice', NULL, 100)),
          'home = alice''s visible posts (bob''s repost of a deleted post is hidden)');
SELECT is(ARRAY(SELECT id FROM api.author_feed('alice', NULL, 3)) || ARRAY(SELECT id FROM api.author_feed('alice', (SELECT min(id) FROM api.author_feed('alice', NULL, 3)), 100)),
          ARRAY(SELECT id FROM api.author_feed('alice', NULL, 100)), 'keyset pages add up to the whole feed');
SELECT throws_ok($$SELECT * FROM api.author_feed('nobody')$$, 'PT404', NULL, 'author feed of an unknown handle');
RESET ROLE;

-- ---- maintenance ----
SELECT * FROM social.fanout_drain(1000);
SELECT ok((SELECT count(*) FROM social.timelines WHERE user_id = pg_temp.pid(repeat('b', 30))) > 3, 'bob''s timeline materialised');
SET LOCAL social.timeline_cap = 2;
SELECT throws_ok($$SELECT social.trim_timelines(8)$$, '22023', 'invalid timeline partition 8', 'trim: partition 8 does not exist');
SELECT is(social.trim_timelines((SELECT i FROM generate_series(0, 7) i
                                  WHERE format('social.timelines_p%s', i)::regclass <> (SELECT tableoid::regclass FROM social.timelines WHERE user_id = pg_temp.pid(repeat('b', 30)) LIMIT 1)
                                  LIMIT 1)), 0::bigint, 'trimming another partition leaves bob''s timeline');
SELECT ok(social.trim_timelines() > 0, 'trim removes entries over the cap');
SELECT is((SELECT count(*)::int FROM social.timelines WHERE user_id = pg_temp.pid(repeat('b', 30))), 2, 'the cap holds');
RESET social.timeline_cap;
SELECT is((SELECT count(*)::int FROM social.home(pg_temp.pid(repeat('b', 30)), NULL, 100)), 2,
          'the cap bounds how far back a home timeline goes (as Mastodon''s)');
UPDATE social.profiles SET last_seen_at = now() - interval '31 days' WHERE handle = repeat('b', 30);
SELECT ok(social.drop_inactive_timelines() > 0, 'an inactive user''s timeline is dropped');
SELECT is((SELECT timeline_active FROM social.profiles WHERE handle = repeat('b', 30)), false, 'marked inactive');
SELECT pg_temp.act('u-bob');
SELECT api.like_post((SELECT max(id) FROM api.author_feed('alice')));
RESET ROLE;
SELECT is((SELECT timeline_active FROM social.profiles WHERE handle = repeat('b', 30)), true, 'any action on return rebuilds it');
SELECT ok((SELECT count(*) FROM social.timelines WHERE user_id = pg_temp.pid(repeat('b', 30))) > 2, 'rebuilt from the base tables');
SELECT ok(social.refresh_trending() >= 1, 'trending computed');
SELECT is((SELECT array_agg(tag ORDER BY rank) FROM social.trending(0, 2)), ARRAY['ok', 'ünïcode'], 'trending: public live posts only, ranked');
SET LOCAL social.fanout_threshold = 'lots';
SELECT throws_ok($$SELECT social.setting('fanout_threshold')$$, '22023', 'invalid value for setting social.fanout_threshold', 'a bad GUC override');
RESET social.fanout_threshold;
SELECT throws_ok($$SELECT social.setting('nope')$$, '22023', NULL, 'an unknown setting');
SELECT ok(EXISTS (SELECT 1 FROM bv_audit.history('social.profiles', jsonb_build_object('id', pg_temp.pid('carol'))) WHERE operation = 'U' AND changed_columns = '{locked}'),
          'profile changes are in the audit history');

SELECT * FROM finish();
ROLLBACK;
