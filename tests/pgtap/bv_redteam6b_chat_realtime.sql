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
SELECT plan(28);

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
SELECT pg_temp.act('org:alice');
SELECT ok(bv_realtime.authorize('r6b-inbox:org:alice', 'subscribe'), 'control: user "org:alice" may subscribe to her inbox r6b-inbox:org:alice');
SELECT ok(bv_realtime.authorize('r6b-user:org:alice:dm', 'subscribe'), 'control: ... and to r6b-user:org:alice:dm');
SELECT pg_temp.act('bob');
SELECT ok(NOT bv_realtime.authorize('r6b-inbox:org:alice', 'subscribe'), 'control: bob may not');
SELECT pg_temp.act('org');
SELECT todo('finding 3: a {sub} prefix grant gives user "org" the topics of user "org:alice"', 2);
SELECT ok(NOT bv_realtime.authorize('r6b-inbox:org:alice', 'subscribe'), 'user "org" is not authorized for the inbox of user "org:alice"');
SELECT ok(NOT bv_realtime.authorize('r6b-user:org:alice:dm', 'subscribe'), 'user "org" is not authorized for r6b-user:org:alice:dm');

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
SELECT todo('finding 4: a deleted message''s text stays in the recipients'' notifications', 1);
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

SELECT * FROM finish();
ROLLBACK;
