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

/*
 * bv_chat 0.3.0 -> 0.4.0, hardening (red-team round 6b, findings 11, 4, 9).
 *
 * This section is self-contained: another section of this file (the send
 * path) may come before or after it.  It redefines no send function.
 */


/* ------------------------------------------------------------------------
 * Finding 11: invisible formatting characters in names.
 *
 * Room names, reactions and user ids refuse what bv_core refuses in an
 * actor (extensions/common/bv_ident.c, docs/bv_core.md "Actor rules"): C1
 * controls and the invisible characters that change how the text around
 * them is shown (U+061C, U+200B-U+200F, U+2028-U+202E, U+2060-U+2064,
 * U+2066-U+2069, U+FEFF).  bv_core has no SQL entry point for its C
 * checker, so chat.has_invisible() lists the same ranges; the two lists
 * must stay equal.  A user id holding one of them can never be a
 * token's sub (bv_core refuses it as an actor), so refusing it loses
 * nobody.  Reactions keep emoji sequences: a zero-width joiner (U+200D)
 * between two characters from U+2000 up (👩‍💻, 🏳️‍🌈) is allowed; between
 * letters it is refused like the others.  Message bodies and room topics
 * are free text (right-to-left marks belong in Arabic and Hebrew text) and
 * are not checked.  Tests: pgtap/bv_redteam6b_chat_realtime.
 * ---------------------------------------------------------------------- */

CREATE FUNCTION chat.has_invisible(p text)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_catalog.getdatabaseencoding() <> 'UTF8' THEN
        RETURN false;   -- (as bv_core: the characters exist only in UTF-8)
    END IF;
    RETURN p ~ '[\u0080-\u009F\u061C\u200B-\u200F\u2028-\u202E\u2060-\u2064\u2066-\u2069\uFEFF]';
END
$$;
COMMENT ON FUNCTION chat.has_invisible(text) IS 'Internal: does the text hold a C1 control or an invisible formatting character (bidirectional override, embedding, isolate or mark, zero-width character, U+2028/U+2029, U+FEFF)? The ranges bv_core refuses in actors.';

