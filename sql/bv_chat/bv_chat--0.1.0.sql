/*
 * bv_chat 0.1.0: rooms, members, messages, threads, reactions, pins, exact
 * unread and mention counters, read receipts, notifications and search.
 *
 * Schema "chat" holds the tables and the domain functions; schema "api"
 * (bv_core's) holds the thin PostgREST surface (functions named chat_*).
 * Conventions:
 *
 *  - a user is a bv_core identity: bv.current_user_id() (the JWT "sub"),
 *    stored as text in every user column; chat.users keeps per-user
 *    settings and the last activity, created on first use;
 *  - a room is direct (two members, one per pair), group (members added by
 *    its admins) or channel (anyone may join); members have a role (owner,
 *    admin, member) and a state (joined, left, kicked, banned): only joined
 *    members see the room's messages, by row-level security and in every
 *    function, so a ban or a kick takes effect at the next statement;
 *  - messages are numbered per room (seq = 1, 2, ...) from rooms.last_seq,
 *    incremented under the room's row lock, which is held to commit: a room's
 *    messages commit in seq order, so a reader never sees seq N+1 before N
 *    and keyset pages never miss a late row;
 *  - threads are flat (Slack, Zulip): a reply's thread_root is the root's
 *    seq; thread 0 is the room's main timeline;
 *  - counters: chat.read_state has one row per (user, room, thread) that the
 *    user follows: the receipt (read_seq) and the unread and mention counts,
 *    maintained in the writer's transaction.  The invariant, checked by the
 *    randomized test tests/tap/bv_chat_counters.pl:
 *        unread   = #messages of (room, thread) with seq > read_seq, not
 *                   deleted, not sent by the user
 *        mentions = the same, mentioning the user
 *    Lock order: writers that change a room's messages (send, edit, delete,
 *    join, leave, kick, ban) lock the room row first, then read_state rows;
 *    a receipt locks its one read_state row, then recounts in a new
 *    statement (a new snapshot under READ COMMITTED), so whichever of a
 *    receipt and a send/delete takes the row second sees the other's effect
 *    (the UPDATE re-checks read_seq < seq on the newest row version).  No
 *    transaction holds a read_state row while waiting for a room lock, so
 *    the two cannot deadlock;
 *  - edits keep their history in bv_audit (chat.messages is audited);
 *    deletes are tombstones (body and attachments cleared, deleted_at set);
 *  - live delivery: chat.publish() sends every event with bv_realtime.send()
 *    on topic chat:room:<id> (delivered after commit, never on rollback)
 *    and, when enabled, writes it to chat.events, which bv_cdc routes to
 *    MQTT (topic chat/rooms/<room>/<event id>, QoS 1); notifications go to
 *    chat.notifications, which bv_cdc routes to a signed webhook (push);
 *  - errors a client can cause use PostgREST's PTxyz SQLSTATEs or 22023,
 *    always with a hint; unique/foreign-key violations never reach clients.
 */

\echo Use "CREATE EXTENSION bv_chat" to load this file. \quit

COMMENT ON SCHEMA chat IS 'Chat domain: rooms, members, messages, threads, reactions, pins, receipts, unread counters, notifications.';

/* ---------- settings ---------- */

CREATE TABLE chat.settings (
    name        text PRIMARY KEY,
    value       bigint NOT NULL,
    description text NOT NULL
);
COMMENT ON TABLE chat.settings IS 'Tunables of the chat domain (limits, rates, notification timing); bv_admin may change them.';
INSERT INTO chat.settings VALUES
    ('max_body_chars', 4000, 'Longest message text, in characters.'),
    ('max_attachments', 10, 'Attachments per message.'),
    ('max_room_members', 10000, 'Members of one room.'),
    ('send_rate', 5, 'Messages per second a user may send, sustained (bv_core rate limiter; 0: no limit).'),
    ('send_burst', 30, 'Messages a user may send in a burst.'),
    ('offline_after_seconds', 120, 'A user without activity for this long is offline: new messages in rooms notified at level "all" create notification rows.'),
    ('digest_after_hours', 12, 'A user offline this long with unread messages gets a digest notification (at most one per period).'),
    ('mqtt_events', 0, '1: every live event is also written to chat.events (routed to MQTT by chat.route_mqtt()).'),
    ('events_retention_hours', 24, 'chat.events rows older than this are purged.'),
    ('page_max', 200, 'Largest page of history, search, rooms or notifications.');

CREATE FUNCTION chat.setting(p_name text)
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r bigint;
BEGIN
    -- no per-session override: the limits (size, rate) must hold for every caller
    SELECT s.value INTO r FROM chat.settings s WHERE s.name = p_name;
    IF r IS NULL THEN
        RAISE EXCEPTION 'unknown chat setting "%"', left(coalesce(p_name, '(null)'), 40)
            USING ERRCODE = '22023', HINT = 'See SELECT name FROM chat.settings.';
    END IF;
    RETURN r;
END
$$;
COMMENT ON FUNCTION chat.setting(text) IS 'A tunable of chat.settings (bv_admin changes them; no per-session override).';

/* ---------- tables ---------- */

CREATE TABLE chat.users (
    user_id        text PRIMARY KEY CHECK (char_length(user_id) BETWEEN 1 AND 200),
    last_active_at timestamptz,
    muted_until    timestamptz,
    push           boolean NOT NULL DEFAULT true,
    digest_at      timestamptz
);
COMMENT ON TABLE chat.users IS 'Per-user chat state: last activity (online/offline), global mute, push on/off, last digest. Created on a user''s first chat action.';
COMMENT ON COLUMN chat.users.muted_until IS 'No notification rows for this user until then (do not disturb).';

CREATE TABLE chat.rooms (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('direct', 'group', 'channel')),
    name            text NOT NULL DEFAULT '' CHECK (char_length(name) <= 100),
    topic           text NOT NULL DEFAULT '' CHECK (char_length(topic) <= 500),
    direct_key      text UNIQUE,
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_seq        bigint NOT NULL DEFAULT 0,
    last_message_at timestamptz,
    member_count    integer NOT NULL DEFAULT 0 CHECK (member_count >= 0),
    CHECK ((kind = 'direct') = (direct_key IS NOT NULL))
);
COMMENT ON TABLE chat.rooms IS 'Rooms: direct (one per pair of users), group (members added by admins), channel (anyone may join). last_seq numbers the room''s messages.';
COMMENT ON COLUMN chat.rooms.direct_key IS 'Direct rooms: the two user ids, sorted, as a JSON array (one room per pair).';
CREATE INDEX rooms_channels ON chat.rooms (id) WHERE kind = 'channel';

CREATE TABLE chat.members (
    room_id   bigint NOT NULL REFERENCES chat.rooms ON DELETE CASCADE,
    user_id   text NOT NULL,
    role      text NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'admin', 'member')),
    state     text NOT NULL DEFAULT 'joined' CHECK (state IN ('joined', 'left', 'kicked', 'banned')),
    notify    text NOT NULL DEFAULT 'all' CHECK (notify IN ('all', 'mentions', 'none')),
    joined_at timestamptz NOT NULL DEFAULT now(),
    changed_by text,
    PRIMARY KEY (room_id, user_id)
);
COMMENT ON TABLE chat.members IS 'Membership: role (owner, admin, member) and state (joined, left, kicked, banned). Only joined members see the room''s messages. notify: all, mentions or none (per-room mute).';
CREATE INDEX members_user ON chat.members (user_id, room_id) WHERE state = 'joined';

CREATE TABLE chat.messages (
    room_id     bigint NOT NULL REFERENCES chat.rooms ON DELETE CASCADE,
    seq         bigint NOT NULL,
    sender      text NOT NULL,
    body        text NOT NULL DEFAULT '',
    attachments jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(attachments) = 'array'),
    mentions    text[] NOT NULL DEFAULT '{}',
    reply_to    bigint,
    thread_root bigint,
    reply_count integer NOT NULL DEFAULT 0 CHECK (reply_count >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    edited_at   timestamptz,
    deleted_at  timestamptz,
    PRIMARY KEY (room_id, seq)
);
COMMENT ON TABLE chat.messages IS 'Messages, numbered per room. reply_to: the message answered; thread_root: the thread (the root''s seq; NULL on the main timeline). Edits keep their history in bv_audit; deletes are tombstones (deleted_at, text cleared).';
COMMENT ON COLUMN chat.messages.attachments IS 'Attachment metadata: an array of {"name", "mime", "size", "url"} (the bytes live elsewhere).';
COMMENT ON COLUMN chat.messages.mentions IS 'Joined members mentioned (@user) when the message was sent or last edited.';
CREATE INDEX messages_thread ON chat.messages (room_id, thread_root, seq) WHERE thread_root IS NOT NULL;
CREATE INDEX messages_fts ON chat.messages USING gin (to_tsvector('simple', body)) WHERE deleted_at IS NULL;
CREATE INDEX messages_trgm ON chat.messages USING gin (body public.gin_trgm_ops) WHERE deleted_at IS NULL;

CREATE TABLE chat.reactions (
    room_id    bigint NOT NULL,
    seq        bigint NOT NULL,
    user_id    text NOT NULL,
    emoji      text NOT NULL,
    reacted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, seq, emoji, user_id),
    FOREIGN KEY (room_id, seq) REFERENCES chat.messages ON DELETE CASCADE
);
COMMENT ON TABLE chat.reactions IS 'Reactions (an emoji or a short name) of users to messages.';

CREATE TABLE chat.pins (
    room_id   bigint NOT NULL,
    seq       bigint NOT NULL,
    pinned_by text NOT NULL,
    pinned_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, seq),
    FOREIGN KEY (room_id, seq) REFERENCES chat.messages ON DELETE CASCADE
);
COMMENT ON TABLE chat.pins IS 'Pinned messages of a room.';

CREATE TABLE chat.read_state (
    user_id     text NOT NULL,
    room_id     bigint NOT NULL REFERENCES chat.rooms ON DELETE CASCADE,
    thread      bigint NOT NULL DEFAULT 0,
    read_seq    bigint NOT NULL DEFAULT 0,
    unread      integer NOT NULL DEFAULT 0 CHECK (unread >= 0),
    mentions    integer NOT NULL DEFAULT 0 CHECK (mentions >= 0),
    read_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, thread, user_id)
);
COMMENT ON TABLE chat.read_state IS 'Read receipt and exact counters per (user, room, thread): thread 0 is the main timeline (one row per joined member), other threads have a row per follower (root author, repliers, mentioned). unread/mentions = messages after read_seq, not deleted, not the user''s own (mentioning the user).';
CREATE INDEX read_state_user ON chat.read_state (user_id, room_id);

CREATE TABLE chat.notifications (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    text NOT NULL,
    room_id    bigint NOT NULL REFERENCES chat.rooms ON DELETE CASCADE,
    seq        bigint,
    kind       text NOT NULL CHECK (kind IN ('mention', 'message', 'digest')),
    push       boolean NOT NULL,
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    seen_at    timestamptz
);
COMMENT ON TABLE chat.notifications IS 'Notifications of offline or mentioned members (and digests). Routed by bv_cdc to a signed webhook (chat.route_push()): each insert is a push to the push service (payload), when push is true.';
CREATE INDEX notifications_user ON chat.notifications (user_id, id DESC);
CREATE INDEX notifications_created ON chat.notifications (created_at);

CREATE TABLE chat.events (
    room_id     bigint NOT NULL,
    id          bigint GENERATED ALWAYS AS IDENTITY,
    event       text NOT NULL,
    payload     jsonb NOT NULL,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, id)
);
COMMENT ON TABLE chat.events IS 'Live events for MQTT, written only when the setting mqtt_events is 1: bv_cdc routes inserts to topic chat/rooms/<room_id>/<id> (chat.route_mqtt()). Purged after events_retention_hours.';
CREATE INDEX events_occurred ON chat.events (occurred_at);

/* ---------- who is asking ---------- */

CREATE FUNCTION chat.me()
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT bv.current_user_id() $$;
COMMENT ON FUNCTION chat.me() IS 'The request''s user (bv.current_user_id(), the JWT sub); NULL when anonymous.';

CREATE FUNCTION chat.is_staff()
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pg_catalog.pg_has_role(current_user, 'bv_service', 'MEMBER') $$;
COMMENT ON FUNCTION chat.is_staff() IS 'RLS: is the reader staff (bv_service, bv_admin)?';

/* The acting user of a write or a private read: PT401 when anonymous. */
CREATE FUNCTION chat.actor()
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    u text := bv.current_user_id();
BEGIN
    IF u IS NULL OR u = '' THEN
        RAISE EXCEPTION 'authentication required'
            USING ERRCODE = 'PT401', HINT = 'Send a bearer token whose sub names the user.';
    END IF;
    IF char_length(u) > 200 THEN
        RAISE EXCEPTION 'user id too long'
            USING ERRCODE = '22023', HINT = 'Use a token whose sub has at most 200 characters.';
    END IF;
    RETURN u;
