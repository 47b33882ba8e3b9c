/*
 * bv_social 0.2.0 -> 0.3.0 (issue #23 follow-ups; docs/bv_social.md, ADR 0070).
 *
 * 1. References to posts the reader may not see are NULL.  reply_to_id,
 *    root_id and quote_of_id of a post the reader may see could name a
 *    post the reader may not see (a followers-only parent, a post of an
 *    account that blocked the reader, a deleted or a mentioned-only one):
 *    its text never showed, but its id told that it exists.  Now every way
 *    out masks them relative to the reader, as Mastodon and Bluesky show
 *    "post unavailable":
 *      - the feeds (home, author, hashtag, thread, search) through
 *        social.visible_ref / the set-oriented social.visible_items;
 *      - the REST view api.social_posts through social.reader_refs (a
 *        filter such as reply_to_id=eq.<hidden id> matches nothing), with
 *        computed relationships api.reply_to, api.quote_of, api.root and
 *        api.replies for embedding (the foreign keys behind the masked
 *        columns are no longer visible to PostgREST);
 *      - the JSON that create_post, repost and set_post_visibility return
 *        (a reply inherits its thread root, which may be hidden);
 *      - direct SQL: API roles lose SELECT on social.posts.reply_to_id,
 *        root_id and quote_of_id (and on the audit and delivery columns),
 *        and on social.timelines (a cache that keeps ids of posts that
 *        became invisible: unfollowed, blocked, made followers-only).
 *    repost_of_id stays as it is: a repost is visible only with its
 *    original, so it never names a hidden post.
 * 2. replies_count counts the live public replies only (Mastodon counts
 *    public and unlisted replies only): a followers-only or mentioned-only
 *    reply no longer shows its existence to everyone through the counter.
 *    Recomputed here from the base table.
 * 3. Fan-out: social.fanout_run drains with a cursor (fanout_drain's new
 *    p_after), so a long run no longer rescans the queue entries its own
 *    earlier batches deleted (the run is one transaction: those dead
 *    entries cannot be pruned until it commits, and each batch walked over
 *    all of them, O(n^2) in the queue length).
 */

\echo Use "ALTER EXTENSION bv_social UPDATE TO '0.3.0'" to load this file. \quit

/* ---------- 1. references masked relative to the reader ---------- */

/* A referenced post's id when the viewer may see it, else NULL.  Plain SQL
 * (see social.sees): called by the feeds, which run as the definer. */
CREATE FUNCTION social.visible_ref(p_viewer bigint, p_ref bigint)
RETURNS bigint
LANGUAGE sql STABLE
AS $$
    SELECT q.id FROM social.posts q
     WHERE q.id = p_ref
       AND social.can_see(p_viewer, q.author_id, q.visibility, q.id, q.deleted_at, q.repost_of_id)
$$;
COMMENT ON FUNCTION social.visible_ref(bigint, bigint) IS 'The id of a referenced post (reply_to_id, root_id, quote_of_id) when the viewer may see it, else NULL: ids of posts a reader may not see never leave the database.';

/* The references of one post as the current reader may see them; no row
 * when the reader may not see the post itself.  SECURITY DEFINER: API roles
 * cannot read the raw columns.  Used by api.social_posts. */
CREATE FUNCTION social.reader_refs(p_post bigint, OUT reply_to_id bigint, OUT root_id bigint, OUT quote_of_id bigint)
RETURNS SETOF record
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN p.reply_to_id IS NOT NULL THEN social.visible_ref(v.me, p.reply_to_id) END,
           CASE WHEN p.root_id = p.id THEN p.id ELSE social.visible_ref(v.me, p.root_id) END,
           CASE WHEN p.quote_of_id IS NOT NULL THEN social.visible_ref(v.me, p.quote_of_id) END
      FROM social.posts p, (SELECT social.me() AS me) v
     WHERE p.id = p_post
       AND social.can_see(v.me, p.author_id, p.visibility, p.id, p.deleted_at, p.repost_of_id)
$$;
COMMENT ON FUNCTION social.reader_refs(bigint) IS 'reply_to_id, root_id and quote_of_id of a post the current reader may see, each NULL when the referenced post is not visible to the reader; no row for an invisible post.';

/* Ids of the replies to a post that the current reader may see (none when
 * the post itself is not visible): api.replies embeds through it. */
