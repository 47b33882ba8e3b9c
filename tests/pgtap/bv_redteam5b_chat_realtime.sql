-- Red-team round 5b (bv_chat, bv_realtime): rate limits, topic grants, and
-- what a banned or non-member user reaches.
--
-- Finding 6 (bv_chat): joining and leaving a channel is not rate limited.
--   docs/bv_chat.md: edits, deletes, reactions and pins take from the send
--   bucket "(each publishes a live event ...)", so that "no write path
--   escapes it".  chat_join / chat_leave of a channel also publish a live
--   event to every subscriber of the room (member.joined, member.left; and
--   a chat.events row when MQTT is routed) and write two audited rows of
--   chat.members, but take from no bucket: a user alternates them as fast
--   as PostgREST answers (60 pairs below, 120 events, 120 audit records,
--   no PT429), where sends stop at the burst of 30.
-- Finding 7 (bv_realtime): `{sub}` in a prefix grant is not delimited.
--   docs/bv_realtime.md: "topic_pattern is a topic, or a prefix ending in
--   *; {sub} stands for the token's sub claim".  With a grant
--   'inbox:{sub}*' (each user's own topics), a token whose sub is "al" is
--   authorized for 'inbox:alice' and 'inbox:alice:dm', and a token whose sub
--   is the empty string (the gateway accepts any string sub, auth.c) for
--   every user's topics: topic_matches() substitutes the sub and compares
--   prefixes.  A sub must match as a whole (followed by the end of the topic
--   or a separator), and an empty sub must not match a {sub} pattern.
-- Finding 9 (bv_chat): message text accepts C1 control characters.  The
--   body check refuses C0 controls ("Remove control characters other than
--   tab and newline") with an explicit byte range that stops at U+007F, so
--   U+0080-U+009F pass, U+009B (CSI, the 8-bit terminal escape) and U+0085
--   (NEL, a line break to some clients) included, in sends and edits; room
--   names and user ids use [[:cntrl:]] and refuse them (in a UTF-8 locale),
--   as bv_core refuses C0 and C1 in actors.
BEGIN;
SELECT plan(28);

CREATE FUNCTION pg_temp.act(p_sub text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RESET ROLE;
    PERFORM set_config('request.jwt.claims', json_build_object('role', 'bv_user', 'sub', p_sub)::text, true);
    SET LOCAL ROLE bv_user;
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.act(text) TO PUBLIC;

-- n join/leave pairs on a channel: the SQLSTATE that stopped them, or 'none'.
CREATE FUNCTION pg_temp.join_leave(p_room bigint, n int) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    i int;
BEGIN
    FOR i IN 1 .. n LOOP
        PERFORM api.chat_join(p_room);
        PERFORM api.chat_leave(p_room);
    END LOOP;
    RETURN 'none';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.join_leave(bigint, int) TO PUBLIC;

-- n sends: the SQLSTATE that stopped them, or 'none'.
CREATE FUNCTION pg_temp.sends(p_room bigint, n int) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    i int;
BEGIN
    FOR i IN 1 .. n LOOP
        PERFORM api.chat_send(p_room, 'flood ' || i);
    END LOOP;
    RETURN 'none';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.sends(bigint, int) TO PUBLIC;

CREATE TEMP TABLE ids (name text PRIMARY KEY, id bigint);
GRANT ALL ON ids TO PUBLIC;

-- ---- finding 6: channel join/leave flood ----
SELECT pg_temp.act('r5b_owner');
INSERT INTO ids SELECT 'channel', ((api.chat_create_room('channel', 'r5b-flood', 'join/leave flood')) ->> 'id')::bigint;
INSERT INTO ids SELECT 'group', ((api.chat_create_room('group', 'r5b-group', 'members only', ARRAY['r5b_member', 'r5b_banned'])) ->> 'id')::bigint;
SELECT pg_temp.act('r5b_flooder');
SELECT is(pg_temp.join_leave((SELECT id FROM ids WHERE name = 'channel'), 60), 'PT429',
          '60 join/leave pairs (120 live events) are stopped by a rate limit');
RESET ROLE;
SELECT is((SELECT count(*) FROM bv_audit.chat__members a WHERE a.room_id = (SELECT id FROM ids WHERE name = 'channel')
                 AND a.user_id = 'r5b_flooder'), 0::bigint,
          'the refused flood published nothing (its joins and leaves rolled back with the PT429, in one subtransaction)');
-- control: the send bucket stops a send flood at its burst
SELECT pg_temp.act('r5b_sender');
SELECT api.chat_join((SELECT id FROM ids WHERE name = 'channel'));
SELECT is(pg_temp.sends((SELECT id FROM ids WHERE name = 'channel'), 60), 'PT429', 'control: 60 sends are stopped by the send rate limit');

-- ---- finding 7: {sub} in prefix grants ----
RESET ROLE;
INSERT INTO bv_realtime.topic_grants (topic_pattern, action, grantee, comment)
VALUES ('r5b-inbox:{sub}*', 'subscribe', 'bv_user', 'red-team 5b: each user''s own topics');
SELECT pg_temp.act('alice');
SELECT ok(bv_realtime.authorize('r5b-inbox:alice', 'subscribe'), 'control: alice may subscribe to r5b-inbox:alice');
SELECT ok(bv_realtime.authorize('r5b-inbox:alice:dm', 'subscribe'), 'control: ... and to r5b-inbox:alice:dm');
SELECT pg_temp.act('bob');
SELECT ok(NOT bv_realtime.authorize('r5b-inbox:alice', 'subscribe'), 'control: bob may not');
SELECT pg_temp.act('al');
SELECT ok(NOT bv_realtime.authorize('r5b-inbox:alice', 'subscribe'), 'sub "al" is not authorized for r5b-inbox:alice');
SELECT ok(NOT bv_realtime.authorize('r5b-inbox:alice:dm', 'subscribe'), 'sub "al" is not authorized for r5b-inbox:alice:dm');
SELECT pg_temp.act('');
SELECT ok(NOT bv_realtime.authorize('r5b-inbox:alice', 'subscribe'), 'an empty sub is not authorized for another user''s topic');

-- ---- promises that held: the shipped grants ----
-- chat:user:{sub} is an exact pattern: no other user, no wildcard.
SELECT pg_temp.act('alice');
SELECT ok(bv_realtime.authorize('chat:user:alice', 'subscribe'), 'alice may subscribe to chat:user:alice');
SELECT ok(NOT bv_realtime.authorize('chat:user:alice:x', 'subscribe'), '... not to chat:user:alice:x');
SELECT ok(NOT bv_realtime.authorize('chat:user:bob', 'subscribe'), '... not to chat:user:bob');
SELECT pg_temp.act('%');
SELECT ok(NOT bv_realtime.authorize('chat:user:alice', 'subscribe'), 'sub "%" is no wildcard');
SELECT pg_temp.act('*');
SELECT ok(NOT bv_realtime.authorize('chat:user:alice', 'subscribe'), 'sub "*" is no wildcard');
-- chat:room:<id>: joined members only, exact room numbers, typing only.
SELECT pg_temp.act('r5b_member');
SELECT ok(bv_realtime.authorize('chat:room:' || (SELECT id FROM ids WHERE name = 'group'), 'subscribe'), 'a member may subscribe to the room');
SELECT ok(NOT bv_realtime.authorize('chat:room:' || (SELECT id FROM ids WHERE name = 'group') || E'\n', 'subscribe'), '... not with a newline after the id');
SELECT ok(NOT bv_realtime.authorize('chat:room:' || (SELECT id FROM ids WHERE name = 'group') || ':x', 'subscribe'), '... not with a suffix');
SELECT ok(NOT bv_realtime.authorize('chat:room:' || (SELECT id FROM ids WHERE name = 'group'), 'publish'),
          '... and may not publish without an event name (only typing)');
SELECT set_config('request.realtime.event', 'message.created', true);
SELECT ok(NOT bv_realtime.authorize('chat:room:' || (SELECT id FROM ids WHERE name = 'group'), 'publish'), '... nor message.created');
SELECT pg_temp.act('r5b_flooder');
SELECT ok(NOT bv_realtime.authorize('chat:room:' || (SELECT id FROM ids WHERE name = 'group'), 'subscribe'), 'a non-member may not subscribe');
-- a ban takes the room away from every read path at once
SELECT pg_temp.act('r5b_owner');
SELECT api.chat_send((SELECT id FROM ids WHERE name = 'group'), 'r5bsecret before the ban @r5b_banned');
SELECT api.chat_ban((SELECT id FROM ids WHERE name = 'group'), 'r5b_banned');
SELECT api.chat_send((SELECT id FROM ids WHERE name = 'group'), 'r5bsecret after the ban');
SELECT pg_temp.act('r5b_banned');
SELECT ok(NOT bv_realtime.authorize('chat:room:' || (SELECT id FROM ids WHERE name = 'group'), 'subscribe'), 'banned: no subscription');
SELECT is((SELECT count(*) FROM api.chat_search('r5bsecret')), 0::bigint, 'banned: search finds nothing of the room');
SELECT is((SELECT count(*) FROM chat.messages) + (SELECT count(*) FROM chat.notifications) + (SELECT count(*) FROM chat.counters),
          0::bigint, 'banned: no message, notification or counter row is visible');
SELECT throws_ok($$SELECT * FROM api.chat_edits((SELECT id FROM ids WHERE name = 'group'), 1)$$, 'PT403', NULL,
                 'banned: the edit history of a message is refused');

-- ---- finding 9: C1 controls in message text ----
SELECT pg_temp.act('r5b_owner');
SELECT throws_ok($$SELECT api.chat_send((SELECT id FROM ids WHERE name = 'group'), E'hi \u009b2J there')$$, '22023', NULL,
                 'a send with U+009B (CSI) is refused');
SELECT throws_ok($$SELECT api.chat_edit((SELECT id FROM ids WHERE name = 'group'), 1, E'hi \u0085 there')$$, '22023', NULL,
                 'an edit with U+0085 (NEL) is refused');
SELECT throws_ok($$SELECT api.chat_send((SELECT id FROM ids WHERE name = 'group'), E'hi \u001b[2J there')$$, '22023', NULL,
                 'control: a send with ESC (C0) is refused');
SELECT throws_ok($$SELECT api.chat_create_room('group', E'room \u009b', 't', '{}')$$, '22023', NULL,
                 'control: a room name with U+009B is refused');

SELECT * FROM finish();
ROLLBACK;
