/*
 * bv_social 0.1.0: posts, the social graph, home timelines with hybrid
 * fan-out, feeds and domain events.
 *
 * Schema "social" holds the tables and the domain functions; schema "api"
 * (shared with the other domains, created here when missing) holds the thin
 * PostgREST surface.  Conventions:
 *
 *  - the user is a profile (social.profiles) owned by a bv_core identity:
 *    profiles.user_ref = bv.current_user_id() (the JWT "sub");
 *  - who may see a post is decided in ONE place, social.can_see(), used by
 *    the row-level security policy of social.posts (so REST embedding and
 *    direct SQL are filtered) and by every feed, which re-check at read time:
 *    deletes, blocks (either direction), visibility (public, followers,
 *    mentioned) and, for home and hashtag feeds, mutes and current follows;
 *  - counters (followers, following, posts, likes, replies, reposts) are
 *    updated by triggers in the writer's transaction with "n = n + 1" under
 *    the row lock, so concurrent writers never lose an update; rows of two
 *    profiles are locked in id order, so crossing follows cannot deadlock;
 *  - home timelines are hybrid: a post by an author with fewer followers
 *    than social.setting('fanout_threshold') is queued (social.fanout_queue)
 *    in the writer's transaction and copied into followers' timelines
 *    (social.timelines, hash-partitioned, capped) by social.fanout_drain(),
 *    run by pg_cron off the writer's transaction; posts of larger authors
 *    are merged in at read time.  Work still in the queue is merged in at
 *    read time too, so a post is in every follower's home as soon as it
 *    commits, whatever the drain's lag;
 *  - domain events go to social.outbox in the same transaction (versioned
 *    JSON, docs/bv_social.md); bv_cdc, when installed, streams its inserts
 *    to Kafka (social.route_events());
 *  - errors a client can cause use PostgREST's PTxyz SQLSTATEs or 22023,
 *    always with a hint; unique/foreign-key violations never reach clients.
 */

\echo Use "CREATE EXTENSION bv_social" to load this file. \quit

COMMENT ON SCHEMA social IS 'Social domain: profiles, posts, follows, blocks, mutes, likes, bookmarks, home timelines, feeds, domain events.';

-- The REST schema is shared by the domains (bv_commerce creates it too):
-- created here only when missing, and then detached from bv_social so that
-- dropping this extension does not drop the other domains' API.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'api') THEN
        CREATE SCHEMA api;
        COMMENT ON SCHEMA api IS 'BitVelocity REST API (PostgREST).';
        ALTER EXTENSION bv_social DROP SCHEMA api;
    END IF;
END
$$;

/* ---------- settings ---------- */

CREATE TABLE social.settings (
    name        text PRIMARY KEY,
    value       bigint NOT NULL,
    description text NOT NULL
);
COMMENT ON TABLE social.settings IS 'Tunables of the social domain; a session may override one with the GUC social.<name>.';
INSERT INTO social.settings VALUES
    ('fanout_threshold', 1000, 'Authors with fewer accepted followers than this are fanned out on write; the others are merged at read time.'),
    ('timeline_cap', 800, 'Entries kept per home timeline (older ones are trimmed by pg_cron).'),
    ('fanout_batch', 1000, 'Queue entries (posts or follow backfills) drained per batch by social.fanout_drain() (a batch writes at most fanout_batch x fanout_threshold rows).'),
    ('inactive_days', 30, 'A user not seen for this many days has the home timeline dropped; it is rebuilt when the user returns.'),
    ('trending_window_hours', 24, 'Window of the trending hashtags.'),
    ('outbox_retention_days', 7, 'Outbox events older than this are purged (consumers read them from Kafka).');

CREATE FUNCTION social.setting(p_name text)
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v text := nullif(pg_catalog.current_setting('social.' || p_name, true), '');
    r bigint;
BEGIN
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
COMMENT ON FUNCTION social.setting(text) IS 'A tunable: the GUC social.<name> when set, else social.settings.';

/* ---------- profiles and the graph ---------- */

CREATE TABLE social.profiles (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_ref        text NOT NULL UNIQUE,
    handle          text NOT NULL UNIQUE CHECK (handle ~ '^[a-z0-9_]{1,30}$'),
    display_name    text NOT NULL DEFAULT '' CHECK (char_length(display_name) <= 100),
    bio             text NOT NULL DEFAULT '' CHECK (char_length(bio) <= 500),
    locked          boolean NOT NULL DEFAULT false,
    followers_count bigint NOT NULL DEFAULT 0 CHECK (followers_count >= 0),
    following_count bigint NOT NULL DEFAULT 0 CHECK (following_count >= 0),
    posts_count     bigint NOT NULL DEFAULT 0 CHECK (posts_count >= 0),
    has_pull_posts  boolean NOT NULL DEFAULT false,
    timeline_active boolean NOT NULL DEFAULT true,
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    joined_at       timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE social.profiles IS 'Users of the social domain; user_ref is the bv_core identity (JWT sub). locked: follows need approval.';
COMMENT ON COLUMN social.profiles.has_pull_posts IS 'The author has posts merged at read time (posted while at or above the fan-out threshold).';
COMMENT ON COLUMN social.profiles.timeline_active IS 'false: the home timeline was dropped for inactivity; home reads merge everything at read time until it is rebuilt.';
CREATE INDEX profiles_pull ON social.profiles (id) WHERE has_pull_posts;
CREATE INDEX profiles_last_seen ON social.profiles (last_seen_at) WHERE timeline_active;
CREATE INDEX profiles_inactive ON social.profiles (id) WHERE NOT timeline_active;

CREATE TYPE social.follow_state AS ENUM ('pending', 'accepted');

CREATE TABLE social.follows (
    follower_id bigint NOT NULL REFERENCES social.profiles ON DELETE CASCADE,
    followee_id bigint NOT NULL REFERENCES social.profiles ON DELETE CASCADE,
    state       social.follow_state NOT NULL,
    since       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (follower_id, followee_id),
    CHECK (follower_id <> followee_id)
);
COMMENT ON TABLE social.follows IS 'Follows; pending until a locked account approves.';
CREATE INDEX follows_followee ON social.follows (followee_id, follower_id) WHERE state = 'accepted';
CREATE INDEX follows_pending ON social.follows (followee_id, follower_id) WHERE state = 'pending';

CREATE TABLE social.blocks (
    blocker_id bigint NOT NULL REFERENCES social.profiles ON DELETE CASCADE,
    blocked_id bigint NOT NULL REFERENCES social.profiles ON DELETE CASCADE,
    since      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (blocker_id, blocked_id),
    CHECK (blocker_id <> blocked_id)
);
COMMENT ON TABLE social.blocks IS 'Blocks: neither side sees the other''s posts by any path; follows between them are removed.';
CREATE INDEX blocks_blocked ON social.blocks (blocked_id, blocker_id);

CREATE TABLE social.mutes (
    muter_id bigint NOT NULL REFERENCES social.profiles ON DELETE CASCADE,
    muted_id bigint NOT NULL REFERENCES social.profiles ON DELETE CASCADE,
    since    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (muter_id, muted_id),
    CHECK (muter_id <> muted_id)
);
COMMENT ON TABLE social.mutes IS 'Mutes: the muted author''s posts leave the muter''s home and hashtag feeds (private to the muter).';

/* ---------- posts ---------- */

CREATE TYPE social.visibility AS ENUM ('public', 'followers', 'mentioned');

CREATE TABLE social.posts (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    author_id     bigint NOT NULL REFERENCES social.profiles ON DELETE CASCADE,
    body          text NOT NULL DEFAULT '' CHECK (char_length(body) <= 500),
    visibility    social.visibility NOT NULL DEFAULT 'public',
    reply_to_id   bigint REFERENCES social.posts,
    root_id       bigint NOT NULL,
    quote_of_id   bigint REFERENCES social.posts,
    repost_of_id  bigint REFERENCES social.posts,
    media         jsonb NOT NULL DEFAULT '[]'
                  CHECK (jsonb_typeof(media) = 'array' AND jsonb_array_length(media) <= 4),
    delivery      "char" NOT NULL DEFAULT 'p' CHECK (delivery IN ('p', 'r')),
    posted_at     timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz,
    likes_count   bigint NOT NULL DEFAULT 0 CHECK (likes_count >= 0),
    replies_count bigint NOT NULL DEFAULT 0 CHECK (replies_count >= 0),
    reposts_count bigint NOT NULL DEFAULT 0 CHECK (reposts_count >= 0),
    CHECK (repost_of_id IS NULL OR (reply_to_id IS NULL AND quote_of_id IS NULL AND body = ''))
);
COMMENT ON TABLE social.posts IS 'Posts, replies (reply_to_id, thread root_id), quotes (quote_of_id) and reposts (repost_of_id, no body). Deleted posts keep their row (deleted_at) so that threads keep their shape.';
COMMENT ON COLUMN social.posts.delivery IS 'p: pushed into followers'' timelines (fan-out on write); r: merged at read time (large author).';
COMMENT ON COLUMN social.posts.media IS 'Media references: an array of at most 4 objects {"url": "https://...", "kind": "image|video|audio", "alt": "..."}.';
CREATE INDEX posts_author ON social.posts (author_id, id DESC);
CREATE INDEX posts_author_pull ON social.posts (author_id, id DESC) WHERE delivery = 'r';
CREATE INDEX posts_root ON social.posts (root_id, id);
CREATE INDEX posts_reply_to ON social.posts (reply_to_id) WHERE reply_to_id IS NOT NULL;
CREATE UNIQUE INDEX posts_one_repost ON social.posts (author_id, repost_of_id)
    WHERE repost_of_id IS NOT NULL AND deleted_at IS NULL;
CREATE INDEX posts_search ON social.posts USING gin (to_tsvector('simple', body)) WHERE deleted_at IS NULL;

CREATE TABLE social.mentions (
    post_id    bigint NOT NULL REFERENCES social.posts ON DELETE CASCADE,
    profile_id bigint NOT NULL REFERENCES social.profiles ON DELETE CASCADE,
    PRIMARY KEY (post_id, profile_id)
);
COMMENT ON TABLE social.mentions IS 'Profiles mentioned (@handle) in a post; they may see the post whatever its visibility (unless blocked).';
CREATE INDEX mentions_profile ON social.mentions (profile_id, post_id DESC);

CREATE TABLE social.post_tags (
    tag       text NOT NULL CHECK (tag = lower(tag) AND char_length(tag) BETWEEN 1 AND 100),
    post_id   bigint NOT NULL REFERENCES social.posts ON DELETE CASCADE,
    tagged_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tag, post_id)
);
COMMENT ON TABLE social.post_tags IS 'Hashtags (#tag, lower case) of posts.';
CREATE INDEX post_tags_post ON social.post_tags (post_id);
CREATE INDEX post_tags_recent ON social.post_tags (tagged_at);

CREATE TABLE social.likes (
    profile_id bigint NOT NULL REFERENCES social.profiles ON DELETE CASCADE,
    post_id    bigint NOT NULL REFERENCES social.posts ON DELETE CASCADE,
    liked_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (post_id, profile_id)
);
COMMENT ON TABLE social.likes IS 'Likes; posts.likes_count is kept exact by trigger.';
CREATE INDEX likes_profile ON social.likes (profile_id, post_id DESC);

