-- bv_chat 0.4.0 send path: what the leaner send must keep.
-- chat.messages has no foreign key to chat.rooms (the send's room lock
-- proves the room): deleting a room still deletes its messages, reactions
-- and pins.  chat.rooms' rules moved from CHECK constraints to a trigger
-- that fires only when a statement sets the columns they check: each rule
-- still refuses (23514).  The send reads settings with the membership:
-- its errors keep 0.3.0's order (text, rate, room, membership).  A send
-- without mentions takes its own statement: notifications (offline
-- readers at level "all", mentions) and counters as before.
BEGIN;
SELECT plan(28);

CREATE FUNCTION pg_temp.act(p_sub text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RESET ROLE;
    PERFORM set_config('request.jwt.claims', json_build_object('role', 'bv_user', 'sub', p_sub)::text, true);
    SET LOCAL ROLE bv_user;
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.act(text) TO PUBLIC;
CREATE FUNCTION pg_temp.counter_errors() RETURNS bigint LANGUAGE sql SECURITY DEFINER AS $$
    SELECT count(*) FROM chat.counters rs
     WHERE (rs.unread, rs.mentions) IS DISTINCT FROM
           (SELECT (x.u, x.n) FROM (SELECT count(*)::int AS u, (count(*) FILTER (WHERE rs.user_id = ANY (m.mentions)))::int AS n
              FROM chat.messages m
             WHERE m.room_id = rs.room_id AND coalesce(m.thread_root, 0) = rs.thread
               AND m.seq > rs.read_seq AND m.deleted_at IS NULL AND m.sender <> rs.user_id) x)
$$;
GRANT EXECUTE ON FUNCTION pg_temp.counter_errors() TO PUBLIC;
UPDATE chat.settings SET value = 0 WHERE name = 'send_rate';
CREATE TEMP TABLE ids (name text PRIMARY KEY, id bigint);
GRANT ALL ON ids TO PUBLIC;

-- ---- the room's messages go with the room (no foreign key any more) ----
SELECT is((SELECT count(*)::int FROM pg_constraint WHERE conrelid = 'chat.messages'::regclass AND confrelid = 'chat.rooms'::regclass), 0,
          'chat.messages has no foreign key to chat.rooms');
SELECT pg_temp.act('sp_alice');
INSERT INTO ids SELECT 'doomed', (api.chat_create_room('group', 'doomed', '', ARRAY['sp_bob']) ->> 'id')::bigint;
SELECT lives_ok($$SELECT api.chat_send((SELECT id FROM ids WHERE name = 'doomed'), 'one')$$, 'a message');
SELECT lives_ok($$SELECT api.chat_send((SELECT id FROM ids WHERE name = 'doomed'), 'two @sp_bob')$$, 'a message with a mention');
SELECT lives_ok($$SELECT api.chat_react((SELECT id FROM ids WHERE name = 'doomed'), 1, 'ok')$$, 'a reaction');
SELECT lives_ok($$SELECT api.chat_pin((SELECT id FROM ids WHERE name = 'doomed'), 2)$$, 'a pin');
RESET ROLE;
DELETE FROM chat.rooms WHERE id = (SELECT id FROM ids WHERE name = 'doomed');
SELECT is((SELECT count(*)::int FROM chat.messages WHERE room_id = (SELECT id FROM ids WHERE name = 'doomed')), 0, 'deleting a room deletes its messages');
SELECT is((SELECT count(*)::int FROM chat.reactions WHERE room_id = (SELECT id FROM ids WHERE name = 'doomed'))
          + (SELECT count(*)::int FROM chat.pins WHERE room_id = (SELECT id FROM ids WHERE name = 'doomed')), 0, '... and their reactions and pins');
SELECT is((SELECT count(*)::int FROM chat.read_state WHERE room_id = (SELECT id FROM ids WHERE name = 'doomed'))
          + (SELECT count(*)::int FROM chat.members WHERE room_id = (SELECT id FROM ids WHERE name = 'doomed')), 0, '... and its members and receipts');

-- ---- the rules of a room row, now a trigger ----
SELECT throws_ok($$INSERT INTO chat.rooms (kind, name, created_by) VALUES ('lobby', 'x', 'sp_alice')$$, '23514', NULL, 'a room kind outside direct/group/channel is refused');
SELECT throws_ok(format('INSERT INTO chat.rooms (kind, name, created_by) VALUES (%L, %L, %L)', 'group', repeat('n', 101), 'sp_alice'), '23514', NULL, 'a name of 101 characters is refused');
SELECT throws_ok(format('INSERT INTO chat.rooms (kind, topic, created_by) VALUES (%L, %L, %L)', 'group', repeat('t', 501), 'sp_alice'), '23514', NULL, 'a topic of 501 characters is refused');
SELECT throws_ok($$INSERT INTO chat.rooms (kind, name, created_by) VALUES ('direct', 'x', 'sp_alice')$$, '23514', NULL, 'a direct room without a direct_key is refused');
SELECT throws_ok($$INSERT INTO chat.rooms (kind, name, created_by, direct_key) VALUES ('group', 'x', 'sp_alice', '["a","b"]')$$, '23514', NULL, 'a group room with a direct_key is refused');
SELECT pg_temp.act('sp_alice');
INSERT INTO ids SELECT 'room', (api.chat_create_room('group', 'room', '', ARRAY['sp_bob', 'sp_carol']) ->> 'id')::bigint;
RESET ROLE;
SELECT throws_ok($$UPDATE chat.rooms SET member_count = -1 WHERE id = (SELECT id FROM ids WHERE name = 'room')$$, '23514', NULL, 'a negative member_count is refused');
SELECT throws_ok($$UPDATE chat.rooms SET name = repeat('n', 101) WHERE id = (SELECT id FROM ids WHERE name = 'room')$$, '23514', NULL, 'renaming to 101 characters is refused');
SELECT throws_ok($$UPDATE chat.rooms SET main_count = -1 WHERE id = (SELECT id FROM ids WHERE name = 'room')$$, '23514', NULL, 'a negative main_count is refused (a CHECK still)');

-- ---- errors in 0.3.0's order: text, rate, room, membership ----
SELECT pg_temp.act('sp_alice');
SELECT throws_ok($$SELECT api.chat_send(999999999, '')$$, '22023', 'empty message', 'an empty message to a missing room: the text error first');
SELECT throws_ok(format('SELECT api.chat_send(999999999, %L)', repeat('x', 4001)), 'PT413', NULL, 'a text too long to a missing room: PT413 first');
SELECT throws_ok($$SELECT api.chat_send(999999999, 'hi')$$, 'PT404', NULL, 'a missing room: PT404');
SELECT pg_temp.act('sp_stranger');
SELECT throws_ok($$SELECT api.chat_send((SELECT id FROM ids WHERE name = 'room'), 'hi')$$, 'PT404', NULL, 'a room one is not in: PT404 (not revealed)');
RESET ROLE;
UPDATE chat.settings SET value = 1 WHERE name = 'send_rate';
UPDATE chat.settings SET value = 1 WHERE name = 'send_burst';
SELECT pg_temp.act('sp_flooder');
SELECT throws_ok($$SELECT api.chat_send(999999999, 'm' || g) FROM generate_series(1, 3) g$$, 'PT404', NULL, 'the first send to a missing room: PT404 (a token taken)');
SELECT throws_ok($$SELECT api.chat_send(999999999, 'again')$$, 'PT429', NULL, 'the next one, faster than the limit: PT429 before the room check');
RESET ROLE;
UPDATE chat.settings SET value = 0 WHERE name = 'send_rate';

-- ---- notifications and counters of both statements ----
-- carol is offline, caught up, at level "all": the first message she has
-- not read notifies her (kind message); bob is mentioned (kind mention)
UPDATE chat.users SET last_active_at = now() - interval '1 hour' WHERE user_id IN ('sp_bob', 'sp_carol');
SELECT pg_temp.act('sp_alice');
SELECT lives_ok($$SELECT api.chat_send((SELECT id FROM ids WHERE name = 'room'), 'no mention')$$, 'a send without mentions');
RESET ROLE;
SELECT is((SELECT string_agg(user_id || ':' || kind || ':' || (payload ->> 'seq') || ':' || (payload ->> 'sender') || ':' || (payload ->> 'preview'), ',' ORDER BY user_id)
             FROM chat.notifications WHERE room_id = (SELECT id FROM ids WHERE name = 'room')),
          'sp_bob:message:1:sp_alice:no mention,sp_carol:message:1:sp_alice:no mention',
          'the offline, caught-up members get one message notification each, with its payload');
SELECT pg_temp.act('sp_alice');
SELECT lives_ok($$SELECT api.chat_send((SELECT id FROM ids WHERE name = 'room'), 'hey @sp_bob')$$, 'a send with a mention');
RESET ROLE;
SELECT is((SELECT string_agg(user_id || ':' || kind || ':' || (payload ->> 'seq') || ':' || (payload ->> 'kind'), ',' ORDER BY user_id)
             FROM chat.notifications WHERE room_id = (SELECT id FROM ids WHERE name = 'room') AND seq = 2),
          'sp_bob:mention:2:mention',
          'the mention notifies bob; carol, who has not read message 1, gets nothing more');
SELECT is((SELECT format('%s/%s/%s', read_seq, unread, mentions) FROM chat.counters WHERE user_id = 'sp_bob' AND room_id = (SELECT id FROM ids WHERE name = 'room') AND thread = 0),
          '0/2/1', 'bob: two unread, one mention');
SELECT is(pg_temp.counter_errors(), 0::bigint, 'every counter equals the recount');

SELECT * FROM finish();
ROLLBACK;
