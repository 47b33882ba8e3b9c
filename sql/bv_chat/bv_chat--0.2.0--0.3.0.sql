/*
 * bv_chat 0.2.0 -> 0.3.0, send path (issue #22 performance).
 *
 * chat.send() does the same work with less per-send overhead (ADR 0100,
 * "0.3.0"): chat.actor() inline (one function call and one GUC nesting
 * level less), the settings page read whole instead of through an index
 * (a 10-row table), the sender's last activity read with the membership
 * check, and the activity UPDATE run only when it is due (at most every
 * 10 s) instead of starting a ModifyTable node in every send.  Counters,
 * notifications, lock order (room, then read_state, then users) and
 * errors are those of 0.2.0.
 *
 * The search indexes keep their pending lists short: a GIN index with
 * fastupdate merges its pending list into the index when the list passes
 * gin_pending_list_limit (4 MB by default), inside whichever send crossed
 * it; 256 kB bounds that pause (a tail of send and delivery latency).
 *
 * This section is self-contained: another section of this file (the
 * WebSocket send handler) may come before or after it.
 */

\echo Use "ALTER EXTENSION bv_chat UPDATE TO '0.3.0'" to load this file. \quit

/*
 * Re-install after DROP EXTENSION: bv_chat's rows of bv_realtime.topic_grants
 * are not members of the extension and outlive it; the old rows' check
 * function no longer exists, and the gateway refused every subscription to
 * a room of the new install (found by bench-chat with BENCH_CHAT_VERSION).
 * An install or update removes the rows an earlier install left: a check
 * function that is gone, or a duplicate of a row without one.
 */
DELETE FROM bv_realtime.topic_grants g
 WHERE g.comment LIKE 'bv\_chat: %'
   AND CASE WHEN g.check_function IS NOT NULL
            THEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_proc p WHERE p.oid = g.check_function::oid)
            ELSE g.id < (SELECT max(x.id) FROM bv_realtime.topic_grants x
                          WHERE x.topic_pattern = g.topic_pattern AND x.action = g.action
                            AND x.comment = g.comment AND x.check_function IS NULL) END;

ALTER INDEX chat.messages_fts SET (gin_pending_list_limit = 256);
ALTER INDEX chat.messages_trgm SET (gin_pending_list_limit = 256);

