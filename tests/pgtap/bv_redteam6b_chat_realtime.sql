-- Red-team round 6b (bv_chat, bv_realtime): what reaches a user that the
-- docs say does not.  Findings are todo() checks (they assert the promise
-- and fail until fixed); the promises that held are plain checks.
--
-- Finding 3 (bv_realtime): a `{sub}` prefix grant is ambiguous when a sub
--   holds ':'.  docs/bv_realtime.md: 'inbox:{sub}*' gives alice
--   "inbox:alice and inbox:alice:...".  But 'inbox:alice:x' is also the
--   whole own topic of the user whose sub is "alice:x" (subs are any text
--   without control characters: "urn:user:1", "org:alice"): alice is
--   authorized for it, and so for everything sent to that user.  The same
--   holds for the pattern the 0.1.0 comment recommends, 'user:{sub}:*'.
--   Either {sub} patterns must not match a sub holding ':' (nor a topic
--   where the substituted sub is followed by ':' when another sub could
--   own it), or the docs must restrict subs.
-- Finding 4 (bv_chat): a deleted message's text stays readable in the
--   recipients' notifications.  docs/bv_chat.md: "Deletes are tombstones:
--   text, attachments, mentions, reactions and pins go" (the audit history
--   keeps it, for bv_admin).  The mention notification made by the send
--   keeps "preview" (the text) after chat_delete, and the mentioned user
--   reads it with api.chat_notifications() (and the push outbox row holds
--   it).  (An edit's old text is no leak: chat_edits lists every version.)
--   Fixed in bv_chat 0.4.0: a delete empties the previews of the message's
--   notifications and digests, its chat.events rows and its copies in the
--   realtime history (with finding 9 of tap/bv_redteam6b_chat_history).
-- Finding 11 (bv_chat, low): names accept the invisible characters that
--   bv_core refuses in actors because they change how text around them is
--   shown (docs/bv_core.md, "Actor rules": bidirectional overrides,
--   zero-width characters, ...).  A room name E'\u202Eevil' is shown
--   reversed, a reaction E'a\u200Bb' looks like "ab" but is another
--   reaction, and chat_add_member accepts a user id E'bo\u200Bb' that looks
--   like bob (and that no token can have: bv_core refuses it as a sub).
--   The checks use [[:space:][:cntrl:]], which does not cover format
--   characters (Cf).
--   Fixed in bv_chat 0.4.0: chat.has_invisible() refuses bv_core's ranges
--   (22023 with a hint) in room names, reactions (a zero-width joiner inside
--   an emoji sequence stays allowed) and every user id argument.
BEGIN;
SELECT plan(49);

CREATE FUNCTION pg_temp.act(p_sub text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RESET ROLE;
    PERFORM set_config('request.jwt.claims', json_build_object('role', 'bv_user', 'sub', p_sub)::text, true);
    SET LOCAL ROLE bv_user;
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.act(text) TO PUBLIC;
CREATE TEMP TABLE ids (name text PRIMARY KEY, id bigint);
GRANT ALL ON ids TO PUBLIC;

-- ---- finding 3: {sub} with ':' ----
INSERT INTO bv_realtime.topic_grants (topic_pattern, action, grantee, comment)
VALUES ('r6b-inbox:{sub}*', 'subscribe', 'bv_user', 'red-team 6b: each user''s own topics'),
       ('r6b-user:{sub}:*', 'subscribe', 'bv_user', 'red-team 6b: the 0.1.0 comment''s form');
-- Fixed in 0.5.0: in a prefix pattern {sub} is the encoded sub
-- (bv_realtime.topic_sub: '%' and ':' as %25 and %3A), so "org:alice" has
-- r6b-inbox:org%3Aalice and r6b-user:org%3Aalice:..., which "org" cannot
-- reach; r6b-inbox:org:alice is a topic below "org"'s own inbox.
SELECT pg_temp.act('org:alice');
SELECT ok(bv_realtime.authorize('r6b-inbox:' || bv_realtime.topic_sub('org:alice'), 'subscribe'), 'control: user "org:alice" may subscribe to her inbox r6b-inbox:org%3Aalice');
SELECT ok(bv_realtime.authorize('r6b-user:org%3Aalice:dm', 'subscribe'), 'control: ... and to r6b-user:org%3Aalice:dm');
SELECT pg_temp.act('bob');
SELECT ok(NOT bv_realtime.authorize('r6b-inbox:org%3Aalice', 'subscribe'), 'control: bob may not');
SELECT pg_temp.act('org');
SELECT ok(NOT bv_realtime.authorize('r6b-inbox:org%3Aalice', 'subscribe'), 'user "org" is not authorized for the inbox of user "org:alice"');
SELECT ok(NOT bv_realtime.authorize('r6b-user:org%3Aalice:dm', 'subscribe'), 'user "org" is not authorized for r6b-user:org%3Aalice:dm');
SELECT pg_temp.act('org%3Aalice');
SELECT ok(NOT bv_realtime.authorize('r6b-inbox:org%3Aalice', 'subscribe'), 'user "org%3Aalice" (the encoded text as a sub) is not given the inbox of "org:alice"');

-- ---- finding 4: deleted text in notifications ----
SELECT pg_temp.act('r6b_alice');
INSERT INTO ids SELECT 'group', ((api.chat_create_room('group', 'r6b-group', 'deletes', ARRAY['r6b_bob'])) ->> 'id')::bigint;
SELECT lives_ok($$SELECT api.chat_send((SELECT id FROM ids WHERE name = 'group'), 'r6b-secret-one @r6b_bob')$$, 'alice mentions bob');
SELECT lives_ok($$SELECT api.chat_send((SELECT id FROM ids WHERE name = 'group'), 'r6b-secret-two @r6b_bob')$$, 'alice mentions bob again');
SELECT lives_ok($$SELECT api.chat_delete((SELECT id FROM ids WHERE name = 'group'), 1)$$, 'alice deletes her first message');
SELECT lives_ok($$SELECT api.chat_edit((SELECT id FROM ids WHERE name = 'group'), 2, 'edited @r6b_bob')$$, 'alice edits her second message');
SELECT pg_temp.act('r6b_bob');
SELECT is((SELECT h->>'body' FROM api.chat_history((SELECT id FROM ids WHERE name = 'group')) h WHERE (h->>'seq')::int = 1), '',
          'control: the history shows the deleted message without text');
-- fixed in 0.4.0 (finding 4): a delete empties the previews
SELECT is((SELECT count(*) FROM api.chat_notifications() n WHERE n.payload::text LIKE '%r6b-secret-one%'), 0::bigint,
          'the deleted text is not readable in bob''s notifications');
-- An edit's old text is no leak: members list every version with chat_edits.
SELECT is((SELECT count(*) FROM api.chat_edits((SELECT id FROM ids WHERE name = 'group'), 2)), 2::bigint,
          'control: chat_edits lists both versions of the edited message');

-- ---- finding 11: invisible characters in names ----
SELECT pg_temp.act('r6b_alice');
SELECT lives_ok($$SELECT api.chat_send((SELECT id FROM ids WHERE name = 'group'), 'react to me')$$, 'control: a message to react to');
-- fixed in 0.4.0 (finding 11): the ranges bv_core refuses in actors
SELECT throws_ok($$SELECT api.chat_create_room('group', E'\u202Er6b-evil', 't')$$, '22023', NULL,
                 'a room name with a right-to-left override is refused');
SELECT throws_ok($$SELECT api.chat_react((SELECT id FROM ids WHERE name = 'group'), 3, E'a\u200Bb', true)$$, '22023', NULL,
                 'a reaction with a zero-width space is refused');
SELECT throws_ok($$SELECT api.chat_add_member((SELECT id FROM ids WHERE name = 'group'), E'r6b_bo\u200Bb', 'member')$$, '22023', NULL,
                 'a member id with a zero-width space is refused');
-- the other ranges, and the paths that share the checks
SELECT throws_ok($$SELECT api.chat_create_room('channel', E'r6b\u2066x\u2069', 't')$$, '22023', NULL,
                 'a room name with a bidi isolate is refused');
SELECT throws_ok($$SELECT api.chat_create_room('group', E'r6b\uFEFFx', 't')$$, '22023', NULL,
                 'a room name with a byte order mark is refused');
SELECT throws_ok($$SELECT api.chat_create_room('group', E'r6b\u200Fx', 't')$$, '22023', NULL,
                 'a room name with a right-to-left mark is refused');
SELECT throws_ok($$SELECT api.chat_create_room('group', E'r6b\u0085x', 't')$$, '22023', NULL,
                 'a room name with a C1 control is refused');
SELECT throws_ok($$SELECT api.chat_create_room('group', 'r6b-ok', 't', ARRAY[E'r6b_\u202Ebob'])$$, '22023', NULL,
                 'an initial member id with a right-to-left override is refused');
SELECT throws_ok($$SELECT api.chat_direct(E'r6b_bo\u2060b')$$, '22023', NULL,
                 'a direct room with a word-joiner user id is refused');
SELECT throws_ok($$SELECT api.chat_react((SELECT id FROM ids WHERE name = 'group'), 3, E'a\u200Db', true)$$, '22023', NULL,
                 'a zero-width joiner between letters is refused');
SELECT throws_ok($$SELECT api.chat_react((SELECT id FROM ids WHERE name = 'group'), 3, E'\u200D\U0001F4BB', true)$$, '22023', NULL,
                 'a leading zero-width joiner is refused');
SELECT lives_ok($$SELECT api.chat_react((SELECT id FROM ids WHERE name = 'group'), 3, E'\U0001F469\u200D\U0001F4BB', true)$$,
                'control: an emoji ZWJ sequence (woman technologist) is a reaction');
SELECT lives_ok($$SELECT api.chat_react((SELECT id FROM ids WHERE name = 'group'), 3, E'a\u200Bb', false)$$,
                'control: removing a reaction does not check its characters (one stored before 0.4.0 can go)');
SELECT lives_ok($$SELECT api.chat_create_room('group', E'\u063A\u0631\u0641\u0629 r6b', 't')$$,
                'control: an Arabic room name is accepted');
RESET ROLE;
SELECT is(chat.has_invisible(E'plain \u00E9\u6771\u4EAC'), false, 'control: accented and CJK text is not invisible');

-- ---- finding 4 (more copies) and finding 9 at the SQL level ----
-- The push outbox rows (chat.notifications, as bv_cdc's route reads them).
RESET ROLE;
SELECT is((SELECT count(*) FROM chat.notifications n WHERE n.room_id = (SELECT id FROM ids WHERE name = 'group')
            AND n.seq = 1 AND n.payload ->> 'preview' = '' AND n.payload -> 'deleted' = 'true'::jsonb), 1::bigint,
          'the push outbox row of the deleted message has an empty preview and "deleted": true');
SELECT ok((SELECT count(*) FROM chat.notifications n WHERE n.room_id = (SELECT id FROM ids WHERE name = 'group')
            AND n.seq = 2 AND n.payload ->> 'preview' LIKE 'r6b-secret-two%') = 1,
          'control: the notification of the message that was not deleted keeps its preview');
-- MQTT events and a digest listing the message (written as send_digests() does)
UPDATE chat.settings SET value = 1 WHERE name = 'mqtt_events';
SELECT pg_temp.act('r6b_alice');
SELECT lives_ok($$SELECT api.chat_send((SELECT id FROM ids WHERE name = 'group'), 'r6b-secret-four')$$, 'alice sends message 4');
SELECT lives_ok($$SELECT api.chat_send((SELECT id FROM ids WHERE name = 'group'), 'r6b-visible-five')$$, 'alice sends message 5');
RESET ROLE;
INSERT INTO chat.notifications (user_id, room_id, kind, push, payload)
SELECT 'r6b_bob', g.id, 'digest', true, jsonb_build_object('kind', 'digest', 'user_id', 'r6b_bob', 'rooms', jsonb_build_array(
         jsonb_build_object('room_id', g.id + 1000, 'first_unread', jsonb_build_array(jsonb_build_object('seq', 4, 'preview', 'r6b-other-room'))),
         jsonb_build_object('room_id', g.id, 'first_unread', jsonb_build_array(
             jsonb_build_object('seq', 4, 'sender', 'r6b_alice', 'preview', 'r6b-secret-four'),
             jsonb_build_object('seq', 5, 'sender', 'r6b_alice', 'preview', 'r6b-visible-five')))))
  FROM ids g WHERE g.name = 'group';
-- the gateway's history: message 4 stored before the delete (simulated:
-- this transaction rolls back, the gateway never sees its messages)
INSERT INTO bv_realtime.messages (commit_lsn, seq, topic, event, payload, committed_at)
SELECT '0/10', 0, 'chat:room:' || g.id, 'message.created',
       jsonb_build_object('room_id', g.id, 'seq', 4, 'sender', 'r6b_alice', 'body', 'r6b-secret-four', 'deleted', false), now()
  FROM ids g WHERE g.name = 'group';
INSERT INTO bv_realtime.messages (commit_lsn, seq, topic, event, payload, committed_at)
SELECT '0/10', 1, 'chat:room:' || g.id, 'message.created',
       jsonb_build_object('room_id', g.id, 'seq', 5, 'sender', 'r6b_alice', 'body', 'r6b-visible-five', 'deleted', false), now()
  FROM ids g WHERE g.name = 'group';
SELECT pg_temp.act('r6b_alice');
SELECT lives_ok($$SELECT api.chat_delete((SELECT id FROM ids WHERE name = 'group'), 4)$$, 'alice deletes message 4');
RESET ROLE;
SELECT is((SELECT n.payload::text LIKE '%r6b-secret-four%' FROM chat.notifications n WHERE n.kind = 'digest' AND n.user_id = 'r6b_bob'), false,
          'the digest no longer holds the deleted text');
SELECT is((SELECT n.payload #>> '{rooms,1,first_unread,1,preview}' FROM chat.notifications n WHERE n.kind = 'digest' AND n.user_id = 'r6b_bob'),
          'r6b-visible-five', 'control: the digest keeps the other message''s preview');
SELECT is((SELECT n.payload #>> '{rooms,0,first_unread,0,preview}' FROM chat.notifications n WHERE n.kind = 'digest' AND n.user_id = 'r6b_bob'),
          'r6b-other-room', 'control: the digest keeps seq 4 of another room');
SELECT is((SELECT count(*) FROM chat.events e WHERE e.room_id = (SELECT id FROM ids WHERE name = 'group') AND e.payload::text LIKE '%r6b-secret-four%'),
          0::bigint, 'the MQTT events no longer hold the deleted text');
SELECT is((SELECT count(*) FROM chat.events e WHERE e.room_id = (SELECT id FROM ids WHERE name = 'group') AND e.payload::text LIKE '%r6b-visible-five%'),
          1::bigint, 'control: the MQTT event of the other message keeps its text');
SELECT is((SELECT m.payload ->> 'body' FROM bv_realtime.messages m WHERE m.commit_lsn = '0/10' AND m.seq = 0), '',
          'finding 9: the history copy stored before the delete is the tombstone');
SELECT is((SELECT m.payload ->> 'body' FROM bv_realtime.messages m WHERE m.commit_lsn = '0/10' AND m.seq = 1), 'r6b-visible-five',
          'control: the history copy of the other message keeps its text');
-- a copy that arrives after the delete (the gateway lagged): redacted when
-- a member joins, before the newcomer can resume the room
INSERT INTO bv_realtime.messages (commit_lsn, seq, topic, event, payload, committed_at)
SELECT '0/10', 2, 'chat:room:' || g.id, 'message.edited',
       jsonb_build_object('room_id', g.id, 'seq', 4, 'sender', 'r6b_alice', 'body', 'r6b-secret-four-late', 'deleted', false), now()
  FROM ids g WHERE g.name = 'group';
SELECT pg_temp.act('r6b_alice');
SELECT lives_ok($$SELECT api.chat_add_member((SELECT id FROM ids WHERE name = 'group'), 'r6b_carol')$$, 'alice adds carol');
RESET ROLE;
SELECT is((SELECT m.payload ->> 'body' FROM bv_realtime.messages m WHERE m.commit_lsn = '0/10' AND m.seq = 2), '',
          'finding 9: a history copy stored after the delete is redacted at the next join');
SELECT is((SELECT count(*) FROM chat.history_redactions h WHERE h.room_id = (SELECT id FROM ids WHERE name = 'group') AND h.seq = 4),
          1::bigint, 'the redaction stays pending while the delete''s own event is not in the history');
INSERT INTO bv_realtime.messages (commit_lsn, seq, topic, event, payload, committed_at)
SELECT '0/11', 0, 'chat:room:' || g.id, 'message.deleted', jsonb_build_object('room_id', g.id, 'seq', 4), now()
  FROM ids g WHERE g.name = 'group';
INSERT INTO bv_realtime.messages (commit_lsn, seq, topic, event, payload, committed_at)
SELECT '0/11', 1, 'chat:room:' || g.id, 'message.created',
       jsonb_build_object('room_id', g.id, 'seq', 5, 'sender', 'r6b_alice', 'body', 'r6b-visible-five', 'deleted', false), now()
  FROM ids g WHERE g.name = 'group';
SELECT is(chat.redact_history(), 0::bigint, 'the sweep (pg_cron job chat-redact) changes nothing more');
SELECT is((SELECT count(*) FROM chat.history_redactions h WHERE h.room_id = (SELECT id FROM ids WHERE name = 'group') AND h.seq = 4),
          0::bigint, 'once the delete''s event is in the history, the pending redaction is forgotten');
SELECT ok((SELECT count(*) FROM cron.job WHERE jobname = 'chat-redact') = 1, 'the sweep is scheduled with pg_cron');
SELECT pg_temp.act('r6b_bob');
SELECT throws_ok($$SELECT chat.redact_history()$$, '42501', NULL, 'a user cannot run the sweep');
SELECT throws_ok($$SELECT count(*) FROM chat.history_redactions$$, '42501', NULL, 'nor read the pending redactions');

SELECT * FROM finish();
ROLLBACK;
