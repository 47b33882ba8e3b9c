/*
 * bv_social 0.1.0 -> 0.2.0: red-team round 3 (docs/bv_social.md).
 *
 *  - answer_follow(handle, approve => NULL) rejected the request (the NULL
 *    took the ELSE branch and deleted it): now 22004 with a hint, nothing
 *    changed (tests/pgtap/bv_redteam4_social.sql);
 *  - API roles (bv_anon, and bv_user through it) could SELECT every column
 *    of social.profiles, among them user_ref (the bv_core identity, the
 *    JWT sub: often an e-mail address or the identity provider's id, which
 *    ties a handle to a person) and last_seen_at (when each user was last
 *    active).  They now hold SELECT on the public columns only, the ones
 *    api.social_profiles shows; staff (bv_service, bv_admin) keep the whole
 *    table.
 */

\echo Use "ALTER EXTENSION bv_social UPDATE TO '0.2.0'" to load this file. \quit

CREATE OR REPLACE FUNCTION social.answer_follow(p_handle text, p_approve boolean)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me bigint := social.actor_profile();
    who bigint;
BEGIN
    IF p_approve IS NULL THEN
        RAISE EXCEPTION 'approve must be true or false'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass approve: true to accept the follow request, false to reject it.';
    END IF;
    who := social.profile_id(p_handle);
    PERFORM social.lock_profiles(me, who);
    IF p_approve THEN
        UPDATE social.follows SET state = 'accepted'
         WHERE follower_id = who AND followee_id = me AND state = 'pending';
    ELSE
        DELETE FROM social.follows WHERE follower_id = who AND followee_id = me AND state = 'pending';
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no pending follow request from "%"', left(p_handle, 40)
            USING ERRCODE = 'PT404', HINT = 'See your pending requests with api.follow_requests().';
    END IF;
    RETURN jsonb_build_object('follower_id', who, 'state', CASE WHEN p_approve THEN 'accepted' END);
END
$$;
COMMENT ON FUNCTION social.answer_follow(text, boolean) IS 'Approves (true) or rejects (false) a pending follow request to the acting user; 22004 when approve is NULL.';

REVOKE SELECT ON social.profiles FROM bv_anon;
GRANT SELECT (id, handle, display_name, bio, locked, followers_count, following_count, posts_count, joined_at)
    ON social.profiles TO bv_anon;