CREATE OR REPLACE FUNCTION chat.send(p_room bigint, p_body text, p_reply_to bigint DEFAULT NULL, p_attachments jsonb DEFAULT '[]')
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- every statement here is a key lookup: generic plans, planned once per
-- session (with custom plans a third of a send's time went to planning)
SET plan_cache_mode = force_generic_plan
AS $$
/*
 * The hot path (0.3.0: chat.actor() inline, the settings page read whole,
 * the sender's last activity read with the membership, the activity UPDATE
 * only when due).  Its cost no longer grows with the room: the room row (its
 * numbering, its lock, the main timeline's total) or the thread root's row
 * (the thread's total) counts the message for every reader at once; the
 * rows written per message are the room (or root), the message (with its
 * audit row), the sender's receipt, the mentioned members' counters and
 * the notifications.  Settings in one read, the membership check after the
 * room lock (so a ban committed while waiting is seen).
 */
DECLARE
    me text := bv.current_user_id();
    body text := coalesce(p_body, '');
    att jsonb := coalesce(p_attachments, '[]');
    cfg record;
    st text;
    s bigint;
    total bigint;
    root chat.messages;
    thr bigint;
    ment text[] := '{}';
    created timestamptz;
    payload jsonb;
    seen timestamptz;
BEGIN
    -- chat.actor(), inline (one function call less per send)
    IF me IS NULL OR me = '' THEN
        RAISE EXCEPTION 'authentication required'
            USING ERRCODE = 'PT401', HINT = 'Send a bearer token whose sub names the user.';
    END IF;
    IF char_length(me) > 200 THEN
        RAISE EXCEPTION 'user id too long'
            USING ERRCODE = '22023', HINT = 'Use a token whose sub has at most 200 characters.';
    END IF;
    -- the settings: a 10-row table, read whole (cheaper than an index
    -- scan of five keys)
    SELECT max(x.value) FILTER (WHERE x.name = 'send_rate') AS rate,
           max(x.value) FILTER (WHERE x.name = 'send_burst') AS burst,
           max(x.value) FILTER (WHERE x.name = 'offline_after_seconds') AS offline_s,
           max(x.value) FILTER (WHERE x.name = 'max_body_chars') AS max_body,
           max(x.value) FILTER (WHERE x.name = 'mqtt_events') AS mqtt
      INTO cfg FROM chat.settings x;
    IF char_length(body) > cfg.max_body OR body ~ '[\x01-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]' OR att <> '[]' THEN
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
    -- commit); a message of the main timeline also adds one to its total.
    -- An error below rolls all of it back.
    UPDATE chat.rooms SET last_seq = last_seq + 1, last_message_at = now(),
                          main_count = main_count + (p_reply_to IS NULL)::int
     WHERE id = p_room
    RETURNING last_seq, main_count INTO s, total;
    -- a new statement (a new snapshot): a ban committed while this one
    -- waited for the room lock is seen; the sender's last activity too
    SELECT m.state, u.last_active_at INTO st, seen
      FROM chat.members m LEFT JOIN chat.users u ON u.user_id = m.user_id
     WHERE m.room_id = p_room AND m.user_id = me;
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
        -- new followers of the thread (the root's author, the mentioned, the
        -- sender), their counts computed from the thread as it is (room
        -- locked): base = the thread's total now - their unread now
        INSERT INTO chat.read_state (user_id, room_id, thread, read_seq, unread_base, mentions)
        SELECT x.user_id, p_room, thr, x.rs,
               root.reply_count
               - (SELECT count(*) FROM chat.messages m
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
        -- the thread's total (the root row, under the room lock)
        UPDATE chat.messages SET reply_count = reply_count + 1 WHERE room_id = p_room AND seq = thr
        RETURNING reply_count INTO total;
    END IF;
    INSERT INTO chat.messages (room_id, seq, sender, body, attachments, mentions, reply_to, thread_root)
    VALUES (p_room, s, me, body, att, ment, p_reply_to, thr)
    RETURNING created_at INTO created;

    -- One statement (one executor start instead of three): the sender's
    -- receipt (sending reads the room or thread), the mentioned members'
    -- counters (a receipt that covered the message first is seen: the
    -- UPDATE re-checks read_seq on the newest row), and the
    -- notifications: mentioned followers, and offline followers at level
    -- "all" for their first unread message (nothing unread before this
    -- one: base = total - 1), not for every one after it.  (The sender is
    -- never mentioned: the two UPDATEs never meet on a row.)
    payload := jsonb_build_object('room_id', p_room, 'seq', s, 'sender', me, 'thread_root', thr,
                                  'preview', left(body, 140));
    WITH receipt AS (
        UPDATE chat.read_state SET read_seq = s, unread_base = total, mentions = 0, read_at = now()
         WHERE room_id = p_room AND thread = coalesce(thr, 0) AND user_id = me
        RETURNING 1
    ), mentioned AS (
        UPDATE chat.read_state SET mentions = mentions + 1
         WHERE room_id = p_room AND thread = coalesce(thr, 0) AND user_id = ANY (ment) AND read_seq < s
        RETURNING 1
    )
    INSERT INTO chat.notifications (user_id, room_id, seq, kind, push, payload)
    SELECT c.user_id, p_room, s, c.kind, coalesce(u.push, true),
           payload || jsonb_build_object('kind', c.kind, 'user_id', c.user_id)
      FROM (SELECT m.u AS user_id, 'mention' AS kind FROM unnest(ment) m(u)
            UNION ALL
            -- the readers that had read everything (read_state_caught_up)
            SELECT rs.user_id, 'message' FROM chat.read_state rs
             WHERE rs.room_id = p_room AND rs.thread = coalesce(thr, 0) AND rs.unread_base = total - 1
               AND rs.user_id <> me AND NOT (rs.user_id = ANY (ment))) c
      -- one index probe per candidate in members and users (OFFSET 0 keeps
      -- the generic plan from hashing the room's members or walking the
      -- users index)
      JOIN LATERAL (SELECT x.state, x.notify FROM chat.members x
                     WHERE x.room_id = p_room AND x.user_id = c.user_id OFFSET 0) mb ON true
      LEFT JOIN LATERAL (SELECT x.push, x.muted_until, x.last_active_at FROM chat.users x
                          WHERE x.user_id = c.user_id OFFSET 0) u ON true
     WHERE mb.state = 'joined' AND mb.notify <> 'none'
       AND (u.muted_until IS NULL OR u.muted_until <= now())
       AND (c.kind = 'mention'
            OR (mb.notify = 'all'
                AND (u.last_active_at IS NULL OR u.last_active_at < now() - make_interval(secs => cfg.offline_s))));

    -- the sender's activity, at most every 10 s (every member has a
    -- chat.users row; "seen" was read with the membership)
    IF seen IS NULL OR seen < now() - interval '10 seconds' THEN
        UPDATE chat.users SET last_active_at = now()
         WHERE user_id = me AND (last_active_at IS NULL OR last_active_at < now() - interval '10 seconds');
    END IF;
    -- live: the message as chat.message_json() shows it (no reaction, no pin yet)
    payload := jsonb_build_object('room_id', p_room, 'seq', s, 'sender', me, 'body', body,
                                  'attachments', att, 'mentions', to_jsonb(ment),
                                  'reply_to', p_reply_to, 'thread_root', thr, 'reply_count', 0,
                                  'created_at', created, 'edited_at', NULL, 'deleted', false,
                                  'reactions', '{}'::jsonb, 'pinned', false);
    PERFORM bv_realtime.send('chat:room:' || p_room, 'message.created', payload);
    IF cfg.mqtt = 1 THEN
        INSERT INTO chat.events (room_id, event, payload)
        VALUES (p_room, 'message.created', payload || '{"event": "message.created"}');
    END IF;
    RETURN jsonb_build_object('room_id', p_room, 'seq', s, 'thread_root', thr, 'mentions', to_jsonb(ment));
