-- bv_social 0.3.0: references to posts the reader may not see never leave
-- the database.  A visible post may answer, belong to the thread of, or
-- quote a post the reader may not see: a followers-only post, a
-- mentioned-only post, a deleted post, a post of an account that blocked
-- the reader (or that the reader blocked).  On every path (home, author,
-- hashtag and thread feeds, search, the REST view api.social_posts and its
-- embeddings, the JSON a write returns, the tables) reply_to_id, root_id
-- and quote_of_id are then NULL ("post unavailable"), and no filter or
-- counter tells the hidden post exists.  Acting as PostgREST requests do.
BEGIN;
SELECT plan(44);

CREATE FUNCTION pg_temp.act(p_role text, p_sub text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RESET ROLE;
    PERFORM set_config('request.jwt.claims',
                       CASE WHEN p_sub IS NULL THEN json_build_object('role', p_role)
                            ELSE json_build_object('role', p_role, 'sub', p_sub) END::text, true);
    EXECUTE format('SET LOCAL ROLE %I', p_role);
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.act(text, text) TO PUBLIC;
CREATE TABLE pg_temp.ids (label text PRIMARY KEY, id bigint);
GRANT ALL ON pg_temp.ids TO PUBLIC;
CREATE FUNCTION pg_temp.id(text) RETURNS bigint LANGUAGE sql AS $$ SELECT id FROM pg_temp.ids WHERE label = $1 $$;
GRANT EXECUTE ON FUNCTION pg_temp.id(text) TO PUBLIC;
CREATE FUNCTION pg_temp.keep(p_label text, p jsonb) RETURNS jsonb LANGUAGE sql AS $$
    INSERT INTO pg_temp.ids VALUES (p_label, (p->>'id')::bigint); SELECT p $$;
GRANT EXECUTE ON FUNCTION pg_temp.keep(text, jsonb) TO PUBLIC;

CREATE TABLE pg_temp.items (path text, i social.feed_item);
GRANT ALL ON pg_temp.items TO PUBLIC;
/*
 * Every reference (reply_to_id, root_id, quote_of_id, repost_of_id) that
 * viewer p_sub (NULL: anonymous) receives by any read path, with the path.
 */
CREATE FUNCTION pg_temp.refs(p_sub text) RETURNS TABLE (path text, post bigint, ref bigint) LANGUAGE plpgsql AS $$
BEGIN
    IF p_sub IS NULL THEN
        PERFORM pg_temp.act('bv_anon', NULL);
    ELSE
        PERFORM pg_temp.act('bv_user', p_sub);
    END IF;
    DELETE FROM pg_temp.items;
    IF p_sub IS NOT NULL THEN
        INSERT INTO pg_temp.items SELECT 'home', h FROM api.home_timeline(NULL, 100) h;
    END IF;
    INSERT INTO pg_temp.items SELECT 'author', f FROM api.author_feed('bob', NULL, 100) f;
    INSERT INTO pg_temp.items SELECT 'hashtag', f FROM api.hashtag_feed('reftag', NULL, 100) f;
    INSERT INTO pg_temp.items SELECT 'search', f FROM api.search_posts('reftag', NULL, 100) f;
    INSERT INTO pg_temp.items SELECT 'thread', f FROM api.thread(pg_temp.id('r_followers'), NULL, 100) f;
    INSERT INTO pg_temp.items SELECT 'thread', f FROM api.thread(pg_temp.id('r_blocked'), NULL, 100) f;
    INSERT INTO pg_temp.items SELECT 'thread', f FROM api.thread(pg_temp.id('r_deleted'), NULL, 100) f;
    INSERT INTO pg_temp.items SELECT 'thread', f FROM api.thread(pg_temp.id('r_mentioned'), NULL, 100) f;
    RETURN QUERY
        SELECT x.path, (x.i).id, r FROM pg_temp.items x,
               unnest(ARRAY[(x.i).reply_to_id, (x.i).root_id, (x.i).quote_of_id, (x.i).repost_of_id]) r
         WHERE r IS NOT NULL
        UNION ALL
        SELECT 'view', v.id, r FROM api.social_posts v,
               unnest(ARRAY[v.reply_to_id, v.root_id, v.quote_of_id, v.repost_of_id]) r
         WHERE r IS NOT NULL
        UNION ALL
        SELECT 'embed', v.id, e.id FROM api.social_posts v,
               LATERAL (SELECT * FROM api.reply_to(v) UNION ALL SELECT * FROM api.root(v)
                        UNION ALL SELECT * FROM api.quote_of(v) UNION ALL SELECT * FROM api.replies(v)) e;
    RESET ROLE;
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.refs(text) TO PUBLIC;
-- References that name a post the viewer may not see (must be none).
CREATE FUNCTION pg_temp.leaks(p_sub text) RETURNS text[] LANGUAGE sql AS $$
    SELECT coalesce(array_agg(DISTINCT r.path || ':' || r.post || '->' || r.ref), '{}')
      FROM pg_temp.refs(p_sub) r
     WHERE NOT EXISTS (SELECT 1 FROM social.posts p
                        WHERE p.id = r.ref
                          AND social.can_see((SELECT id FROM social.profiles WHERE user_ref = p_sub),
                                             p.author_id, p.visibility, p.id, p.deleted_at, p.repost_of_id)) $$;
-- Does the viewer receive this post id as a reference anywhere?
CREATE FUNCTION pg_temp.gets(p_sub text, p_label text) RETURNS boolean LANGUAGE sql AS $$
    SELECT EXISTS (SELECT 1 FROM pg_temp.refs(p_sub) r WHERE r.ref = pg_temp.id(p_label)) $$;

-- ---- the cast ----
-- alice writes the referenced posts; bob (her follower, mentioned) answers
-- and quotes them in public; vic follows bob, not alice; mal is blocked by
-- alice; carol follows bob only with a followers-only reply.
SELECT pg_temp.act('bv_user', u), api.create_profile(u)
  FROM unnest(ARRAY['alice', 'bob', 'vic', 'mal', 'carol', 'dora']) u;
SELECT pg_temp.act('bv_user', 'bob'), api.follow('alice');
SELECT pg_temp.act('bv_user', u), api.follow('bob') FROM unnest(ARRAY['vic', 'mal', 'alice']) u;
SELECT pg_temp.act('bv_user', 'alice');
SELECT pg_temp.keep('a_followers', api.create_post('for my followers', 'followers'));
SELECT pg_temp.keep('a_mentioned', api.create_post('a word for @bob', 'mentioned'));
SELECT pg_temp.keep('a_deleted', api.create_post('soon gone'));
SELECT pg_temp.keep('a_blocker', api.create_post('hello all'));
SELECT pg_temp.keep('a_open', api.create_post('an open question'));
SELECT pg_temp.act('bv_user', 'bob');
SELECT pg_temp.keep('r_followers', api.create_post('public answer #reftag', reply_to => pg_temp.id('a_followers')));
SELECT pg_temp.keep('r_mentioned', api.create_post('public answer two #reftag', reply_to => pg_temp.id('a_mentioned')));
SELECT pg_temp.keep('r_deleted', api.create_post('public answer three #reftag', reply_to => pg_temp.id('a_deleted')));
SELECT pg_temp.keep('r_blocked', api.create_post('public answer four #reftag', reply_to => pg_temp.id('a_blocker')));
SELECT pg_temp.keep('q_blocked', api.create_post('look #reftag', quote_of => pg_temp.id('a_blocker')));
SELECT pg_temp.keep('q_deleted', api.create_post('look again #reftag', quote_of => pg_temp.id('a_deleted')));
SELECT pg_temp.keep('r_open', api.create_post('an open answer #reftag', reply_to => pg_temp.id('a_open')));
SELECT pg_temp.act('bv_user', 'vic');
-- vic answers bob's visible reply: the thread root (alice's followers-only post) is inherited
SELECT is((SELECT ARRAY[(p->>'reply_to_id')::bigint, (p->>'root_id')::bigint]
             FROM pg_temp.keep('v_nested', api.create_post('nested #reftag', reply_to => pg_temp.id('r_followers'))) p),
          ARRAY[pg_temp.id('r_followers'), NULL],
          'a write''s answer: the visible parent is kept, the inherited root the writer may not see is null');