CREATE TABLE social.bookmarks (
    profile_id    bigint NOT NULL REFERENCES social.profiles ON DELETE CASCADE,
    post_id       bigint NOT NULL REFERENCES social.posts ON DELETE CASCADE,
    bookmarked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (profile_id, post_id)
);
COMMENT ON TABLE social.bookmarks IS 'Bookmarks, private to their owner.';

/* ---------- timelines, fan-out queue, outbox, trending ---------- */

CREATE TABLE social.timelines (
    user_id   bigint NOT NULL,
    post_id   bigint NOT NULL,
    author_id bigint NOT NULL,
    PRIMARY KEY (user_id, post_id)
) PARTITION BY HASH (user_id);
COMMENT ON TABLE social.timelines IS 'Materialised home timelines (fan-out on write), capped at timeline_cap entries per user. A cache: every read re-checks the post against the base tables.';
DO $$
BEGIN
    FOR i IN 0..7 LOOP
        EXECUTE format('CREATE TABLE social.%I PARTITION OF social.timelines FOR VALUES WITH (MODULUS 8, REMAINDER %s)',
                       'timelines_p' || i, i);
    END LOOP;
END
$$;

CREATE TABLE social.fanout_queue (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        "char" NOT NULL CHECK (kind IN ('p', 'b')),
    author_id   bigint NOT NULL,
    post_id     bigint,
    follower_id bigint,
    queued_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK ((kind = 'p' AND post_id IS NOT NULL) OR (kind = 'b' AND follower_id IS NOT NULL))
);
COMMENT ON TABLE social.fanout_queue IS 'Fan-out work written in the writer''s transaction: p = push a post to the author''s followers, b = backfill a new follower''s timeline with the author''s recent posts. Drained by social.fanout_drain().';
CREATE INDEX fanout_queue_author ON social.fanout_queue (author_id) WHERE kind = 'p';
CREATE INDEX fanout_queue_follower ON social.fanout_queue (follower_id) WHERE kind = 'b';

CREATE TABLE social.outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    type        text NOT NULL,
    version     integer NOT NULL DEFAULT 1,
    aggregate   text NOT NULL,
    payload     jsonb NOT NULL,
    actor       text,
    occurred_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE social.outbox IS 'Domain events (post.created, follow.created, like.created...), written in the transaction of the change; schema per type and version in docs/bv_social.md. Streamed to Kafka by bv_cdc (social.route_events).';
CREATE INDEX outbox_occurred ON social.outbox (occurred_at);

