-- Red-team round 6: the SECURITY DEFINER visibility checks that row-level
-- security calls as the reader (social.can_see_rls, social.can_see_post,
-- social.blocked_between) took the viewer as an argument and API roles may
-- execute them, so any session could ask about another viewer: "may alice
-- see post X?" is true for every live post of alice, followers-only and
-- mentioned-only ones included, asked by a user alice blocked; "has dave
-- blocked alice?" tells a private block.  Since 0.4.0 they answer for the
-- current reader only (42501 otherwise), and row-level security still works.
BEGIN;
SELECT plan(19);

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

SELECT pg_temp.act('bv_user', u), api.create_profile('r6_' || u) FROM unnest(ARRAY['alice', 'carol', 'dave', 'bob']) u;
SELECT pg_temp.act('bv_user', 'bob'), api.follow('r6_alice');
SELECT pg_temp.act('bv_user', 'alice');
INSERT INTO pg_temp.ids SELECT 'secret', (api.create_post('followers only', 'followers') ->> 'id')::bigint;
INSERT INTO pg_temp.ids SELECT 'public', (api.create_post('hello') ->> 'id')::bigint;
SELECT api.block('r6_carol');
SELECT pg_temp.act('bv_user', 'dave'), api.block('r6_alice');
RESET ROLE;
SELECT id AS alice FROM social.profiles WHERE handle = 'r6_alice' \gset
SELECT id AS carol FROM social.profiles WHERE handle = 'r6_carol' \gset
SELECT id AS dave FROM social.profiles WHERE handle = 'r6_dave' \gset
SELECT id AS bob FROM social.profiles WHERE handle = 'r6_bob' \gset
SELECT id AS secret FROM pg_temp.ids WHERE label = 'secret' \gset

-- carol, blocked by alice, asks on alice's behalf
SELECT pg_temp.act('bv_user', 'carol');
SELECT throws_ok(format('SELECT social.can_see_post(%s, %s)', :alice, :secret), '42501', NULL,
                 'blocked user: can_see_post with the author as viewer is refused');
SELECT throws_ok(format($$SELECT social.can_see_rls(%s, %s, 'followers', %s, NULL, NULL)$$, :alice, :alice, :secret), '42501', NULL,
                 'blocked user: can_see_rls with another viewer is refused');
SELECT throws_ok(format('SELECT social.can_see_post(%s, %s + 1000000)', :alice, :secret), '42501', NULL,
                 'the same answer for a post that does not exist');
SELECT throws_ok(format('SELECT social.blocked_between(%s, %s)', :dave, :alice), '42501', NULL,
                 'a third party cannot ask whether dave blocked alice');
SELECT is(social.can_see_post(:carol, :secret), false, 'carol may ask for herself: no');
SELECT is(social.blocked_between(:carol, :alice), true, 'carol may ask about her own blocks');
SELECT is((SELECT count(*)::int FROM social.posts WHERE id = :secret), 0, 'row-level security: carol still sees nothing');

-- anonymous
SELECT pg_temp.act('bv_anon', NULL);
SELECT throws_ok(format('SELECT social.can_see_post(%s, %s)', :alice, :secret), '42501', NULL,
                 'anonymous: can_see_post for another viewer is refused');
SELECT is(social.can_see_post(NULL, :secret), false, 'anonymous may ask for itself: no');
SELECT is((SELECT count(*)::int FROM social.posts WHERE author_id = :alice), 1, 'row-level security: anonymous sees the public post only');

-- the follower: row-level security and the REST view still answer
SELECT pg_temp.act('bv_user', 'bob');
SELECT is((SELECT count(*)::int FROM social.posts WHERE author_id = :alice), 2, 'follower: both posts through row-level security');
SELECT is((SELECT count(*)::int FROM api.social_posts WHERE author_id = :alice), 2, 'follower: both posts through the REST view');
SELECT is(social.can_see_post(:bob, :secret), true, 'follower may ask for himself: yes');
SELECT throws_ok(format('SELECT social.can_see_post(%s, %s)', :carol, :secret), '42501', NULL,
                 'follower cannot ask on carol''s behalf');

-- the blocker sees own block; likes policy (blocked_between) still works
SELECT pg_temp.act('bv_user', 'alice');
SELECT is((SELECT count(*)::int FROM social.blocks), 1, 'alice sees her own block');
SELECT lives_ok(format('SELECT count(*) FROM social.likes WHERE post_id = %s', :secret), 'the likes policy (blocked_between) runs for the reader');

-- the audit history keeps the text of a deleted post: not for API roles
SELECT api.delete_post((SELECT id FROM pg_temp.ids WHERE label = 'public'));
SELECT pg_temp.act('bv_user', 'carol');
SELECT throws_ok(format($$SELECT * FROM bv_audit.history('social.posts', '{"id": %s}')$$, :secret), '42501', NULL,
                 'blocked user: no audit history of the author''s posts');
RESET ROLE;
SELECT bv_audit.audit_table('social.posts')::text AS posts_audit \gset
SELECT ok(NOT has_table_privilege('bv_user', :'posts_audit', 'SELECT') AND NOT has_table_privilege('bv_anon', :'posts_audit', 'SELECT'),
          'API roles cannot read the audit table of posts (erased text of deleted posts)');
SELECT is((SELECT body FROM social.posts WHERE id = (SELECT id FROM pg_temp.ids WHERE label = 'public')), '',
          'control: the deleted post''s text is erased in the table');

RESET ROLE;
SELECT * FROM finish();
ROLLBACK;
