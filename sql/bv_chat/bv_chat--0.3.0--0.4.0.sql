/*
 * bv_chat 0.3.0 -> 0.4.0, send path (issue #22 performance, third pass).
 *
 * A send runs fewer statements and fewer executor start-ups, with the same
 * results, counters, lock order and errors (ADR 0100, "0.4.0"):
 *
 * - chat.messages no longer has a foreign key to chat.rooms.  Its check
 *   was one more query per message (an RI trigger event, a SELECT ... FOR
 *   KEY SHARE of the room row with its own executor start), proving what
 *   chat.send() already proves: it numbers the message by updating the
 *   room row and holds that lock to commit, so the room exists and cannot
 *   go before the message commits.  A room's messages still go with the
 *   room: an AFTER DELETE trigger on chat.rooms deletes them (what ON
 *   DELETE CASCADE did; their reactions and pins cascade from them).
 * - chat.rooms keeps one CHECK constraint (main_count >= 0); the other
 *   five become a trigger that fires only when a statement sets the
 *   columns they check (a send sets none of them).
 * - The settings are read in the statement that checks the membership
 *   (after the room lock) instead of a statement of their own; the checks
 *   keep their order (text, then rate limit, then room and membership), so
 *   every error is the one 0.3.0 gave for the same call.  The rate limiter
 *   is bv_core's shared-memory bucket (no row lock): taking it under the
 *   room lock adds no lock-order edge.
 * - A message without mentions (most of them) runs the receipt and
 *   notification statement without the mentioned-members UPDATE and its
 *   ModifyTable node; the notification payload is built per notification
 *   row, not for every send.
 * - The message's INSERT joins that statement (a data-modifying CTE): one
 *   executor start-up less.  Nothing in it reads the new message.
 */

\echo Use "ALTER EXTENSION bv_chat UPDATE TO '0.4.0'" to load this file. \quit

-- the room's messages go with the room (was: ON DELETE CASCADE)
CREATE FUNCTION chat.room_deleted()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM chat.messages m WHERE m.room_id = OLD.id;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION chat.room_deleted() IS 'Internal: deletes a deleted room''s messages (chat.messages has no foreign key to chat.rooms since 0.4.0: chat.send() holds the room row''s lock).';
REVOKE ALL ON FUNCTION chat.room_deleted() FROM PUBLIC;

CREATE TRIGGER rooms_delete_messages AFTER DELETE ON chat.rooms
    FOR EACH ROW EXECUTE FUNCTION chat.room_deleted();

DO $$
DECLARE
    c name;
BEGIN
    SELECT con.conname INTO c FROM pg_catalog.pg_constraint con
     WHERE con.conrelid = 'chat.messages'::regclass AND con.contype = 'f'
       AND con.confrelid = 'chat.rooms'::regclass;
    IF c IS NOT NULL THEN
        EXECUTE format('ALTER TABLE chat.messages DROP CONSTRAINT %I', c);
    END IF;
END
$$;

/*
 * The room row's CHECK constraints: PostgreSQL 15 evaluates every CHECK of
 * a table on every UPDATE, whichever columns it sets, and rebuilds each
 * one from its stored text once per statement (6 on chat.rooms: ~6% of a
 * send's CPU, perf).  A send sets last_seq, last_message_at and
 * main_count only; the checks of the other columns move to a trigger
 * that fires only when a statement sets one of them (UPDATE OF), with the
 * same rules and SQLSTATE (23514).  main_count keeps its CHECK (a send
 * sets it).
 */
CREATE FUNCTION chat.rooms_check()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.kind IS NULL OR NEW.kind NOT IN ('direct', 'group', 'channel')
       OR char_length(NEW.name) > 100 OR char_length(NEW.topic) > 500
       OR NEW.member_count < 0
       OR (NEW.kind = 'direct') <> (NEW.direct_key IS NOT NULL) THEN
        RAISE EXCEPTION 'new row for relation "rooms" violates a room rule'
            USING ERRCODE = '23514',
                  DETAIL = 'kind is direct, group or channel; name at most 100 characters, topic 500; member_count >= 0; direct rooms (only) have a direct_key.',
                  HINT = 'Change rooms through the chat functions.';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION chat.rooms_check() IS 'Internal: the rules of a room row (kind, name and topic lengths, member_count, direct_key), checked when a statement sets one of those columns (the CHECK constraints of 0.1.0, which every send re-evaluated).';