END
$$;
COMMENT ON FUNCTION chat.actor() IS 'The acting user; PT401 when anonymous.';

/* Records activity (at most every 10 s per user): the online/offline rule. */
CREATE FUNCTION chat.touch(p_user text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    seen timestamptz;
BEGIN
    PERFORM chat.check_user_id(p_user);
    -- a read first: most calls find a recent mark and write nothing
    SELECT u.last_active_at INTO seen FROM chat.users u WHERE u.user_id = p_user;
    IF seen IS NOT NULL AND seen >= now() - interval '10 seconds' THEN
        RETURN;
    END IF;
    INSERT INTO chat.users AS u (user_id, last_active_at) VALUES (p_user, now())
    ON CONFLICT (user_id) DO UPDATE SET last_active_at = now()
        WHERE u.last_active_at IS NULL OR u.last_active_at < now() - interval '10 seconds';
END
$$;
COMMENT ON FUNCTION chat.touch(text) IS 'Internal: marks the user active (online) now.';

CREATE FUNCTION chat.is_member(p_room bigint)
RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (SELECT 1 FROM chat.members m
                    WHERE m.room_id = p_room AND m.user_id = bv.current_user_id() AND m.state = 'joined')
$$;
COMMENT ON FUNCTION chat.is_member(bigint) IS 'RLS: is the request''s user a joined member of the room?';

/*
 * The caller's membership of a room, for functions that need it: PT404 when
 * the room does not exist or the caller was never in it (no leak of room
 * ids), PT403 when the caller left, was kicked or is banned.  With p_lock,
 * the room row is locked first (the lock order of the counters).
 */
CREATE FUNCTION chat.membership(p_room bigint, p_user text, p_lock boolean DEFAULT false)
RETURNS chat.members
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m chat.members;
    k text;
BEGIN
    IF p_room IS NULL THEN
        RAISE EXCEPTION 'room id is required'
            USING ERRCODE = '22023', HINT = 'Pass the id of a room you are a member of.';
    END IF;
    IF p_lock THEN
        SELECT r.kind INTO k FROM chat.rooms r WHERE r.id = p_room FOR UPDATE;
    END IF;
    SELECT * INTO m FROM chat.members x WHERE x.room_id = p_room AND x.user_id = p_user;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'room % not found', p_room
            USING ERRCODE = 'PT404', HINT = 'Check the room id; list your rooms with api.chat_rooms().';
    END IF;
    IF m.state <> 'joined' THEN
        RAISE EXCEPTION 'you are not a member of room % (%)', p_room, m.state
            USING ERRCODE = 'PT403',
                  HINT = CASE m.state WHEN 'banned' THEN 'You were banned; a room admin can lift the ban.'
                                      ELSE 'Join the room again (channels) or ask an admin to add you.' END;
    END IF;
    RETURN m;
END
$$;
COMMENT ON FUNCTION chat.membership(bigint, text, boolean) IS 'Internal: the caller''s joined membership of a room (optionally locking the room first); PT404/PT403 otherwise.';

CREATE FUNCTION chat.check_user_id(p_user text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_user IS NULL OR char_length(p_user) NOT BETWEEN 1 AND 200 OR p_user ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'invalid user id'
            USING ERRCODE = '22023', HINT = 'A user id is the sub of the user''s token: 1-200 characters, no control characters.';
    END IF;
    RETURN p_user;
END
$$;
COMMENT ON FUNCTION chat.check_user_id(text) IS 'Internal: validates a user id argument.';

/* ---------- live delivery ---------- */

/*
 * Publishes an event of a room: bv_realtime.send() on chat:room:<id>
 * (delivered after commit to WebSocket/SSE subscribers) and, when the
 * setting mqtt_events is 1, a chat.events row that bv_cdc routes to MQTT.
 */
CREATE FUNCTION chat.publish(p_room bigint, p_event text, p_payload jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM bv_realtime.send('chat:room:' || p_room, p_event, p_payload);
    IF chat.setting('mqtt_events') = 1 THEN
        INSERT INTO chat.events (room_id, event, payload)
        VALUES (p_room, p_event, p_payload || jsonb_build_object('event', p_event));
    END IF;
END
$$;
COMMENT ON FUNCTION chat.publish(bigint, text, jsonb) IS 'Internal: sends a room event live (bv_realtime topic chat:room:<id>; chat.events for MQTT when enabled).';

/* A user's own topic, when the id can be a bv_realtime topic. */
CREATE FUNCTION chat.user_topic(p_user text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT CASE WHEN p_user ~ '^[A-Za-z0-9_.:@=+-]{1,180}$' THEN 'chat:user:' || p_user END $$;
COMMENT ON FUNCTION chat.user_topic(text) IS 'The bv_realtime topic chat:user:<id> of a user, NULL when the id has characters a topic cannot carry.';

CREATE FUNCTION chat.message_json(m chat.messages, p_fresh boolean DEFAULT false)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    reactions jsonb := '{}';
    pinned boolean := false;
BEGIN
    IF NOT p_fresh THEN
        -- (a message just sent has no reaction and no pin yet)
        SELECT coalesce(jsonb_object_agg(x.emoji, x.users), '{}') INTO reactions
          FROM (SELECT r.emoji, jsonb_agg(r.user_id ORDER BY r.reacted_at) AS users
                  FROM chat.reactions r WHERE r.room_id = m.room_id AND r.seq = m.seq
                 GROUP BY r.emoji) x;
        pinned := EXISTS (SELECT 1 FROM chat.pins p WHERE p.room_id = m.room_id AND p.seq = m.seq);
    END IF;
    RETURN jsonb_build_object('room_id', m.room_id, 'seq', m.seq, 'sender', m.sender, 'body', m.body,
                              'attachments', m.attachments, 'mentions', to_jsonb(m.mentions),
                              'reply_to', m.reply_to, 'thread_root', m.thread_root,
                              'reply_count', m.reply_count, 'created_at', m.created_at,
                              'edited_at', m.edited_at, 'deleted', m.deleted_at IS NOT NULL,
                              'reactions', reactions, 'pinned', pinned);
END
$$;
COMMENT ON FUNCTION chat.message_json(chat.messages, boolean) IS 'Internal: the JSON form of a message (API results and live events).';

/* ---------- validation ---------- */

CREATE FUNCTION chat.check_body(p_body text, p_attachments jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lim bigint := chat.setting('max_body_chars');
    a jsonb;
BEGIN
    IF char_length(p_body) > lim THEN
        RAISE EXCEPTION 'message too long: % characters, at most % allowed', char_length(p_body), lim
            USING ERRCODE = 'PT413', HINT = 'Split the text into several messages, or attach it as a file.';
    END IF;
    IF p_body ~ '[\x01-\x08\x0B\x0C\x0E-\x1F\x7F]' THEN
        RAISE EXCEPTION 'message text contains control characters'
            USING ERRCODE = '22023', HINT = 'Remove control characters other than tab and newline.';
    END IF;
    IF jsonb_typeof(p_attachments) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'attachments must be a JSON array'
            USING ERRCODE = '22023', HINT = 'Pass [{"name": "a.png", "mime": "image/png", "size": 1234, "url": "https://..."}].';
    END IF;
    IF jsonb_array_length(p_attachments) > chat.setting('max_attachments') THEN
        RAISE EXCEPTION 'too many attachments: %, at most % allowed', jsonb_array_length(p_attachments), chat.setting('max_attachments')
            USING ERRCODE = 'PT413', HINT = 'Send the other attachments in another message.';
    END IF;
    IF jsonb_array_length(p_attachments) = 0 THEN
        RETURN;
    END IF;
    FOR a IN SELECT e FROM jsonb_array_elements(p_attachments) e LOOP
        IF jsonb_typeof(a) <> 'object'
           OR jsonb_typeof(a -> 'name') IS DISTINCT FROM 'string' OR char_length(a ->> 'name') NOT BETWEEN 1 AND 255
           OR jsonb_typeof(a -> 'url') IS DISTINCT FROM 'string' OR char_length(a ->> 'url') > 2048
           OR (a ->> 'url') !~ '^https?://[^[:space:][:cntrl:]]+$'
           OR (a ? 'mime' AND (jsonb_typeof(a -> 'mime') <> 'string' OR (a ->> 'mime') !~ '^[a-z0-9.+-]+/[a-zA-Z0-9.+-]{1,100}$'))
           OR (a ? 'size' AND (jsonb_typeof(a -> 'size') <> 'number' OR (a ->> 'size') !~ '^[0-9]{1,15}$'))
           OR EXISTS (SELECT 1 FROM jsonb_object_keys(a) k WHERE k NOT IN ('name', 'mime', 'size', 'url'))
        THEN
            RAISE EXCEPTION 'invalid attachment'
                USING ERRCODE = '22023',
                      HINT = 'Each attachment is {"name": 1-255 characters, "url": "http(s)://..." (at most 2048), optional "mime": "type/subtype", optional "size": bytes}; no other keys.';
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION chat.check_body(text, jsonb) IS 'Internal: size limits and shape of a message''s text and attachments.';

/* Joined members of the room mentioned as @user in the text (not the sender). */
CREATE FUNCTION chat.parse_mentions(p_room bigint, p_sender text, p_body text)
RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r text[];
BEGIN
    IF p_body IS NULL OR strpos(p_body, '@') = 0 THEN
        RETURN '{}';
    END IF;
    SELECT coalesce(array_agg(DISTINCT m.user_id ORDER BY m.user_id), '{}') INTO r
      FROM (SELECT (regexp_matches(p_body, '(?:^|[^[:alnum:]_])@([[:alnum:]_.:=+-]{1,200})', 'g'))[1] AS u) x
      JOIN chat.members m ON m.room_id = p_room AND m.user_id = rtrim(x.u, '.:') AND m.state = 'joined'
     WHERE m.user_id <> p_sender;
    RETURN r;
END
$$;
COMMENT ON FUNCTION chat.parse_mentions(bigint, text, text) IS 'Internal: joined members mentioned (@user) in a text.';

/* ---------- rooms and members ---------- */

CREATE FUNCTION chat.add_member_row(p_room bigint, p_user text, p_role text, p_by text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r chat.rooms;
    prev chat.members;
BEGIN
    -- the caller holds the room's row lock
    SELECT * INTO r FROM chat.rooms x WHERE x.id = p_room;
    IF r.id IS NULL THEN
        RAISE EXCEPTION 'room % not found', p_room
            USING ERRCODE = 'PT404', HINT = 'Check the room id.';
    END IF;
    PERFORM chat.check_user_id(p_user);
    IF p_role IS NULL OR p_role NOT IN ('owner', 'admin', 'member') THEN
        RAISE EXCEPTION 'invalid role "%"', left(coalesce(p_role, '(null)'), 20)
            USING ERRCODE = '22023', HINT = 'Use owner, admin or member.';
    END IF;
    SELECT * INTO prev FROM chat.members x WHERE x.room_id = p_room AND x.user_id = p_user;
    IF FOUND AND prev.state = 'joined' THEN
        RETURN;
    END IF;
    IF FOUND AND prev.state = 'banned' THEN
        RAISE EXCEPTION 'user is banned from room %', p_room
            USING ERRCODE = 'PT403', HINT = 'A room admin must lift the ban first (api.chat_ban(room_id, user_id, false)).';
    END IF;
    IF r.member_count >= chat.setting('max_room_members') THEN
        RAISE EXCEPTION 'room % is full (% members)', p_room, r.member_count
            USING ERRCODE = 'PT409', HINT = 'Ask an operator to raise the max_room_members setting.';
    END IF;
    INSERT INTO chat.members AS m (room_id, user_id, role, state, notify, changed_by)
    VALUES (p_room, p_user, p_role, 'joined', CASE WHEN r.kind = 'channel' THEN 'mentions' ELSE 'all' END, left(p_by, 200))
    ON CONFLICT (room_id, user_id) DO UPDATE
        SET role = excluded.role, state = 'joined', joined_at = now(), changed_by = p_by;
    -- nothing before the join is unread
    INSERT INTO chat.read_state (user_id, room_id, thread, read_seq) VALUES (p_user, p_room, 0, r.last_seq)
    ON CONFLICT (room_id, thread, user_id) DO UPDATE SET read_seq = excluded.read_seq, unread = 0, mentions = 0;
    UPDATE chat.rooms SET member_count = member_count + 1 WHERE id = p_room;
    INSERT INTO chat.users (user_id) VALUES (p_user) ON CONFLICT DO NOTHING;
    PERFORM chat.publish(p_room, 'member.joined', jsonb_build_object('room_id', p_room, 'user_id', p_user, 'role', p_role, 'by', p_by));
END
$$;
COMMENT ON FUNCTION chat.add_member_row(bigint, text, text, text) IS 'Internal: makes a user a joined member (room lock held by the caller).';

CREATE FUNCTION chat.remove_member_row(p_room bigint, p_user text, p_state text, p_by text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    was text;
BEGIN
    -- the caller holds the room's row lock
    IF p_state IS NULL OR p_state NOT IN ('left', 'kicked', 'banned') THEN
        RAISE EXCEPTION 'invalid membership state "%"', left(coalesce(p_state, '(null)'), 20)
            USING ERRCODE = '22023', HINT = 'Use left, kicked or banned.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM chat.rooms x WHERE x.id = p_room) THEN
        RAISE EXCEPTION 'room % not found', p_room
            USING ERRCODE = 'PT404', HINT = 'Check the room id.';
    END IF;
    PERFORM chat.check_user_id(p_user);
    SELECT state INTO was FROM chat.members WHERE room_id = p_room AND user_id = p_user FOR UPDATE;
    IF NOT FOUND THEN
        IF p_state = 'banned' THEN
            INSERT INTO chat.members (room_id, user_id, role, state, changed_by) VALUES (p_room, p_user, 'member', 'banned', left(p_by, 200));
        END IF;
        RETURN;
    END IF;
    UPDATE chat.members SET state = p_state, role = 'member', changed_by = p_by WHERE room_id = p_room AND user_id = p_user;
    IF was = 'joined' THEN
        DELETE FROM chat.read_state WHERE room_id = p_room AND user_id = p_user;
        UPDATE chat.rooms SET member_count = member_count - 1 WHERE id = p_room;
        PERFORM chat.publish(p_room, 'member.' || p_state, jsonb_build_object('room_id', p_room, 'user_id', p_user, 'by', p_by));
        -- after commit the gateway drops the user's live subscription (and
        -- typing/presence rights) on the room topic at once
        PERFORM bv_realtime.revoke('chat:room:' || p_room, p_user);
    END IF;
END
$$;
COMMENT ON FUNCTION chat.remove_member_row(bigint, text, text, text) IS 'Internal: ends a membership (left, kicked, banned); counters go with it.';

CREATE FUNCTION chat.create_room(p_kind text, p_name text DEFAULT '', p_topic text DEFAULT '', p_members text[] DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me text := chat.actor();
    rid bigint;
    u text;
BEGIN
    IF p_kind IS NULL OR p_kind NOT IN ('group', 'channel') THEN
        RAISE EXCEPTION 'invalid room kind "%"', left(coalesce(p_kind, '(null)'), 20)
            USING ERRCODE = '22023', HINT = 'Use group or channel; open a direct room with api.chat_direct(user_id).';
    END IF;
    IF p_name IS NULL OR char_length(p_name) NOT BETWEEN 1 AND 100 OR p_name ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'invalid room name'
            USING ERRCODE = '22023', HINT = 'A room name has 1-100 characters, no control characters.';
    END IF;
    IF char_length(coalesce(p_topic, '')) > 500 THEN
        RAISE EXCEPTION 'room topic too long'
            USING ERRCODE = 'PT413', HINT = 'A topic has at most 500 characters.';
    END IF;
    IF coalesce(cardinality(p_members), 0) >= chat.setting('max_room_members') THEN
        RAISE EXCEPTION 'too many members: %', cardinality(p_members)
            USING ERRCODE = 'PT413', HINT = 'Create the room with fewer members and add the others later.';
    END IF;
    PERFORM bv.rate_limit_enforce('chat:room:' || me, 1, 20);
    PERFORM chat.touch(me);
    INSERT INTO chat.rooms (kind, name, topic, created_by) VALUES (p_kind, p_name, coalesce(p_topic, ''), me)
    RETURNING id INTO rid;
    PERFORM 1 FROM chat.rooms WHERE id = rid FOR UPDATE;
    PERFORM chat.add_member_row(rid, me, 'owner', me);
    FOREACH u IN ARRAY coalesce(p_members, '{}') LOOP
        PERFORM chat.add_member_row(rid, chat.check_user_id(u), 'member', me);
    END LOOP;
    RETURN jsonb_build_object('id', rid, 'kind', p_kind, 'name', p_name);
END
$$;
COMMENT ON FUNCTION chat.create_room(text, text, text, text[]) IS 'Creates a group or channel room owned by the caller, with initial members.';

CREATE FUNCTION chat.open_direct(p_other text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me text := chat.actor();
    other text := chat.check_user_id(p_other);
    k text;
    rid bigint;
    st text;
BEGIN
    IF other = me THEN
        RAISE EXCEPTION 'cannot open a direct room with yourself'
            USING ERRCODE = '22023', HINT = 'Pass another user''s id.';
    END IF;
    k := jsonb_build_array(least(me, other), greatest(me, other))::text;
    PERFORM chat.touch(me);
    INSERT INTO chat.rooms (kind, direct_key, created_by) VALUES ('direct', k, me)
    ON CONFLICT (direct_key) DO NOTHING RETURNING id INTO rid;
    IF rid IS NULL THEN
        SELECT id INTO rid FROM chat.rooms WHERE direct_key = k FOR UPDATE;
        SELECT state INTO st FROM chat.members WHERE room_id = rid AND user_id = me;
        IF st = 'banned' THEN
            RAISE EXCEPTION 'you are not a member of room % (banned)', rid
                USING ERRCODE = 'PT403', HINT = 'The other user removed you from this conversation.';
        END IF;
        PERFORM chat.add_member_row(rid, me, 'owner', me);
    ELSE
        PERFORM 1 FROM chat.rooms WHERE id = rid FOR UPDATE;
        PERFORM chat.add_member_row(rid, me, 'owner', me);
        PERFORM chat.add_member_row(rid, other, 'owner', me);
    END IF;
    RETURN jsonb_build_object('id', rid, 'kind', 'direct', 'with', other);
END
$$;
COMMENT ON FUNCTION chat.open_direct(text) IS 'The direct room of the caller and another user (created on first use; one per pair).';

CREATE FUNCTION chat.join_room(p_room bigint)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me text := chat.actor();
    k text;
BEGIN
    SELECT kind INTO k FROM chat.rooms WHERE id = p_room FOR UPDATE;
    IF k IS NULL OR (k <> 'channel' AND NOT EXISTS (SELECT 1 FROM chat.members WHERE room_id = p_room AND user_id = me)) THEN
        RAISE EXCEPTION 'room % not found', p_room
            USING ERRCODE = 'PT404', HINT = 'Only channels can be joined; list them with api.chat_channels().';
    END IF;
    IF k <> 'channel' AND NOT EXISTS (SELECT 1 FROM chat.members WHERE room_id = p_room AND user_id = me AND state = 'joined') THEN
        RAISE EXCEPTION 'room % can only be joined when an admin adds you', p_room
            USING ERRCODE = 'PT403', HINT = 'Ask an admin of the room to add you.';
    END IF;
    PERFORM chat.touch(me);
    PERFORM chat.add_member_row(p_room, me, 'member', me);
    RETURN jsonb_build_object('room_id', p_room, 'joined', true);
END
$$;
COMMENT ON FUNCTION chat.join_room(bigint) IS 'Joins a channel.';

CREATE FUNCTION chat.leave_room(p_room bigint)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me text := chat.actor();
    m chat.members := chat.membership(p_room, me, true);
BEGIN
    IF m.role = 'owner' AND NOT EXISTS (SELECT 1 FROM chat.members x JOIN chat.rooms r ON r.id = x.room_id
                                          WHERE x.room_id = p_room AND x.user_id <> me AND x.state = 'joined'
                                            AND (x.role = 'owner' OR r.kind = 'direct')) THEN
        -- the last owner hands the room to the oldest admin, else the oldest member
        UPDATE chat.members SET role = 'owner', changed_by = me
         WHERE (room_id, user_id) = (SELECT x.room_id, x.user_id FROM chat.members x
                                      WHERE x.room_id = p_room AND x.user_id <> me AND x.state = 'joined'
                                      ORDER BY (x.role = 'admin') DESC, x.joined_at, x.user_id LIMIT 1);
    END IF;
    PERFORM chat.remove_member_row(p_room, me, 'left', me);
    RETURN jsonb_build_object('room_id', p_room, 'left', true);
END
$$;
COMMENT ON FUNCTION chat.leave_room(bigint) IS 'Leaves a room (the last owner hands it to an admin or the oldest member).';

/* The caller must be at least p_need (admin or owner) and outrank the target. */
CREATE FUNCTION chat.require_moderator(p_room bigint, p_me text, p_target text, p_need text)
RETURNS chat.members
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m chat.members := chat.membership(p_room, p_me, true);
    t text;
    k text;
BEGIN
    SELECT kind INTO k FROM chat.rooms WHERE id = p_room;
    IF k = 'direct' AND p_need <> 'self' THEN
        RAISE EXCEPTION 'direct rooms have no moderation'
            USING ERRCODE = 'PT403', HINT = 'Leave the direct room instead.';
    END IF;
    IF (p_need = 'admin' AND m.role NOT IN ('admin', 'owner')) OR (p_need = 'owner' AND m.role <> 'owner') THEN
        RAISE EXCEPTION 'only a room % can do this', p_need
            USING ERRCODE = 'PT403', HINT = 'Ask an owner or admin of the room.';
    END IF;
    IF p_target IS NOT NULL THEN
        IF p_target = p_me THEN
            RAISE EXCEPTION 'you cannot do this to yourself'
                USING ERRCODE = '22023', HINT = 'Use api.chat_leave(room_id) to leave.';
        END IF;
        SELECT role INTO t FROM chat.members WHERE room_id = p_room AND user_id = p_target AND state = 'joined';
        IF t = 'owner' OR (t = 'admin' AND m.role <> 'owner') THEN
            RAISE EXCEPTION 'you cannot moderate a room %', t
                USING ERRCODE = 'PT403', HINT = 'Only an owner moderates admins; owners cannot be removed.';
        END IF;
    END IF;
    RETURN m;
END
$$;
COMMENT ON FUNCTION chat.require_moderator(bigint, text, text, text) IS 'Internal: the caller''s membership when allowed to moderate the target; PT403 otherwise.';

CREATE FUNCTION chat.add_member(p_room bigint, p_user text, p_role text DEFAULT 'member')
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me text := chat.actor();
    u text := chat.check_user_id(p_user);
BEGIN
    IF p_role IS NULL OR p_role NOT IN ('member', 'admin') THEN
        RAISE EXCEPTION 'invalid role "%"', left(coalesce(p_role, '(null)'), 20)
            USING ERRCODE = '22023', HINT = 'Use member or admin (owners are made with api.chat_set_role).';
    END IF;
    PERFORM chat.require_moderator(p_room, me, NULL, CASE WHEN p_role = 'admin' THEN 'owner' ELSE 'admin' END);
    PERFORM chat.add_member_row(p_room, u, p_role, me);
    RETURN jsonb_build_object('room_id', p_room, 'user_id', u, 'role', p_role);
END
$$;
COMMENT ON FUNCTION chat.add_member(bigint, text, text) IS 'Adds a user to a group or channel (admins; admins are added by owners).';

CREATE FUNCTION chat.kick(p_room bigint, p_user text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me text := chat.actor();
    u text := chat.check_user_id(p_user);
BEGIN
    PERFORM chat.require_moderator(p_room, me, u, 'admin');
    IF NOT EXISTS (SELECT 1 FROM chat.members WHERE room_id = p_room AND user_id = u AND state = 'joined') THEN
        RAISE EXCEPTION 'user is not a member of room %', p_room
            USING ERRCODE = 'PT404', HINT = 'List the members with api.chat_members(room_id).';
    END IF;
    PERFORM chat.remove_member_row(p_room, u, 'kicked', me);
    RETURN jsonb_build_object('room_id', p_room, 'user_id', u, 'kicked', true);
END
$$;
COMMENT ON FUNCTION chat.kick(bigint, text) IS 'Removes a member (admins; they may join again or be added again).';

CREATE FUNCTION chat.ban(p_room bigint, p_user text, p_banned boolean DEFAULT true)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me text := chat.actor();
    u text := chat.check_user_id(p_user);
BEGIN
    IF p_banned IS NULL THEN
        RAISE EXCEPTION 'banned must be true or false'
            USING ERRCODE = '22023', HINT = 'Pass true to ban, false to lift a ban.';
    END IF;
    PERFORM chat.require_moderator(p_room, me, u, 'admin');
    IF p_banned THEN
        PERFORM chat.remove_member_row(p_room, u, 'banned', me);
    ELSE
        UPDATE chat.members SET state = 'left', changed_by = me WHERE room_id = p_room AND user_id = u AND state = 'banned';
    END IF;
    RETURN jsonb_build_object('room_id', p_room, 'user_id', u, 'banned', p_banned);
END
$$;
COMMENT ON FUNCTION chat.ban(bigint, text, boolean) IS 'Bans a user from a room (admins): the user loses access at once and cannot join again until the ban is lifted.';

CREATE FUNCTION chat.set_role(p_room bigint, p_user text, p_role text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me text := chat.actor();
    u text := chat.check_user_id(p_user);
BEGIN
    IF p_role IS NULL OR p_role NOT IN ('owner', 'admin', 'member') THEN
        RAISE EXCEPTION 'invalid role "%"', left(coalesce(p_role, '(null)'), 20)
            USING ERRCODE = '22023', HINT = 'Use owner, admin or member.';
    END IF;
    PERFORM chat.require_moderator(p_room, me, u, 'owner');
    UPDATE chat.members SET role = p_role, changed_by = me WHERE room_id = p_room AND user_id = u AND state = 'joined';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'user is not a member of room %', p_room
            USING ERRCODE = 'PT404', HINT = 'Add the user first.';
    END IF;
    PERFORM chat.publish(p_room, 'member.role', jsonb_build_object('room_id', p_room, 'user_id', u, 'role', p_role, 'by', me));
    RETURN jsonb_build_object('room_id', p_room, 'user_id', u, 'role', p_role);
END
$$;
COMMENT ON FUNCTION chat.set_role(bigint, text, text) IS 'Changes a member''s role (owners).';

/* ---------- messages ---------- */

CREATE FUNCTION chat.send(p_room bigint, p_body text, p_reply_to bigint DEFAULT NULL, p_attachments jsonb DEFAULT '[]')
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
/*
 * The hot path, kept to a few statements (each costs a round through the
 * executor): settings in one read, the room's numbering and lock in one
 * UPDATE, the membership check after the lock (so a ban committed while
 * waiting is seen), the message, then one statement for the counters of
 * every follower, the sender's receipt, the sender's activity and the
 * notifications, and the live event.
 */
DECLARE
    me text := chat.actor();
    body text := coalesce(p_body, '');
    att jsonb := coalesce(p_attachments, '[]');
    cfg record;
    st text;
    s bigint;
    root chat.messages;
    thr bigint;
    ment text[] := '{}';
    msg chat.messages;
    payload jsonb;
BEGIN
    SELECT max(x.value) FILTER (WHERE x.name = 'send_rate') AS rate,
           max(x.value) FILTER (WHERE x.name = 'send_burst') AS burst,
           max(x.value) FILTER (WHERE x.name = 'offline_after_seconds') AS offline_s,
           max(x.value) FILTER (WHERE x.name = 'max_body_chars') AS max_body,
           max(x.value) FILTER (WHERE x.name = 'mqtt_events') AS mqtt
      INTO cfg FROM chat.settings x
     WHERE x.name IN ('send_rate', 'send_burst', 'offline_after_seconds', 'max_body_chars', 'mqtt_events');
    IF char_length(body) > cfg.max_body OR body ~ '[\x01-\x08\x0B\x0C\x0E-\x1F\x7F]' OR att <> '[]' THEN
        PERFORM chat.check_body(body, att);
    END IF;
    IF body = '' AND att = '[]' THEN
        RAISE EXCEPTION 'empty message'
            USING ERRCODE = '22023', HINT = 'Send some text or at least one attachment.';
    END IF;
    IF cfg.rate > 0 THEN
        PERFORM bv.rate_limit_enforce('chat:send:' || me, cfg.rate, cfg.burst);
    END IF;
    IF p_room IS NULL THEN
        RAISE EXCEPTION 'room id is required'
            USING ERRCODE = '22023', HINT = 'Pass the id of a room you are a member of.';
    END IF;
    -- lock order: the room row first (it numbers the message and is held to
    -- commit); an error below rolls the numbering back with everything else
    UPDATE chat.rooms SET last_seq = last_seq + 1, last_message_at = now() WHERE id = p_room
    RETURNING last_seq INTO s;
    SELECT m.state INTO st FROM chat.members m WHERE m.room_id = p_room AND m.user_id = me;
    IF s IS NULL OR st IS NULL THEN
        RAISE EXCEPTION 'room % not found', p_room
            USING ERRCODE = 'PT404', HINT = 'Check the room id; list your rooms with api.chat_rooms().';
    ELSIF st <> 'joined' THEN
        RAISE EXCEPTION 'you are not a member of room % (%)', p_room, st
            USING ERRCODE = 'PT403',
                  HINT = CASE st WHEN 'banned' THEN 'You were banned; a room admin can lift the ban.'
                                 ELSE 'Join the room again (channels) or ask an admin to add you.' END;
    END IF;
    IF p_reply_to IS NOT NULL THEN
        SELECT * INTO root FROM chat.messages m WHERE m.room_id = p_room AND m.seq = p_reply_to;
        IF NOT FOUND OR root.deleted_at IS NOT NULL THEN
            RAISE EXCEPTION 'message % not found in room %', p_reply_to, p_room
                USING ERRCODE = 'PT404', HINT = 'Reply to a message of the same room that was not deleted.';
        END IF;
        thr := coalesce(root.thread_root, root.seq);
        IF root.thread_root IS NOT NULL THEN
            SELECT * INTO root FROM chat.messages m WHERE m.room_id = p_room AND m.seq = thr;
        END IF;
    END IF;
    IF strpos(body, '@') > 0 THEN
        ment := chat.parse_mentions(p_room, me, body);
    END IF;
    IF thr IS NOT NULL THEN
        -- new followers of the thread (the root's author, the mentioned), with
        -- their counters computed from the thread as it is (room locked)
        INSERT INTO chat.read_state (user_id, room_id, thread, read_seq, unread, mentions)
        SELECT x.user_id, p_room, thr, x.rs,
               (SELECT count(*) FROM chat.messages m
                 WHERE m.room_id = p_room AND m.thread_root = thr AND m.seq > x.rs
                   AND m.deleted_at IS NULL AND m.sender <> x.user_id),
               (SELECT count(*) FROM chat.messages m
                 WHERE m.room_id = p_room AND m.thread_root = thr AND m.seq > x.rs
                   AND m.deleted_at IS NULL AND m.sender <> x.user_id AND x.user_id = ANY (m.mentions))
          FROM (SELECT root.sender AS user_id, thr AS rs
                UNION ALL SELECT u, s - 1 FROM unnest(ment) u
                UNION ALL SELECT me, s) x
         WHERE EXISTS (SELECT 1 FROM chat.members j WHERE j.room_id = p_room AND j.user_id = x.user_id AND j.state = 'joined')
         ORDER BY x.user_id
        ON CONFLICT (room_id, thread, user_id) DO NOTHING;
        UPDATE chat.messages SET reply_count = reply_count + 1 WHERE room_id = p_room AND seq = thr;
    END IF;
    INSERT INTO chat.messages (room_id, seq, sender, body, attachments, mentions, reply_to, thread_root)
    VALUES (p_room, s, me, body, att, ment, p_reply_to, thr)
    RETURNING * INTO msg;

    -- One statement: the counters of the other followers of the room (or
    -- thread), the sender's receipt (sending reads the room), the sender's
    -- activity, and the notifications: mentioned followers, and offline
    -- followers at level "all" for their first unread message.
    payload := jsonb_build_object('room_id', p_room, 'seq', s, 'sender', me, 'thread_root', thr,
                                  'preview', left(body, 140));
    WITH counted AS (
        UPDATE chat.read_state
           SET unread = CASE WHEN user_id = me THEN 0 ELSE unread + 1 END,
               mentions = CASE WHEN user_id = me THEN 0 ELSE mentions + (user_id = ANY (ment))::int END,
               read_seq = CASE WHEN user_id = me THEN s ELSE read_seq END,
               read_at = CASE WHEN user_id = me THEN now() ELSE read_at END
         WHERE room_id = p_room AND thread = coalesce(thr, 0) AND (user_id = me OR read_seq < s)
        RETURNING user_id, unread
    ), touched AS (
        INSERT INTO chat.users AS u (user_id, last_active_at) VALUES (me, now())
        ON CONFLICT (user_id) DO UPDATE SET last_active_at = now()
            WHERE u.last_active_at IS NULL OR u.last_active_at < now() - interval '10 seconds'
        RETURNING 1
    )
    INSERT INTO chat.notifications (user_id, room_id, seq, kind, push, payload)
    SELECT c.user_id, p_room, s, CASE WHEN c.user_id = ANY (ment) THEN 'mention' ELSE 'message' END,
           coalesce(u.push, true),
           payload || jsonb_build_object('kind', CASE WHEN c.user_id = ANY (ment) THEN 'mention' ELSE 'message' END,
                                         'user_id', c.user_id)
      FROM counted c
      JOIN chat.members mb ON mb.room_id = p_room AND mb.user_id = c.user_id
      -- one index probe per follower (OFFSET 0 keeps the planner from a
      -- merge join that walks the users index from its start)
      LEFT JOIN LATERAL (SELECT x.push, x.muted_until, x.last_active_at FROM chat.users x
                          WHERE x.user_id = c.user_id OFFSET 0) u ON true
     WHERE c.user_id <> me AND mb.state = 'joined' AND mb.notify <> 'none'
       AND (u.muted_until IS NULL OR u.muted_until <= now())
       AND (c.user_id = ANY (ment)
            -- an offline follower at level "all" is notified of the first
            -- message it has not read, not of every one after it
            OR (mb.notify = 'all' AND c.unread = 1
                AND (u.last_active_at IS NULL OR u.last_active_at < now() - make_interval(secs => cfg.offline_s))));

    -- live: the message as chat.message_json() shows it (no reaction, no pin yet)
    payload := jsonb_build_object('room_id', p_room, 'seq', s, 'sender', me, 'body', body,
                                  'attachments', att, 'mentions', to_jsonb(ment),
                                  'reply_to', p_reply_to, 'thread_root', thr, 'reply_count', 0,
                                  'created_at', msg.created_at, 'edited_at', NULL, 'deleted', false,
                                  'reactions', '{}'::jsonb, 'pinned', false);
    PERFORM bv_realtime.send('chat:room:' || p_room, 'message.created', payload);
    IF cfg.mqtt = 1 THEN
        INSERT INTO chat.events (room_id, event, payload)
        VALUES (p_room, 'message.created', payload || '{"event": "message.created"}');
    END IF;
    RETURN jsonb_build_object('room_id', p_room, 'seq', s, 'thread_root', thr, 'mentions', to_jsonb(ment));
END
$$;
COMMENT ON FUNCTION chat.send(bigint, text, bigint, jsonb) IS 'Sends a message (text with @mentions, attachment metadata, optionally a reply in a thread); counters, notifications and live delivery in the same transaction.';

/* Adjusts counters for a message whose live/mention state changed (room locked). */
CREATE FUNCTION chat.adjust_counters(p_room bigint, p_seq bigint, p_thread bigint, p_sender text,
                                     p_unread integer, p_old_mentions text[], p_new_mentions text[])
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE chat.read_state
       SET unread = unread + p_unread,
           mentions = mentions + (user_id = ANY (p_new_mentions))::int - (user_id = ANY (p_old_mentions))::int
     WHERE room_id = p_room AND thread = coalesce(p_thread, 0) AND user_id <> p_sender AND read_seq < p_seq
$$;
COMMENT ON FUNCTION chat.adjust_counters(bigint, bigint, bigint, text, integer, text[], text[]) IS 'Internal: counter deltas of the readers who have not read a message yet.';

CREATE FUNCTION chat.edit(p_room bigint, p_seq bigint, p_body text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me text := chat.actor();
    old chat.messages;
    ment text[];
    msg chat.messages;
BEGIN
    PERFORM chat.check_body(coalesce(p_body, ''), '[]');
    PERFORM chat.membership(p_room, me, true);
    SELECT * INTO old FROM chat.messages m WHERE m.room_id = p_room AND m.seq = p_seq;
    IF NOT FOUND OR old.deleted_at IS NOT NULL THEN
        RAISE EXCEPTION 'message % not found in room %', p_seq, p_room
            USING ERRCODE = 'PT404', HINT = 'Check the message number (seq); deleted messages cannot be edited.';
    END IF;
    IF old.sender <> me THEN
        RAISE EXCEPTION 'only the sender can edit a message'
            USING ERRCODE = 'PT403', HINT = 'Edit your own messages; admins may delete others''.';
    END IF;
    IF coalesce(p_body, '') = '' AND jsonb_array_length(old.attachments) = 0 THEN
        RAISE EXCEPTION 'empty message'
            USING ERRCODE = '22023', HINT = 'Delete the message instead (api.chat_delete).';
    END IF;
    ment := chat.parse_mentions(p_room, me, p_body);
    UPDATE chat.messages SET body = p_body, mentions = ment, edited_at = now()
     WHERE room_id = p_room AND seq = p_seq RETURNING * INTO msg;
    IF ment IS DISTINCT FROM old.mentions THEN
        PERFORM chat.adjust_counters(p_room, p_seq, old.thread_root, me, 0, old.mentions, ment);
        IF old.thread_root IS NOT NULL THEN
            -- a member newly mentioned in a thread follows it from this message
            -- on, counters computed from the thread as it is (room locked)
            INSERT INTO chat.read_state (user_id, room_id, thread, read_seq, unread, mentions)
            SELECT u, p_room, old.thread_root, p_seq - 1,
                   (SELECT count(*) FROM chat.messages m
                     WHERE m.room_id = p_room AND m.thread_root = old.thread_root AND m.seq >= p_seq
                       AND m.deleted_at IS NULL AND m.sender <> u),
                   (SELECT count(*) FROM chat.messages m
                     WHERE m.room_id = p_room AND m.thread_root = old.thread_root AND m.seq >= p_seq
                       AND m.deleted_at IS NULL AND m.sender <> u AND u = ANY (m.mentions))
              FROM unnest(ment) u ORDER BY u
            ON CONFLICT (room_id, thread, user_id) DO NOTHING;
        END IF;
        -- members newly mentioned by the edit are notified
        INSERT INTO chat.notifications (user_id, room_id, seq, kind, push, payload)
        SELECT mb.user_id, p_room, p_seq, 'mention', coalesce(u.push, true),
               jsonb_build_object('room_id', p_room, 'seq', p_seq, 'sender', me, 'thread_root', old.thread_root,
                                  'preview', left(p_body, 140), 'kind', 'mention', 'user_id', mb.user_id, 'edited', true)
          FROM chat.members mb
          -- one index probe per member (OFFSET 0 keeps the planner from a merge
      -- join that walks the users index from its start)
      LEFT JOIN LATERAL (SELECT x.push, x.muted_until, x.last_active_at FROM chat.users x
                          WHERE x.user_id = mb.user_id OFFSET 0) u ON true
         WHERE mb.room_id = p_room AND mb.state = 'joined' AND mb.notify <> 'none'
           AND mb.user_id = ANY (ment) AND NOT (mb.user_id = ANY (old.mentions))
           AND (u.muted_until IS NULL OR u.muted_until <= now());
    END IF;
    PERFORM chat.touch(me);
    PERFORM chat.publish(p_room, 'message.edited', chat.message_json(msg));
    RETURN jsonb_build_object('room_id', p_room, 'seq', p_seq, 'edited', true);
END
$$;
COMMENT ON FUNCTION chat.edit(bigint, bigint, text) IS 'Edits your message (history kept by bv_audit: api.chat_edits); mentions and counters follow the new text.';

CREATE FUNCTION chat.delete_message(p_room bigint, p_seq bigint)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me text := chat.actor();
    mb chat.members := chat.membership(p_room, me, true);
    old chat.messages;
    msg chat.messages;
BEGIN
    SELECT * INTO old FROM chat.messages m WHERE m.room_id = p_room AND m.seq = p_seq;
    IF NOT FOUND OR old.deleted_at IS NOT NULL THEN
        RAISE EXCEPTION 'message % not found in room %', p_seq, p_room
            USING ERRCODE = 'PT404', HINT = 'Check the message number (seq); it may be deleted already.';
    END IF;
    IF old.sender <> me AND mb.role NOT IN ('owner', 'admin') THEN
        RAISE EXCEPTION 'only the sender or a room admin can delete a message'
            USING ERRCODE = 'PT403', HINT = 'Ask an admin of the room.';
    END IF;
    UPDATE chat.messages SET body = '', attachments = '[]', mentions = '{}', deleted_at = now()
     WHERE room_id = p_room AND seq = p_seq RETURNING * INTO msg;
    PERFORM chat.adjust_counters(p_room, p_seq, old.thread_root, old.sender, -1, old.mentions, '{}');
    IF old.thread_root IS NOT NULL THEN
        UPDATE chat.messages SET reply_count = reply_count - 1 WHERE room_id = p_room AND seq = old.thread_root;
    END IF;
    DELETE FROM chat.pins WHERE room_id = p_room AND seq = p_seq;
    DELETE FROM chat.reactions WHERE room_id = p_room AND seq = p_seq;
    PERFORM chat.touch(me);
    PERFORM chat.publish(p_room, 'message.deleted', jsonb_build_object('room_id', p_room, 'seq', p_seq, 'by', me,
                                                                       'thread_root', old.thread_root));
    RETURN jsonb_build_object('room_id', p_room, 'seq', p_seq, 'deleted', true);
END
$$;
COMMENT ON FUNCTION chat.delete_message(bigint, bigint) IS 'Deletes a message (the sender, or a room admin): a tombstone stays in the history; counters drop it.';

CREATE FUNCTION chat.react(p_room bigint, p_seq bigint, p_emoji text, p_on boolean DEFAULT true)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me text := chat.actor();
    n integer;
BEGIN
    IF p_emoji IS NULL OR char_length(p_emoji) NOT BETWEEN 1 AND 32 OR p_emoji ~ '[[:space:][:cntrl:]]' THEN
        RAISE EXCEPTION 'invalid reaction'
            USING ERRCODE = '22023', HINT = 'A reaction is an emoji or a short name: 1-32 characters, no spaces.';
    END IF;
    PERFORM chat.membership(p_room, me, false);
    IF NOT EXISTS (SELECT 1 FROM chat.messages m WHERE m.room_id = p_room AND m.seq = p_seq AND m.deleted_at IS NULL) THEN
        RAISE EXCEPTION 'message % not found in room %', p_seq, p_room
            USING ERRCODE = 'PT404', HINT = 'React to a message of the room that was not deleted.';
    END IF;
    IF coalesce(p_on, true) THEN
        IF (SELECT count(DISTINCT emoji) FROM chat.reactions WHERE room_id = p_room AND seq = p_seq) >= 50
           AND NOT EXISTS (SELECT 1 FROM chat.reactions WHERE room_id = p_room AND seq = p_seq AND emoji = p_emoji) THEN
            RAISE EXCEPTION 'too many different reactions on message %', p_seq
                USING ERRCODE = 'PT409', HINT = 'Use one of the reactions already there.';
        END IF;
        INSERT INTO chat.reactions (room_id, seq, user_id, emoji) VALUES (p_room, p_seq, me, p_emoji)
        ON CONFLICT DO NOTHING;
    ELSE
        DELETE FROM chat.reactions WHERE room_id = p_room AND seq = p_seq AND user_id = me AND emoji = p_emoji;
    END IF;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        PERFORM chat.publish(p_room, CASE WHEN coalesce(p_on, true) THEN 'reaction.added' ELSE 'reaction.removed' END,
                             jsonb_build_object('room_id', p_room, 'seq', p_seq, 'user_id', me, 'emoji', p_emoji));
    END IF;
    RETURN jsonb_build_object('room_id', p_room, 'seq', p_seq, 'emoji', p_emoji, 'on', coalesce(p_on, true));
END
$$;
COMMENT ON FUNCTION chat.react(bigint, bigint, text, boolean) IS 'Adds (or removes) your reaction to a message.';

CREATE FUNCTION chat.pin(p_room bigint, p_seq bigint, p_on boolean DEFAULT true)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me text := chat.actor();
    mb chat.members := chat.membership(p_room, me, false);
    k text;
    n integer;
BEGIN
    SELECT kind INTO k FROM chat.rooms WHERE id = p_room;
    IF k <> 'direct' AND mb.role NOT IN ('owner', 'admin') THEN
        RAISE EXCEPTION 'only a room admin can pin messages'
            USING ERRCODE = 'PT403', HINT = 'Ask an admin of the room.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM chat.messages m WHERE m.room_id = p_room AND m.seq = p_seq AND m.deleted_at IS NULL) THEN
        RAISE EXCEPTION 'message % not found in room %', p_seq, p_room
            USING ERRCODE = 'PT404', HINT = 'Pin a message of the room that was not deleted.';
    END IF;
    IF coalesce(p_on, true) THEN
        IF (SELECT count(*) FROM chat.pins WHERE room_id = p_room) >= 100 THEN
            RAISE EXCEPTION 'room % has too many pinned messages', p_room
                USING ERRCODE = 'PT409', HINT = 'Unpin a message first (at most 100).';
        END IF;
        INSERT INTO chat.pins (room_id, seq, pinned_by) VALUES (p_room, p_seq, me) ON CONFLICT DO NOTHING;
    ELSE
        DELETE FROM chat.pins WHERE room_id = p_room AND seq = p_seq;
    END IF;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        PERFORM chat.publish(p_room, CASE WHEN coalesce(p_on, true) THEN 'message.pinned' ELSE 'message.unpinned' END,
                             jsonb_build_object('room_id', p_room, 'seq', p_seq, 'by', me));
    END IF;
    RETURN jsonb_build_object('room_id', p_room, 'seq', p_seq, 'pinned', coalesce(p_on, true));
END
$$;
COMMENT ON FUNCTION chat.pin(bigint, bigint, boolean) IS 'Pins (or unpins) a message (admins; anyone in a direct room).';

/*
 * Read receipt: "read up to message N" of the room's main timeline (thread
 * 0) or of a thread.  Locks the one read_state row, then recounts in a new
 * statement: see the lock-order note at the top of the file.
 */
CREATE FUNCTION chat.mark_read(p_room bigint, p_seq bigint DEFAULT NULL, p_thread bigint DEFAULT 0)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me text := chat.actor();
    thr bigint := coalesce(p_thread, 0);
    upto bigint;
    cur bigint;
    u integer;
    n integer;
BEGIN
    PERFORM chat.membership(p_room, me, false);
    IF p_seq IS NOT NULL AND p_seq < 0 THEN
        RAISE EXCEPTION 'invalid message number %', p_seq
            USING ERRCODE = '22023', HINT = 'Pass the seq of the last message you read (or NULL for all).';
    END IF;
    SELECT read_seq INTO cur FROM chat.read_state
     WHERE room_id = p_room AND thread = thr AND user_id = me FOR UPDATE;
    IF NOT FOUND THEN
        IF thr = 0 OR NOT EXISTS (SELECT 1 FROM chat.messages m WHERE m.room_id = p_room AND m.seq = thr AND m.thread_root IS NULL) THEN
            RAISE EXCEPTION 'thread % not found in room %', thr, p_room
                USING ERRCODE = 'PT404', HINT = 'Pass the seq of the thread''s first message, or 0 for the main timeline.';
        END IF;
        -- reading a thread one does not follow yet starts following it
        INSERT INTO chat.read_state (user_id, room_id, thread, read_seq) VALUES (me, p_room, thr, thr)
        ON CONFLICT (room_id, thread, user_id) DO NOTHING;
        SELECT read_seq INTO cur FROM chat.read_state
         WHERE room_id = p_room AND thread = thr AND user_id = me FOR UPDATE;
    END IF;
    -- never beyond the last committed message; receipts never go backwards
    SELECT least(coalesce(p_seq, r.last_seq), r.last_seq) INTO upto FROM chat.rooms r WHERE r.id = p_room;
    upto := greatest(upto, cur);
    -- new statement, new snapshot: sees every message committed before the row lock was granted
    SELECT count(*), count(*) FILTER (WHERE me = ANY (m.mentions)) INTO u, n
      FROM chat.messages m
     WHERE m.room_id = p_room AND m.seq > upto AND m.deleted_at IS NULL AND m.sender <> me
       AND CASE WHEN thr = 0 THEN m.thread_root IS NULL ELSE m.thread_root = thr END;
    UPDATE chat.read_state SET read_seq = upto, unread = u, mentions = n, read_at = now()
     WHERE room_id = p_room AND thread = thr AND user_id = me;
    PERFORM chat.touch(me);
    IF upto > cur THEN
        PERFORM chat.publish(p_room, 'receipt', jsonb_build_object('room_id', p_room, 'user_id', me, 'thread', thr, 'seq', upto));
    END IF;
    RETURN jsonb_build_object('room_id', p_room, 'thread', thr, 'read_seq', upto, 'unread', u, 'mentions', n);
END
$$;
COMMENT ON FUNCTION chat.mark_read(bigint, bigint, bigint) IS 'Read receipt: you read the room''s main timeline (thread 0) or a thread up to message seq (NULL: everything). Returns the exact remaining unread and mention counts.';

CREATE FUNCTION chat.set_notify(p_room bigint, p_notify text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me text := chat.actor();
BEGIN
    IF p_notify IS NULL OR p_notify NOT IN ('all', 'mentions', 'none') THEN
        RAISE EXCEPTION 'invalid notification level "%"', left(coalesce(p_notify, '(null)'), 20)
            USING ERRCODE = '22023', HINT = 'Use all, mentions or none (mute).';
    END IF;
    PERFORM chat.membership(p_room, me, false);
    UPDATE chat.members SET notify = p_notify WHERE room_id = p_room AND user_id = me;
    RETURN jsonb_build_object('room_id', p_room, 'notify', p_notify);
END
$$;
COMMENT ON FUNCTION chat.set_notify(bigint, text) IS 'Per-room notification level: all, mentions or none (muted).';

CREATE FUNCTION chat.set_user_settings(p_muted_until timestamptz DEFAULT NULL, p_push boolean DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me text := chat.actor();
    u chat.users;
BEGIN
    INSERT INTO chat.users (user_id) VALUES (me) ON CONFLICT DO NOTHING;
    UPDATE chat.users SET muted_until = CASE WHEN p_muted_until IS NULL THEN muted_until
                                             WHEN p_muted_until <= now() THEN NULL ELSE p_muted_until END,
                          push = coalesce(p_push, push)
     WHERE user_id = me RETURNING * INTO u;
    RETURN jsonb_build_object('muted_until', u.muted_until, 'push', u.push);
END
$$;
COMMENT ON FUNCTION chat.set_user_settings(timestamptz, boolean) IS 'Your global settings: do not disturb until a time (a past time ends it), push notifications on or off.';

CREATE FUNCTION chat.typing(p_room bigint, p_thread bigint DEFAULT 0)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me text := chat.actor();
BEGIN
    PERFORM chat.membership(p_room, me, false);
    PERFORM bv.rate_limit_enforce('chat:typing:' || me, 2, 5);
    PERFORM bv_realtime.send('chat:room:' || p_room, 'typing',
                             jsonb_build_object('room_id', p_room, 'user_id', me, 'thread', coalesce(p_thread, 0)));
END
$$;
COMMENT ON FUNCTION chat.typing(bigint, bigint) IS 'Ephemeral "is typing" event to the room''s live subscribers (no table write).';

/* ---------- reads ---------- */

CREATE FUNCTION chat.page_size(p integer)
RETURNS integer
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p IS NULL OR p < 1 OR p > chat.setting('page_max') THEN
        RAISE EXCEPTION 'invalid page size %', p
            USING ERRCODE = '22023', HINT = format('Pass 1-%s.', chat.setting('page_max'));
    END IF;
    RETURN p;
END
$$;
COMMENT ON FUNCTION chat.page_size(integer) IS 'Internal: validates a page size.';

/*
 * History of a room (or a thread) by keyset: before = seq (older messages,
 * newest first), after = seq (newer, oldest first), around = seq (the
 * message and page_size/2 on each side, oldest first), none: the newest.
 */
/* Messages of a room by seq, as JSON, in the order of p_seqs: one query. */
CREATE FUNCTION chat.render(p_room bigint, p_seqs bigint[])
RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT jsonb_build_object('room_id', m.room_id, 'seq', m.seq, 'sender', m.sender, 'body', m.body,
                              'attachments', m.attachments, 'mentions', to_jsonb(m.mentions),
                              'reply_to', m.reply_to, 'thread_root', m.thread_root,
                              'reply_count', m.reply_count, 'created_at', m.created_at,
                              'edited_at', m.edited_at, 'deleted', m.deleted_at IS NOT NULL,
                              'reactions', coalesce(r.agg, '{}'::jsonb), 'pinned', p.seq IS NOT NULL)
      FROM unnest(p_seqs) WITH ORDINALITY k(seq, ord)
      JOIN chat.messages m ON m.room_id = p_room AND m.seq = k.seq
      LEFT JOIN chat.pins p ON p.room_id = m.room_id AND p.seq = m.seq
      LEFT JOIN LATERAL (SELECT jsonb_object_agg(x.emoji, x.users) AS agg
                           FROM (SELECT e.emoji, jsonb_agg(e.user_id ORDER BY e.reacted_at) AS users
                                   FROM chat.reactions e WHERE e.room_id = m.room_id AND e.seq = m.seq
                                  GROUP BY e.emoji) x) r ON true
     ORDER BY k.ord;
END
$$;
COMMENT ON FUNCTION chat.render(bigint, bigint[]) IS 'Internal: the JSON form of a page of messages (with reactions and pin), in the given order.';

/*
 * History of a room (or a thread) by keyset: before = seq (older messages,
 * newest first), after = seq (newer, oldest first), around = seq (the
 * message and page_size/2 on each side, oldest first), none: the newest.
 */
CREATE FUNCTION chat.history(p_room bigint, p_before bigint DEFAULT NULL, p_after bigint DEFAULT NULL,
                             p_around bigint DEFAULT NULL, p_limit integer DEFAULT 50, p_thread bigint DEFAULT NULL)
RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me text := chat.actor();
    lim integer := chat.page_size(p_limit);
    seqs bigint[];
BEGIN
    IF (p_before IS NOT NULL)::int + (p_after IS NOT NULL)::int + (p_around IS NOT NULL)::int > 1 THEN
        RAISE EXCEPTION 'give at most one of before, after and around'
            USING ERRCODE = '22023', HINT = 'before: older than seq; after: newer than seq; around: both sides of seq.';
    END IF;
    PERFORM chat.membership(p_room, me, false);
    IF p_thread IS NOT NULL THEN
        -- a thread: its root, then its replies, oldest first
        seqs := ARRAY(SELECT m.seq FROM chat.messages m
                       WHERE m.room_id = p_room AND (m.seq = p_thread AND m.thread_root IS NULL OR m.thread_root = p_thread)
                         AND m.seq > coalesce(p_after, -1) AND m.seq < coalesce(p_before, 9223372036854775807)
                       ORDER BY m.seq LIMIT lim);
    ELSIF p_after IS NOT NULL THEN
        seqs := ARRAY(SELECT m.seq FROM chat.messages m
                       WHERE m.room_id = p_room AND m.seq > p_after ORDER BY m.seq LIMIT lim);
    ELSIF p_around IS NOT NULL THEN
        seqs := ARRAY(SELECT x.seq FROM (
                        (SELECT m.seq FROM chat.messages m
                          WHERE m.room_id = p_room AND m.seq < p_around ORDER BY m.seq DESC LIMIT lim / 2)
                        UNION ALL
                        (SELECT m.seq FROM chat.messages m
                          WHERE m.room_id = p_room AND m.seq >= p_around ORDER BY m.seq LIMIT lim - lim / 2)) x
                       ORDER BY x.seq);
    ELSE
        seqs := ARRAY(SELECT m.seq FROM chat.messages m
                       WHERE m.room_id = p_room AND m.seq < coalesce(p_before, 9223372036854775807)
                       ORDER BY m.seq DESC LIMIT lim);
    END IF;
    RETURN QUERY SELECT * FROM chat.render(p_room, seqs);
END
$$;
COMMENT ON FUNCTION chat.history(bigint, bigint, bigint, bigint, integer, bigint) IS 'A page of a room''s messages (tombstones included): before = seq (older, newest first), after = seq (newer, oldest first), around = seq (both sides, oldest first), thread = root seq (the thread, oldest first).';

CREATE FUNCTION chat.room_list(p_after bigint DEFAULT NULL, p_limit integer DEFAULT 50)
RETURNS TABLE (room_id bigint, kind text, name text, topic text, role text, notify text, member_count integer,
               last_seq bigint, last_message_at timestamptz, read_seq bigint, unread integer, mentions integer,
               thread_unread bigint, thread_mentions bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me text := chat.actor();
    lim integer := chat.page_size(p_limit);
BEGIN
    RETURN QUERY
    SELECT r.id, r.kind,
           CASE WHEN r.kind = 'direct' THEN coalesce((SELECT string_agg(o.user_id, ', ') FROM chat.members o
                                                      WHERE o.room_id = r.id AND o.user_id <> me), '') ELSE r.name END,
           r.topic, mb.role, mb.notify, r.member_count, r.last_seq, r.last_message_at,
           rs.read_seq, rs.unread, rs.mentions,
           coalesce(t.u, 0), coalesce(t.n, 0)
      FROM chat.members mb
      JOIN chat.rooms r ON r.id = mb.room_id
      LEFT JOIN chat.read_state rs ON rs.room_id = mb.room_id AND rs.thread = 0 AND rs.user_id = me
      LEFT JOIN LATERAL (SELECT sum(x.unread) AS u, sum(x.mentions) AS n FROM chat.read_state x
                          WHERE x.room_id = mb.room_id AND x.user_id = me AND x.thread > 0) t ON true
     WHERE mb.user_id = me AND mb.state = 'joined' AND mb.room_id > coalesce(p_after, 0)
     ORDER BY mb.room_id
     LIMIT lim;
END
$$;
COMMENT ON FUNCTION chat.room_list(bigint, integer) IS 'Your rooms with exact unread and mention counts (main timeline and threads); next page: after = last room_id.';

CREATE FUNCTION chat.members_of(p_room bigint, p_after text DEFAULT NULL, p_limit integer DEFAULT 100)
RETURNS TABLE (user_id text, role text, joined_at timestamptz, read_seq bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me text := chat.actor();
    lim integer := chat.page_size(p_limit);
BEGIN
    PERFORM chat.membership(p_room, me, false);
    RETURN QUERY
    SELECT m.user_id, m.role, m.joined_at, rs.read_seq
      FROM chat.members m
      LEFT JOIN chat.read_state rs ON rs.room_id = m.room_id AND rs.thread = 0 AND rs.user_id = m.user_id
     WHERE m.room_id = p_room AND m.state = 'joined' AND m.user_id > coalesce(p_after, '')
     ORDER BY m.user_id LIMIT lim;
END
$$;
COMMENT ON FUNCTION chat.members_of(bigint, text, integer) IS 'Members of a room you are in, with their read receipts; next page: after = last user_id.';

CREATE FUNCTION chat.channels(p_after bigint DEFAULT NULL, p_limit integer DEFAULT 50)
RETURNS TABLE (room_id bigint, name text, topic text, member_count integer)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lim integer := chat.page_size(p_limit);
BEGIN
    PERFORM chat.actor();
    RETURN QUERY SELECT r.id, r.name, r.topic, r.member_count FROM chat.rooms r
                  WHERE r.kind = 'channel' AND r.id > coalesce(p_after, 0) ORDER BY r.id LIMIT lim;
END
$$;
COMMENT ON FUNCTION chat.channels(bigint, integer) IS 'Channels anyone may join (names and topics only); next page: after = last room_id.';

CREATE FUNCTION chat.pinned(p_room bigint)
RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM chat.membership(p_room, chat.actor(), false);
    RETURN QUERY SELECT chat.message_json(m) FROM chat.pins p JOIN chat.messages m USING (room_id, seq)
                  WHERE p.room_id = p_room ORDER BY p.pinned_at DESC, p.seq DESC;
END
$$;
COMMENT ON FUNCTION chat.pinned(bigint) IS 'Pinned messages of a room, last pinned first.';

CREATE FUNCTION chat.edits(p_room bigint, p_seq bigint)
RETURNS TABLE (version integer, body text, changed_at timestamptz, actor text)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tbl regclass;
BEGIN
    PERFORM chat.membership(p_room, chat.actor(), false);
    IF NOT EXISTS (SELECT 1 FROM chat.messages m WHERE m.room_id = p_room AND m.seq = p_seq AND m.deleted_at IS NULL) THEN
        RAISE EXCEPTION 'message % not found in room %', p_seq, p_room
            USING ERRCODE = 'PT404', HINT = 'Check the message number (seq); deleted messages have no readable history.';
    END IF;
    -- the audit table itself: bv_audit.history() refuses readers under RLS,
    -- and this function has checked the membership already
    SELECT t.audit_relid INTO tbl FROM bv_audit.tracked t WHERE t.relid = 'chat.messages'::regclass;
    RETURN QUERY EXECUTE format(
        'SELECT (row_number() OVER (ORDER BY a.audit_id))::integer, a.body, a.audit_ts, a.audit_actor
           FROM %s a
          WHERE a.room_id = $1 AND a.seq = $2
            AND (a.audit_op IN (''I'', ''S'') OR (a.audit_op = ''U'' AND ''body'' = ANY (a.audit_changed)))
          ORDER BY a.audit_id', tbl)
    USING p_room, p_seq;
END
$$;
COMMENT ON FUNCTION chat.edits(bigint, bigint) IS 'Every version of a message''s text, oldest first (from bv_audit).';

CREATE FUNCTION chat.my_notifications(p_before bigint DEFAULT NULL, p_limit integer DEFAULT 50)
RETURNS SETOF chat.notifications
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me text := chat.actor();
    lim integer := chat.page_size(p_limit);
BEGIN
    RETURN QUERY SELECT n.* FROM chat.notifications n
                  WHERE n.user_id = me AND n.id < coalesce(p_before, 9223372036854775807)
                    AND EXISTS (SELECT 1 FROM chat.members m WHERE m.room_id = n.room_id AND m.user_id = me AND m.state = 'joined')
                  ORDER BY n.id DESC LIMIT lim;
END
$$;
COMMENT ON FUNCTION chat.my_notifications(bigint, integer) IS 'Your notifications (of rooms you are still in), newest first; next page: before = last id.';

CREATE FUNCTION chat.notifications_seen(p_upto bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me text := chat.actor();
    n bigint;
BEGIN
    UPDATE chat.notifications SET seen_at = now()
     WHERE user_id = me AND seen_at IS NULL AND id <= coalesce(p_upto, 9223372036854775807);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION chat.notifications_seen(bigint) IS 'Marks your notifications seen (up to an id, or all); returns how many.';

/* What a user missed: per room with unread messages, the counts and the first unread ones. */
CREATE FUNCTION chat.digest_of(p_user text, p_per_room integer DEFAULT 3)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'room_id', r.id, 'name', r.name, 'kind', r.kind, 'unread', x.unread, 'mentions', x.mentions,
               'first_unread', (SELECT coalesce(jsonb_agg(jsonb_build_object('seq', m.seq, 'sender', m.sender,
                                                                               'preview', left(m.body, 140)) ORDER BY m.seq), '[]')
                                  FROM (SELECT * FROM chat.messages m
                                         WHERE m.room_id = r.id AND m.seq > x.read_seq AND m.thread_root IS NULL
                                           AND m.deleted_at IS NULL AND m.sender <> p_user
                                         ORDER BY m.seq LIMIT p_per_room) m))
             ORDER BY x.mentions DESC, x.unread DESC, r.id), '[]')
      FROM (SELECT rs.room_id, rs.read_seq, rs.unread, rs.mentions FROM chat.read_state rs
             WHERE rs.user_id = p_user AND rs.thread = 0 AND rs.unread > 0) x
      JOIN chat.rooms r ON r.id = x.room_id
      JOIN chat.members mb ON mb.room_id = r.id AND mb.user_id = p_user AND mb.state = 'joined' AND mb.notify <> 'none'
$$;
COMMENT ON FUNCTION chat.digest_of(text, integer) IS 'Internal: the digest of a user (rooms with unread messages, counts, first unread messages).';

CREATE FUNCTION chat.digest()
RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT chat.digest_of(chat.actor(), 3) $$;
COMMENT ON FUNCTION chat.digest() IS 'What you missed: rooms with unread messages (mentions first), with the first unread messages.';

/* pg_cron: a digest notification to users offline for digest_after_hours with unread messages. */
CREATE FUNCTION chat.send_digests()
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    h interval := make_interval(hours => chat.setting('digest_after_hours')::int);
    n bigint := 0;
    u record;
    d jsonb;
BEGIN
    FOR u IN SELECT x.user_id, x.push FROM chat.users x
              WHERE (x.last_active_at IS NULL OR x.last_active_at < now() - h)
                AND (x.digest_at IS NULL OR x.digest_at < now() - h)
                AND (x.muted_until IS NULL OR x.muted_until <= now())
                AND EXISTS (SELECT 1 FROM chat.read_state rs WHERE rs.user_id = x.user_id AND rs.unread > 0)
              ORDER BY x.user_id LIMIT 10000
    LOOP
        d := chat.digest_of(u.user_id, 3);
        IF jsonb_array_length(d) > 0 THEN
            INSERT INTO chat.notifications (user_id, room_id, kind, push, payload)
            VALUES (u.user_id, (d -> 0 ->> 'room_id')::bigint, 'digest', u.push,
                    jsonb_build_object('kind', 'digest', 'user_id', u.user_id, 'rooms', d));
            n := n + 1;
        END IF;
        UPDATE chat.users SET digest_at = now() WHERE user_id = u.user_id;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION chat.send_digests() IS 'Writes digest notifications (pushed like the others) for users offline for digest_after_hours with unread messages; run by pg_cron.';

CREATE FUNCTION chat.purge()
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    DELETE FROM chat.events WHERE occurred_at < now() - make_interval(hours => chat.setting('events_retention_hours')::int);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION chat.purge() IS 'Deletes chat.events older than events_retention_hours (bv_cdc routes inserts only, so purges are not published).';

/* ---------- search ---------- */

CREATE FUNCTION chat.html_escape(t text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT replace(replace(replace(replace(t, '&', '&amp;'), '<', '&lt;'), '>', '&gt;'), '"', '&quot;') $$;
COMMENT ON FUNCTION chat.html_escape(text) IS 'Internal: HTML-escapes a text.';

/*
 * Search of the messages the caller can see (rooms joined now, not
 * deleted).  A message matches when every term of the query occurs in it as
 * a substring, case-insensitively: whole words, word fragments and CJK text
 * (which has no spaces) alike; the pg_trgm index finds the candidates and
 * the tsvector index the whole words.  Ranked by whole-word relevance
 * (ts_rank) plus fragment similarity (word_similarity), then newest.  The
 * highlight is the HTML-escaped text with matches in <mark>...</mark>.
 */
CREATE FUNCTION chat.search(p_query text, p_room bigint DEFAULT NULL, p_limit integer DEFAULT 20)
RETURNS TABLE (room_id bigint, seq bigint, sender text, created_at timestamptz, rank real, highlight text)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me text := chat.actor();
    lim integer := chat.page_size(p_limit);
    q text := btrim(regexp_replace(coalesce(p_query, ''), '[[:space:][:cntrl:]]+', ' ', 'g'));
    terms text[];
    pats text[];
    re text;
BEGIN
    IF char_length(q) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'invalid search query'
            USING ERRCODE = '22023', HINT = 'Search for 1-200 characters.';
    END IF;
    SELECT array_agg(DISTINCT t) INTO terms FROM regexp_split_to_table(q, ' ') t WHERE t <> '';
    IF cardinality(terms) > 8 THEN
        RAISE EXCEPTION 'too many search terms: %', cardinality(terms)
            USING ERRCODE = '22023', HINT = 'Search for at most 8 words.';
    END IF;
    SELECT array_agg('%' || replace(replace(replace(t, '\', '\\'), '%', '\%'), '_', '\_') || '%'),
           string_agg(regexp_replace(t, '([^[:alnum:][:space:]])', '\\\1', 'g'), '|' ORDER BY char_length(t) DESC)
      INTO pats, re FROM unnest(terms) t;
    IF p_room IS NOT NULL THEN
        PERFORM chat.membership(p_room, me, false);
    END IF;
    RETURN QUERY EXECUTE $q$
        SELECT m.room_id, m.seq, m.sender, m.created_at,
               (ts_rank(to_tsvector('simple', m.body), plainto_tsquery('simple', $3))
                + public.word_similarity($3, m.body))::real AS rank,
               replace(replace(chat.html_escape(regexp_replace(translate(m.body, E'\x01\x02', ''), '(' || $5 || ')', E'\x01\\1\x02', 'gi')),
                               E'\x01', '<mark>'), E'\x02', '</mark>')
          FROM chat.messages m
          JOIN chat.members mb ON mb.room_id = m.room_id AND mb.user_id = $1 AND mb.state = 'joined'
         WHERE m.deleted_at IS NULL
           AND ($2::bigint IS NULL OR m.room_id = $2)
           AND m.body ILIKE $4[1]
           AND m.body ILIKE ALL ($4)
         ORDER BY rank DESC, m.created_at DESC, m.room_id, m.seq DESC
         LIMIT $6 $q$
    USING me, p_room, q, pats, re, lim;
END
$$;
COMMENT ON FUNCTION chat.search(text, bigint, integer) IS 'Searches the messages you can see (all your rooms, or one): every term must occur (words, word fragments, CJK text); ranked, with an HTML-safe highlight (<mark>).';

/* ---------- bv_cdc: MQTT and push webhooks ---------- */

CREATE FUNCTION chat.route_mqtt(p_sink text, p_topic text DEFAULT 'chat/rooms/{key}')
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    id bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'bv_cdc') THEN
        RAISE EXCEPTION 'bv_cdc is not installed'
            USING ERRCODE = '55000', HINT = 'CREATE EXTENSION bv_cdc, add an MQTT sink with bv_cdc.add_sink(), then call this again.';
    END IF;
    EXECUTE 'SELECT bv_cdc.add_route($1, $2, $3, NULL, NULL, $4, $5)'
       INTO id USING 'chat.events', p_sink, p_topic, ARRAY['c'], '{"qos": 1}'::jsonb;
    UPDATE chat.settings SET value = 1 WHERE name = 'mqtt_events';
    RETURN id;
END
$$;
COMMENT ON FUNCTION chat.route_mqtt(text, text) IS 'Streams live events to an MQTT sink of bv_cdc at QoS 1: topic chat/rooms/<room_id>/<event id> (subscribe to chat/rooms/<room_id>/#); turns mqtt_events on.';

CREATE FUNCTION chat.route_push(p_sink text)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    id bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'bv_cdc') THEN
        RAISE EXCEPTION 'bv_cdc is not installed'
            USING ERRCODE = '55000', HINT = 'CREATE EXTENSION bv_cdc, add a webhook sink with bv_cdc.add_sink(), then call this again.';
    END IF;
    EXECUTE 'SELECT bv_cdc.add_route($1, $2, $3, $4, NULL, $5)'
       INTO id USING 'chat.notifications', p_sink, 'chat.push', ARRAY['id', 'user_id', 'room_id', 'seq', 'kind', 'push', 'payload', 'created_at'], ARRAY['c'];
    RETURN id;
END
$$;
COMMENT ON FUNCTION chat.route_push(text) IS 'Delivers every new notification to a webhook sink of bv_cdc (signed, retried, spooled): the push service receives the envelope, whose "after" is the notification (send a push when push is true).';

/* ---------- pg_cron ---------- */

CREATE FUNCTION chat.schedule_jobs()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE 'SELECT cron.schedule($1, $2, $3)' USING 'chat-digests', '*/15 * * * *', 'SELECT chat.send_digests()';
    EXECUTE 'SELECT cron.schedule($1, $2, $3)' USING 'chat-purge', '17 * * * *', 'SELECT chat.purge()';
END
$$;
COMMENT ON FUNCTION chat.schedule_jobs() IS 'Schedules the digests and the events purge with pg_cron (called at install when pg_cron is present).';

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        PERFORM chat.schedule_jobs();
    END IF;
END
$$;

/* ---------- bv_realtime: who may subscribe ---------- */

CREATE FUNCTION chat.can_subscribe(topic text, action text)
RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF action NOT IN ('subscribe', 'publish', 'presence') OR topic !~ '^chat:room:[0-9]{1,18}$' THEN
        RETURN false;
    END IF;
    -- client messages: "typing" only (the gateway sets request.realtime.event),
    -- so that a member cannot forge message.created & co. as another sender
    IF action = 'publish' AND coalesce(current_setting('request.realtime.event', true), '') <> 'typing' THEN
        RETURN false;
    END IF;
    RETURN chat.is_member(substr(topic, 11)::bigint);
END
$$;
COMMENT ON FUNCTION chat.can_subscribe(text, text) IS 'bv_realtime check function: a user may subscribe to chat:room:<id>, publish client messages of event typing (no other event) and track presence there when a joined member (checked at join / first use; leaving, a kick or a ban revokes it with bv_realtime.revoke()).';

INSERT INTO bv_realtime.topic_grants (topic_pattern, action, grantee, check_function, comment)
VALUES ('chat:room:*', 'subscribe', 'bv_user', 'chat.can_subscribe(text,text)'::regprocedure,
        'bv_chat: room members receive the room''s live events'),
       ('chat:room:*', 'publish', 'bv_user', 'chat.can_subscribe(text,text)'::regprocedure,
        'bv_chat: room members publish ephemeral client messages (typing) on the room topic'),
       ('chat:room:*', 'presence', 'bv_user', 'chat.can_subscribe(text,text)'::regprocedure,
        'bv_chat: room members track their presence in the room'),
       ('chat:user:{sub}', 'subscribe', 'bv_user', NULL,
        'bv_chat: each user''s own notifications');

/* ---------- row-level security ---------- */

ALTER TABLE chat.rooms ENABLE ROW LEVEL SECURITY;
ALTER TABLE chat.members ENABLE ROW LEVEL SECURITY;
ALTER TABLE chat.messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE chat.reactions ENABLE ROW LEVEL SECURITY;
ALTER TABLE chat.pins ENABLE ROW LEVEL SECURITY;
ALTER TABLE chat.read_state ENABLE ROW LEVEL SECURITY;
ALTER TABLE chat.notifications ENABLE ROW LEVEL SECURITY;
ALTER TABLE chat.users ENABLE ROW LEVEL SECURITY;

CREATE POLICY visible ON chat.rooms FOR SELECT USING (chat.is_staff() OR kind = 'channel' OR chat.is_member(id));
CREATE POLICY visible ON chat.members FOR SELECT USING (chat.is_staff() OR chat.is_member(room_id));
CREATE POLICY visible ON chat.messages FOR SELECT USING (chat.is_staff() OR chat.is_member(room_id));
CREATE POLICY visible ON chat.reactions FOR SELECT USING (chat.is_staff() OR chat.is_member(room_id));
CREATE POLICY visible ON chat.pins FOR SELECT USING (chat.is_staff() OR chat.is_member(room_id));
CREATE POLICY own ON chat.read_state FOR SELECT USING (chat.is_staff() OR (user_id = (SELECT chat.me()) AND chat.is_member(room_id)));
CREATE POLICY own ON chat.notifications FOR SELECT USING (chat.is_staff() OR (user_id = (SELECT chat.me()) AND chat.is_member(room_id)));
CREATE POLICY own ON chat.users FOR SELECT USING (chat.is_staff() OR user_id = (SELECT chat.me()));

/* ---------- privileges ---------- */

REVOKE ALL ON ALL TABLES IN SCHEMA chat FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA chat FROM PUBLIC;
GRANT USAGE ON SCHEMA chat TO bv_anon;
GRANT SELECT ON chat.rooms, chat.members, chat.messages, chat.reactions, chat.pins, chat.read_state,
                chat.notifications, chat.users TO bv_user;
GRANT SELECT ON ALL TABLES IN SCHEMA chat TO bv_service;
GRANT SELECT, UPDATE ON chat.settings TO bv_admin;
GRANT EXECUTE ON FUNCTION chat.me(), chat.is_staff(), chat.is_member(bigint), chat.can_subscribe(text, text) TO bv_anon;
GRANT EXECUTE ON FUNCTION chat.create_room(text, text, text, text[]), chat.open_direct(text), chat.join_room(bigint),
    chat.leave_room(bigint), chat.add_member(bigint, text, text), chat.kick(bigint, text), chat.ban(bigint, text, boolean),
    chat.set_role(bigint, text, text), chat.send(bigint, text, bigint, jsonb), chat.edit(bigint, bigint, text),
    chat.delete_message(bigint, bigint), chat.react(bigint, bigint, text, boolean), chat.pin(bigint, bigint, boolean),
    chat.mark_read(bigint, bigint, bigint), chat.set_notify(bigint, text), chat.set_user_settings(timestamptz, boolean),
    chat.typing(bigint, bigint), chat.history(bigint, bigint, bigint, bigint, integer, bigint),
    chat.room_list(bigint, integer), chat.members_of(bigint, text, integer), chat.channels(bigint, integer),
    chat.pinned(bigint), chat.edits(bigint, bigint), chat.my_notifications(bigint, integer),
    chat.notifications_seen(bigint), chat.digest(), chat.search(text, bigint, integer) TO bv_user;

/* ---------- the REST API (schema api, names prefixed chat_) ---------- */

CREATE FUNCTION api.chat_create_room(kind text, name text, topic text DEFAULT '', members text[] DEFAULT '{}')
RETURNS jsonb LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT chat.create_room(kind, name, topic, members) $$;
COMMENT ON FUNCTION api.chat_create_room(text, text, text, text[]) IS 'Creates a group or channel room (you are its owner), with initial members (user ids).';

CREATE FUNCTION api.chat_direct(user_id text)
RETURNS jsonb LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT chat.open_direct(user_id) $$;
COMMENT ON FUNCTION api.chat_direct(text) IS 'Your direct room with another user (created on first use).';

CREATE FUNCTION api.chat_join(room_id bigint)
RETURNS jsonb LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT chat.join_room(room_id) $$;
COMMENT ON FUNCTION api.chat_join(bigint) IS 'Joins a channel.';

CREATE FUNCTION api.chat_leave(room_id bigint)
RETURNS jsonb LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT chat.leave_room(room_id) $$;
COMMENT ON FUNCTION api.chat_leave(bigint) IS 'Leaves a room.';

CREATE FUNCTION api.chat_add_member(room_id bigint, user_id text, role text DEFAULT 'member')
RETURNS jsonb LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT chat.add_member(room_id, user_id, role) $$;
COMMENT ON FUNCTION api.chat_add_member(bigint, text, text) IS 'Adds a member (room admins) or an admin (room owners).';

CREATE FUNCTION api.chat_kick(room_id bigint, user_id text)
RETURNS jsonb LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT chat.kick(room_id, user_id) $$;
COMMENT ON FUNCTION api.chat_kick(bigint, text) IS 'Removes a member (room admins).';

CREATE FUNCTION api.chat_ban(room_id bigint, user_id text, banned boolean DEFAULT true)
RETURNS jsonb LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT chat.ban(room_id, user_id, banned) $$;
COMMENT ON FUNCTION api.chat_ban(bigint, text, boolean) IS 'Bans (or lifts the ban of) a user (room admins).';

CREATE FUNCTION api.chat_set_role(room_id bigint, user_id text, role text)
RETURNS jsonb LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT chat.set_role(room_id, user_id, role) $$;
COMMENT ON FUNCTION api.chat_set_role(bigint, text, text) IS 'Changes a member''s role: owner, admin, member (room owners).';

CREATE FUNCTION api.chat_send(room_id bigint, body text DEFAULT '', reply_to bigint DEFAULT NULL, attachments jsonb DEFAULT '[]')
RETURNS jsonb LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT chat.send(room_id, body, reply_to, attachments) $$;
COMMENT ON FUNCTION api.chat_send(bigint, text, bigint, jsonb) IS 'Sends a message (@user mentions; reply_to: a message seq, which starts or continues its thread; attachments: [{name, mime, size, url}]).';

CREATE FUNCTION api.chat_edit(room_id bigint, seq bigint, body text)
RETURNS jsonb LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT chat.edit(room_id, seq, body) $$;
COMMENT ON FUNCTION api.chat_edit(bigint, bigint, text) IS 'Edits your message.';

CREATE FUNCTION api.chat_delete(room_id bigint, seq bigint)
RETURNS jsonb LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT chat.delete_message(room_id, seq) $$;
COMMENT ON FUNCTION api.chat_delete(bigint, bigint) IS 'Deletes a message (yours, or any as a room admin).';

CREATE FUNCTION api.chat_react(room_id bigint, seq bigint, emoji text, "on" boolean DEFAULT true)
RETURNS jsonb LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT chat.react(room_id, seq, emoji, "on") $$;
COMMENT ON FUNCTION api.chat_react(bigint, bigint, text, boolean) IS 'Adds (on = false: removes) your reaction.';

CREATE FUNCTION api.chat_pin(room_id bigint, seq bigint, "on" boolean DEFAULT true)
RETURNS jsonb LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT chat.pin(room_id, seq, "on") $$;
COMMENT ON FUNCTION api.chat_pin(bigint, bigint, boolean) IS 'Pins (on = false: unpins) a message.';

CREATE FUNCTION api.chat_read(room_id bigint, seq bigint DEFAULT NULL, thread bigint DEFAULT 0)
RETURNS jsonb LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT chat.mark_read(room_id, seq, thread) $$;
COMMENT ON FUNCTION api.chat_read(bigint, bigint, bigint) IS 'Read receipt: read up to seq (default: everything) of the main timeline (thread 0) or a thread.';

CREATE FUNCTION api.chat_notify(room_id bigint, level text)
RETURNS jsonb LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT chat.set_notify(room_id, level) $$;
COMMENT ON FUNCTION api.chat_notify(bigint, text) IS 'Per-room notifications: all, mentions or none (mute).';

CREATE FUNCTION api.chat_settings(muted_until timestamptz DEFAULT NULL, push boolean DEFAULT NULL)
RETURNS jsonb LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT chat.set_user_settings(muted_until, push) $$;
COMMENT ON FUNCTION api.chat_settings(timestamptz, boolean) IS 'Do not disturb until a time; push notifications on or off.';

CREATE FUNCTION api.chat_typing(room_id bigint, thread bigint DEFAULT 0)
RETURNS void LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT chat.typing(room_id, thread) $$;
COMMENT ON FUNCTION api.chat_typing(bigint, bigint) IS 'Tells the room''s live subscribers that you are typing (ephemeral).';

CREATE FUNCTION api.chat_history(room_id bigint, before bigint DEFAULT NULL, after bigint DEFAULT NULL,
                                 around bigint DEFAULT NULL, page_size integer DEFAULT 50, thread bigint DEFAULT NULL)
RETURNS SETOF jsonb LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM chat.history(room_id, before, after, around, page_size, thread) $$;
COMMENT ON FUNCTION api.chat_history(bigint, bigint, bigint, bigint, integer, bigint) IS 'Messages of a room: newest page; before = seq (older); after = seq (newer); around = seq; thread = root seq.';

CREATE FUNCTION api.chat_rooms(after bigint DEFAULT NULL, page_size integer DEFAULT 50)
RETURNS TABLE (room_id bigint, kind text, name text, topic text, role text, notify text, member_count integer,
               last_seq bigint, last_message_at timestamptz, read_seq bigint, unread integer, mentions integer,
               thread_unread bigint, thread_mentions bigint)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM chat.room_list(after, page_size) $$;
COMMENT ON FUNCTION api.chat_rooms(bigint, integer) IS 'Your rooms with unread and mention counts; next page: after = last room_id.';

CREATE FUNCTION api.chat_members(room_id bigint, after text DEFAULT NULL, page_size integer DEFAULT 100)
RETURNS TABLE (user_id text, role text, joined_at timestamptz, read_seq bigint)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM chat.members_of(room_id, after, page_size) $$;
COMMENT ON FUNCTION api.chat_members(bigint, text, integer) IS 'Members of a room, with read receipts.';

CREATE FUNCTION api.chat_channels(after bigint DEFAULT NULL, page_size integer DEFAULT 50)
RETURNS TABLE (room_id bigint, name text, topic text, member_count integer)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM chat.channels(after, page_size) $$;
COMMENT ON FUNCTION api.chat_channels(bigint, integer) IS 'Channels you may join.';

CREATE FUNCTION api.chat_pinned(room_id bigint)
RETURNS SETOF jsonb LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM chat.pinned(room_id) $$;
COMMENT ON FUNCTION api.chat_pinned(bigint) IS 'Pinned messages of a room.';

CREATE FUNCTION api.chat_edits(room_id bigint, seq bigint)
RETURNS TABLE (version integer, body text, changed_at timestamptz, actor text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM chat.edits(room_id, seq) $$;
COMMENT ON FUNCTION api.chat_edits(bigint, bigint) IS 'Every version of a message''s text (edit history).';

CREATE FUNCTION api.chat_notifications(before bigint DEFAULT NULL, page_size integer DEFAULT 50)
RETURNS SETOF chat.notifications LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM chat.my_notifications(before, page_size) $$;
COMMENT ON FUNCTION api.chat_notifications(bigint, integer) IS 'Your notifications, newest first.';

CREATE FUNCTION api.chat_notifications_seen(upto bigint DEFAULT NULL)
RETURNS bigint LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT chat.notifications_seen(upto) $$;
COMMENT ON FUNCTION api.chat_notifications_seen(bigint) IS 'Marks your notifications seen.';

CREATE FUNCTION api.chat_digest()
RETURNS jsonb LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$ SELECT chat.digest() $$;
COMMENT ON FUNCTION api.chat_digest() IS 'What you missed, per room.';

CREATE FUNCTION api.chat_search(q text, room_id bigint DEFAULT NULL, page_size integer DEFAULT 20)
RETURNS TABLE (room_id bigint, seq bigint, sender text, created_at timestamptz, rank real, highlight text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM chat.search(q, room_id, page_size) $$;
COMMENT ON FUNCTION api.chat_search(text, bigint, integer) IS 'Searches your messages (words, fragments, CJK); highlight marks matches with <mark>.';

DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'api'::regnamespace AND p.proname LIKE 'chat\_%'
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO bv_user', f);
    END LOOP;
END
$$;

/* ---------- audit (bv_audit) ---------- */

/*
 * The history of messages (edits, tombstones) and of memberships (roles,
 * kicks, bans).  Counters and reply counts are left out.  The audit tables
 * are detached from the extension, so DROP EXTENSION keeps the history.
 */
DO $$
DECLARE
    t record;
BEGIN
    PERFORM bv_audit.enable('chat.messages', ARRAY['reply_count']);
    PERFORM bv_audit.enable('chat.members', '{}');
    FOR t IN SELECT d.objid::regclass AS tbl
               FROM pg_catalog.pg_depend d
               JOIN pg_catalog.pg_class c ON c.oid = d.objid
              WHERE d.classid = 'pg_class'::regclass AND d.deptype = 'e'
                AND d.refclassid = 'pg_extension'::regclass
                AND d.refobjid = (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'bv_chat')
                AND c.relnamespace = 'bv_audit'::regnamespace
                AND c.relkind IN ('r', 'p')
    LOOP
        EXECUTE format('ALTER EXTENSION bv_chat DROP TABLE %s', t.tbl);
    END LOOP;
END
$$;