END
$$;

------------------------------------------------------------------------
-- Red-team round 5b: message text refused C0 controls but not C1 ones
-- (U+0080-U+009F; U+009B is a terminal's CSI); joining a channel published
-- a member event with no rate limit (60 join/leave pairs were 120 live
-- events to every subscriber).  tests/pgtap/bv_redteam5b_chat_realtime.sql.
------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION chat.check_body(p_body text, p_attachments jsonb)
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
    -- C0 and C1 controls (U+0080-U+009F: U+009B is a terminal's CSI)
    IF p_body ~ '[\x01-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]' THEN
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
COMMENT ON FUNCTION chat.check_body(text, jsonb) IS 'Internal: size limits and shape of a message''s text (no C0 or C1 controls but tab and newline) and attachments.';

CREATE OR REPLACE FUNCTION chat.join_room(p_room bigint)
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
    -- a join publishes a member event to the room: it draws from the send
    -- bucket (leaving stays free, so a flood of pairs stops at the burst)
    PERFORM chat.charge_send(me);
    PERFORM chat.touch(me);
    PERFORM chat.add_member_row(p_room, me, 'member', me);
    RETURN jsonb_build_object('room_id', p_room, 'joined', true);
END
$$;
COMMENT ON FUNCTION chat.join_room(bigint) IS 'Joins a channel (draws from the send rate limit: a join publishes a member event).';

/* ---------- sending over the WebSocket (bv_realtime 0.4.0 handlers) ----------
 *
 * A client sends {"type":"broadcast","topic":"chat:room:<id>",
 * "event":"message.send","ref":..,"payload":{"body":..,"reply_to":..,
 * "attachments":[..]}} on its socket; the gateway calls chat.ws_send() as
 * the client (its role and claims, as PostgREST would) and replies with the
 * message chat.send() returns, or with an error status (chat.send()'s
 * PT403/PT404 become 403/404, bad payloads 400).  The message reaches the
 * room's subscribers as message.created through the WAL, as a REST send.
 * Typing stays a plain client message (the grant of 0.1.0).
 */

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                   WHERE attrelid = 'bv_realtime.topic_grants'::regclass AND attname = 'handler'
                     AND NOT attisdropped) THEN
        RAISE EXCEPTION 'bv_chat 0.3.0 needs bv_realtime 0.4.0 (topic handlers)'
            USING ERRCODE = '55000', HINT = 'Run ALTER EXTENSION bv_realtime UPDATE first.';
    END IF;
END
$$;

CREATE FUNCTION chat.ws_send_allowed(topic text, action text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT action = 'publish'
       AND topic ~ '^chat:room:[0-9]{1,18}$'
       AND coalesce(current_setting('request.realtime.event', true), '') = 'message.send'
$$;
COMMENT ON FUNCTION chat.ws_send_allowed(text, text) IS 'bv_realtime check function of the message.send handler grant: event message.send on chat:room:<id> (membership is checked by chat.send() at every message, so a ban applies at once).';

CREATE FUNCTION chat.ws_send(topic text, event text, payload jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    room bigint;
    reply_to bigint;
    att jsonb;
BEGIN
    IF topic IS NULL OR topic !~ '^chat:room:[0-9]{1,18}$' THEN
        RAISE EXCEPTION 'not a chat room topic'
            USING ERRCODE = '22023', HINT = 'Send on topic chat:room:<room id>.';
    END IF;
    IF event IS DISTINCT FROM 'message.send' THEN
        RAISE EXCEPTION 'unsupported event'
            USING ERRCODE = '22023', HINT = 'Use event message.send.';
    END IF;
    IF payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
        RAISE EXCEPTION 'payload must be a JSON object'
            USING ERRCODE = '22023', HINT = 'Send {"body": "...", "reply_to": <seq or null>, "attachments": [...]}.';
    END IF;
    IF jsonb_typeof(payload -> 'body') NOT IN ('string', 'null') THEN
        RAISE EXCEPTION 'body must be a string'
            USING ERRCODE = '22023', HINT = 'Send the text of the message as "body".';
    END IF;
    IF jsonb_typeof(payload -> 'reply_to') NOT IN ('number', 'null') THEN
        RAISE EXCEPTION 'reply_to must be a message seq (a number) or null'
            USING ERRCODE = '22023', HINT = 'Pass the seq of the message you reply to, or leave reply_to out.';
    END IF;
    IF jsonb_typeof(payload -> 'attachments') NOT IN ('array', 'null') THEN
        RAISE EXCEPTION 'attachments must be an array'
            USING ERRCODE = '22023', HINT = 'Send attachments as [{"name", "mime", "size", "url"}].';
    END IF;
    room := substr(topic, 11)::bigint;
    -- the socket's answer for a room one is not in, existing or not (no probing)
    IF NOT chat.is_member(room) THEN
        RAISE EXCEPTION 'you are not a member of this room'
            USING ERRCODE = 'PT403', HINT = 'Join the room (or ask to be added) before sending.';
    END IF;
    IF jsonb_typeof(payload -> 'reply_to') = 'number' THEN
        IF (payload ->> 'reply_to') !~ '^[0-9]{1,18}$' THEN
            RAISE EXCEPTION 'reply_to must be a positive integer'
                USING ERRCODE = '22023', HINT = 'Pass the seq of the message you reply to.';
        END IF;
        reply_to := (payload ->> 'reply_to')::bigint;
    END IF;
    att := coalesce(NULLIF(payload -> 'attachments', 'null'::jsonb), '[]'::jsonb);
    RETURN chat.send(room, payload ->> 'body', reply_to, att);
END
$$;
COMMENT ON FUNCTION chat.ws_send(text, text, jsonb) IS 'bv_realtime handler of event message.send on chat:room:<id>: sends the payload''s body, reply_to and attachments with chat.send() as the client and returns its result.';

REVOKE ALL ON FUNCTION chat.ws_send_allowed(text, text), chat.ws_send(text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION chat.ws_send_allowed(text, text) TO bv_anon;
GRANT EXECUTE ON FUNCTION chat.ws_send(text, text, jsonb) TO bv_user;

INSERT INTO bv_realtime.topic_grants (topic_pattern, action, grantee, check_function, handler, comment)
VALUES ('chat:room:*', 'publish', 'bv_user', 'chat.ws_send_allowed(text,text)'::regprocedure,
        'chat.ws_send(text,text,jsonb)'::regprocedure,
        'bv_chat: room members send messages over the WebSocket (event message.send, answered by chat.ws_send)');