SELECT pg_temp.act('bv_user', 'carol');
SELECT pg_temp.keep('c_hidden_reply', api.create_post('for my followers only', 'followers', reply_to => pg_temp.id('a_open')));
SELECT pg_temp.act('bv_user', 'alice'), api.delete_post(pg_temp.id('a_deleted'));
SELECT pg_temp.act('bv_user', 'alice'), api.block('mal');
RESET ROLE;
SELECT * FROM social.fanout_drain(1000);

-- ---- the probe works: bob and alice see the references ----
SELECT ok(pg_temp.gets('bob', 'a_followers'), 'probe: a follower receives the followers-only parent''s id');
SELECT ok(pg_temp.gets('bob', 'a_mentioned'), 'probe: the mentioned account receives the mentioned-only parent''s id');
SELECT ok(pg_temp.gets('vic', 'a_open'), 'probe: a visible parent is referenced');
SELECT ok(pg_temp.gets('mal', 'r_followers'), 'probe: a visible parent of a nested reply is referenced');
SELECT is(pg_temp.leaks('bob'), '{}', 'bob: every reference names a post bob may see');
SELECT is(pg_temp.leaks('alice'), '{}', 'alice: every reference names a post alice may see');

-- ---- the hidden parents are referenced nowhere ----
SELECT is(pg_temp.leaks('vic'), '{}', 'non-follower: no reference to a post it may not see, on any path');
SELECT is(pg_temp.leaks('mal'), '{}', 'blocked user: no reference to a post it may not see, on any path');
SELECT is(pg_temp.leaks('dora'), '{}', 'a stranger: no hidden reference');
SELECT is(pg_temp.leaks(NULL), '{}', 'anonymous: no hidden reference');
SELECT ok(NOT pg_temp.gets('vic', 'a_followers'), 'followers-only parent: not referenced for a non-follower');
SELECT ok(NOT pg_temp.gets('vic', 'a_mentioned'), 'mentioned-only parent: not referenced for the unmentioned');
SELECT ok(NOT pg_temp.gets('vic', 'a_deleted'), 'deleted parent: not referenced');
SELECT ok(NOT pg_temp.gets('bob', 'a_deleted'), 'deleted parent: not referenced even for a follower');
SELECT ok(NOT pg_temp.gets('mal', 'a_blocker'), 'blocker''s post: not referenced for the blocked user');
SELECT ok(NOT pg_temp.gets('alice', 'c_hidden_reply'), 'a followers-only reply is not embedded for the parent''s author who does not follow');
SELECT ok(pg_temp.gets('vic', 'a_blocker'), 'the same post is referenced for a reader the block does not concern');