CREATE TABLE social.trending_tags (
    rank        integer PRIMARY KEY,
    tag         text NOT NULL,
    uses        bigint NOT NULL,
    accounts    bigint NOT NULL,
    computed_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE social.trending_tags IS 'Top hashtags of public posts in the trending window, by distinct accounts then uses; recomputed every minute by pg_cron.';

/* ---------- who is asking ---------- */

CREATE FUNCTION social.me()
RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT p.id FROM social.profiles p WHERE p.user_ref = bv.current_user_id() $$;
COMMENT ON FUNCTION social.me() IS 'Profile id of the request''s user (bv.current_user_id()), NULL for anonymous requests or users without a profile.';

/* The acting profile of a write: PT401 when anonymous, PT404 without profile. */
CREATE FUNCTION social.actor_profile()
RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    u text := bv.current_user_id();
    v bigint;
BEGIN
    IF u IS NULL THEN
        RAISE EXCEPTION 'authentication required'
            USING ERRCODE = 'PT401', HINT = 'Send a bearer token whose sub names the user.';
    END IF;
    SELECT p.id INTO v FROM social.profiles p WHERE p.user_ref = u;
    IF v IS NULL THEN
        RAISE EXCEPTION 'you have no social profile'
            USING ERRCODE = 'PT404', HINT = 'Create one first with api.create_profile(handle).';
    END IF;
    RETURN v;
END
$$;
COMMENT ON FUNCTION social.actor_profile() IS 'Profile id of the acting user; PT401 when anonymous, PT404 when the user has no profile.';

CREATE FUNCTION social.profile_id(p_handle text)
RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v bigint;
BEGIN
    SELECT p.id INTO v FROM social.profiles p WHERE p.handle = lower(p_handle);
    IF v IS NULL THEN
        RAISE EXCEPTION 'profile "%" not found', left(coalesce(p_handle, '(null)'), 40)
            USING ERRCODE = 'PT404', HINT = 'Check the handle (letters, digits and _; case does not matter).';
    END IF;
    RETURN v;
END
$$;
COMMENT ON FUNCTION social.profile_id(text) IS 'Profile id of a handle; PT404 when there is none.';

/* ---------- visibility: the one predicate ---------- */

CREATE FUNCTION social.blocked_between(a bigint, b bigint)
RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (SELECT 1 FROM social.blocks k
                    WHERE (k.blocker_id = a AND k.blocked_id = b) OR (k.blocker_id = b AND k.blocked_id = a))
$$;
COMMENT ON FUNCTION social.blocked_between(bigint, bigint) IS 'Has either profile blocked the other?';

/*
 * May viewer (NULL: anonymous) see a post with these attributes?  Deleted:
 * nobody.  The author: always.  Anyone else: never across a block (either
 * direction); public: yes; followers: accepted followers and mentioned
 * profiles; mentioned: mentioned profiles.
 *
 * social.sees and social.can_see are plain SQL without SECURITY DEFINER or
 * SET on purpose: the planner inlines them into the feed queries (which run
 * as the definer, with a fixed search_path), so that a feed page costs a
 * few index probes per post, not a function call.  Row-level security uses
 * social.can_see_rls, a SECURITY DEFINER wrapper: the rule must see blocks
 * and follows that the reader's own row-level security hides.
 */
CREATE FUNCTION social.sees(p_viewer bigint, p_author bigint, p_visibility social.visibility,
                            p_post bigint, p_deleted_at timestamptz)
RETURNS boolean
LANGUAGE sql STABLE
AS $$
    SELECT p_deleted_at IS NULL
       AND (p_viewer IS NOT DISTINCT FROM p_author
            OR (p_viewer IS NULL AND p_visibility = 'public')
            OR (p_viewer IS NOT NULL
                AND NOT EXISTS (SELECT 1 FROM social.blocks k
                                 WHERE (k.blocker_id = p_viewer AND k.blocked_id = p_author)
                                    OR (k.blocker_id = p_author AND k.blocked_id = p_viewer))
                AND (p_visibility = 'public'
                     OR (p_visibility = 'followers'
                         AND EXISTS (SELECT 1 FROM social.follows f
                                      WHERE f.follower_id = p_viewer AND f.followee_id = p_author
                                        AND f.state = 'accepted'))
                     OR EXISTS (SELECT 1 FROM social.mentions m
                                 WHERE m.post_id = p_post AND m.profile_id = p_viewer))))
$$;
COMMENT ON FUNCTION social.sees(bigint, bigint, social.visibility, bigint, timestamptz) IS 'The visibility rule of one post row (deleted, blocks both ways, public/followers/mentioned). Inlined into feed queries.';

CREATE FUNCTION social.can_see(p_viewer bigint, p_author bigint, p_visibility social.visibility,
                               p_post bigint, p_deleted_at timestamptz, p_repost_of bigint)
RETURNS boolean
LANGUAGE sql STABLE
AS $$
    SELECT social.sees(p_viewer, p_author, p_visibility, p_post, p_deleted_at)
       AND (p_repost_of IS NULL
            OR EXISTS (SELECT 1 FROM social.posts o
                        WHERE o.id = p_repost_of
                          AND social.sees(p_viewer, o.author_id, o.visibility, o.id, o.deleted_at)))
$$;
COMMENT ON FUNCTION social.can_see(bigint, bigint, social.visibility, bigint, timestamptz, bigint) IS 'The visibility rule of a post, a repost being visible only with its original: used by every feed (inlined) and, through can_see_rls, by row-level security.';

CREATE FUNCTION social.can_see_rls(p_viewer bigint, p_author bigint, p_visibility social.visibility,
                                   p_post bigint, p_deleted_at timestamptz, p_repost_of bigint)
RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT social.can_see(p_viewer, p_author, p_visibility, p_post, p_deleted_at, p_repost_of) $$;
COMMENT ON FUNCTION social.can_see_rls(bigint, bigint, social.visibility, bigint, timestamptz, bigint) IS 'social.can_see for row-level security policies (as definer: the rule reads blocks and follows the reader cannot).';

CREATE FUNCTION social.can_see_post(p_viewer bigint, p_post bigint)
RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce((SELECT social.can_see(p_viewer, p.author_id, p.visibility, p.id, p.deleted_at, p.repost_of_id)
                       FROM social.posts p WHERE p.id = p_post), false)
$$;
COMMENT ON FUNCTION social.can_see_post(bigint, bigint) IS 'May the viewer see this post (false when it does not exist)?';

/* The post, or PT404 when it does not exist or the actor may not see it. */
CREATE FUNCTION social.visible_post(p_viewer bigint, p_post bigint)
RETURNS social.posts
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r social.posts;
BEGIN
    SELECT * INTO r FROM social.posts p WHERE p.id = p_post;
    IF r.id IS NULL OR NOT social.can_see(p_viewer, r.author_id, r.visibility, r.id, r.deleted_at, r.repost_of_id) THEN
        RAISE EXCEPTION 'post % not found', p_post
            USING ERRCODE = 'PT404', HINT = 'The post does not exist, was deleted, or is not visible to you.';
    END IF;
    RETURN r;
END
$$;
COMMENT ON FUNCTION social.visible_post(bigint, bigint) IS 'The post if the viewer may see it, else PT404 (the same answer for missing and hidden posts).';

/* ---------- domain events ---------- */

CREATE FUNCTION social.emit(p_type text, p_aggregate text, p_payload jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_type IS NULL OR p_aggregate IS NULL OR p_payload IS NULL THEN
        RAISE EXCEPTION 'a domain event needs a type, an aggregate and a payload'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass all three arguments of social.emit(type, aggregate, payload).';
    END IF;
    INSERT INTO social.outbox (type, version, aggregate, payload, actor)
    VALUES (p_type, 1, p_aggregate, p_payload, bv.actor());
END
$$;
COMMENT ON FUNCTION social.emit(text, text, jsonb) IS 'Writes a domain event (schema version 1) to the outbox, in the caller''s transaction.';

/* ---------- counters, fan-out enqueue and events: triggers ---------- */

/* Locks two profiles in id order (crossing follows or blocks cannot deadlock). */
CREATE FUNCTION social.lock_profiles(a bigint, b bigint)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ SELECT NULL::void FROM (SELECT 1 FROM social.profiles p WHERE p.id IN (a, b) ORDER BY p.id FOR UPDATE) l $$;
COMMENT ON FUNCTION social.lock_profiles(bigint, bigint) IS 'Row-locks two profiles in id order.';

CREATE FUNCTION social.post_before_insert()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_followers bigint;
BEGIN
    IF NEW.reply_to_id IS NOT NULL THEN
        SELECT p.root_id INTO NEW.root_id FROM social.posts p WHERE p.id = NEW.reply_to_id;
    END IF;
    NEW.root_id := coalesce(NEW.root_id, NEW.id);
    SELECT p.followers_count INTO v_followers FROM social.profiles p WHERE p.id = NEW.author_id;
    NEW.delivery := CASE WHEN v_followers < social.setting('fanout_threshold') THEN 'p' ELSE 'r' END;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION social.post_before_insert() IS 'Trigger: thread root, and the delivery mode (push below the fan-out threshold, read-time merge above).';
CREATE TRIGGER post_before_insert BEFORE INSERT ON social.posts
    FOR EACH ROW EXECUTE FUNCTION social.post_before_insert();

CREATE FUNCTION social.post_after_insert()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE social.profiles SET posts_count = posts_count + 1,
                               has_pull_posts = has_pull_posts OR NEW.delivery = 'r'
     WHERE id = NEW.author_id;
    IF NEW.reply_to_id IS NOT NULL THEN
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
COMMENT ON FUNCTION social.post_after_insert() IS 'Trigger: counters (author posts, parent replies, reposts), fan-out enqueue, post.created event.';
CREATE TRIGGER post_after_insert AFTER INSERT ON social.posts
    FOR EACH ROW EXECUTE FUNCTION social.post_after_insert();

CREATE FUNCTION social.post_after_update()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL THEN
        UPDATE social.profiles SET posts_count = posts_count - 1 WHERE id = NEW.author_id;
        IF NEW.reply_to_id IS NOT NULL THEN
            UPDATE social.posts SET replies_count = replies_count - 1 WHERE id = NEW.reply_to_id;
        END IF;
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
COMMENT ON FUNCTION social.post_after_update() IS 'Trigger: counters and post.deleted on delete; post.visibility_changed.';
CREATE TRIGGER post_after_update AFTER UPDATE OF deleted_at, visibility ON social.posts
    FOR EACH ROW EXECUTE FUNCTION social.post_after_update();

CREATE FUNCTION social.follow_changed()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    was boolean := TG_OP <> 'INSERT' AND OLD.state = 'accepted';
    now_ boolean := TG_OP <> 'DELETE' AND NEW.state = 'accepted';
    r record;
    delta integer;
BEGIN
    r := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    delta := now_::integer - was::integer;
    IF delta <> 0 THEN
        PERFORM social.lock_profiles(r.follower_id, r.followee_id);
        UPDATE social.profiles SET followers_count = followers_count + delta WHERE id = r.followee_id;
        UPDATE social.profiles SET following_count = following_count + delta WHERE id = r.follower_id;
    END IF;
    IF now_ AND NOT was THEN
        INSERT INTO social.fanout_queue (kind, author_id, follower_id) VALUES ('b', r.followee_id, r.follower_id);
        PERFORM social.emit('follow.created', 'profile:' || r.followee_id,
                            jsonb_build_object('follower_id', r.follower_id, 'followee_id', r.followee_id));
    ELSIF was AND NOT now_ THEN
        PERFORM social.emit('follow.deleted', 'profile:' || r.followee_id,
                            jsonb_build_object('follower_id', r.follower_id, 'followee_id', r.followee_id,
                                               'reason', coalesce(nullif(current_setting('social.follow_end_reason', true), ''), 'unfollow')));
    ELSIF TG_OP = 'INSERT' AND NOT now_ THEN
        PERFORM social.emit('follow.requested', 'profile:' || r.followee_id,
                            jsonb_build_object('follower_id', r.follower_id, 'followee_id', r.followee_id));
    ELSIF TG_OP = 'DELETE' AND NOT was THEN
        PERFORM social.emit('follow.request_removed', 'profile:' || r.followee_id,
                            jsonb_build_object('follower_id', r.follower_id, 'followee_id', r.followee_id));
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION social.follow_changed() IS 'Trigger: follower/following counters (exact: one locked increment per accepted follow), timeline backfill job, follow.* events.';
CREATE TRIGGER follow_changed AFTER INSERT OR UPDATE OF state OR DELETE ON social.follows
    FOR EACH ROW EXECUTE FUNCTION social.follow_changed();

CREATE FUNCTION social.like_changed()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE social.posts SET likes_count = likes_count + 1 WHERE id = NEW.post_id;
        PERFORM social.emit('like.created', 'post:' || NEW.post_id,
                            jsonb_build_object('post_id', NEW.post_id, 'profile_id', NEW.profile_id));
    ELSE
        UPDATE social.posts SET likes_count = likes_count - 1 WHERE id = OLD.post_id;
        PERFORM social.emit('like.deleted', 'post:' || OLD.post_id,
                            jsonb_build_object('post_id', OLD.post_id, 'profile_id', OLD.profile_id));
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION social.like_changed() IS 'Trigger: posts.likes_count and like.* events.';
CREATE TRIGGER like_changed AFTER INSERT OR DELETE ON social.likes
    FOR EACH ROW EXECUTE FUNCTION social.like_changed();

CREATE FUNCTION social.block_changed()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM social.emit('block.created', 'profile:' || NEW.blocker_id,
                            jsonb_build_object('blocker_id', NEW.blocker_id, 'blocked_id', NEW.blocked_id));
    ELSE
        PERFORM social.emit('block.deleted', 'profile:' || OLD.blocker_id,
                            jsonb_build_object('blocker_id', OLD.blocker_id, 'blocked_id', OLD.blocked_id));
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION social.block_changed() IS 'Trigger: block.* events.';
CREATE TRIGGER block_changed AFTER INSERT OR DELETE ON social.blocks
    FOR EACH ROW EXECUTE FUNCTION social.block_changed();

CREATE FUNCTION social.profile_created()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM social.emit('profile.created', 'profile:' || NEW.id,
                        jsonb_build_object('profile_id', NEW.id, 'handle', NEW.handle, 'locked', NEW.locked));
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION social.profile_created() IS 'Trigger: profile.created event.';
CREATE TRIGGER profile_created AFTER INSERT ON social.profiles
    FOR EACH ROW EXECUTE FUNCTION social.profile_created();

/* ---------- timelines: rebuild and activity ---------- */

/*
 * Rebuilds a home timeline from the base tables: the most recent pushed
 * posts of the accounts the user follows (posts merged at read time are not
 * stored).  Marks the timeline active, so fan-out delivers to it again.
 * Posts committed while this runs are in the queue and reach it through the
 * drain (which now sees it active) or through the read-time merge.
 */
CREATE FUNCTION social.rebuild_timeline(p_user bigint)
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
     LIMIT cap
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION social.rebuild_timeline(bigint) IS 'Rebuilds a user''s materialised home timeline from the base tables and marks it active; returns the entries written.';

/* Records activity; a user back after inactivity gets the timeline rebuilt. */
CREATE FUNCTION social.touch(p_user bigint)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    active boolean;
BEGIN
    SELECT p.timeline_active INTO active FROM social.profiles p WHERE p.id = p_user;
    IF NOT active THEN
        PERFORM social.rebuild_timeline(p_user);
    ELSE
        -- at most one write per user and hour
        UPDATE social.profiles SET last_seen_at = now()
         WHERE id = p_user AND last_seen_at < now() - interval '1 hour';
    END IF;
END
$$;
COMMENT ON FUNCTION social.touch(bigint) IS 'Marks the user active (hourly resolution); rebuilds a dropped timeline.';

/* ---------- domain functions: profiles ---------- */

CREATE FUNCTION social.create_profile(p_handle text, p_display_name text DEFAULT '', p_locked boolean DEFAULT false)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    u text := bv.current_user_id();
    h text := lower(p_handle);
    r social.profiles;
BEGIN
    IF u IS NULL THEN
        RAISE EXCEPTION 'authentication required'
            USING ERRCODE = 'PT401', HINT = 'Send a bearer token whose sub names the user.';
    END IF;
    IF h IS NULL OR h !~ '^[a-z0-9_]{1,30}$' THEN
        RAISE EXCEPTION 'invalid handle'
            USING ERRCODE = '22023', HINT = 'A handle has 1 to 30 letters a-z, digits or underscores.';
    END IF;
    IF char_length(coalesce(p_display_name, '')) > 100 THEN
        RAISE EXCEPTION 'display name too long'
            USING ERRCODE = '22023', HINT = 'Use at most 100 characters.';
    END IF;
    IF EXISTS (SELECT 1 FROM social.profiles p WHERE p.user_ref = u) THEN
        RAISE EXCEPTION 'you already have a profile'
            USING ERRCODE = 'PT409', HINT = 'Change it with api.update_profile().';
    END IF;
    INSERT INTO social.profiles (user_ref, handle, display_name, locked)
    VALUES (u, h, coalesce(p_display_name, ''), coalesce(p_locked, false))
    ON CONFLICT DO NOTHING
    RETURNING * INTO r;
    IF r.id IS NULL THEN
        RAISE EXCEPTION 'handle "%" is taken', h
            USING ERRCODE = 'PT409', HINT = 'Choose another handle.';
    END IF;
    RETURN jsonb_build_object('id', r.id, 'handle', r.handle, 'locked', r.locked);
END
$$;
COMMENT ON FUNCTION social.create_profile(text, text, boolean) IS 'Creates the acting user''s profile; PT409 if the handle is taken or the user has one.';

CREATE FUNCTION social.update_profile(p_display_name text DEFAULT NULL, p_bio text DEFAULT NULL, p_locked boolean DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me bigint := social.actor_profile();
    r social.profiles;
BEGIN
    IF char_length(p_display_name) > 100 OR char_length(p_bio) > 500 THEN
        RAISE EXCEPTION 'profile field too long'
            USING ERRCODE = '22023', HINT = 'A display name has at most 100 characters, a bio at most 500.';
    END IF;
    -- Unlocking accepts requests: lock every profile involved, in id order.
    PERFORM 1 FROM social.profiles p
     WHERE p.id = me OR (p_locked IS FALSE AND p.id IN (SELECT f.follower_id FROM social.follows f
                                                        WHERE f.followee_id = me AND f.state = 'pending'))
     ORDER BY p.id FOR UPDATE;
    UPDATE social.profiles SET display_name = coalesce(p_display_name, display_name),
                               bio = coalesce(p_bio, bio), locked = coalesce(p_locked, locked)
     WHERE id = me RETURNING * INTO r;
    -- Unlocking accepts the pending requests (as Mastodon does).
    IF NOT r.locked THEN
        UPDATE social.follows SET state = 'accepted' WHERE followee_id = me AND state = 'pending';
    END IF;
    PERFORM social.touch(me);
    RETURN jsonb_build_object('id', r.id, 'handle', r.handle, 'display_name', r.display_name,
                              'bio', r.bio, 'locked', r.locked);
END
$$;
COMMENT ON FUNCTION social.update_profile(text, text, boolean) IS 'Changes the acting user''s display name, bio or locked flag (unlocking accepts pending follow requests).';

/* ---------- domain functions: posts ---------- */

CREATE FUNCTION social.parse_visibility(p text)
RETURNS social.visibility
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p IS NULL OR p NOT IN ('public', 'followers', 'mentioned') THEN
        RAISE EXCEPTION 'invalid visibility "%"', left(coalesce(p, '(null)'), 20)
            USING ERRCODE = '22023', HINT = 'Use public, followers or mentioned.';
    END IF;
    RETURN p::social.visibility;
END
$$;
COMMENT ON FUNCTION social.parse_visibility(text) IS 'Text to social.visibility, 22023 with the allowed values otherwise.';

CREATE FUNCTION social.check_media(p jsonb)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m jsonb;
BEGIN
    IF p IS NULL THEN
        RETURN '[]';
    END IF;
    IF jsonb_typeof(p) <> 'array' OR jsonb_array_length(p) > 4 THEN
        RAISE EXCEPTION 'invalid media'
            USING ERRCODE = '22023', HINT = 'Pass at most 4 media as [{"url": "https://...", "kind": "image"}].';
    END IF;
    FOR m IN SELECT value FROM jsonb_array_elements(p) LOOP
        IF jsonb_typeof(m) <> 'object' OR jsonb_typeof(m->'url') IS DISTINCT FROM 'string'
           OR (m->>'url') !~ '^https?://[^[:space:][:cntrl:]]+$' OR char_length(m->>'url') > 2000
           OR coalesce(m->>'kind', 'image') NOT IN ('image', 'video', 'audio')
           OR char_length(coalesce(m->>'alt', '')) > 1500
           OR EXISTS (SELECT 1 FROM jsonb_object_keys(m) k WHERE k NOT IN ('url', 'kind', 'alt')) THEN
            RAISE EXCEPTION 'invalid media reference'
                USING ERRCODE = '22023',
                      HINT = 'Each medium is {"url": "http(s)://..." (at most 2000 characters), "kind": "image|video|audio", "alt": "..."}.';
        END IF;
    END LOOP;
    RETURN p;
END
$$;
COMMENT ON FUNCTION social.check_media(jsonb) IS 'Validates media references (at most 4 {url, kind, alt}); 22023 otherwise.';

CREATE FUNCTION social.post_json(p social.posts)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object('id', p.id, 'author_id', p.author_id, 'body', p.body,
                              'visibility', p.visibility, 'reply_to_id', p.reply_to_id,
                              'root_id', p.root_id, 'quote_of_id', p.quote_of_id,
                              'repost_of_id', p.repost_of_id, 'media', p.media, 'posted_at', p.posted_at)
$$;
COMMENT ON FUNCTION social.post_json(social.posts) IS 'A post as the API returns it.';

CREATE FUNCTION social.create_post(p_body text, p_visibility text DEFAULT 'public', p_reply_to bigint DEFAULT NULL,
                                   p_quote_of bigint DEFAULT NULL, p_media jsonb DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me bigint := social.actor_profile();
    v_vis social.visibility := social.parse_visibility(coalesce(p_visibility, 'public'));
    v_media jsonb := social.check_media(p_media);
    v_body text := coalesce(p_body, '');
    v_target social.posts;
    r social.posts;
    v_tags text[];
BEGIN
    IF char_length(v_body) > 500 THEN
        RAISE EXCEPTION 'post too long'
            USING ERRCODE = '22023', DETAIL = format('The post has %s characters.', char_length(v_body)),
                  HINT = 'A post has at most 500 characters.';
    END IF;
    IF btrim(v_body, E' \t\r\n') = '' AND jsonb_array_length(v_media) = 0 THEN
        RAISE EXCEPTION 'empty post'
            USING ERRCODE = '22023', HINT = 'Write some text or attach media.';
    END IF;
    IF p_reply_to IS NOT NULL THEN
        v_target := social.visible_post(me, p_reply_to);
        IF v_target.repost_of_id IS NOT NULL THEN
            RAISE EXCEPTION 'cannot reply to a repost'
                USING ERRCODE = '22023', HINT = format('Reply to the reposted post, %s.', v_target.repost_of_id);
        END IF;
    END IF;
    IF p_quote_of IS NOT NULL THEN
        v_target := social.visible_post(me, p_quote_of);
        IF v_target.visibility <> 'public' OR v_target.repost_of_id IS NOT NULL THEN
            RAISE EXCEPTION 'only public posts can be quoted'
                USING ERRCODE = '22023', HINT = 'Quote a public post (not a repost) or link to it instead.';
        END IF;
    END IF;
    SELECT array_agg(DISTINCT lower(m[1])) INTO v_tags
      FROM regexp_matches(v_body, '(?:^|[^[:alnum:]_&/])#([[:alnum:]_]{1,100})', 'g') m;
    IF cardinality(v_tags) > 10 THEN
        RAISE EXCEPTION 'too many hashtags'
            USING ERRCODE = '22023', HINT = 'Use at most 10 distinct hashtags in a post.';
    END IF;
    INSERT INTO social.posts (author_id, body, visibility, reply_to_id, quote_of_id, media)
    VALUES (me, v_body, v_vis, p_reply_to, p_quote_of, v_media)
    RETURNING * INTO r;
    INSERT INTO social.mentions (post_id, profile_id)
    SELECT DISTINCT r.id, pr.id
      FROM regexp_matches(v_body, '(?:^|[^[:alnum:]_@])@([A-Za-z0-9_]{1,30})', 'g') m
      JOIN social.profiles pr ON pr.handle = lower(m[1])
     WHERE pr.id <> me;
    INSERT INTO social.post_tags (tag, post_id) SELECT t, r.id FROM unnest(v_tags) t;
    PERFORM social.touch(me);
    RETURN social.post_json(r);
END
$$;
COMMENT ON FUNCTION social.create_post(text, text, bigint, bigint, jsonb) IS 'Posts as the acting user: text (at most 500 characters; @handles become mentions, #tags hashtags), visibility, optionally a reply or a quote, media references.';

CREATE FUNCTION social.repost(p_post bigint)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me bigint := social.actor_profile();
    v_target social.posts := social.visible_post(me, p_post);
    r social.posts;
BEGIN
    IF v_target.repost_of_id IS NOT NULL THEN
        v_target := social.visible_post(me, v_target.repost_of_id);
    END IF;
    IF v_target.visibility <> 'public' THEN
        RAISE EXCEPTION 'only public posts can be reposted'
            USING ERRCODE = '22023', HINT = 'Followers-only and mentioned-only posts stay with their audience.';
    END IF;
    INSERT INTO social.posts (author_id, repost_of_id, visibility)
    VALUES (me, v_target.id, 'public')
    ON CONFLICT (author_id, repost_of_id) WHERE repost_of_id IS NOT NULL AND deleted_at IS NULL DO NOTHING
    RETURNING * INTO r;
    IF r.id IS NULL THEN   -- reposted before: the same answer again
        SELECT * INTO r FROM social.posts p
         WHERE p.author_id = me AND p.repost_of_id = v_target.id AND p.deleted_at IS NULL;
    END IF;
    PERFORM social.touch(me);
    RETURN social.post_json(r);
END
$$;
COMMENT ON FUNCTION social.repost(bigint) IS 'Reposts a public post (a repost of a repost reposts the original); reposting twice returns the first repost.';

/* The acting user's own post, locked; PT404 if not visible, PT403 if not theirs. */
CREATE FUNCTION social.own_post(p_me bigint, p_post bigint)
RETURNS social.posts
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r social.posts := social.visible_post(p_me, p_post);
BEGIN
    IF r.author_id <> p_me THEN
        RAISE EXCEPTION 'post % is not yours', p_post
            USING ERRCODE = 'PT403', HINT = 'Only the author can change or delete a post.';
    END IF;
    SELECT * INTO r FROM social.posts p WHERE p.id = p_post FOR UPDATE;
    IF r.deleted_at IS NOT NULL THEN
        RAISE EXCEPTION 'post % not found', p_post
            USING ERRCODE = 'PT404', HINT = 'The post does not exist, was deleted, or is not visible to you.';
    END IF;
    RETURN r;
END
$$;
COMMENT ON FUNCTION social.own_post(bigint, bigint) IS 'Locks the acting user''s own live post; PT404/PT403 otherwise.';

CREATE FUNCTION social.delete_post(p_post bigint)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me bigint := social.actor_profile();
    r social.posts := social.own_post(me, p_post);
BEGIN
    UPDATE social.posts SET deleted_at = now(), body = '', media = '[]' WHERE id = r.id;
    DELETE FROM social.post_tags WHERE post_id = r.id;
    PERFORM social.touch(me);
    RETURN jsonb_build_object('id', r.id, 'deleted', true);
END
$$;
COMMENT ON FUNCTION social.delete_post(bigint) IS 'Deletes the acting user''s post (its text and media are erased at once; the row stays as a thread placeholder).';

CREATE FUNCTION social.set_visibility(p_post bigint, p_visibility text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me bigint := social.actor_profile();
    v social.visibility := social.parse_visibility(p_visibility);
    r social.posts := social.own_post(me, p_post);
BEGIN
    IF r.repost_of_id IS NOT NULL THEN
        RAISE EXCEPTION 'a repost has no visibility of its own'
            USING ERRCODE = '22023', HINT = 'Delete the repost instead.';
    END IF;
    UPDATE social.posts SET visibility = v WHERE id = r.id RETURNING * INTO r;
    PERFORM social.touch(me);
    RETURN social.post_json(r);
END
$$;
COMMENT ON FUNCTION social.set_visibility(bigint, text) IS 'Changes the visibility of the acting user''s post; every feed applies it at once.';

/* ---------- likes and bookmarks ---------- */

CREATE FUNCTION social.like_post(p_post bigint)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me bigint := social.actor_profile();
    r social.posts := social.visible_post(me, p_post);
BEGIN
    INSERT INTO social.likes (profile_id, post_id) VALUES (me, r.id) ON CONFLICT DO NOTHING;
    PERFORM social.touch(me);
    RETURN jsonb_build_object('post_id', r.id, 'liked', true,
                              'likes_count', (SELECT p.likes_count FROM social.posts p WHERE p.id = r.id));
END
$$;
COMMENT ON FUNCTION social.like_post(bigint) IS 'Likes a post the acting user can see (idempotent).';

CREATE FUNCTION social.unlike_post(p_post bigint)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me bigint := social.actor_profile();
BEGIN
    DELETE FROM social.likes WHERE profile_id = me AND post_id = p_post;
    RETURN jsonb_build_object('post_id', p_post, 'liked', false);
END
$$;
COMMENT ON FUNCTION social.unlike_post(bigint) IS 'Takes back a like (idempotent).';

CREATE FUNCTION social.bookmark(p_post bigint, p_on boolean DEFAULT true)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me bigint := social.actor_profile();
BEGIN
    IF coalesce(p_on, true) THEN
        PERFORM social.visible_post(me, p_post);
        INSERT INTO social.bookmarks (profile_id, post_id) VALUES (me, p_post) ON CONFLICT DO NOTHING;
    ELSE
        DELETE FROM social.bookmarks WHERE profile_id = me AND post_id = p_post;
    END IF;
    RETURN jsonb_build_object('post_id', p_post, 'bookmarked', coalesce(p_on, true));
END
$$;
COMMENT ON FUNCTION social.bookmark(bigint, boolean) IS 'Bookmarks (or, with false, un-bookmarks) a post the acting user can see.';

/* ---------- the graph ---------- */

CREATE FUNCTION social.follow(p_handle text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me bigint := social.actor_profile();
    target bigint := social.profile_id(p_handle);
    v_state social.follow_state;
BEGIN
    IF target = me THEN
        RAISE EXCEPTION 'you cannot follow yourself'
            USING ERRCODE = '22023', HINT = 'Your own posts are always in your home timeline.';
    END IF;
    PERFORM social.lock_profiles(me, target);   -- serialises with a concurrent block
    IF social.blocked_between(me, target) THEN
        RAISE EXCEPTION 'you cannot follow this account'
            USING ERRCODE = 'PT403', HINT = 'One of you has blocked the other.';
    END IF;
    INSERT INTO social.follows (follower_id, followee_id, state)
    SELECT me, target, CASE WHEN p.locked THEN 'pending' ELSE 'accepted' END::social.follow_state
      FROM social.profiles p WHERE p.id = target
    ON CONFLICT DO NOTHING;
    SELECT f.state INTO v_state FROM social.follows f WHERE f.follower_id = me AND f.followee_id = target;
    PERFORM social.touch(me);
    RETURN jsonb_build_object('followee_id', target, 'state', v_state);
END
$$;
COMMENT ON FUNCTION social.follow(text) IS 'Follows an account: accepted at once, or pending until a locked account approves. PT403 across a block. Idempotent.';

CREATE FUNCTION social.unfollow(p_handle text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me bigint := social.actor_profile();
    target bigint := social.profile_id(p_handle);
BEGIN
    PERFORM social.lock_profiles(me, target);   -- profiles before follows, as everywhere
    DELETE FROM social.follows WHERE follower_id = me AND followee_id = target;
    RETURN jsonb_build_object('followee_id', target, 'state', NULL);
END
$$;
COMMENT ON FUNCTION social.unfollow(text) IS 'Stops following (or withdraws a request); the author''s posts leave the home timeline at once. Idempotent.';

CREATE FUNCTION social.answer_follow(p_handle text, p_approve boolean)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me bigint := social.actor_profile();
    who bigint := social.profile_id(p_handle);
BEGIN
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
COMMENT ON FUNCTION social.answer_follow(text, boolean) IS 'Approves (true) or rejects (false) a pending follow request to the acting user.';

CREATE FUNCTION social.remove_follower(p_handle text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me bigint := social.actor_profile();
    who bigint := social.profile_id(p_handle);
BEGIN
    PERFORM social.lock_profiles(me, who);
    PERFORM pg_catalog.set_config('social.follow_end_reason', 'removed', true);
    DELETE FROM social.follows WHERE follower_id = who AND followee_id = me;
    PERFORM pg_catalog.set_config('social.follow_end_reason', '', true);
    RETURN jsonb_build_object('follower_id', who, 'removed', true);
END
$$;
COMMENT ON FUNCTION social.remove_follower(text) IS 'Removes a follower of the acting user (idempotent).';

CREATE FUNCTION social.block(p_handle text, p_on boolean DEFAULT true)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me bigint := social.actor_profile();
    who bigint := social.profile_id(p_handle);
BEGIN
    IF who = me THEN
        RAISE EXCEPTION 'you cannot block yourself' USING ERRCODE = '22023', HINT = 'Name another account.';
    END IF;
    PERFORM social.lock_profiles(me, who);
    IF coalesce(p_on, true) THEN
        INSERT INTO social.blocks (blocker_id, blocked_id) VALUES (me, who) ON CONFLICT DO NOTHING;
        PERFORM pg_catalog.set_config('social.follow_end_reason', 'block', true);
        DELETE FROM social.follows
         WHERE (follower_id = me AND followee_id = who) OR (follower_id = who AND followee_id = me);
        PERFORM pg_catalog.set_config('social.follow_end_reason', '', true);
    ELSE
        DELETE FROM social.blocks WHERE blocker_id = me AND blocked_id = who;
    END IF;
    PERFORM social.touch(me);
    RETURN jsonb_build_object('profile_id', who, 'blocked', coalesce(p_on, true));
END
$$;
COMMENT ON FUNCTION social.block(text, boolean) IS 'Blocks (or, with false, unblocks) an account: follows both ways end, and neither sees the other''s posts by any path.';

CREATE FUNCTION social.mute(p_handle text, p_on boolean DEFAULT true)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me bigint := social.actor_profile();
    who bigint := social.profile_id(p_handle);
BEGIN
    IF who = me THEN
        RAISE EXCEPTION 'you cannot mute yourself' USING ERRCODE = '22023', HINT = 'Name another account.';
    END IF;
    IF coalesce(p_on, true) THEN
        INSERT INTO social.mutes (muter_id, muted_id) VALUES (me, who) ON CONFLICT DO NOTHING;
    ELSE
        DELETE FROM social.mutes WHERE muter_id = me AND muted_id = who;
    END IF;
    RETURN jsonb_build_object('profile_id', who, 'muted', coalesce(p_on, true));
END
$$;
COMMENT ON FUNCTION social.mute(text, boolean) IS 'Mutes (or, with false, unmutes) an account: its posts leave the acting user''s home and hashtag feeds.';

/* ---------- feeds ---------- */

CREATE TYPE social.feed_item AS (
    id            bigint,
    author_id     bigint,
    author_handle text,
    body          text,
    visibility    social.visibility,
    reply_to_id   bigint,
    root_id       bigint,
    quote_of_id   bigint,
    repost_of_id  bigint,
    media         jsonb,
    posted_at     timestamptz,
    likes_count   bigint,
    replies_count bigint,
    reposts_count bigint
);
COMMENT ON TYPE social.feed_item IS 'A post in a feed. Keyset pagination: pass the last item''s id as "before" (as "after" in a thread) to get the next page.';

CREATE FUNCTION social.check_limit(p_limit integer)
RETURNS integer
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'invalid page size'
            USING ERRCODE = '22023', HINT = 'Ask for 1 to 100 items per page.';
    END IF;
    RETURN p_limit;
END
$$;
COMMENT ON FUNCTION social.check_limit(integer) IS 'Validates a page size (1 to 100).';

/* Mutes: neither the author nor, for a repost, the reposted author is muted.
 * Plain SQL, inlined into the feed queries (see social.sees). */
CREATE FUNCTION social.not_muted(p_viewer bigint, p_author bigint, p_repost_of bigint)
RETURNS boolean
LANGUAGE sql STABLE
AS $$
    SELECT p_viewer IS NULL
        OR NOT EXISTS (SELECT 1 FROM social.mutes m
                        WHERE m.muter_id = p_viewer
                          AND (m.muted_id = p_author
                               OR m.muted_id = (SELECT o.author_id FROM social.posts o WHERE o.id = p_repost_of)))
$$;
COMMENT ON FUNCTION social.not_muted(bigint, bigint, bigint) IS 'Neither the post''s author nor, for a repost, the reposted author is muted by the viewer.';

/* The quoted post's id when the viewer may see it, else NULL (inlined). */
CREATE FUNCTION social.visible_quote(p_viewer bigint, p_quote_of bigint)
RETURNS bigint
LANGUAGE sql STABLE
AS $$
    SELECT q.id FROM social.posts q
     WHERE q.id = p_quote_of
       AND social.can_see(p_viewer, q.author_id, q.visibility, q.id, q.deleted_at, q.repost_of_id)
$$;
COMMENT ON FUNCTION social.visible_quote(bigint, bigint) IS 'A quoted post is referenced in a feed item only when the viewer may see it.';

/*
 * The feed items among some post ids that the viewer may see, with the
 * home filters on request (mutes; only the viewer's and followees' posts).
 * The same rule as social.can_see, written as one set-oriented query: a
 * set-returning SQL function is inlined into the caller's plan (a scalar
 * one with subqueries is not), so a page costs index probes, not function
 * calls.  tests/tap/bv_social_model.pl checks that both agree.
 */
CREATE FUNCTION social.visible_items(p_viewer bigint, p_ids bigint[], p_home boolean DEFAULT false)
RETURNS SETOF social.feed_item
LANGUAGE sql STABLE
AS $$
    SELECT p.id, p.author_id, a.handle, p.body, p.visibility, p.reply_to_id, p.root_id,
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
COMMENT ON FUNCTION social.visible_items(bigint, bigint[], boolean) IS 'Feed items among the given post ids that the viewer may see (social.can_see''s rule, set-oriented and inlinable); p_home adds mutes and the follow filter.';

/*
 * The home timeline: the user's own posts and those of accepted followees,
 * newest first, visible to the user, without muted authors.  Candidates
 * come from five sources, each read newest first from an index:
 *   1. the materialised timeline (posts pushed by the drain);
 *   2. posts of followed large authors (delivery r), merged at read time;
 *   3. the user's own posts;
 *   4. pushed posts of followees still waiting in the fan-out queue;
 *   5. for follows whose backfill is still queued, the followee's posts.
 * A dropped (inactive) timeline is replaced by all followees' posts.  Every
 * candidate is checked against the base tables (social.can_see, follows,
 * mutes), so deletes, blocks, visibility and unfollows apply at once.  The
 * top "batch" of the union of the sources' top "batch" is exact, so the
 * loop pages through candidates until the page is full.
 */
CREATE FUNCTION social.home(p_viewer bigint, p_before bigint DEFAULT NULL, p_limit integer DEFAULT 20)
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
                    (SELECT t.post_id AS id FROM social.timelines t
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
COMMENT ON FUNCTION social.home(bigint, bigint, integer) IS 'Home timeline of a profile, newest first, keyset-paginated by post id (before).';

CREATE FUNCTION social.author_feed(p_viewer bigint, p_author bigint, p_before bigint DEFAULT NULL, p_limit integer DEFAULT 20)
RETURNS SETOF social.feed_item
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p.id, p.author_id, a.handle, p.body, p.visibility, p.reply_to_id, p.root_id,
                   social.visible_quote(p_viewer, p.quote_of_id), p.repost_of_id, p.media, p.posted_at,
                   p.likes_count, p.replies_count, p.reposts_count
      FROM social.posts p JOIN social.profiles a ON a.id = p.author_id
     WHERE p.author_id = p_author AND p.id < coalesce(p_before, 9223372036854775807)
       AND social.can_see(p_viewer, p.author_id, p.visibility, p.id, p.deleted_at, p.repost_of_id)
     ORDER BY p.id DESC
     LIMIT social.check_limit(p_limit)
$$;
COMMENT ON FUNCTION social.author_feed(bigint, bigint, bigint, integer) IS 'Posts and reposts of one author that the viewer may see, newest first (keyset: before).';

CREATE FUNCTION social.hashtag_feed(p_viewer bigint, p_tag text, p_before bigint DEFAULT NULL, p_limit integer DEFAULT 20)
RETURNS SETOF social.feed_item
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p.id, p.author_id, a.handle, p.body, p.visibility, p.reply_to_id, p.root_id,
                   social.visible_quote(p_viewer, p.quote_of_id), p.repost_of_id, p.media, p.posted_at,
                   p.likes_count, p.replies_count, p.reposts_count
      FROM social.post_tags t
      JOIN social.posts p ON p.id = t.post_id
      JOIN social.profiles a ON a.id = p.author_id
     WHERE t.tag = lower(ltrim(p_tag, '#')) AND t.post_id < coalesce(p_before, 9223372036854775807)
       AND social.can_see(p_viewer, p.author_id, p.visibility, p.id, p.deleted_at, p.repost_of_id)
       AND social.not_muted(p_viewer, p.author_id, p.repost_of_id)
     ORDER BY t.post_id DESC
     LIMIT social.check_limit(p_limit)
$$;
COMMENT ON FUNCTION social.hashtag_feed(bigint, text, bigint, integer) IS 'Posts with a hashtag that the viewer may see, without muted authors, newest first (keyset: before).';

CREATE FUNCTION social.thread(p_viewer bigint, p_post bigint, p_after bigint DEFAULT NULL, p_limit integer DEFAULT 50)
RETURNS SETOF social.feed_item
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lim integer := social.check_limit(p_limit);
    r social.posts := social.visible_post(p_viewer, p_post);
BEGIN
    RETURN QUERY
        SELECT p.id, p.author_id, a.handle, p.body, p.visibility, p.reply_to_id, p.root_id,
                   social.visible_quote(p_viewer, p.quote_of_id), p.repost_of_id, p.media, p.posted_at,
                   p.likes_count, p.replies_count, p.reposts_count
          FROM social.posts p JOIN social.profiles a ON a.id = p.author_id
         WHERE p.root_id = r.root_id AND p.id > coalesce(p_after, 0)
           AND social.can_see(p_viewer, p.author_id, p.visibility, p.id, p.deleted_at, p.repost_of_id)
         ORDER BY p.id
         LIMIT lim;
END
$$;
COMMENT ON FUNCTION social.thread(bigint, bigint, bigint, integer) IS 'The thread of a visible post: every post of its conversation the viewer may see, oldest first (keyset: after). PT404 when the post is not visible.';

CREATE FUNCTION social.search(p_viewer bigint, p_query text, p_before bigint DEFAULT NULL, p_limit integer DEFAULT 20)
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
        SELECT p.id, p.author_id, a.handle, p.body, p.visibility, p.reply_to_id, p.root_id,
                   social.visible_quote(p_viewer, p.quote_of_id), p.repost_of_id, p.media, p.posted_at,
                   p.likes_count, p.replies_count, p.reposts_count
          FROM social.posts p JOIN social.profiles a ON a.id = p.author_id
         WHERE to_tsvector('simple', p.body) @@ websearch_to_tsquery('simple', p_query)
           AND p.deleted_at IS NULL AND p.id < coalesce(p_before, 9223372036854775807)
           AND social.can_see(p_viewer, p.author_id, p.visibility, p.id, p.deleted_at, p.repost_of_id)
         ORDER BY p.id DESC
         LIMIT lim;
END
$$;
COMMENT ON FUNCTION social.search(bigint, text, bigint, integer) IS 'Full-text search (web-search syntax) over the posts the viewer may see, newest first (keyset: before).';

CREATE FUNCTION social.trending(p_after_rank integer DEFAULT 0, p_limit integer DEFAULT 10)
RETURNS SETOF social.trending_tags
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM social.trending_tags t WHERE t.rank > coalesce(p_after_rank, 0)
     ORDER BY t.rank LIMIT social.check_limit(p_limit)
$$;
COMMENT ON FUNCTION social.trending(integer, integer) IS 'Trending hashtags by rank (keyset: after_rank).';

CREATE FUNCTION social.follow_list(p_profile bigint, p_direction text, p_after bigint DEFAULT NULL, p_limit integer DEFAULT 40)
RETURNS TABLE (id bigint, handle text, display_name text)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lim integer := social.check_limit(p_limit);
BEGIN
    IF p_direction = 'followers' THEN
        RETURN QUERY SELECT pr.id, pr.handle, pr.display_name FROM social.follows f
          JOIN social.profiles pr ON pr.id = f.follower_id
         WHERE f.followee_id = p_profile AND f.state = 'accepted' AND f.follower_id > coalesce(p_after, 0)
         ORDER BY f.follower_id LIMIT lim;
    ELSIF p_direction = 'following' THEN
        RETURN QUERY SELECT pr.id, pr.handle, pr.display_name FROM social.follows f
          JOIN social.profiles pr ON pr.id = f.followee_id
         WHERE f.follower_id = p_profile AND f.state = 'accepted' AND f.followee_id > coalesce(p_after, 0)
         ORDER BY f.followee_id LIMIT lim;
    ELSIF p_direction = 'requests' THEN
        RETURN QUERY SELECT pr.id, pr.handle, pr.display_name FROM social.follows f
          JOIN social.profiles pr ON pr.id = f.follower_id
         WHERE f.followee_id = p_profile AND f.state = 'pending' AND f.follower_id > coalesce(p_after, 0)
         ORDER BY f.follower_id LIMIT lim;
    ELSE
        RAISE EXCEPTION 'invalid list "%"', left(coalesce(p_direction, '(null)'), 20)
            USING ERRCODE = '22023', HINT = 'Use followers, following or requests.';
    END IF;
END
$$;
COMMENT ON FUNCTION social.follow_list(bigint, text, bigint, integer) IS 'Followers, followees or pending requests of a profile, by profile id (keyset: after).';

/* ---------- fan-out and maintenance (off the writer's transaction) ---------- */

/*
 * Drains one batch of the fan-out queue: pushes each queued post to the
 * timelines of the author's accepted followers whose timeline is active,
 * and fills the timeline of each new follower with the author's recent
 * pushed posts.  SKIP LOCKED lets several drains run side by side.  A
 * follow committed after this drain's snapshot has its backfill job queued
 * behind the post, and that job sees the post, so nothing falls between.
 */
CREATE FUNCTION social.fanout_drain(p_batch integer DEFAULT NULL, OUT jobs bigint, OUT deliveries bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cap bigint := social.setting('timeline_cap');
    batch bigint := coalesce(p_batch, social.setting('fanout_batch'));
BEGIN
    IF batch < 1 THEN
        RAISE EXCEPTION 'invalid batch size' USING ERRCODE = '22023', HINT = 'Drain at least one job.';
    END IF;
    WITH taken AS (
        DELETE FROM social.fanout_queue q
         WHERE q.id IN (SELECT q2.id FROM social.fanout_queue q2 ORDER BY q2.id LIMIT batch FOR UPDATE SKIP LOCKED)
        RETURNING q.kind, q.author_id, q.post_id, q.follower_id),
    ins AS (
        INSERT INTO social.timelines (user_id, post_id, author_id)
        SELECT f.follower_id, j.post_id, j.author_id
          FROM taken j
          JOIN social.posts p ON p.id = j.post_id AND p.deleted_at IS NULL
          JOIN social.follows f ON f.followee_id = j.author_id AND f.state = 'accepted'
         WHERE j.kind = 'p'
           -- a hashed subplan, built once per batch: no probe per row
           AND f.follower_id NOT IN (SELECT u.id FROM social.profiles u WHERE NOT u.timeline_active)
        UNION ALL
        SELECT j.follower_id, x.id, x.author_id
          FROM taken j
          JOIN social.profiles u ON u.id = j.follower_id AND u.timeline_active
         CROSS JOIN LATERAL (SELECT x.id, x.author_id FROM social.posts x
                              WHERE x.author_id = j.author_id AND x.delivery = 'p' AND x.deleted_at IS NULL
                              ORDER BY x.id DESC LIMIT cap) x
         WHERE j.kind = 'b'
        ON CONFLICT DO NOTHING
        RETURNING 1)
    SELECT (SELECT count(*) FROM taken), (SELECT count(*) FROM ins) INTO jobs, deliveries;
END
$$;
COMMENT ON FUNCTION social.fanout_drain(integer) IS 'Drains one batch of social.fanout_queue into the timelines; returns the jobs taken and the timeline rows written.';

/*
 * The fan-out run that pg_cron starts every minute: drains batch after
 * batch until the queue is empty or p_seconds have passed.  pg_cron 1.4
 * schedules by the minute and, with cron.use_background_workers, cannot run
 * a procedure that commits, so one run is one transaction; p_seconds keeps
 * it short.  Readers never wait for it: what is still queued (or being
 * drained, uncommitted) is merged into home timelines at read time.
 */
CREATE FUNCTION social.fanout_run(p_seconds integer DEFAULT 20, OUT jobs bigint, OUT deliveries bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + make_interval(secs => p_seconds);
    r record;
BEGIN
    jobs := 0;
    deliveries := 0;
    LOOP
        SELECT * INTO r FROM social.fanout_drain();
        jobs := jobs + r.jobs;
        deliveries := deliveries + r.deliveries;
        EXIT WHEN r.jobs = 0 OR clock_timestamp() > deadline;
    END LOOP;
END
$$;
COMMENT ON FUNCTION social.fanout_run(integer) IS 'Drains the fan-out queue for at most p_seconds in one transaction (pg_cron, every minute); returns the jobs and timeline rows.';

CREATE FUNCTION social.trim_timelines(p_partition integer DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cap bigint := social.setting('timeline_cap');
    part regclass;
    n bigint;
    total bigint := 0;
BEGIN
    IF p_partition IS NOT NULL AND p_partition NOT BETWEEN 0 AND 7 THEN
        RAISE EXCEPTION 'invalid timeline partition %', p_partition
            USING ERRCODE = '22023', HINT = 'Partitions are numbered 0 to 7; pass NULL for all.';
    END IF;
    FOR part IN SELECT i.inhrelid::regclass FROM pg_catalog.pg_inherits i
                 WHERE i.inhparent = 'social.timelines'::regclass
                   AND (p_partition IS NULL OR i.inhrelid = format('social.timelines_p%s', p_partition)::regclass)
    LOOP
        EXECUTE format($q$
            WITH over AS (SELECT t.user_id FROM %1$s t GROUP BY t.user_id HAVING count(*) > $1),
                 cut AS (SELECT o.user_id,
                                (SELECT t.post_id FROM %1$s t WHERE t.user_id = o.user_id
                                  ORDER BY t.post_id DESC OFFSET $1 LIMIT 1) AS cutoff
                           FROM over o)
            DELETE FROM %1$s t USING cut WHERE t.user_id = cut.user_id AND t.post_id <= cut.cutoff$q$, part)
        USING cap;
        GET DIAGNOSTICS n = ROW_COUNT;
        total := total + n;
    END LOOP;
    RETURN total;
END
$$;
COMMENT ON FUNCTION social.trim_timelines(integer) IS 'Keeps the newest timeline_cap entries of each home timeline, in one hash partition (0-7) or all (NULL); pg_cron trims one partition a minute.';

CREATE FUNCTION social.drop_inactive_timelines()
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    WITH gone AS (
        UPDATE social.profiles SET timeline_active = false
         WHERE timeline_active AND last_seen_at < now() - make_interval(days => social.setting('inactive_days')::integer)
        RETURNING id)
    DELETE FROM social.timelines t USING gone WHERE t.user_id = gone.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION social.drop_inactive_timelines() IS 'Drops the home timelines of users not seen for inactive_days (they are read by merging until rebuilt on return); returns the entries removed.';

CREATE FUNCTION social.refresh_trending()
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
BEGIN
    DELETE FROM social.trending_tags;
    INSERT INTO social.trending_tags (rank, tag, uses, accounts)
    SELECT row_number() OVER (ORDER BY count(DISTINCT p.author_id) DESC, count(*) DESC, t.tag), t.tag,
           count(*), count(DISTINCT p.author_id)
      FROM social.post_tags t
      JOIN social.posts p ON p.id = t.post_id
      JOIN social.profiles a ON a.id = p.author_id AND p.visibility = 'public' AND p.deleted_at IS NULL
     WHERE t.tagged_at > now() - make_interval(hours => social.setting('trending_window_hours')::integer)
     GROUP BY t.tag
     ORDER BY count(DISTINCT p.author_id) DESC, count(*) DESC, t.tag
     LIMIT 100;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION social.refresh_trending() IS 'Recomputes the trending hashtags over the window (public live posts; ranked by distinct accounts, then uses); run every minute by pg_cron.';

CREATE FUNCTION social.purge_outbox()
RETURNS bigint
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH gone AS (DELETE FROM social.outbox
                   WHERE occurred_at < now() - make_interval(days => social.setting('outbox_retention_days')::integer)
                  RETURNING 1)
    SELECT count(*) FROM gone
$$;
COMMENT ON FUNCTION social.purge_outbox() IS 'Deletes outbox events older than outbox_retention_days (bv_cdc routes only inserts, so purges are not published).';

CREATE FUNCTION social.maintain()
RETURNS jsonb
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object('trimmed', social.trim_timelines(extract(minute FROM now())::integer % 8),
                              'dropped', social.drop_inactive_timelines(),
                              'trending', social.refresh_trending(),
                              'outbox_purged', social.purge_outbox())
$$;
COMMENT ON FUNCTION social.maintain() IS 'Periodic maintenance (pg_cron, every minute): trims and drops timelines, trending hashtags, outbox retention.';

CREATE FUNCTION social.schedule_jobs()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        RAISE NOTICE 'pg_cron is not installed in this database; social jobs are not scheduled'
            USING HINT = 'Install pg_cron in the database named by cron.database_name and call social.schedule_jobs().';
        RETURN;
    END IF;
    -- pg_cron 1.4 schedules by the minute (see social.fanout_run).
    PERFORM cron.schedule('social-fanout', '* * * * *', 'SELECT social.fanout_run(20)');
    PERFORM cron.schedule('social-maintenance', '* * * * *', 'SELECT social.maintain()');
END
$$;
COMMENT ON FUNCTION social.schedule_jobs() IS 'Schedules the fan-out worker and the maintenance with pg_cron (called at install when pg_cron is present).';

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        PERFORM social.schedule_jobs();
    END IF;
END
$$;

/* ---------- domain events to Kafka through bv_cdc ---------- */

CREATE FUNCTION social.route_events(p_sink text, p_topic text DEFAULT 'bv.social.events')
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    id bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'bv_cdc') THEN
        RAISE EXCEPTION 'bv_cdc is not installed'
            USING ERRCODE = '55000', HINT = 'CREATE EXTENSION bv_cdc, add a Kafka sink with bv_cdc.add_sink(), then call this again.';
    END IF;
    EXECUTE 'SELECT bv_cdc.add_route($1, $2, $3, NULL, NULL, $4)'
       INTO id USING 'social.outbox', p_sink, p_topic, ARRAY['c'];
    RETURN id;
END
$$;
COMMENT ON FUNCTION social.route_events(text, text) IS 'Streams the outbox''s new events to a bv_cdc sink (Kafka topic bv.social.events by default): one message per event, in commit order.';

/* ---------- row-level security ---------- */

CREATE FUNCTION social.is_staff()
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pg_catalog.pg_has_role(current_user, 'bv_service', 'MEMBER') $$;
COMMENT ON FUNCTION social.is_staff() IS 'RLS: is the reader staff (bv_service, bv_admin)?';

ALTER TABLE social.profiles ENABLE ROW LEVEL SECURITY;
ALTER TABLE social.posts ENABLE ROW LEVEL SECURITY;
ALTER TABLE social.mentions ENABLE ROW LEVEL SECURITY;
ALTER TABLE social.post_tags ENABLE ROW LEVEL SECURITY;
ALTER TABLE social.likes ENABLE ROW LEVEL SECURITY;
ALTER TABLE social.bookmarks ENABLE ROW LEVEL SECURITY;
ALTER TABLE social.follows ENABLE ROW LEVEL SECURITY;
ALTER TABLE social.blocks ENABLE ROW LEVEL SECURITY;
ALTER TABLE social.mutes ENABLE ROW LEVEL SECURITY;
ALTER TABLE social.timelines ENABLE ROW LEVEL SECURITY;

-- Profiles are public; what is hidden across a block is their posts.
CREATE POLICY readable ON social.profiles FOR SELECT USING (true);
-- The one visibility rule, for every reader that is not the owner.
CREATE POLICY visible ON social.posts FOR SELECT
    USING (social.is_staff()
           OR social.can_see_rls((SELECT social.me()), author_id, visibility, id, deleted_at, repost_of_id));
CREATE POLICY visible ON social.mentions FOR SELECT
    USING (social.is_staff() OR social.can_see_post((SELECT social.me()), post_id));
CREATE POLICY visible ON social.post_tags FOR SELECT
    USING (social.is_staff() OR social.can_see_post((SELECT social.me()), post_id));
CREATE POLICY visible ON social.likes FOR SELECT
    USING (social.is_staff()
           OR (social.can_see_post((SELECT social.me()), post_id)
               AND NOT social.blocked_between((SELECT social.me()), profile_id)));
CREATE POLICY own ON social.bookmarks FOR SELECT
    USING (social.is_staff() OR profile_id = (SELECT social.me()));
CREATE POLICY visible ON social.follows FOR SELECT
    USING (social.is_staff() OR state = 'accepted'
           OR follower_id = (SELECT social.me()) OR followee_id = (SELECT social.me()));
CREATE POLICY own ON social.blocks FOR SELECT
    USING (social.is_staff() OR blocker_id = (SELECT social.me()));
CREATE POLICY own ON social.mutes FOR SELECT
    USING (social.is_staff() OR muter_id = (SELECT social.me()));
CREATE POLICY own ON social.timelines FOR SELECT
    USING (social.is_staff() OR user_id = (SELECT social.me()));

/* ---------- privileges ---------- */

REVOKE ALL ON ALL TABLES IN SCHEMA social FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA social FROM PUBLIC;
REVOKE ALL ON ALL PROCEDURES IN SCHEMA social FROM PUBLIC;
GRANT USAGE ON SCHEMA social TO bv_anon;
-- Reads go through row-level security: anonymous readers see public posts.
GRANT SELECT ON social.profiles, social.posts, social.mentions, social.post_tags, social.likes,
                social.follows, social.trending_tags TO bv_anon;
GRANT SELECT ON social.bookmarks, social.blocks, social.mutes, social.timelines TO bv_user;
GRANT SELECT ON ALL TABLES IN SCHEMA social TO bv_service;
-- Row-level security policies call these as the reader.  Feed functions take
-- the viewer as an argument and are not granted: the api.* wrappers (SECURITY
-- DEFINER) pass social.me(), so nobody reads as somebody else.
GRANT EXECUTE ON FUNCTION social.me(), social.is_staff(), social.blocked_between(bigint, bigint),
    social.can_see_rls(bigint, bigint, social.visibility, bigint, timestamptz, bigint),
    social.can_see_post(bigint, bigint) TO bv_anon;
-- Writes act as social.actor_profile() (the request's user) only.
GRANT EXECUTE ON FUNCTION social.actor_profile(),
    social.create_profile(text, text, boolean), social.update_profile(text, text, boolean),
    social.create_post(text, text, bigint, bigint, jsonb), social.repost(bigint),
    social.delete_post(bigint), social.set_visibility(bigint, text), social.like_post(bigint),
    social.unlike_post(bigint), social.bookmark(bigint, boolean), social.follow(text), social.unfollow(text),
    social.answer_follow(text, boolean), social.remove_follower(text), social.block(text, boolean),
    social.mute(text, boolean) TO bv_user;

/* ---------- the REST API (schema api; names prefixed social_ or explicit) ---------- */

CREATE VIEW api.social_profiles WITH (security_invoker = true) AS
SELECT p.id, p.handle, p.display_name, p.bio, p.locked, p.followers_count, p.following_count,
       p.posts_count, p.joined_at
FROM social.profiles p;
COMMENT ON VIEW api.social_profiles IS 'Profiles, with exact follower, following and post counts.';

CREATE VIEW api.social_posts WITH (security_invoker = true) AS
SELECT p.id, p.author_id, p.body, p.visibility, p.reply_to_id, p.root_id, p.quote_of_id,
       p.repost_of_id, p.media, p.posted_at, p.likes_count, p.replies_count, p.reposts_count
FROM social.posts p;
COMMENT ON VIEW api.social_posts IS 'Posts the caller may see (row-level security: deletes, blocks, visibility). Embeds its author (social_profiles) and replied/quoted/reposted posts.';
COMMENT ON COLUMN api.social_profiles.handle IS 'Unique handle: 1-30 of a-z, 0-9, _.';
COMMENT ON COLUMN api.social_profiles.locked IS 'Follows need the account''s approval.';
COMMENT ON COLUMN api.social_profiles.followers_count IS 'Accepted followers (exact).';
COMMENT ON COLUMN api.social_profiles.following_count IS 'Accounts followed, accepted (exact).';
COMMENT ON COLUMN api.social_profiles.posts_count IS 'Live posts and reposts (exact).';
COMMENT ON COLUMN api.social_posts.author_id IS 'The author (embed social_profiles).';
COMMENT ON COLUMN api.social_posts.visibility IS 'public, followers (accepted followers and mentioned accounts) or mentioned (mentioned accounts only).';
COMMENT ON COLUMN api.social_posts.reply_to_id IS 'The post this one answers.';
COMMENT ON COLUMN api.social_posts.root_id IS 'The first post of the thread.';
COMMENT ON COLUMN api.social_posts.quote_of_id IS 'The quoted post.';
COMMENT ON COLUMN api.social_posts.repost_of_id IS 'The reposted post (a repost has no text).';
COMMENT ON COLUMN api.social_posts.media IS 'At most 4 media references {url, kind, alt}.';
GRANT SELECT ON api.social_profiles, api.social_posts TO bv_anon;

CREATE FUNCTION api.create_profile(handle text, display_name text DEFAULT '', locked boolean DEFAULT false)
RETURNS jsonb LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT social.create_profile(handle, display_name, locked) $$;
COMMENT ON FUNCTION api.create_profile(text, text, boolean) IS 'Creates your social profile (handle: 1-30 of a-z, 0-9, _). locked: follows need your approval.';

CREATE FUNCTION api.update_profile(display_name text DEFAULT NULL, bio text DEFAULT NULL, locked boolean DEFAULT NULL)
RETURNS jsonb LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT social.update_profile(display_name, bio, locked) $$;
COMMENT ON FUNCTION api.update_profile(text, text, boolean) IS 'Changes your display name, bio or locked flag.';

CREATE FUNCTION api.create_post(body text DEFAULT '', visibility text DEFAULT 'public', reply_to bigint DEFAULT NULL,
                                quote_of bigint DEFAULT NULL, media jsonb DEFAULT NULL)
RETURNS jsonb LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT social.create_post(body, visibility, reply_to, quote_of, media) $$;
COMMENT ON FUNCTION api.create_post(text, text, bigint, bigint, jsonb) IS 'Posts (visibility public, followers or mentioned; optionally a reply or a quote; media references).';

CREATE FUNCTION api.repost(post_id bigint)
RETURNS jsonb LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT social.repost(post_id) $$;
COMMENT ON FUNCTION api.repost(bigint) IS 'Reposts a public post.';

CREATE FUNCTION api.delete_post(post_id bigint)
RETURNS jsonb LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT social.delete_post(post_id) $$;
COMMENT ON FUNCTION api.delete_post(bigint) IS 'Deletes your post.';

CREATE FUNCTION api.set_post_visibility(post_id bigint, visibility text)
RETURNS jsonb LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT social.set_visibility(post_id, visibility) $$;
COMMENT ON FUNCTION api.set_post_visibility(bigint, text) IS 'Changes the visibility of your post.';

CREATE FUNCTION api.like_post(post_id bigint)
RETURNS jsonb LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT social.like_post(post_id) $$;
COMMENT ON FUNCTION api.like_post(bigint) IS 'Likes a post.';

CREATE FUNCTION api.unlike_post(post_id bigint)
RETURNS jsonb LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT social.unlike_post(post_id) $$;
COMMENT ON FUNCTION api.unlike_post(bigint) IS 'Takes back a like.';

CREATE FUNCTION api.bookmark_post(post_id bigint, bookmarked boolean DEFAULT true)
RETURNS jsonb LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT social.bookmark(post_id, bookmarked) $$;
COMMENT ON FUNCTION api.bookmark_post(bigint, boolean) IS 'Bookmarks (or un-bookmarks) a post.';

CREATE FUNCTION api.follow(handle text)
RETURNS jsonb LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT social.follow(handle) $$;
COMMENT ON FUNCTION api.follow(text) IS 'Follows an account (pending until a locked account approves).';

CREATE FUNCTION api.unfollow(handle text)
RETURNS jsonb LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT social.unfollow(handle) $$;
COMMENT ON FUNCTION api.unfollow(text) IS 'Stops following an account.';

CREATE FUNCTION api.answer_follow_request(handle text, approve boolean)
RETURNS jsonb LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT social.answer_follow(handle, approve) $$;
COMMENT ON FUNCTION api.answer_follow_request(text, boolean) IS 'Approves or rejects a pending follow request.';

CREATE FUNCTION api.remove_follower(handle text)
RETURNS jsonb LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT social.remove_follower(handle) $$;
COMMENT ON FUNCTION api.remove_follower(text) IS 'Removes one of your followers.';

CREATE FUNCTION api.block(handle text, blocked boolean DEFAULT true)
RETURNS jsonb LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT social.block(handle, blocked) $$;
COMMENT ON FUNCTION api.block(text, boolean) IS 'Blocks (or unblocks) an account.';

CREATE FUNCTION api.mute(handle text, muted boolean DEFAULT true)
RETURNS jsonb LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT social.mute(handle, muted) $$;
COMMENT ON FUNCTION api.mute(text, boolean) IS 'Mutes (or unmutes) an account.';

CREATE FUNCTION api.home_timeline(before bigint DEFAULT NULL, page_size integer DEFAULT 20)
RETURNS SETOF social.feed_item LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM social.home(social.actor_profile(), before, page_size) $$;
COMMENT ON FUNCTION api.home_timeline(bigint, integer) IS 'Your home timeline, newest first; next page: before = last id.';

CREATE FUNCTION api.refresh_home_timeline()
RETURNS bigint LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT social.rebuild_timeline(social.actor_profile()) $$;
COMMENT ON FUNCTION api.refresh_home_timeline() IS 'Rebuilds your home timeline from the base tables (done automatically when you return after inactivity).';

CREATE FUNCTION api.author_feed(handle text, before bigint DEFAULT NULL, page_size integer DEFAULT 20)
RETURNS SETOF social.feed_item LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM social.author_feed(social.me(), social.profile_id(handle), before, page_size) $$;
COMMENT ON FUNCTION api.author_feed(text, bigint, integer) IS 'Posts of an account that you may see, newest first; next page: before = last id.';

CREATE FUNCTION api.hashtag_feed(tag text, before bigint DEFAULT NULL, page_size integer DEFAULT 20)
RETURNS SETOF social.feed_item LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM social.hashtag_feed(social.me(), tag, before, page_size) $$;
COMMENT ON FUNCTION api.hashtag_feed(text, bigint, integer) IS 'Posts with a hashtag that you may see, newest first; next page: before = last id.';

CREATE FUNCTION api.thread(post_id bigint, after bigint DEFAULT NULL, page_size integer DEFAULT 50)
RETURNS SETOF social.feed_item LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM social.thread(social.me(), post_id, after, page_size) $$;
COMMENT ON FUNCTION api.thread(bigint, bigint, integer) IS 'The conversation of a post, oldest first; next page: after = last id.';

CREATE FUNCTION api.search_posts(q text, before bigint DEFAULT NULL, page_size integer DEFAULT 20)
RETURNS SETOF social.feed_item LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM social.search(social.me(), q, before, page_size) $$;
COMMENT ON FUNCTION api.search_posts(text, bigint, integer) IS 'Full-text search of the posts you may see; next page: before = last id.';

CREATE FUNCTION api.trending_hashtags(after_rank integer DEFAULT 0, page_size integer DEFAULT 10)
RETURNS SETOF social.trending_tags LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM social.trending(after_rank, page_size) $$;
COMMENT ON FUNCTION api.trending_hashtags(integer, integer) IS 'Trending hashtags; next page: after_rank = last rank.';

CREATE FUNCTION api.followers(handle text, after bigint DEFAULT NULL, page_size integer DEFAULT 40)
RETURNS TABLE (id bigint, handle text, display_name text) LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM social.follow_list(social.profile_id(handle), 'followers', after, page_size) $$;
COMMENT ON FUNCTION api.followers(text, bigint, integer) IS 'Followers of an account; next page: after = last id.';

CREATE FUNCTION api.following(handle text, after bigint DEFAULT NULL, page_size integer DEFAULT 40)
RETURNS TABLE (id bigint, handle text, display_name text) LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM social.follow_list(social.profile_id(handle), 'following', after, page_size) $$;
COMMENT ON FUNCTION api.following(text, bigint, integer) IS 'Accounts an account follows; next page: after = last id.';

CREATE FUNCTION api.follow_requests(after bigint DEFAULT NULL, page_size integer DEFAULT 40)
RETURNS TABLE (id bigint, handle text, display_name text) LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM social.follow_list(social.actor_profile(), 'requests', after, page_size) $$;
COMMENT ON FUNCTION api.follow_requests(bigint, integer) IS 'Pending follow requests to you; next page: after = last id.';

REVOKE ALL ON FUNCTION api.create_profile(text, text, boolean), api.update_profile(text, text, boolean),
    api.create_post(text, text, bigint, bigint, jsonb), api.repost(bigint), api.delete_post(bigint),
    api.set_post_visibility(bigint, text), api.like_post(bigint), api.unlike_post(bigint),
    api.bookmark_post(bigint, boolean), api.follow(text), api.unfollow(text),
    api.answer_follow_request(text, boolean), api.remove_follower(text), api.block(text, boolean),
    api.mute(text, boolean), api.home_timeline(bigint, integer), api.refresh_home_timeline(),
    api.author_feed(text, bigint, integer), api.hashtag_feed(text, bigint, integer),
    api.thread(bigint, bigint, integer), api.search_posts(text, bigint, integer),
    api.trending_hashtags(integer, integer), api.followers(text, bigint, integer),
    api.following(text, bigint, integer), api.follow_requests(bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api.author_feed(text, bigint, integer), api.hashtag_feed(text, bigint, integer),
    api.thread(bigint, bigint, integer), api.search_posts(text, bigint, integer),
    api.trending_hashtags(integer, integer), api.followers(text, bigint, integer),
    api.following(text, bigint, integer) TO bv_anon;
GRANT EXECUTE ON FUNCTION api.create_profile(text, text, boolean), api.update_profile(text, text, boolean),
    api.create_post(text, text, bigint, bigint, jsonb), api.repost(bigint), api.delete_post(bigint),
    api.set_post_visibility(bigint, text), api.like_post(bigint), api.unlike_post(bigint),
    api.bookmark_post(bigint, boolean), api.follow(text), api.unfollow(text),
    api.answer_follow_request(text, boolean), api.remove_follower(text), api.block(text, boolean),
    api.mute(text, boolean), api.home_timeline(bigint, integer), api.refresh_home_timeline(),
    api.follow_requests(bigint, integer) TO bv_user;

/* ---------- audit (bv_audit) ---------- */

/*
 * Audit columns and a mirrored history on the tables users change.  The
 * counters and activity columns are left out of the history (they change
 * on every like or follow and are derivable); the timelines, the queue and
 * the outbox are caches or logs of their own.  The audit tables are
 * detached from the extension, so DROP EXTENSION keeps the history.
 */
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM (VALUES
            ('social.profiles'::regclass, ARRAY['followers_count', 'following_count', 'posts_count',
                                                'has_pull_posts', 'timeline_active', 'last_seen_at']),
            ('social.posts', ARRAY['likes_count', 'replies_count', 'reposts_count']),
            ('social.follows', '{}'), ('social.blocks', '{}'), ('social.mutes', '{}'),
            ('social.likes', '{}'), ('social.bookmarks', '{}'), ('social.settings', '{}')) v(tbl, excl)
    LOOP
        PERFORM bv_audit.stamp(t.tbl);
        PERFORM bv_audit.enable(t.tbl, t.excl);
    END LOOP;
    FOR t IN SELECT d.objid::regclass AS tbl
               FROM pg_catalog.pg_depend d
               JOIN pg_catalog.pg_class c ON c.oid = d.objid
              WHERE d.classid = 'pg_class'::regclass AND d.deptype = 'e'
                AND d.refclassid = 'pg_extension'::regclass
                AND d.refobjid = (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'bv_social')
                AND c.relnamespace = 'bv_audit'::regnamespace
                AND c.relkind IN ('r', 'p')
    LOOP
        EXECUTE format('ALTER EXTENSION bv_social DROP TABLE %s', t.tbl);
    END LOOP;
END
$$;