CREATE FUNCTION social.reader_reply_ids(p_post bigint)
RETURNS SETOF bigint
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.id
      FROM social.posts r, (SELECT social.me() AS me) v
     WHERE r.reply_to_id = p_post
       AND social.can_see_post(v.me, p_post)
       AND social.can_see(v.me, r.author_id, r.visibility, r.id, r.deleted_at, r.repost_of_id)
$$;
COMMENT ON FUNCTION social.reader_reply_ids(bigint) IS 'Ids of the visible replies to a visible post (for the current reader).';

CREATE OR REPLACE FUNCTION social.post_json(p social.posts)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object('id', p.id, 'author_id', p.author_id, 'body', p.body,
                              'visibility', p.visibility,
                              'reply_to_id', CASE WHEN p.reply_to_id IS NOT NULL THEN social.visible_ref(v.me, p.reply_to_id) END,
                              'root_id', CASE WHEN p.root_id = p.id THEN p.id ELSE social.visible_ref(v.me, p.root_id) END,
                              'quote_of_id', CASE WHEN p.quote_of_id IS NOT NULL THEN social.visible_ref(v.me, p.quote_of_id) END,
                              'repost_of_id', p.repost_of_id, 'media', p.media, 'posted_at', p.posted_at)
      FROM (SELECT social.me() AS me) v
$$;
COMMENT ON FUNCTION social.post_json(social.posts) IS 'A post as the API returns it to the acting user (references to posts the user may not see are NULL).';

/*
 * The feed items among some post ids that the viewer may see (0.1.0's
 * comment holds); 0.3.0: reply_to_id and root_id are masked like
 * quote_of_id.  A post that starts its thread is its own root (no lookup);
 * the other references cost one probe each, for replies only.
 */
CREATE OR REPLACE FUNCTION social.visible_items(p_viewer bigint, p_ids bigint[], p_home boolean DEFAULT false)
RETURNS SETOF social.feed_item
LANGUAGE sql STABLE
AS $$
    SELECT p.id, p.author_id, a.handle, p.body, p.visibility,
           CASE WHEN p.reply_to_id IS NOT NULL THEN social.visible_ref(p_viewer, p.reply_to_id) END,
           CASE WHEN p.root_id = p.id THEN p.id ELSE social.visible_ref(p_viewer, p.root_id) END,
           CASE WHEN q.id IS NOT NULL AND q.deleted_at IS NULL
           AND (q.author_id = p_viewer
                OR (p_viewer IS NULL AND q.visibility = 'public')
                OR (NOT EXISTS (SELECT 1 FROM social.blocks k
                                 WHERE (k.blocker_id = p_viewer AND k.blocked_id = q.author_id)
                                    OR (k.blocker_id = q.author_id AND k.blocked_id = p_viewer))
                    AND (q.visibility = 'public'
                         OR (q.visibility = 'followers'
                             AND EXISTS (SELECT 1 FROM social.follows f
                                          WHERE f.follower_id = p_viewer AND f.followee_id = q.author_id
                                            AND f.state = 'accepted'))
                         OR EXISTS (SELECT 1 FROM social.mentions m
                                     WHERE m.post_id = q.id AND m.profile_id = p_viewer)))) THEN q.id END,
           p.repost_of_id, p.media, p.posted_at, p.likes_count, p.replies_count, p.reposts_count
      FROM social.posts p
      JOIN social.profiles a ON a.id = p.author_id
      LEFT JOIN social.posts o ON o.id = p.repost_of_id
      LEFT JOIN social.posts q ON q.id = p.quote_of_id
     WHERE p.id = ANY (p_ids)
       AND p.deleted_at IS NULL
           AND (p.author_id = p_viewer
                OR (p_viewer IS NULL AND p.visibility = 'public')
                OR (NOT EXISTS (SELECT 1 FROM social.blocks k
                                 WHERE (k.blocker_id = p_viewer AND k.blocked_id = p.author_id)
                                    OR (k.blocker_id = p.author_id AND k.blocked_id = p_viewer))
                    AND (p.visibility = 'public'
                         OR (p.visibility = 'followers'
                             AND EXISTS (SELECT 1 FROM social.follows f
                                          WHERE f.follower_id = p_viewer AND f.followee_id = p.author_id
                                            AND f.state = 'accepted'))
                         OR EXISTS (SELECT 1 FROM social.mentions m
                                     WHERE m.post_id = p.id AND m.profile_id = p_viewer))))
       AND (o.id IS NULL OR (o.deleted_at IS NULL
           AND (o.author_id = p_viewer
                OR (p_viewer IS NULL AND o.visibility = 'public')
                OR (NOT EXISTS (SELECT 1 FROM social.blocks k
                                 WHERE (k.blocker_id = p_viewer AND k.blocked_id = o.author_id)
                                    OR (k.blocker_id = o.author_id AND k.blocked_id = p_viewer))
                    AND (o.visibility = 'public'
                         OR (o.visibility = 'followers'
                             AND EXISTS (SELECT 1 FROM social.follows f
                                          WHERE f.follower_id = p_viewer AND f.followee_id = o.author_id
                                            AND f.state = 'accepted'))
                         OR EXISTS (SELECT 1 FROM social.mentions m
                                     WHERE m.post_id = o.id AND m.profile_id = p_viewer))))))
       AND (NOT p_home
            OR ((p.author_id = p_viewer
                 OR EXISTS (SELECT 1 FROM social.follows f
                             WHERE f.follower_id = p_viewer AND f.followee_id = p.author_id AND f.state = 'accepted'))
                AND NOT EXISTS (SELECT 1 FROM social.mutes m
                                 WHERE m.muter_id = p_viewer AND (m.muted_id = p.author_id OR m.muted_id = o.author_id))))
