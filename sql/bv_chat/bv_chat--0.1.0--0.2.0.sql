/*
 * bv_chat 0.1.0 -> 0.2.0: counters that a send does not have to touch per
 * member, and the send rate limit on every path that publishes a message.
 *
 * Counters (ADR 0100, "Counters as a total minus a per-reader base"):
 *   0.1.0 kept chat.read_state.unread per (user, room, thread) and a send
 *   added 1 to the row of every member: ~50 row versions per message in a
 *   50-member room.  0.2.0 keeps the number of live (not deleted) messages
 *   once per (room, thread) -- chat.rooms.main_count for the main timeline,
 *   the root's reply_count for a thread -- and per reader a base:
 *       unread = total(room, thread) - read_state.unread_base
 *   A send changes the total (the room row, or the root row, that it locks
 *   anyway), the sender's row (its receipt) and the rows of the members it
 *   mentions; nothing else.  A delete lowers the total and gives back one
 *   to the base of every reader that did not count the message (it had read
 *   it, or sent it); a receipt recounts and stores total - recount, total
 *   and recount read in one statement (one snapshot).  chat.counters shows
 *   unread and mentions per row, as read_state did.
 *
 * Rate limit: edits, deletes, reactions and pins publish live events and
 * (edits) notifications like a send: they now take from the same per-user
 * bucket as chat.send (send_rate, send_burst), so no write path escapes it.
 */

\echo Use "ALTER EXTENSION bv_chat UPDATE TO '0.2.0'" to load this file. \quit

/* ---------- counters: per-(room, thread) totals, per-reader bases ---------- */

ALTER TABLE chat.rooms ADD COLUMN main_count bigint NOT NULL DEFAULT 0 CHECK (main_count >= 0);
COMMENT ON COLUMN chat.rooms.main_count IS 'Live (not deleted) messages of the main timeline: the total that unread counts of thread 0 are taken from (unread = main_count - read_state.unread_base).';
UPDATE chat.rooms r
   SET main_count = (SELECT count(*) FROM chat.messages m
                      WHERE m.room_id = r.id AND m.thread_root IS NULL AND m.deleted_at IS NULL);
COMMENT ON COLUMN chat.messages.reply_count IS 'Live (not deleted) replies of a thread''s root: the total that unread counts of the thread are taken from (unread = reply_count - read_state.unread_base).';

ALTER TABLE chat.read_state ADD COLUMN unread_base bigint NOT NULL DEFAULT 0;
UPDATE chat.read_state rs
   SET unread_base = CASE WHEN rs.thread = 0 THEN (SELECT r.main_count FROM chat.rooms r WHERE r.id = rs.room_id)
                          ELSE coalesce((SELECT m.reply_count FROM chat.messages m
                                          WHERE m.room_id = rs.room_id AND m.seq = rs.thread), 0) END
                     - rs.unread;
ALTER TABLE chat.read_state DROP COLUMN unread;
COMMENT ON TABLE chat.read_state IS 'Read receipt and exact counters per (user, room, thread): thread 0 is the main timeline (one row per joined member), other threads have a row per follower (root author, repliers, mentioned). unread = the (room, thread) total of live messages minus unread_base (see chat.counters) = messages after read_seq, not deleted, not the user''s own; mentions = those mentioning the user.';
COMMENT ON COLUMN chat.read_state.unread_base IS 'unread = total - unread_base, the total being chat.rooms.main_count (thread 0) or the root''s reply_count (a thread).';

-- Room rows (numbering, totals) and receipts are updated on every send:
-- free space on their pages keeps those updates HOT (no index entries).
ALTER TABLE chat.rooms SET (fillfactor = 20);
ALTER TABLE chat.read_state SET (fillfactor = 70);
-- The readers of a (room, thread) that have read everything (base = total):
-- a send finds the offline ones to notify without reading every member.
CREATE INDEX read_state_caught_up ON chat.read_state (room_id, thread, unread_base);