SELECT pg_temp.act('bv_user', 'mal');
SELECT is((SELECT reply_to_id FROM api.author_feed('bob', NULL, 100) WHERE id = pg_temp.id('r_blocked')), NULL,
          'blocked: the reply is shown, its parent unavailable');
SELECT is((SELECT root_id FROM api.author_feed('bob', NULL, 100) WHERE id = pg_temp.id('r_blocked')), NULL,
          'blocked: the thread root unavailable');
SELECT is((SELECT quote_of_id FROM api.home_timeline(NULL, 100) WHERE id = pg_temp.id('q_blocked')), NULL,
          'blocked: a quote in home does not reference the blocker''s post');
SELECT is((SELECT count(*)::int FROM api.social_posts WHERE reply_to_id = pg_temp.id('a_blocker')), 0,
          'blocked: filtering the view by the hidden id finds nothing (no oracle)');
SELECT is((SELECT count(*)::int FROM api.social_posts WHERE id = pg_temp.id('r_blocked')), 1,
          'blocked: the reply itself is in the view');
SELECT is((SELECT count(*)::int FROM social.reader_refs(pg_temp.id('a_blocker'))), 0, 'reader_refs of a hidden post: no row');
SELECT is((SELECT count(*)::int FROM social.reader_reply_ids(pg_temp.id('a_blocker'))), 0, 'reader_reply_ids of a hidden post: none');
SELECT throws_ok($$SELECT reply_to_id FROM social.posts$$, '42501', NULL, 'direct SQL: reply_to_id is not readable');
SELECT throws_ok($$SELECT root_id FROM social.posts$$, '42501', NULL, 'direct SQL: root_id is not readable');
SELECT throws_ok($$SELECT quote_of_id FROM social.posts$$, '42501', NULL, 'direct SQL: quote_of_id is not readable');
SELECT throws_ok($$SELECT count(*) FROM social.posts WHERE quote_of_id IS NOT NULL$$, '42501', NULL, 'direct SQL: nor filterable');
SELECT throws_ok($$SELECT created_by FROM social.posts$$, '42501', NULL, 'direct SQL: the audit actor (a JWT sub) is not readable');
SELECT ok((SELECT count(*) FROM social.posts WHERE author_id = (SELECT id FROM social.profiles WHERE handle = 'bob')) > 0,
          'direct SQL: the public columns still read, under row-level security');
