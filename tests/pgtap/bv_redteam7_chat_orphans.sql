-- Red-team round 7 (bv_chat 0.4.0): with the chat.messages -> chat.rooms
-- foreign key gone, no client path makes a message outside a room the
-- sender is in: not a direct write (no grant), not api.chat_send, not the
-- WebSocket handler chat.ws_send, for a room that does not exist or that
-- the sender is not in, nor a reply whose room id names another room.
-- The redaction helpers are not callable by clients.  (Promises that
-- hold: no TODO.)
BEGIN;
SELECT plan(14);

CREATE FUNCTION pg_temp.act(p_sub text, p_role text DEFAULT 'bv_user') RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RESET ROLE;
    PERFORM set_config('request.jwt.claims', json_build_object('role', p_role, 'sub', p_sub)::text, true);
    EXECUTE format('SET LOCAL ROLE %I', p_role);
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.act(text, text) TO PUBLIC;
UPDATE chat.settings SET value = 0 WHERE name = 'send_rate';
CREATE TEMP TABLE ids (name text PRIMARY KEY, id bigint);
GRANT ALL ON ids TO PUBLIC;

SELECT pg_temp.act('r7_alice');
INSERT INTO ids SELECT 'theirs', (api.chat_create_room('group', 'theirs', '', ARRAY['r7_bob']) ->> 'id')::bigint;
SELECT lives_ok($$SELECT api.chat_send((SELECT id FROM ids WHERE name = 'theirs'), 'hello')$$, 'control: a member sends');
SELECT pg_temp.act('r7_mallory');
INSERT INTO ids SELECT 'mine', (api.chat_create_room('group', 'mine', '', ARRAY[]::text[]) ->> 'id')::bigint;
SELECT lives_ok($$SELECT api.chat_send((SELECT id FROM ids WHERE name = 'mine'), 'own room')$$, 'control: mallory sends in her own room');
INSERT INTO ids VALUES ('ghost', (SELECT max(id) + 1000 FROM ids));

-- direct writes
SELECT throws_ok($$INSERT INTO chat.messages (room_id, seq, sender, body) VALUES ((SELECT id FROM ids WHERE name = 'ghost'), 1, 'r7_mallory', 'orphan')$$,
                 '42501', NULL, 'a client cannot insert into chat.messages (orphan room)');
SELECT throws_ok($$INSERT INTO chat.messages (room_id, seq, sender, body) VALUES ((SELECT id FROM ids WHERE name = 'theirs'), 99, 'r7_mallory', 'x')$$,
                 '42501', NULL, '... nor into a room she is not in');
SELECT throws_ok($$UPDATE chat.messages SET room_id = (SELECT id FROM ids WHERE name = 'ghost') WHERE sender = 'r7_mallory'$$,
                 '42501', NULL, 'a client cannot move her message to another room id');
-- REST
SELECT throws_ok($$SELECT api.chat_send((SELECT id FROM ids WHERE name = 'ghost'), 'orphan')$$, 'PT404', NULL, 'api.chat_send to a room that does not exist: PT404');
SELECT throws_ok($$SELECT api.chat_send((SELECT id FROM ids WHERE name = 'theirs'), 'intrude')$$, 'PT404', NULL, 'api.chat_send to a room she is not in: PT404 (no probing)');
SELECT throws_ok($$SELECT api.chat_send((SELECT id FROM ids WHERE name = 'mine'), 'reply', 999::bigint)$$, 'PT404', NULL,
                 'a reply to a seq that her room does not hold: PT404');
-- the WebSocket handler (as the gateway calls it: the client's role)
SELECT throws_ok(format($$SELECT chat.ws_send('chat:room:%s', 'message.send', '{"body": "orphan"}')$$, (SELECT id FROM ids WHERE name = 'ghost')),
                 'PT403', NULL, 'chat.ws_send to a room that does not exist: refused');
SELECT throws_ok(format($$SELECT chat.ws_send('chat:room:%s', 'message.send', '{"body": "intrude"}')$$, (SELECT id FROM ids WHERE name = 'theirs')),
                 'PT403', NULL, 'chat.ws_send to a room she is not in: refused');
-- the redaction helpers
SELECT throws_ok($$SELECT chat.redact_history()$$, '42501', NULL, 'a client cannot run chat.redact_history()');
SELECT throws_ok($$SELECT * FROM chat.history_redactions$$, '42501', NULL, 'a client cannot read chat.history_redactions');
RESET ROLE;
SELECT is((SELECT count(*)::int FROM chat.messages m WHERE NOT EXISTS (SELECT 1 FROM chat.rooms r WHERE r.id = m.room_id)), 0,
          'no message without its room');
SELECT is((SELECT string_agg(m.body, ',' ORDER BY m.body) FROM chat.messages m WHERE m.sender = 'r7_mallory'), 'own room',
          'mallory''s only message is the one in her own room');
SELECT * FROM finish();
ROLLBACK;
