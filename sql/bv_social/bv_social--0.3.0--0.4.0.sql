/*
 * bv_social 0.3.0 -> 0.4.0 (issue #23 follow-ups; docs/bv_social.md, ADR 0070).
 *
 * 1. Visibility checks answer for the reader only.  social.can_see_rls,
 *    social.can_see_post and social.blocked_between are SECURITY DEFINER
 *    (row-level security policies call them as the reader, and the rule
 *    reads blocks and follows the reader may not) and API roles may
 *    execute them, with the viewer as an argument: any session could ask
 *    "may the author see post 123?" (true for every live post of the
 *    author, followers-only and mentioned-only ones included, whoever
 *    asks, a blocked user too) or "has A blocked B?" (blocks are private).
 *    They now raise 42501 unless the viewer (the first profile, for
 *    blocked_between) is the current reader, social.me(); the policies
 *    pass exactly that.  Test: pgtap/bv_redteam6_social_oracle.
 * 2. Fan-out: each drain batch inserts its timeline rows in index order
 *    (user, post), with work_mem for the sort, and a batch takes 20000
 *    queue entries instead of 1000 (the setting fanout_batch, when still
 *    at the old default).  Rows of one user then land on one leaf visit
 *    per batch instead of one per row: once the timeline index outgrows
 *    shared_buffers each random leaf visit was a buffer replacement (the
 *    drain fell from 0.8 to 0.3 of the INSERT ... SELECT ceiling as the
 *    table grew).  docs/bv_social.md has the measurements.
 * 3. Home reads run with jit = off: a read is a few index probes, but the
 *    planner's cost of the candidate query can pass jit_above_cost when
 *    a reader follows many large authors or the queue is long, and a
 *    compilation costs 10-50 ms, far more than the read (a load-dependent
 *    p99 outlier).
 */

\echo Use "ALTER EXTENSION bv_social UPDATE TO '0.4.0'" to load this file. \quit

/* ---------- 1. visibility checks for the current reader only ---------- */

/* Raises 42501 unless p_viewer is the current reader (social.me()); NULL
 * (anonymous) is the reader only when social.me() is NULL too. */
CREATE FUNCTION social.check_reader(p_viewer bigint)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_viewer IS DISTINCT FROM social.me() THEN
        RAISE EXCEPTION 'visibility checks answer for the current reader only'
            USING ERRCODE = '42501',
                  HINT = 'Pass social.me() as the viewer, or read through the api functions and views.';
    END IF;
    RETURN true;
END
$$;
COMMENT ON FUNCTION social.check_reader(bigint) IS 'Raises 42501 unless the viewer is the current reader (social.me()): the SECURITY DEFINER visibility checks granted to API roles answer for the reader only.';
REVOKE ALL ON FUNCTION social.check_reader(bigint) FROM PUBLIC;

CREATE OR REPLACE FUNCTION social.can_see_rls(p_viewer bigint, p_author bigint, p_visibility social.visibility,
                                              p_post bigint, p_deleted_at timestamptz, p_repost_of bigint)
RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT social.check_reader(p_viewer)
       AND social.can_see(p_viewer, p_author, p_visibility, p_post, p_deleted_at, p_repost_of)
$$;
COMMENT ON FUNCTION social.can_see_rls(bigint, bigint, social.visibility, bigint, timestamptz, bigint) IS 'social.can_see for row-level security policies (as definer: the rule reads blocks and follows the reader cannot); for the current reader only (42501 otherwise).';

CREATE OR REPLACE FUNCTION social.can_see_post(p_viewer bigint, p_post bigint)
RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT social.check_reader(p_viewer)
       AND coalesce((SELECT social.can_see(p_viewer, p.author_id, p.visibility, p.id, p.deleted_at, p.repost_of_id)
                       FROM social.posts p WHERE p.id = p_post), false)
$$;
COMMENT ON FUNCTION social.can_see_post(bigint, bigint) IS 'May the current reader (p_viewer must be social.me(), 42501 otherwise) see this post (false when it does not exist)?';

CREATE OR REPLACE FUNCTION social.blocked_between(a bigint, b bigint)
RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT social.check_reader(a)
       AND EXISTS (SELECT 1 FROM social.blocks k
                    WHERE (k.blocker_id = a AND k.blocked_id = b) OR (k.blocker_id = b AND k.blocked_id = a))
