-- Red-team round 3 (bv_social 0.2.0): a NULL answer to a follow request,
-- and the identity columns of social.profiles.
BEGIN;
SELECT plan(10);

CREATE FUNCTION pg_temp.act(p_sub text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RESET ROLE;
    PERFORM set_config('request.jwt.claims', json_build_object('role', 'bv_user', 'sub', p_sub)::text, true);
    SET LOCAL ROLE bv_user;
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.act(text) TO PUBLIC;

SELECT pg_temp.act('red4-alice@example.com');
SELECT lives_ok($$SELECT api.create_profile('red4_alice')$$, 'alice has a profile');
SELECT pg_temp.act('red4-bob@example.com');
SELECT lives_ok($$SELECT api.create_profile('red4_bob', 'Bob', true)$$, 'bob has a locked profile');
SELECT pg_temp.act('red4-alice@example.com');
SELECT is(api.follow('red4_bob') ->> 'state', 'pending', 'alice asks to follow bob');

-- approve => NULL used to reject (delete) the request silently
SELECT pg_temp.act('red4-bob@example.com');
SELECT throws_ok($$SELECT api.answer_follow_request('red4_alice', NULL)$$, '22004',
                 'approve must be true or false', 'a NULL answer is refused with 22004');
SELECT is((SELECT count(*)::int FROM api.follow_requests()), 1, 'and the request is still pending');
SELECT is(api.answer_follow_request('red4_alice', true) ->> 'state', 'accepted', 'true still approves');

-- API roles read the public columns of profiles, not the identity (JWT
-- sub) or the activity of other users
SELECT pg_temp.act('red4-alice@example.com');
SELECT throws_ok($$SELECT user_ref FROM social.profiles$$, '42501', NULL,
                 'a user cannot read user_ref (the JWT sub) of the profiles');
SELECT throws_ok($$SELECT last_seen_at FROM social.profiles$$, '42501', NULL,
                 'nor when each user was last active');
SELECT is((SELECT handle FROM social.profiles WHERE handle = 'red4_bob'), 'red4_bob', 'public columns stay readable');
SELECT is((SELECT followers_count FROM api.social_profiles WHERE handle = 'red4_bob'), 1::bigint,
          'and the REST view is unchanged');

SELECT * FROM finish();
ROLLBACK;