CREATE VIEW chat.counters WITH (security_invoker = true) AS
SELECT rs.user_id, rs.room_id, rs.thread, rs.read_seq,
       (CASE WHEN rs.thread = 0 THEN r.main_count ELSE coalesce(t.reply_count, 0) END - rs.unread_base)::integer AS unread,
       rs.mentions, rs.read_at
  FROM chat.read_state rs
  JOIN chat.rooms r ON r.id = rs.room_id
  LEFT JOIN chat.messages t ON rs.thread > 0 AND t.room_id = rs.room_id AND t.seq = rs.thread;
COMMENT ON VIEW chat.counters IS 'Receipts with their exact unread and mention counts per (user, room, thread) (the rows of chat.read_state the reader may see).';
REVOKE ALL ON chat.counters FROM PUBLIC;
GRANT SELECT ON chat.counters TO bv_user, bv_service;

/* The (room, thread) total of live messages (room locked, or any snapshot). */
CREATE FUNCTION chat.thread_total(p_room bigint, p_thread bigint)
RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN coalesce(p_thread, 0) = 0
                THEN (SELECT r.main_count FROM chat.rooms r WHERE r.id = p_room)
                ELSE coalesce((SELECT m.reply_count FROM chat.messages m WHERE m.room_id = p_room AND m.seq = p_thread), 0)::bigint END
$$;
COMMENT ON FUNCTION chat.thread_total(bigint, bigint) IS 'Internal: live messages of the main timeline (thread 0) or of a thread, the total unread counts are taken from.';
REVOKE ALL ON FUNCTION chat.thread_total(bigint, bigint) FROM PUBLIC;

/* ---------- the send rate limit, shared by every write that publishes ---------- */