$$;
COMMENT ON FUNCTION social.blocked_between(bigint, bigint) IS 'Has either profile blocked the other?  a must be the current reader (social.me(), 42501 otherwise): blocks are private.';

/* ---------- 2. fan-out: batches in index order ---------- */

/*
 * Drains one batch of the fan-out queue (0.1.0's and 0.3.0's comments
 * hold).  0.4.0: the post jobs' rows are inserted in (user, post) order,
 * the timeline index's order, so that the rows of one user in a batch are
 * added on one visit of the user's leaf page; work_mem covers the sort of
 * a batch (fanout_batch entries x their followers).
 */
CREATE OR REPLACE FUNCTION social.fanout_drain(p_batch integer DEFAULT NULL, p_after bigint DEFAULT 0,
                                    OUT jobs bigint, OUT deliveries bigint, OUT last_id bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET work_mem = '64MB'
AS $$
DECLARE
    cap bigint := social.setting('timeline_cap');
    batch bigint := coalesce(p_batch, social.setting('fanout_batch'));
    v_kind "char"[];
    v_author bigint[];
    v_post bigint[];
    v_follower bigint[];
    n bigint;
BEGIN
    IF batch < 1 THEN
        RAISE EXCEPTION 'invalid batch size' USING ERRCODE = '22023', HINT = 'Drain at least one job.';
    END IF;
    WITH taken AS (
        DELETE FROM social.fanout_queue q
         WHERE q.id IN (SELECT q2.id FROM social.fanout_queue q2
                         WHERE q2.id > coalesce(p_after, 0)
                         ORDER BY q2.id LIMIT batch FOR UPDATE SKIP LOCKED)
        RETURNING q.id, q.kind, q.author_id, q.post_id, q.follower_id)
    SELECT count(*), max(t.id), array_agg(t.kind), array_agg(t.author_id), array_agg(t.post_id), array_agg(t.follower_id)
      INTO jobs, last_id, v_kind, v_author, v_post, v_follower
      FROM taken t;
    deliveries := 0;
    IF jobs = 0 THEN
        RETURN;
    END IF;
    INSERT INTO social.timelines (user_id, post_id, author_id)
    SELECT f.follower_id, j.post_id, j.author_id
      FROM unnest(v_kind, v_author, v_post) j(kind, author_id, post_id)
      JOIN social.posts p ON p.id = j.post_id AND p.deleted_at IS NULL
      JOIN social.follows f ON f.followee_id = j.author_id AND f.state = 'accepted'
     WHERE j.kind = 'p'
       -- a hashed subplan, built once per batch: no probe per row
       AND f.follower_id NOT IN (SELECT u.id FROM social.profiles u WHERE NOT u.timeline_active)
     -- in index order: each user's rows of the batch land on one leaf visit
     ORDER BY f.follower_id, j.post_id;
    GET DIAGNOSTICS n = ROW_COUNT;
    deliveries := n;
    IF 'b' = ANY (v_kind) THEN
        INSERT INTO social.timelines (user_id, post_id, author_id)
        SELECT j.follower_id, x.id, x.author_id
          FROM unnest(v_kind, v_author, v_follower) j(kind, author_id, follower_id)
          JOIN social.profiles u ON u.id = j.follower_id AND u.timeline_active
         CROSS JOIN LATERAL (SELECT x.id, x.author_id FROM social.posts x
                              WHERE x.author_id = j.author_id AND x.delivery = 'p' AND x.deleted_at IS NULL
                              ORDER BY x.id DESC LIMIT cap) x
         WHERE j.kind = 'b'
           AND NOT EXISTS (SELECT 1 FROM social.timelines t WHERE t.user_id = j.follower_id AND t.post_id = x.id);
        GET DIAGNOSTICS n = ROW_COUNT;
        deliveries := deliveries + n;
    END IF;
END
$$;

UPDATE social.settings SET value = 20000,
       description = 'Queue entries (posts or follow backfills) drained per batch by social.fanout_drain(); a batch sorts its rows by user before inserting them (a batch writes at most fanout_batch x fanout_threshold rows).'
 WHERE name = 'fanout_batch' AND value = 1000;

/* ---------- 3. home reads without JIT ---------- */

ALTER FUNCTION social.home(bigint, bigint, integer) SET jit = off;