$$;

CREATE OR REPLACE FUNCTION social.author_feed(p_viewer bigint, p_author bigint, p_before bigint DEFAULT NULL, p_limit integer DEFAULT 20)
RETURNS SETOF social.feed_item
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p.id, p.author_id, a.handle, p.body, p.visibility,
           CASE WHEN p.reply_to_id IS NOT NULL THEN social.visible_ref(p_viewer, p.reply_to_id) END,
           CASE WHEN p.root_id = p.id THEN p.id ELSE social.visible_ref(p_viewer, p.root_id) END,
           CASE WHEN p.quote_of_id IS NOT NULL THEN social.visible_ref(p_viewer, p.quote_of_id) END,
           p.repost_of_id, p.media, p.posted_at, p.likes_count, p.replies_count, p.reposts_count
      FROM social.posts p JOIN social.profiles a ON a.id = p.author_id
     WHERE p.author_id = p_author AND p.id < coalesce(p_before, 9223372036854775807)
       AND social.can_see(p_viewer, p.author_id, p.visibility, p.id, p.deleted_at, p.repost_of_id)
     ORDER BY p.id DESC
     LIMIT social.check_limit(p_limit)
$$;

CREATE OR REPLACE FUNCTION social.hashtag_feed(p_viewer bigint, p_tag text, p_before bigint DEFAULT NULL, p_limit integer DEFAULT 20)
RETURNS SETOF social.feed_item
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p.id, p.author_id, a.handle, p.body, p.visibility,
           CASE WHEN p.reply_to_id IS NOT NULL THEN social.visible_ref(p_viewer, p.reply_to_id) END,
           CASE WHEN p.root_id = p.id THEN p.id ELSE social.visible_ref(p_viewer, p.root_id) END,
           CASE WHEN p.quote_of_id IS NOT NULL THEN social.visible_ref(p_viewer, p.quote_of_id) END,
           p.repost_of_id, p.media, p.posted_at, p.likes_count, p.replies_count, p.reposts_count
      FROM social.post_tags t
      JOIN social.posts p ON p.id = t.post_id
      JOIN social.profiles a ON a.id = p.author_id
     WHERE t.tag = lower(ltrim(p_tag, '#')) AND t.post_id < coalesce(p_before, 9223372036854775807)
       AND social.can_see(p_viewer, p.author_id, p.visibility, p.id, p.deleted_at, p.repost_of_id)
       AND social.not_muted(p_viewer, p.author_id, p.repost_of_id)
     ORDER BY t.post_id DESC
     LIMIT social.check_limit(p_limit)
$$;