REVOKE ALL ON FUNCTION chat.rooms_check() FROM PUBLIC;

CREATE TRIGGER rooms_check BEFORE INSERT OR UPDATE OF kind, name, topic, direct_key, member_count ON chat.rooms
    FOR EACH ROW EXECUTE FUNCTION chat.rooms_check();

ALTER TABLE chat.rooms
    DROP CONSTRAINT rooms_kind_check,
    DROP CONSTRAINT rooms_name_check,
    DROP CONSTRAINT rooms_topic_check,
    DROP CONSTRAINT rooms_member_count_check,
    DROP CONSTRAINT rooms_check;

CREATE OR REPLACE FUNCTION chat.send(p_room bigint, p_body text, p_reply_to bigint DEFAULT NULL, p_attachments jsonb DEFAULT '[]')
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- every statement here is a key lookup: generic plans, planned once per
-- session (with custom plans a third of a send's time went to planning)
SET plan_cache_mode = force_generic_plan
AS $$
/*
 * The hot path (0.4.0: the settings read with the membership, no foreign
 * key check of the room, the mentions UPDATE only when there are
 * mentions).  Lock order: the room row first (it numbers the message and
 * is held to commit), then read_state rows, then users.  The room row (or
 * the thread root's row) counts the message for every reader at once; the
 * rows written per message are the room (or root), the message (with its
 * audit row), the sender's receipt, the mentioned members' counters and
 * the notifications.  The membership is read after the room lock, so a
 * ban committed while waiting for it is seen.  Errors come in the order of
 * 0.3.0: identity, text, rate, room, membership.
 */
DECLARE
    me text := bv.current_user_id();
    body text := coalesce(p_body, '');
    att jsonb := coalesce(p_attachments, '[]');
    v_rate bigint;
    v_burst bigint;
    v_offline bigint;
    v_max_body bigint;
    v_mqtt bigint;
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
    -- the room row first: it numbers the message (held to commit); a
    -- message of the main timeline also adds one to its total.  Any error
    -- below rolls it back.
    UPDATE chat.rooms SET last_seq = last_seq + 1, last_message_at = now(),
                          main_count = main_count + (p_reply_to IS NULL)::int
     WHERE id = p_room
    RETURNING last_seq, main_count INTO s, total;
    -- a new statement (a new snapshot): a ban committed while this one
    -- waited for the room lock is seen.  With it, the settings (a 10-row
    -- page read whole) and the sender's last activity.
    SELECT c.rate, c.burst, c.offline_s, c.max_body, c.mqtt, mb.state, mb.seen
      INTO v_rate, v_burst, v_offline, v_max_body, v_mqtt, st, seen
      FROM (SELECT max(x.value) FILTER (WHERE x.name = 'send_rate') AS rate,
                   max(x.value) FILTER (WHERE x.name = 'send_burst') AS burst,
                   max(x.value) FILTER (WHERE x.name = 'offline_after_seconds') AS offline_s,
                   max(x.value) FILTER (WHERE x.name = 'max_body_chars') AS max_body,
                   max(x.value) FILTER (WHERE x.name = 'mqtt_events') AS mqtt
              FROM chat.settings x) c
      LEFT JOIN LATERAL (SELECT m.state, u.last_active_at AS seen
                           FROM chat.members m LEFT JOIN chat.users u ON u.user_id = m.user_id
                          WHERE m.room_id = p_room AND m.user_id = me OFFSET 0) mb ON true;
    IF char_length(body) > v_max_body OR body ~ '[\x01-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]' OR att <> '[]' THEN
        PERFORM chat.check_body(body, att);
    END IF;
    IF body = '' AND att = '[]' THEN
        RAISE EXCEPTION 'empty message'
            USING ERRCODE = '22023', HINT = 'Send some text or at least one attachment.';
    END IF;
    IF v_rate > 0 THEN
        PERFORM bv.rate_limit_enforce('chat:send:' || me, v_rate, v_burst);
    END IF;
    IF p_room IS NULL THEN
        RAISE EXCEPTION 'room id is required'
            USING ERRCODE = '22023', HINT = 'Pass the id of a room you are a member of.';
    END IF;
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
    -- the message's created_at is its column default, now(): the same
    -- value here (the message is inserted by the statement below)
    created := now();

    -- One statement (one executor start instead of four): the message
    -- (with its audit row), the sender's
    -- receipt (sending reads the room or thread), the mentioned members'
    -- counters (a receipt that covered the message first is seen: the
    -- UPDATE re-checks read_seq on the newest row), and the
    -- notifications: mentioned followers, and offline followers at level
    -- "all" for their first unread message (nothing unread before this
    -- one: base = total - 1), not for every one after it.  (The sender is
    -- never mentioned: the two UPDATEs never meet on a row.)  Without
    -- mentions, the same statement without the mentions' UPDATE.
    IF cardinality(ment) = 0 THEN
        WITH msg AS (
            INSERT INTO chat.messages (room_id, seq, sender, body, attachments, mentions, reply_to, thread_root)
            VALUES (p_room, s, me, body, att, ment, p_reply_to, thr)
        ), receipt AS (
            UPDATE chat.read_state SET read_seq = s, unread_base = total, mentions = 0, read_at = now()
             WHERE room_id = p_room AND thread = coalesce(thr, 0) AND user_id = me
            RETURNING 1
        )
        INSERT INTO chat.notifications (user_id, room_id, seq, kind, push, payload)
        SELECT rs.user_id, p_room, s, 'message', coalesce(u.push, true),
               jsonb_build_object('room_id', p_room, 'seq', s, 'sender', me, 'thread_root', thr,
                                  'preview', left(body, 140), 'kind', 'message', 'user_id', rs.user_id)
          -- the readers that had read everything (read_state_caught_up)
          FROM chat.read_state rs
          -- one index probe per candidate in members and users (OFFSET 0
          -- keeps the generic plan from hashing the room's members or
          -- walking the users index)
          JOIN LATERAL (SELECT x.state, x.notify FROM chat.members x
                         WHERE x.room_id = p_room AND x.user_id = rs.user_id OFFSET 0) mb ON true
          LEFT JOIN LATERAL (SELECT x.push, x.muted_until, x.last_active_at FROM chat.users x
                              WHERE x.user_id = rs.user_id OFFSET 0) u ON true
         WHERE rs.room_id = p_room AND rs.thread = coalesce(thr, 0) AND rs.unread_base = total - 1
           AND rs.user_id <> me
           AND mb.state = 'joined' AND mb.notify = 'all'
           AND (u.muted_until IS NULL OR u.muted_until <= now())
           AND (u.last_active_at IS NULL OR u.last_active_at < now() - make_interval(secs => v_offline));
    ELSE
        WITH msg AS (
            INSERT INTO chat.messages (room_id, seq, sender, body, attachments, mentions, reply_to, thread_root)
            VALUES (p_room, s, me, body, att, ment, p_reply_to, thr)
        ), receipt AS (
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
               jsonb_build_object('room_id', p_room, 'seq', s, 'sender', me, 'thread_root', thr,
                                  'preview', left(body, 140), 'kind', c.kind, 'user_id', c.user_id)
          FROM (SELECT m.u AS user_id, 'mention' AS kind FROM unnest(ment) m(u)
                UNION ALL
                SELECT rs.user_id, 'message' FROM chat.read_state rs
                 WHERE rs.room_id = p_room AND rs.thread = coalesce(thr, 0) AND rs.unread_base = total - 1
                   AND rs.user_id <> me AND NOT (rs.user_id = ANY (ment))) c
          JOIN LATERAL (SELECT x.state, x.notify FROM chat.members x
                         WHERE x.room_id = p_room AND x.user_id = c.user_id OFFSET 0) mb ON true
          LEFT JOIN LATERAL (SELECT x.push, x.muted_until, x.last_active_at FROM chat.users x
                              WHERE x.user_id = c.user_id OFFSET 0) u ON true
         WHERE mb.state = 'joined' AND mb.notify <> 'none'
           AND (u.muted_until IS NULL OR u.muted_until <= now())
           AND (c.kind = 'mention'
                OR (mb.notify = 'all'
                    AND (u.last_active_at IS NULL OR u.last_active_at < now() - make_interval(secs => v_offline))));
    END IF;

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
    IF v_mqtt = 1 THEN
        INSERT INTO chat.events (room_id, event, payload)
        VALUES (p_room, 'message.created', payload || '{"event": "message.created"}');
    END IF;
    RETURN jsonb_build_object('room_id', p_room, 'seq', s, 'thread_root', thr, 'mentions', to_jsonb(ment));
END
$$;