SELECT throws_ok($$SELECT post_id FROM social.timelines$$, '42501', NULL, 'the timeline cache is not readable by users');
RESET ROLE;

SELECT pg_temp.act('bv_user', 'vic');
SELECT is((SELECT array[reply_to_id, root_id] FROM api.thread(pg_temp.id('v_nested')) WHERE id = pg_temp.id('v_nested')),
          ARRAY[pg_temp.id('r_followers'), NULL], 'thread: the visible parent stays, the hidden root is unavailable');
SELECT is((SELECT array_agg(id ORDER BY id) FROM api.thread(pg_temp.id('r_followers'))),
          ARRAY[pg_temp.id('r_followers'), pg_temp.id('v_nested')], 'thread of a reply to a hidden root: the visible posts');
SELECT is((SELECT array[reply_to_id, root_id] FROM api.social_posts WHERE id = pg_temp.id('r_open')),
          ARRAY[pg_temp.id('a_open'), pg_temp.id('a_open')], 'the view keeps visible references');
SELECT is((SELECT (r).id FROM (SELECT api.reply_to(v) r FROM api.social_posts v WHERE v.id = pg_temp.id('r_open')) x),
          pg_temp.id('a_open'), 'embedding a visible parent works');
SELECT is((SELECT count(*)::int FROM api.social_posts v, api.reply_to(v) e WHERE v.id = pg_temp.id('r_followers')), 0,
          'embedding a hidden parent gives nothing');
SELECT is((SELECT array_agg(e.id) FROM api.social_posts v, api.replies(v) e WHERE v.id = pg_temp.id('a_open')),
          ARRAY[pg_temp.id('r_open')], 'embedded replies: only the visible ones');
RESET ROLE;

SELECT pg_temp.act('bv_service', 'ops');
SELECT ok(EXISTS (SELECT 1 FROM api.social_posts WHERE id = pg_temp.id('a_mentioned')),
          'staff: the view still lists every post (row-level security decides the rows)');
RESET ROLE;

-- ---- replies_count counts public live replies (Mastodon's rule) ----
SELECT is((SELECT replies_count FROM social.posts WHERE id = pg_temp.id('a_open')), 1::bigint,
          'a followers-only reply is not counted');
SELECT pg_temp.act('bv_user', 'carol'), api.set_post_visibility(pg_temp.id('c_hidden_reply'), 'public');
RESET ROLE;
SELECT is((SELECT replies_count FROM social.posts WHERE id = pg_temp.id('a_open')), 2::bigint, 'made public: counted');
SELECT pg_temp.act('bv_user', 'carol'), api.set_post_visibility(pg_temp.id('c_hidden_reply'), 'mentioned');
RESET ROLE;
SELECT is((SELECT replies_count FROM social.posts WHERE id = pg_temp.id('a_open')), 1::bigint, 'made mentioned-only: uncounted');
SELECT pg_temp.act('bv_user', 'bob'), api.delete_post(pg_temp.id('r_open'));
RESET ROLE;
SELECT is((SELECT replies_count FROM social.posts WHERE id = pg_temp.id('a_open')), 0::bigint, 'deleted: uncounted');
SELECT pg_temp.act('bv_user', 'carol'), api.delete_post(pg_temp.id('c_hidden_reply'));
RESET ROLE;
SELECT is((SELECT replies_count FROM social.posts WHERE id = pg_temp.id('a_open')), 0::bigint, 'deleting an uncounted reply leaves it');

SELECT * FROM finish();
ROLLBACK;