CREATE OR REPLACE FUNCTION social.thread(p_viewer bigint, p_post bigint, p_after bigint DEFAULT NULL, p_limit integer DEFAULT 50)
RETURNS SETOF social.feed_item
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lim integer := social.check_limit(p_limit);
    r social.posts := social.visible_post(p_viewer, p_post);
BEGIN
    RETURN QUERY
        SELECT p.id, p.author_id, a.handle, p.body, p.visibility,
               CASE WHEN p.reply_to_id IS NOT NULL THEN social.visible_ref(p_viewer, p.reply_to_id) END,
               CASE WHEN p.root_id = p.id THEN p.id ELSE social.visible_ref(p_viewer, p.root_id) END,
               CASE WHEN p.quote_of_id IS NOT NULL THEN social.visible_ref(p_viewer, p.quote_of_id) END,
               p.repost_of_id, p.media, p.posted_at, p.likes_count, p.replies_count, p.reposts_count
          FROM social.posts p JOIN social.profiles a ON a.id = p.author_id
         WHERE p.root_id = r.root_id AND p.id > coalesce(p_after, 0)
           AND social.can_see(p_viewer, p.author_id, p.visibility, p.id, p.deleted_at, p.repost_of_id)
         ORDER BY p.id
         LIMIT lim;
END
$$;

CREATE OR REPLACE FUNCTION social.search(p_viewer bigint, p_query text, p_before bigint DEFAULT NULL, p_limit integer DEFAULT 20)
RETURNS SETOF social.feed_item
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lim integer := social.check_limit(p_limit);
BEGIN
    IF p_query IS NULL OR char_length(p_query) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'invalid search query'
            USING ERRCODE = '22023', HINT = 'Search for 1 to 200 characters of text.';
    END IF;
    RETURN QUERY
        SELECT p.id, p.author_id, a.handle, p.body, p.visibility,
               CASE WHEN p.reply_to_id IS NOT NULL THEN social.visible_ref(p_viewer, p.reply_to_id) END,
               CASE WHEN p.root_id = p.id THEN p.id ELSE social.visible_ref(p_viewer, p.root_id) END,
               CASE WHEN p.quote_of_id IS NOT NULL THEN social.visible_ref(p_viewer, p.quote_of_id) END,
               p.repost_of_id, p.media, p.posted_at, p.likes_count, p.replies_count, p.reposts_count
          FROM social.posts p JOIN social.profiles a ON a.id = p.author_id
         WHERE to_tsvector('simple', p.body) @@ websearch_to_tsquery('simple', p_query)
           AND p.deleted_at IS NULL AND p.id < coalesce(p_before, 9223372036854775807)
           AND social.can_see(p_viewer, p.author_id, p.visibility, p.id, p.deleted_at, p.repost_of_id)
         ORDER BY p.id DESC
         LIMIT lim;
END
$$;

COMMENT ON TYPE social.feed_item IS 'A post in a feed. reply_to_id, root_id and quote_of_id are NULL when the referenced post is not visible to the reader ("post unavailable"). Keyset pagination: pass the last item''s id as "before" (as "after" in a thread) to get the next page.';

-- The REST view: masked references (no raw column of social.posts that an
-- API role cannot read).  Same columns, same order as 0.1.0.  A left join:
-- row-level security decides which rows show (staff see every post, with
-- the references masked as for an anonymous reader; staff read the raw
-- columns in social.posts).
CREATE OR REPLACE VIEW api.social_posts WITH (security_invoker = true) AS
SELECT p.id, p.author_id, p.body, p.visibility, r.reply_to_id, r.root_id, r.quote_of_id,
       p.repost_of_id, p.media, p.posted_at, p.likes_count, p.replies_count, p.reposts_count
FROM social.posts p
LEFT JOIN LATERAL social.reader_refs(p.id) r ON true;
COMMENT ON VIEW api.social_posts IS 'Posts the caller may see (row-level security: deletes, blocks, visibility). reply_to_id, root_id and quote_of_id are NULL when the referenced post is not visible to the caller. Embeds its author (social_profiles), its original (repost_of_id) and, through computed relationships, reply_to, quote_of, root and replies.';
COMMENT ON COLUMN api.social_posts.reply_to_id IS 'The post this one answers; NULL when it is not visible to you (post unavailable).';
COMMENT ON COLUMN api.social_posts.root_id IS 'The first post of the thread; NULL when it is not visible to you.';
COMMENT ON COLUMN api.social_posts.quote_of_id IS 'The quoted post; NULL when it is not visible to you.';