CREATE OR REPLACE FUNCTION chat.check_user_id(p_user text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_user IS NULL OR char_length(p_user) NOT BETWEEN 1 AND 200 OR p_user ~ '[[:cntrl:]]'
       OR chat.has_invisible(p_user) THEN
        RAISE EXCEPTION 'invalid user id'
            USING ERRCODE = '22023',
                  HINT = 'A user id is the sub of the user''s token: 1-200 characters, no control characters and no invisible formatting characters (such as U+202E or U+200B).';
    END IF;
    RETURN p_user;
END
$$;

CREATE OR REPLACE FUNCTION chat.create_room(p_kind text, p_name text DEFAULT '', p_topic text DEFAULT '', p_members text[] DEFAULT '{}')
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
    IF chat.has_invisible(p_name) THEN
        RAISE EXCEPTION 'invalid room name'
            USING ERRCODE = '22023',
                  DETAIL = 'The name holds an invisible formatting character (a bidirectional override, embedding, isolate or mark, a zero-width character, U+2028/U+2029 or U+FEFF).',
                  HINT = 'Remove the invisible characters: they change how the text around them is shown.';
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
COMMENT ON FUNCTION chat.create_room(text, text, text, text[]) IS 'Creates a group or channel room owned by the caller, with initial members. A name has 1-100 characters without control or invisible formatting characters.';

/*
 * A reaction: 1-32 characters, no spaces, no control characters, no
 * invisible formatting characters except a zero-width joiner inside an
 * emoji sequence (between two characters from U+2000 up).
 */
CREATE FUNCTION chat.check_reaction(p_emoji text, p_adding boolean)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_emoji IS NULL OR char_length(p_emoji) NOT BETWEEN 1 AND 32 OR p_emoji ~ '[[:space:][:cntrl:]]' THEN
        RAISE EXCEPTION 'invalid reaction'
            USING ERRCODE = '22023', HINT = 'A reaction is an emoji or a short name: 1-32 characters, no spaces.';
    END IF;
    -- (removing a reaction stored before 0.4.0 stays possible)
    IF p_adding AND pg_catalog.getdatabaseencoding() = 'UTF8'
       AND chat.has_invisible(regexp_replace(p_emoji, '([\u2000-\U0010FFFF])\u200D(?=[\u2000-\U0010FFFF])', '\1', 'g')) THEN
        RAISE EXCEPTION 'invalid reaction'
            USING ERRCODE = '22023',
                  DETAIL = 'The reaction holds an invisible formatting character (a zero-width character other than the joiner of an emoji sequence, or a bidirectional control).',
                  HINT = 'Use an emoji or a short visible name.';
    END IF;
END
$$;
COMMENT ON FUNCTION chat.check_reaction(text, boolean) IS 'Internal: validates a reaction (22023 with a hint).';

CREATE OR REPLACE FUNCTION chat.react(p_room bigint, p_seq bigint, p_emoji text, p_on boolean DEFAULT true)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me text := chat.actor();
    n integer;
BEGIN
    PERFORM chat.check_reaction(p_emoji, coalesce(p_on, true));
    PERFORM chat.membership(p_room, me, false);
    IF NOT EXISTS (SELECT 1 FROM chat.messages m WHERE m.room_id = p_room AND m.seq = p_seq AND m.deleted_at IS NULL) THEN
        RAISE EXCEPTION 'message % not found in room %', p_seq, p_room
            USING ERRCODE = 'PT404', HINT = 'React to a message of the room that was not deleted.';
    END IF;
    PERFORM chat.charge_send(me);
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
COMMENT ON FUNCTION chat.react(bigint, bigint, text, boolean) IS 'Adds (or removes) your reaction to a message. Takes from the send rate limit.';

REVOKE ALL ON FUNCTION chat.has_invisible(text), chat.check_reaction(text, boolean) FROM PUBLIC;

/* ------------------------------------------------------------------------
 * Findings 4 and 9: a delete takes the text out of every copy bv_chat made.
 *
 * A delete (the tombstone: deleted_at set, text, attachments and mentions
 * emptied) used to leave the text in
 *   - chat.notifications: "preview" of the mention/message notifications
 *     of the message (and of an edit's new mentions), and the
 *     "first_unread" previews of digests (finding 4);
 *   - chat.events: the message.created/edited events kept for MQTT;
 *   - bv_realtime.messages: the gateway's history, which a client resumes
 *     from (last_id / Last-Event-ID), including a user who joined the room
 *     after the delete (finding 9).
 * Trigger chat.messages_tombstoned (AFTER UPDATE OF deleted_at, once per
 * message: deleted_at goes from NULL to a time) replaces the text in each
 * copy by the tombstone chat_history shows (body "", no attachments, no
 * mentions, "deleted": true; notifications: preview "").  It covers every
 * way a message is tombstoned (api.chat_delete, a bv_admin UPDATE).  The
 * audit history (bv_audit) keeps the text, for bv_admin, as documented.
 *
 * The gateway's history is written by the gateway after it decodes a
 * commit, so at the time of a delete the copy of the message may not be
 * stored yet (the gateway lags, or is down and will replay the WAL).  The
 * delete records (room, seq) in chat.history_redactions;
 * chat.redact_history() re-applies the pending redactions and forgets one
 * once the history holds the delete's own message.deleted event (stored
 * in commit order after every copy of the message) or is older than the
 * history can be.  It runs at the delete, when a member joins the room
 * (the only way a new reader gains the room's history: trigger
 * chat.members_joined) and every minute (pg_cron job chat-redact).  What
 * is left: a copy stored after the newcomer's join and before the next
 * run can be resumed in between (a gateway lagging behind the delete and
 * the join); closing that needs the gateway to apply redactions in commit
 * order (docs/bv_chat.md, Not done yet).  Pushes already sent and MQTT
 * messages already published cannot be recalled; a push still in bv_cdc's
 * queue (the WAL, the webhook spool) goes out with its text.
 *
 * Rights: the trigger functions and chat.redact_history() are SECURITY
 * DEFINER (the extension's owner, who owns bv_realtime.messages too),
 * search_path pinned, executable by nobody else; they only ever replace a
 * message's text by its tombstone.
 * ---------------------------------------------------------------------- */

/* notifications of one message, found by (room_id, seq) */
CREATE INDEX notifications_message ON chat.notifications (room_id, seq) WHERE seq IS NOT NULL;
/* digests, found from the message's time */
CREATE INDEX notifications_digests ON chat.notifications (created_at) WHERE kind = 'digest';

CREATE FUNCTION chat.tombstone_payload(p jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$ SELECT p || '{"body": "", "attachments": [], "mentions": [], "deleted": true, "reactions": {}, "pinned": false}'::jsonb $$;
COMMENT ON FUNCTION chat.tombstone_payload(jsonb) IS 'Internal: a live event of a message (message.created, message.edited) as the tombstone of the deleted message: no text, attachments, mentions, reactions or pin.';

/* a digest's payload with the preview of message (room, seq) emptied */
CREATE FUNCTION chat.redact_digest(p jsonb, p_room bigint, p_seq bigint)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_set(p, '{rooms}', coalesce((
        SELECT jsonb_agg(CASE WHEN (r ->> 'room_id')::bigint = p_room AND jsonb_typeof(r -> 'first_unread') = 'array'
                              THEN jsonb_set(r, '{first_unread}', (
                                   SELECT coalesce(jsonb_agg(CASE WHEN (f ->> 'seq')::bigint = p_seq
                                                                  THEN f || '{"preview": "", "deleted": true}'::jsonb
                                                                  ELSE f END ORDER BY fo), '[]')
                                     FROM jsonb_array_elements(r -> 'first_unread') WITH ORDINALITY x(f, fo)))
                              ELSE r END ORDER BY ro)
          FROM jsonb_array_elements(p -> 'rooms') WITH ORDINALITY y(r, ro)), '[]'))
$$;
COMMENT ON FUNCTION chat.redact_digest(jsonb, bigint, bigint) IS 'Internal: a digest notification''s payload with the preview of one deleted message emptied.';

CREATE TABLE chat.history_redactions (
    room_id    bigint NOT NULL REFERENCES chat.rooms ON DELETE CASCADE,
    seq        bigint NOT NULL,
    deleted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, seq)
);
COMMENT ON TABLE chat.history_redactions IS 'Deleted messages whose copies in the bv_realtime history may still arrive (the gateway stores a message after it decodes its commit): chat.redact_history() replaces their text and forgets a row once the history holds the delete''s message.deleted event. Internal.';
ALTER TABLE chat.history_redactions ENABLE ROW LEVEL SECURITY;
CREATE POLICY visible ON chat.history_redactions FOR SELECT USING (chat.is_staff());
REVOKE ALL ON chat.history_redactions FROM PUBLIC;
GRANT SELECT ON chat.history_redactions TO bv_service;

/*
 * Re-applies the pending history redactions (all, of one room, or of one
 * message): every stored message.created/edited event of a pending
 * (room, seq) becomes its tombstone.  Returns the number of history rows
 * changed.
 */
CREATE FUNCTION chat.redact_history(p_room bigint DEFAULT NULL, p_seq bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    n bigint := 0;
    k bigint;
    keep_s integer;
BEGIN
    -- (how long the gateway can keep a row; 0 = no age limit: a week)
    SELECT coalesce(nullif(s.setting, '0')::integer, 7 * 86400) INTO keep_s
      FROM pg_catalog.pg_settings s WHERE s.name = 'bv_realtime.history_retention';
    keep_s := coalesce(keep_s, 3600) + 3600;
    FOR r IN SELECT h.room_id, h.seq, h.deleted_at FROM chat.history_redactions h
              WHERE (p_room IS NULL OR h.room_id = p_room) AND (p_seq IS NULL OR h.seq = p_seq)
              ORDER BY h.room_id, h.seq LIMIT 10000
    LOOP
        UPDATE bv_realtime.messages m SET payload = chat.tombstone_payload(m.payload)
         WHERE m.topic = 'chat:room:' || r.room_id
           AND m.event IN ('message.created', 'message.edited')
           AND m.payload ->> 'seq' = r.seq::text
           AND m.payload -> 'deleted' IS DISTINCT FROM 'true'::jsonb;
        GET DIAGNOSTICS k = ROW_COUNT;
        n := n + k;
        IF r.deleted_at < now() - make_interval(secs => keep_s)
           OR EXISTS (SELECT 1 FROM bv_realtime.messages m
                       WHERE m.topic = 'chat:room:' || r.room_id AND m.event = 'message.deleted'
                         AND m.payload ->> 'seq' = r.seq::text) THEN
            DELETE FROM chat.history_redactions h WHERE h.room_id = r.room_id AND h.seq = r.seq;
        END IF;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION chat.redact_history(bigint, bigint) IS 'Replaces the text of deleted messages in the bv_realtime history (what resuming clients replay) by their tombstone, for the deletes whose copies may still arrive (chat.history_redactions). Run at each delete, at each join of the room, and every minute by pg_cron (job chat-redact). Returns the history rows changed.';

CREATE FUNCTION chat.messages_tombstoned()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- finding 4: notifications (mention, message) and digests
    UPDATE chat.notifications n SET payload = n.payload || '{"preview": "", "deleted": true}'::jsonb
     WHERE n.room_id = NEW.room_id AND n.seq = NEW.seq AND n.seq IS NOT NULL AND n.kind <> 'digest';
    UPDATE chat.notifications n SET payload = chat.redact_digest(n.payload, NEW.room_id, NEW.seq)
     WHERE n.kind = 'digest' AND n.created_at >= NEW.created_at
       AND n.payload @> jsonb_build_object('rooms', jsonb_build_array(jsonb_build_object(
               'room_id', NEW.room_id, 'first_unread', jsonb_build_array(jsonb_build_object('seq', NEW.seq)))));
    -- the MQTT events (chat.events), kept for events_retention_hours
    UPDATE chat.events e SET payload = chat.tombstone_payload(e.payload)
     WHERE e.room_id = NEW.room_id AND e.event IN ('message.created', 'message.edited')
       AND e.occurred_at >= NEW.created_at AND e.payload ->> 'seq' = NEW.seq::text;
    -- finding 9: the gateway's history, now and as its copies arrive
    INSERT INTO chat.history_redactions (room_id, seq) VALUES (NEW.room_id, NEW.seq)
    ON CONFLICT (room_id, seq) DO UPDATE SET deleted_at = EXCLUDED.deleted_at;
    PERFORM chat.redact_history(NEW.room_id, NEW.seq);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION chat.messages_tombstoned() IS 'Internal (trigger): when a message is deleted, replaces its text in the notifications and digests, the MQTT events and the bv_realtime history (now, and as late copies arrive: chat.history_redactions).';

CREATE TRIGGER messages_tombstoned AFTER UPDATE OF deleted_at ON chat.messages
    FOR EACH ROW WHEN (OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL)
    EXECUTE FUNCTION chat.messages_tombstoned();

CREATE FUNCTION chat.members_joined()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM chat.history_redactions h WHERE h.room_id = NEW.room_id) THEN
        PERFORM chat.redact_history(NEW.room_id);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION chat.members_joined() IS 'Internal (trigger): before a new member can resume the room''s live history, re-applies the room''s pending history redactions.';

CREATE TRIGGER members_joined AFTER INSERT OR UPDATE OF state ON chat.members
    FOR EACH ROW WHEN (NEW.state = 'joined')
    EXECUTE FUNCTION chat.members_joined();

REVOKE ALL ON FUNCTION chat.tombstone_payload(jsonb), chat.redact_digest(jsonb, bigint, bigint),
    chat.redact_history(bigint, bigint), chat.messages_tombstoned(), chat.members_joined() FROM PUBLIC;

CREATE OR REPLACE FUNCTION chat.schedule_jobs()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE 'SELECT cron.schedule($1, $2, $3)' USING 'chat-digests', '*/15 * * * *', 'SELECT chat.send_digests()';
    EXECUTE 'SELECT cron.schedule($1, $2, $3)' USING 'chat-purge', '17 * * * *', 'SELECT chat.purge()';
    EXECUTE 'SELECT cron.schedule($1, $2, $3)' USING 'chat-redact', '* * * * *', 'SELECT chat.redact_history()';
END
$$;
COMMENT ON FUNCTION chat.schedule_jobs() IS 'Schedules the digests, the events purge and the history redactions with pg_cron (called at install when pg_cron is present).';

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        PERFORM chat.schedule_jobs();
    END IF;
END
$$;