CREATE FUNCTION chat.charge_send(p_user text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rate bigint;
    burst bigint;
BEGIN
    SELECT max(x.value) FILTER (WHERE x.name = 'send_rate'), max(x.value) FILTER (WHERE x.name = 'send_burst')
      INTO rate, burst FROM chat.settings x WHERE x.name IN ('send_rate', 'send_burst');
    IF rate > 0 THEN
        PERFORM bv.rate_limit_enforce('chat:send:' || p_user, rate, burst);
    END IF;
END
$$;
COMMENT ON FUNCTION chat.charge_send(text) IS 'Internal: takes one from the user''s send bucket (send_rate, send_burst; bv_core''s limiter): PT429 when empty. Sends, edits, deletes, reactions and pins share it.';
REVOKE ALL ON FUNCTION chat.charge_send(text) FROM PUBLIC;

UPDATE chat.settings SET description = 'Messages a user may send per second, sustained; edits, deletes, reactions and pins take from the same bucket (bv_core rate limiter; 0: no limit).'
 WHERE name = 'send_rate';

/* ---------- functions that maintain or read the counters ---------- */

CREATE OR REPLACE FUNCTION chat.add_member_row(p_room bigint, p_user text, p_role text, p_by text)
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
    -- nothing before the join is unread: the base is the room's total
    INSERT INTO chat.read_state (user_id, room_id, thread, read_seq, unread_base)
    VALUES (p_user, p_room, 0, r.last_seq, r.main_count)
    ON CONFLICT (room_id, thread, user_id) DO UPDATE
        SET read_seq = excluded.read_seq, unread_base = excluded.unread_base, mentions = 0;
    UPDATE chat.rooms SET member_count = member_count + 1 WHERE id = p_room;
    INSERT INTO chat.users (user_id) VALUES (p_user) ON CONFLICT DO NOTHING;
    PERFORM chat.publish(p_room, 'member.joined', jsonb_build_object('room_id', p_room, 'user_id', p_user, 'role', p_role, 'by', p_by));
END
$$;

CREATE OR REPLACE FUNCTION chat.send(p_room bigint, p_body text, p_reply_to bigint DEFAULT NULL, p_attachments jsonb DEFAULT '[]')
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- every statement here is a key lookup: generic plans, planned once per
-- session (with custom plans a third of a send's time went to planning)
SET plan_cache_mode = force_generic_plan
AS $$
/*
 * The hot path.  Its cost no longer grows with the room: the room row (its
 * numbering, its lock, the main timeline's total) or the thread root's row
 * (the thread's total) counts the message for every reader at once; the
 * rows written per message are the room (or root), the message (with its
 * audit row), the sender's receipt, the mentioned members' counters and
 * the notifications.  Settings in one read, the membership check after the
 * room lock (so a ban committed while waiting is seen).
 */
DECLARE
    me text := chat.actor();
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
    -- commit); a message of the main timeline also adds one to its total.
    -- An error below rolls all of it back.
    UPDATE chat.rooms SET last_seq = last_seq + 1, last_message_at = now(),
                          main_count = main_count + (p_reply_to IS NULL)::int
     WHERE id = p_room
    RETURNING last_seq, main_count INTO s, total;
    -- a new statement (a new snapshot): a ban committed while this one
    -- waited for the room lock is seen
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

    -- One statement (one executor start instead of four): the sender's
    -- receipt (sending reads the room or thread), the mentioned members'
    -- counters (a receipt that covered the message first is seen: the
    -- UPDATE re-checks read_seq on the newest row), the sender's activity
    -- (at most every 10 s; every member has a chat.users row), and the
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
    ), active AS (
        UPDATE chat.users SET last_active_at = now()
         WHERE user_id = me AND (last_active_at IS NULL OR last_active_at < now() - interval '10 seconds')
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

/*
 * Counter changes of a message whose live or mention state changed (room
 * locked).  p_unread = -1: the message was deleted (the caller lowers the
 * total): the readers that did not count it (they had read it, or sent it)
 * get one back on their base, so that their unread stays.  Every row of the
 * (room, thread) is updated: a receipt that moves a row past the message at
 * the same time is then re-checked on its newest version.  Mention changes
 * touch the rows of the members mentioned before or after only.
 */
CREATE OR REPLACE FUNCTION chat.adjust_counters(p_room bigint, p_seq bigint, p_thread bigint, p_sender text,
                                                p_unread integer, p_old_mentions text[], p_new_mentions text[])
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE chat.read_state
       SET unread_base = unread_base + CASE WHEN read_seq >= p_seq OR user_id = p_sender THEN p_unread ELSE 0 END,
           mentions = mentions + CASE WHEN read_seq < p_seq AND user_id <> p_sender
                                      THEN (user_id = ANY (p_new_mentions))::int - (user_id = ANY (p_old_mentions))::int
                                      ELSE 0 END
     WHERE room_id = p_room AND thread = coalesce(p_thread, 0)
       AND (p_unread <> 0 OR user_id = ANY (p_old_mentions) OR user_id = ANY (p_new_mentions))
$$;
COMMENT ON FUNCTION chat.adjust_counters(bigint, bigint, bigint, text, integer, text[], text[]) IS 'Internal: counter changes of a deleted message (p_unread = -1: readers that did not count it keep their unread) or of changed mentions.';

CREATE OR REPLACE FUNCTION chat.edit(p_room bigint, p_seq bigint, p_body text)
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
    -- an edit publishes (and may notify) like a send: same bucket
    PERFORM chat.charge_send(me);
    ment := chat.parse_mentions(p_room, me, p_body);
    UPDATE chat.messages SET body = p_body, mentions = ment, edited_at = now()
     WHERE room_id = p_room AND seq = p_seq RETURNING * INTO msg;
    IF ment IS DISTINCT FROM old.mentions THEN
        PERFORM chat.adjust_counters(p_room, p_seq, old.thread_root, me, 0, old.mentions, ment);
        IF old.thread_root IS NOT NULL THEN
            -- a member newly mentioned in a thread follows it from this message
            -- on, counters computed from the thread as it is (room locked)
            INSERT INTO chat.read_state (user_id, room_id, thread, read_seq, unread_base, mentions)
            SELECT u, p_room, old.thread_root, p_seq - 1,
                   chat.thread_total(p_room, old.thread_root)
                   - (SELECT count(*) FROM chat.messages m
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
COMMENT ON FUNCTION chat.edit(bigint, bigint, text) IS 'Edits your message (history kept by bv_audit: api.chat_edits); mentions and counters follow the new text. Takes from the send rate limit.';

CREATE OR REPLACE FUNCTION chat.delete_message(p_room bigint, p_seq bigint)
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
    PERFORM chat.charge_send(me);
    UPDATE chat.messages SET body = '', attachments = '[]', mentions = '{}', deleted_at = now()
     WHERE room_id = p_room AND seq = p_seq RETURNING * INTO msg;
    PERFORM chat.adjust_counters(p_room, p_seq, old.thread_root, old.sender, -1, old.mentions, '{}');
    -- the (room, thread) total loses the message
    IF old.thread_root IS NOT NULL THEN
        UPDATE chat.messages SET reply_count = reply_count - 1 WHERE room_id = p_room AND seq = old.thread_root;
    ELSE
        UPDATE chat.rooms SET main_count = main_count - 1 WHERE id = p_room;
    END IF;
    DELETE FROM chat.pins WHERE room_id = p_room AND seq = p_seq;
    DELETE FROM chat.reactions WHERE room_id = p_room AND seq = p_seq;
    PERFORM chat.touch(me);
    PERFORM chat.publish(p_room, 'message.deleted', jsonb_build_object('room_id', p_room, 'seq', p_seq, 'by', me,
                                                                       'thread_root', old.thread_root));
    RETURN jsonb_build_object('room_id', p_room, 'seq', p_seq, 'deleted', true);
END
$$;
COMMENT ON FUNCTION chat.delete_message(bigint, bigint) IS 'Deletes a message (the sender, or a room admin): a tombstone stays in the history; counters drop it. Takes from the send rate limit.';

/*
 * Read receipt: "read up to message N" of the room's main timeline (thread
 * 0) or of a thread.  Locks the one read_state row, then recounts in a new
 * statement that also reads the (room, thread) total: one snapshot for
 * both, so base = total - recount is exact; see the lock-order note at the
 * top of bv_chat--0.1.0.sql and ADR 0100.
 */
CREATE OR REPLACE FUNCTION chat.mark_read(p_room bigint, p_seq bigint DEFAULT NULL, p_thread bigint DEFAULT 0)
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
    total bigint;
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
        -- reading a thread one does not follow yet starts following it: a new
        -- row, so the room's lock first (a leave, kick or ban holds it while
        -- it deletes the member's rows; 0.1.0 could leave a row behind for
        -- a member kicked meanwhile), then the membership again (a new
        -- statement: a removal committed while waiting is seen).  No
        -- read_state row is held here, so the lock order stays room first.
        PERFORM 1 FROM chat.rooms r WHERE r.id = p_room FOR SHARE;
        PERFORM chat.membership(p_room, me, false);
        INSERT INTO chat.read_state (user_id, room_id, thread, read_seq) VALUES (me, p_room, thr, thr)
        ON CONFLICT (room_id, thread, user_id) DO NOTHING;
        SELECT read_seq INTO cur FROM chat.read_state
         WHERE room_id = p_room AND thread = thr AND user_id = me FOR UPDATE;
    END IF;
    -- never beyond the last committed message; receipts never go backwards
    SELECT least(coalesce(p_seq, r.last_seq), r.last_seq) INTO upto FROM chat.rooms r WHERE r.id = p_room;
    upto := greatest(upto, cur);
    -- new statement, new snapshot: sees every message committed before the
    -- row lock was granted; the total is read in the same snapshot
    SELECT x.u, x.n, chat.thread_total(p_room, thr) INTO u, n, total
      FROM (SELECT count(*)::integer AS u, (count(*) FILTER (WHERE me = ANY (m.mentions)))::integer AS n
              FROM chat.messages m
             WHERE m.room_id = p_room AND m.seq > upto AND m.deleted_at IS NULL AND m.sender <> me
               AND CASE WHEN thr = 0 THEN m.thread_root IS NULL ELSE m.thread_root = thr END) x;
    UPDATE chat.read_state SET read_seq = upto, unread_base = total - u, mentions = n, read_at = now()
     WHERE room_id = p_room AND thread = thr AND user_id = me;
    PERFORM chat.touch(me);
    IF upto > cur THEN
        PERFORM chat.publish(p_room, 'receipt', jsonb_build_object('room_id', p_room, 'user_id', me, 'thread', thr, 'seq', upto));
    END IF;
    RETURN jsonb_build_object('room_id', p_room, 'thread', thr, 'read_seq', upto, 'unread', u, 'mentions', n);
END
$$;

CREATE OR REPLACE FUNCTION chat.room_list(p_after bigint DEFAULT NULL, p_limit integer DEFAULT 50)
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
           rs.read_seq, (r.main_count - rs.unread_base)::integer, rs.mentions,
           coalesce(t.u, 0), coalesce(t.n, 0)
      FROM chat.members mb
      JOIN chat.rooms r ON r.id = mb.room_id
      LEFT JOIN chat.read_state rs ON rs.room_id = mb.room_id AND rs.thread = 0 AND rs.user_id = me
      LEFT JOIN LATERAL (SELECT sum(m.reply_count - x.unread_base)::bigint AS u, sum(x.mentions)::bigint AS n
                           FROM chat.read_state x
                           JOIN chat.messages m ON m.room_id = x.room_id AND m.seq = x.thread
                          WHERE x.room_id = mb.room_id AND x.user_id = me AND x.thread > 0) t ON true
     WHERE mb.user_id = me AND mb.state = 'joined' AND mb.room_id > coalesce(p_after, 0)
     ORDER BY mb.room_id
     LIMIT lim;
END
$$;

CREATE OR REPLACE FUNCTION chat.digest_of(p_user text, p_per_room integer DEFAULT 3)
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
      FROM (SELECT rs.room_id, rs.read_seq, (q.main_count - rs.unread_base)::integer AS unread, rs.mentions
              FROM chat.read_state rs JOIN chat.rooms q ON q.id = rs.room_id
             WHERE rs.user_id = p_user AND rs.thread = 0 AND q.main_count > rs.unread_base) x
      JOIN chat.rooms r ON r.id = x.room_id
      JOIN chat.members mb ON mb.room_id = r.id AND mb.user_id = p_user AND mb.state = 'joined' AND mb.notify <> 'none'
$$;

CREATE OR REPLACE FUNCTION chat.send_digests()
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
                AND EXISTS (SELECT 1 FROM chat.read_state rs JOIN chat.rooms r ON r.id = rs.room_id
                             WHERE rs.user_id = x.user_id AND rs.thread = 0 AND r.main_count > rs.unread_base)
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

/* ---------- the rate limit on the other writes that publish ---------- */

CREATE OR REPLACE FUNCTION chat.react(p_room bigint, p_seq bigint, p_emoji text, p_on boolean DEFAULT true)
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

CREATE OR REPLACE FUNCTION chat.pin(p_room bigint, p_seq bigint, p_on boolean DEFAULT true)
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
    PERFORM chat.charge_send(me);
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
COMMENT ON FUNCTION chat.pin(bigint, bigint, boolean) IS 'Pins (or unpins) a message (admins; anyone in a direct room). Takes from the send rate limit.';