-- The view is no longer automatically updatable (the lateral join): writes
-- are refused with 42501 and a hint (PostgREST: 401/403), as before, rather
-- than "cannot update view" (55000, a 500).
CREATE FUNCTION social.refuse_view_write()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'posts cannot be written through this view'
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Use /rpc/create_post, /rpc/delete_post or /rpc/set_post_visibility.';
END
$$;
COMMENT ON FUNCTION social.refuse_view_write() IS 'INSTEAD OF trigger: api.social_posts is read-only (writes go through the rpc functions).';
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR UPDATE OR DELETE ON api.social_posts
    FOR EACH ROW EXECUTE FUNCTION social.refuse_view_write();

-- Computed relationships (PostgREST): /social_posts?select=*,reply_to(*)
CREATE FUNCTION api.reply_to(api.social_posts)
RETURNS SETOF api.social_posts
LANGUAGE sql STABLE ROWS 1
SET search_path = pg_catalog, pg_temp
AS $$ SELECT v.* FROM api.social_posts v WHERE v.id = $1.reply_to_id $$;
COMMENT ON FUNCTION api.reply_to(api.social_posts) IS 'Embedding: the post this one answers, when visible to you.';

CREATE FUNCTION api.quote_of(api.social_posts)
RETURNS SETOF api.social_posts
LANGUAGE sql STABLE ROWS 1
SET search_path = pg_catalog, pg_temp
AS $$ SELECT v.* FROM api.social_posts v WHERE v.id = $1.quote_of_id $$;
COMMENT ON FUNCTION api.quote_of(api.social_posts) IS 'Embedding: the quoted post, when visible to you.';

CREATE FUNCTION api.root(api.social_posts)
RETURNS SETOF api.social_posts
LANGUAGE sql STABLE ROWS 1
SET search_path = pg_catalog, pg_temp
AS $$ SELECT v.* FROM api.social_posts v WHERE v.id = $1.root_id $$;
COMMENT ON FUNCTION api.root(api.social_posts) IS 'Embedding: the first post of the thread, when visible to you.';

CREATE FUNCTION api.replies(api.social_posts)
RETURNS SETOF api.social_posts
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT v.* FROM api.social_posts v WHERE v.id IN (SELECT social.reader_reply_ids($1.id)) $$;
COMMENT ON FUNCTION api.replies(api.social_posts) IS 'Embedding: the replies to this post that you may see.';

REVOKE ALL ON FUNCTION social.visible_ref(bigint, bigint), social.reader_refs(bigint), social.refuse_view_write(),
    social.reader_reply_ids(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION api.reply_to(api.social_posts), api.quote_of(api.social_posts),
    api.root(api.social_posts), api.replies(api.social_posts) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION social.reader_refs(bigint), social.reader_reply_ids(bigint) TO bv_anon;
GRANT EXECUTE ON FUNCTION api.reply_to(api.social_posts), api.quote_of(api.social_posts),
    api.root(api.social_posts), api.replies(api.social_posts) TO bv_anon;

-- Direct SQL: API roles read the columns that never name a hidden post.
REVOKE SELECT ON social.posts FROM bv_anon;
GRANT SELECT (id, author_id, body, visibility, repost_of_id, media, posted_at,
              likes_count, replies_count, reposts_count) ON social.posts TO bv_anon;
-- The materialised timeline is a cache of candidates (ids of posts that may
-- have become invisible); users read it through social.home only.
REVOKE SELECT ON social.timelines FROM bv_user;

/* ---------- 2. replies_count: live public replies ---------- */

CREATE OR REPLACE FUNCTION social.post_after_insert()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE social.profiles SET posts_count = posts_count + 1,
                               has_pull_posts = has_pull_posts OR NEW.delivery = 'r'
     WHERE id = NEW.author_id;
    IF NEW.reply_to_id IS NOT NULL AND NEW.visibility = 'public' THEN
        UPDATE social.posts SET replies_count = replies_count + 1 WHERE id = NEW.reply_to_id;
    END IF;
    IF NEW.repost_of_id IS NOT NULL THEN
        UPDATE social.posts SET reposts_count = reposts_count + 1 WHERE id = NEW.repost_of_id;
    END IF;
    IF NEW.delivery = 'p' THEN
        INSERT INTO social.fanout_queue (kind, author_id, post_id) VALUES ('p', NEW.author_id, NEW.id);
    END IF;
    PERFORM social.emit('post.created', 'post:' || NEW.id, jsonb_build_object(
        'post_id', NEW.id, 'author_id', NEW.author_id, 'visibility', NEW.visibility,
        'body', NEW.body, 'reply_to_id', NEW.reply_to_id, 'root_id', NEW.root_id,
        'quote_of_id', NEW.quote_of_id, 'repost_of_id', NEW.repost_of_id,
        'media', NEW.media, 'posted_at', NEW.posted_at));
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION social.post_after_insert() IS 'Trigger: counters (author posts, parent''s public replies, reposts), fan-out enqueue, post.created event.';

CREATE OR REPLACE FUNCTION social.post_after_update()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    was_counted boolean := OLD.reply_to_id IS NOT NULL AND OLD.deleted_at IS NULL AND OLD.visibility = 'public';
    is_counted boolean := NEW.reply_to_id IS NOT NULL AND NEW.deleted_at IS NULL AND NEW.visibility = 'public';
BEGIN
    IF was_counted <> is_counted THEN
        UPDATE social.posts SET replies_count = replies_count + CASE WHEN is_counted THEN 1 ELSE -1 END
         WHERE id = NEW.reply_to_id;
    END IF;
    IF OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL THEN
        UPDATE social.profiles SET posts_count = posts_count - 1 WHERE id = NEW.author_id;
        IF NEW.repost_of_id IS NOT NULL THEN
            UPDATE social.posts SET reposts_count = reposts_count - 1 WHERE id = NEW.repost_of_id;
        END IF;
        PERFORM social.emit('post.deleted', 'post:' || NEW.id,
                            jsonb_build_object('post_id', NEW.id, 'author_id', NEW.author_id));
    ELSIF OLD.deleted_at IS NOT NULL AND NEW.deleted_at IS NULL THEN
        RAISE EXCEPTION 'a deleted post cannot be restored'
            USING ERRCODE = 'PT409', HINT = 'Write a new post instead.';
    END IF;
    IF NEW.visibility IS DISTINCT FROM OLD.visibility AND NEW.deleted_at IS NULL THEN
        PERFORM social.emit('post.visibility_changed', 'post:' || NEW.id,
                            jsonb_build_object('post_id', NEW.id, 'author_id', NEW.author_id,
                                               'from', OLD.visibility, 'to', NEW.visibility));
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION social.post_after_update() IS 'Trigger: counters (public replies follow visibility changes and deletes) and post.deleted on delete; post.visibility_changed.';

COMMENT ON COLUMN api.social_posts.replies_count IS 'Live public replies (exact); followers-only and mentioned-only replies are not counted, as in Mastodon.';

UPDATE social.posts p SET replies_count = c.n
  FROM (SELECT x.id, count(r.id) AS n
          FROM social.posts x
          LEFT JOIN social.posts r ON r.reply_to_id = x.id AND r.deleted_at IS NULL AND r.visibility = 'public'
         WHERE x.replies_count > 0
         GROUP BY x.id) c
 WHERE c.id = p.id AND p.replies_count <> c.n;

/* ---------- 3. fan-out: a cursor, and plain inserts ---------- */

/*
 * The timeline's key is no longer unique.  The drain inserted with ON
 * CONFLICT DO NOTHING (a speculative insertion: one more index descent and
 * one more WAL record per row) only to absorb the rare overlap of a post
 * job and a backfill job (or a rebuild) delivering the same post to the
 * same user.  The timeline is a cache of candidates and every read
 * deduplicates (social.home takes DISTINCT post ids), so a duplicate costs
 * a row until trimmed, nothing else.  Backfills and rebuilds still skip
 * the posts already there.
 */
ALTER TABLE social.timelines DROP CONSTRAINT timelines_pkey;
CREATE INDEX timelines_user_post ON social.timelines (user_id, post_id);
COMMENT ON TABLE social.timelines IS 'Materialised home timelines (fan-out on write), capped at timeline_cap entries per user. A cache of candidate post ids: every read re-checks the post against the base tables and deduplicates (the key is not unique: a post and a backfill job may both deliver a post).';

/*
 * Drains one batch of the fan-out queue (0.1.0's comment holds), from the
 * queue entries after p_after: fanout_run passes the last id it took, so
 * that its batches (one transaction) do not walk again over the entries
 * its earlier batches deleted.  The post jobs' rows are plain inserts, in
 * one statement per batch; backfills skip posts already delivered.
 */
DROP FUNCTION social.fanout_drain(integer);
CREATE FUNCTION social.fanout_drain(p_batch integer DEFAULT NULL, p_after bigint DEFAULT 0,
                                    OUT jobs bigint, OUT deliveries bigint, OUT last_id bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
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
       AND f.follower_id NOT IN (SELECT u.id FROM social.profiles u WHERE NOT u.timeline_active);
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
COMMENT ON FUNCTION social.fanout_drain(integer, bigint) IS 'Drains one batch of social.fanout_queue (entries after p_after) into the timelines; returns the jobs taken, the timeline rows written and the last queue id taken.';
REVOKE ALL ON FUNCTION social.fanout_drain(integer, bigint) FROM PUBLIC;

/*
 * The fan-out run (0.1.0's comment holds).  Batches follow a cursor over
 * the queue ids; when the cursor finds nothing it starts once more from the
 * beginning, for entries that committed late with lower ids or that a
 * concurrent drain skipped and gave back.
 */
CREATE OR REPLACE FUNCTION social.fanout_run(p_seconds integer DEFAULT 20, OUT jobs bigint, OUT deliveries bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + make_interval(secs => p_seconds);
    after bigint := 0;
    r record;
BEGIN
    jobs := 0;
    deliveries := 0;
    LOOP
        SELECT * INTO r FROM social.fanout_drain(NULL, after);
        jobs := jobs + r.jobs;
        deliveries := deliveries + r.deliveries;
        IF r.jobs = 0 THEN
            EXIT WHEN after = 0;
            after := 0;
        ELSE
            after := r.last_id;
        END IF;
        EXIT WHEN clock_timestamp() > deadline;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION social.rebuild_timeline(p_user bigint)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cap bigint := social.setting('timeline_cap');
    n bigint;
BEGIN
    UPDATE social.profiles SET timeline_active = true, last_seen_at = now() WHERE id = p_user;
    DELETE FROM social.timelines WHERE user_id = p_user;
    INSERT INTO social.timelines (user_id, post_id, author_id)
    SELECT p_user, p.id, p.author_id
      FROM social.follows f
      CROSS JOIN LATERAL (SELECT x.id, x.author_id FROM social.posts x
                           WHERE x.author_id = f.followee_id AND x.delivery = 'p' AND x.deleted_at IS NULL
                           ORDER BY x.id DESC LIMIT cap) p
     WHERE f.follower_id = p_user AND f.state = 'accepted'
     ORDER BY p.id DESC
     LIMIT cap;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

/*
 * The home timeline (0.1.0's comment holds).  0.3.0: the timeline source
 * takes distinct post ids, as its key is no longer unique (a page of
 * "batch" candidates must hold "batch" different posts, or the loop would
 * stop early).
 */
CREATE OR REPLACE FUNCTION social.home(p_viewer bigint, p_before bigint DEFAULT NULL, p_limit integer DEFAULT 20)
RETURNS SETOF social.feed_item
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lim integer := social.check_limit(p_limit);
    cur bigint := coalesce(p_before, 9223372036854775807);
    batch integer := greatest(2 * lim, 40);
    active boolean;
    cand bigint[];
    got integer := 0;
    n integer;
BEGIN
    SELECT pr.timeline_active INTO active FROM social.profiles pr WHERE pr.id = p_viewer;
    IF active IS NULL THEN
        RETURN;
    END IF;
    LOOP
        IF active THEN
            SELECT array_agg(u.id ORDER BY u.id DESC) INTO cand FROM (
                SELECT s.id FROM (
                    (SELECT DISTINCT t.post_id AS id FROM social.timelines t
                      WHERE t.user_id = p_viewer AND t.post_id < cur
                      ORDER BY t.post_id DESC LIMIT batch)
                    UNION
                    (SELECT x.id FROM social.follows f
                       JOIN social.profiles a ON a.id = f.followee_id AND a.has_pull_posts
                      CROSS JOIN LATERAL (SELECT x.id FROM social.posts x
                                           WHERE x.author_id = f.followee_id AND x.delivery = 'r' AND x.id < cur
                                           ORDER BY x.id DESC LIMIT batch) x
                      WHERE f.follower_id = p_viewer AND f.state = 'accepted')
                    UNION
                    (SELECT x.id FROM social.posts x
                      WHERE x.author_id = p_viewer AND x.id < cur ORDER BY x.id DESC LIMIT batch)
                    UNION
                    (SELECT q.post_id FROM social.follows f
                       JOIN social.fanout_queue q ON q.kind = 'p' AND q.author_id = f.followee_id
                      WHERE f.follower_id = p_viewer AND f.state = 'accepted' AND q.post_id < cur)
                    UNION
                    (SELECT x.id FROM social.fanout_queue q
                      CROSS JOIN LATERAL (SELECT x.id FROM social.posts x
                                           WHERE x.author_id = q.author_id AND x.delivery = 'p' AND x.id < cur
                                           ORDER BY x.id DESC LIMIT batch) x
                      WHERE q.kind = 'b' AND q.follower_id = p_viewer)
                ) s ORDER BY s.id DESC LIMIT batch) u;
        ELSE
            SELECT array_agg(u.id ORDER BY u.id DESC) INTO cand FROM (
                SELECT s.id FROM (
                    (SELECT x.id FROM social.follows f
                      CROSS JOIN LATERAL (SELECT x.id FROM social.posts x
                                           WHERE x.author_id = f.followee_id AND x.id < cur
                                           ORDER BY x.id DESC LIMIT batch) x
                      WHERE f.follower_id = p_viewer AND f.state = 'accepted')
                    UNION
                    (SELECT x.id FROM social.posts x
                      WHERE x.author_id = p_viewer AND x.id < cur ORDER BY x.id DESC LIMIT batch)
                ) s ORDER BY s.id DESC LIMIT batch) u;
        END IF;
        EXIT WHEN cand IS NULL;
        RETURN QUERY
            SELECT * FROM social.visible_items(p_viewer, cand, true) i
             ORDER BY i.id DESC
             LIMIT lim - got;
        GET DIAGNOSTICS n = ROW_COUNT;
        got := got + n;
        EXIT WHEN got >= lim OR cardinality(cand) < batch;
        cur := cand[cardinality(cand)];
    END LOOP;
END
$$;

------------------------------------------------------------------------
-- Red-team round 5: a session could choose the operator's tunables.
-- social.setting() read the GUC social.<name> before social.settings, so
-- any SQL session could SET social.fanout_threshold = 1000000000 and have
-- its posts fanned out on write to every follower (or lift timeline_cap).
-- The GUC override now counts only when the session logged in as a
-- superuser (tests and benchmarks), whatever role a SECURITY DEFINER
-- function runs as; everyone else gets social.settings (bv_admin writes it).
------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION social.setting(p_name text)
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v text;
    r bigint;
BEGIN
    -- The session's login role, not the current one: social.setting() runs
    -- inside SECURITY DEFINER functions and triggers owned by a superuser.
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = session_user) THEN
        v := nullif(pg_catalog.current_setting('social.' || p_name, true), '');
    END IF;
    IF v IS NOT NULL THEN
        BEGIN
            RETURN v::bigint;
        EXCEPTION WHEN invalid_text_representation OR numeric_value_out_of_range THEN
            RAISE EXCEPTION 'invalid value for setting social.%', p_name
                USING ERRCODE = '22023', HINT = 'Set it to a whole number, or RESET it to use social.settings.';
        END;
    END IF;
    SELECT s.value INTO r FROM social.settings s WHERE s.name = p_name;
    IF r IS NULL THEN
        RAISE EXCEPTION 'unknown social setting "%"', left(p_name, 40)
            USING ERRCODE = '22023', HINT = 'See SELECT name FROM social.settings.';
    END IF;
    RETURN r;
END
$$;
COMMENT ON FUNCTION social.setting(text) IS 'A tunable from social.settings (bv_admin writes it); in a superuser''s session the GUC social.<name>, when set, overrides it (tests, benchmarks).';
