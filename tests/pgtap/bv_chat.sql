-- bv_chat: the model (rooms, members, messages, threads, edits, tombstones,
-- reactions, pins, receipts, counters, notifications, search), every
-- refusal (SQLSTATE and hint, never a raw 23xxx) with hostile inputs, and
-- row-level security (members only; banned users see nothing at once).
BEGIN;
SELECT plan(181);

CREATE FUNCTION pg_temp.act(p_sub text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RESET ROLE;
    PERFORM set_config('request.jwt.claims', CASE WHEN p_sub IS NULL THEN '{"role": "bv_anon"}'
                       ELSE json_build_object('role', 'bv_user', 'sub', p_sub)::text END, true);
    IF p_sub IS NULL THEN SET LOCAL ROLE bv_anon; ELSE SET LOCAL ROLE bv_user; END IF;
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.act(text) TO PUBLIC;
-- The invariant of the counters, recomputed from messages and receipts:
-- the rows whose stored counts differ from the recount (none expected).
CREATE FUNCTION pg_temp.counter_errors() RETURNS bigint LANGUAGE sql SECURITY DEFINER AS $$
    SELECT count(*) FROM chat.counters rs
     WHERE (rs.unread, rs.mentions) IS DISTINCT FROM
           (SELECT (x.u, x.n) FROM (SELECT count(*)::int AS u, (count(*) FILTER (WHERE rs.user_id = ANY (m.mentions)))::int AS n
              FROM chat.messages m
             WHERE m.room_id = rs.room_id AND coalesce(m.thread_root, 0) = rs.thread
               AND m.seq > rs.read_seq AND m.deleted_at IS NULL AND m.sender <> rs.user_id) x)
$$;
GRANT EXECUTE ON FUNCTION pg_temp.counter_errors() TO PUBLIC;
CREATE FUNCTION pg_temp.rs(p_user text, p_room bigint, p_thread bigint DEFAULT 0) RETURNS text LANGUAGE sql SECURITY DEFINER AS $$
    SELECT format('%s/%s/%s', read_seq, unread, mentions) FROM chat.counters
     WHERE user_id = p_user AND room_id = p_room AND thread = p_thread $$;
GRANT EXECUTE ON FUNCTION pg_temp.rs(text, bigint, bigint) TO PUBLIC;
-- fast sends for the model part; the limiter is tested at the end
UPDATE chat.settings SET value = 0 WHERE name = 'send_rate';

-- ---- schema, privileges ----
SELECT has_schema('chat');
SELECT ok(NOT has_table_privilege('bv_user', 'chat.messages', 'INSERT'), 'users write through functions only');
SELECT ok(NOT has_table_privilege('bv_user', 'chat.read_state', 'UPDATE'), 'users cannot write their counters');
SELECT ok(NOT has_table_privilege('bv_anon', 'chat.messages', 'SELECT'), 'anonymous cannot read messages');
SELECT ok(NOT has_table_privilege('bv_user', 'chat.events', 'SELECT'), 'the MQTT outbox is not readable by users');
SELECT ok(NOT has_function_privilege('bv_anon', 'api.chat_send(bigint,text,bigint,jsonb)', 'EXECUTE'), 'anonymous cannot send');
SELECT ok(NOT has_function_privilege('bv_user', 'chat.send_digests()', 'EXECUTE'), 'users cannot run the digests');
SELECT ok(NOT has_function_privilege('bv_user', 'chat.add_member_row(bigint,text,text,text)', 'EXECUTE'), 'internal functions are not granted');
SELECT ok(EXISTS (SELECT 1 FROM bv_audit.tracked WHERE relid = 'chat.messages'::regclass), 'messages are audited');
SELECT ok((SELECT count(*) FROM cron.job WHERE jobname IN ('chat-digests', 'chat-purge')) = 2, 'pg_cron jobs scheduled');
SELECT ok(EXISTS (SELECT 1 FROM bv_realtime.topic_grants WHERE topic_pattern = 'chat:room:*'), 'room topics granted with a membership check');
SELECT is(ARRAY(SELECT p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.pronamespace IN ('chat'::regnamespace) AND p.prosecdef
                   AND NOT ('search_path=pg_catalog, pg_temp' = ANY (coalesce(p.proconfig, '{}'))) ORDER BY 1),
          '{}'::text[], 'every SECURITY DEFINER function pins its search_path');

-- ---- anonymous ----
SELECT pg_temp.act(NULL);
SELECT throws_ok($$SELECT chat.send(1, 'x')$$, '42501', NULL, 'anonymous cannot call chat.send');
RESET ROLE;
SELECT set_config('request.jwt.claims', '{"role": "bv_user"}', true);
SET LOCAL ROLE bv_user;
SELECT throws_ok($$SELECT api.chat_rooms()$$, 'PT401', 'authentication required', 'a token without sub is refused (PT401)');

-- ---- rooms ----
SELECT pg_temp.act('alice');
SELECT is((api.chat_create_room('group', 'Team', 'planning', ARRAY['bob', 'carol'])) ->> 'kind', 'group', 'alice creates a group with bob and carol');
CREATE TEMP TABLE ids (name text PRIMARY KEY, id bigint);
GRANT ALL ON ids TO PUBLIC;
INSERT INTO ids SELECT 'team', room_id FROM api.chat_rooms() WHERE name = 'Team';
SELECT is((SELECT role FROM api.chat_rooms() WHERE name = 'Team'), 'owner', 'the creator is the owner');
SELECT is((SELECT count(*)::int FROM api.chat_members((SELECT id FROM ids WHERE name = 'team'))), 3, 'three members');
SELECT throws_ok($$SELECT api.chat_create_room('direct', 'x')$$, '22023', NULL, 'direct rooms are opened with chat_direct');
SELECT throws_ok($$SELECT api.chat_create_room('bogus', 'x')$$, '22023', NULL, 'unknown room kind');
SELECT throws_ok($$SELECT api.chat_create_room('group', '')$$, '22023', NULL, 'empty room name');
SELECT throws_ok($$SELECT api.chat_create_room('group', repeat('n', 101))$$, '22023', NULL, 'room name over 100 characters');
SELECT throws_ok($$SELECT api.chat_create_room('group', E'a\x01b')$$, '22023', NULL, 'control characters in a room name');
SELECT throws_ok($$SELECT api.chat_create_room('group', 'x', repeat('t', 501))$$, 'PT413', NULL, 'topic over 500 characters');
SELECT throws_ok($$SELECT api.chat_create_room('group', 'x', '', ARRAY[NULL::text])$$, '22023', NULL, 'a NULL member id');
SELECT throws_ok($$SELECT api.chat_create_room('group', 'x', '', ARRAY[repeat('u', 201)])$$, '22023', NULL, 'a member id over 200 characters');
SELECT lives_ok($$SELECT api.chat_create_room('channel', 'general', 'everyone')$$, 'alice creates a channel');
INSERT INTO ids SELECT 'general', room_id FROM api.chat_rooms() WHERE name = 'general';
SELECT is((api.chat_direct('bob')) ->> 'kind', 'direct', 'alice opens a direct room with bob');
INSERT INTO ids SELECT 'dm', room_id FROM api.chat_rooms() WHERE kind = 'direct';
SELECT pg_temp.act('bob');
SELECT is((api.chat_direct('alice')) ->> 'id', (SELECT id FROM ids WHERE name = 'dm')::text, 'one direct room per pair, from either side');
SELECT throws_ok($$SELECT api.chat_direct('bob')$$, '22023', NULL, 'no direct room with oneself');
SELECT is((SELECT name FROM api.chat_rooms() WHERE kind = 'direct'), 'alice', 'a direct room is named after the other member');

-- ---- channels: join, discover ----
SELECT pg_temp.act('dave');
SELECT ok(EXISTS (SELECT 1 FROM api.chat_channels() WHERE name = 'general'), 'dave discovers the channel');
SELECT is((SELECT count(*)::int FROM chat.rooms), 1, 'RLS: dave sees the channel row only');
SELECT lives_ok(format('SELECT api.chat_join(%s)', (SELECT id FROM ids WHERE name = 'general')), 'dave joins the channel');
SELECT is((SELECT notify FROM api.chat_rooms() WHERE name = 'general'), 'mentions', 'channels notify mentions only by default');
SELECT throws_ok(format('SELECT api.chat_join(%s)', (SELECT id FROM ids WHERE name = 'team')), 'PT404', NULL, 'a group cannot be joined (and its existence is not told)');
SELECT throws_ok('SELECT api.chat_join(987654321)', 'PT404', NULL, 'unknown room');
SELECT throws_ok('SELECT api.chat_join(NULL)', 'PT404', NULL, 'NULL room id');

-- ---- messages ----
SELECT pg_temp.act('alice');
SELECT is((api.chat_send((SELECT id FROM ids WHERE name = 'team'), 'hello @bob and @carol')) -> 'mentions', '["bob", "carol"]'::jsonb, 'mentions are parsed from the text');
SELECT is((api.chat_send((SELECT id FROM ids WHERE name = 'team'), 'second, @nobody @alice')) -> 'mentions', '[]'::jsonb, 'non-members and oneself are not mentions');
SELECT is((api.chat_send((SELECT id FROM ids WHERE name = 'team'), 'file', attachments => '[{"name": "a.png", "mime": "image/png", "size": 1234, "url": "https://files.example/a.png"}]')) ->> 'seq', '3', 'messages are numbered per room');
SELECT is((api.chat_send((SELECT id FROM ids WHERE name = 'general'), 'welcome')) ->> 'seq', '1', 'each room numbers its own messages');
SELECT is(pg_temp.rs('bob', (SELECT id FROM ids WHERE name = 'team')), '0/3/1', 'bob: 3 unread, 1 mention');
SELECT is(pg_temp.rs('alice', (SELECT id FROM ids WHERE name = 'team')), '3/0/0', 'sending reads the room');
-- refusals of send
SELECT throws_ok(format('SELECT api.chat_send(%s, %L)', (SELECT id FROM ids WHERE name = 'team'), repeat('x', 4001)), 'PT413', NULL, 'message over 4000 characters');
SELECT lives_ok(format('SELECT api.chat_send(%s, %L)', (SELECT id FROM ids WHERE name = 'team'), repeat('é', 4000)), 'exactly 4000 multibyte characters are accepted');
SELECT throws_ok(format('SELECT api.chat_send(%s, %L)', (SELECT id FROM ids WHERE name = 'team'), ''), '22023', NULL, 'empty message');
SELECT throws_ok(format('SELECT api.chat_send(%s, NULL)', (SELECT id FROM ids WHERE name = 'team')), '22023', NULL, 'NULL text');
SELECT throws_ok(format('SELECT api.chat_send(%s, %L)', (SELECT id FROM ids WHERE name = 'team'), E'bell\x07'), '22023', NULL, 'control characters');
SELECT throws_ok(format('SELECT api.chat_send(%s, %L, attachments => %L)', (SELECT id FROM ids WHERE name = 'team'), 'x', '{"name": "a"}'), '22023', NULL, 'attachments not an array');
SELECT throws_ok(format('SELECT api.chat_send(%s, %L, attachments => %L)', (SELECT id FROM ids WHERE name = 'team'), 'x', '[{"name": "a", "url": "javascript:alert(1)"}]'), '22023', NULL, 'attachment URL not http(s)');
SELECT throws_ok(format('SELECT api.chat_send(%s, %L, attachments => %L)', (SELECT id FROM ids WHERE name = 'team'), 'x', '[{"name": "a", "url": "https://x", "owner": "me"}]'), '22023', NULL, 'unknown attachment key');
SELECT throws_ok(format('SELECT api.chat_send(%s, %L, attachments => %L)', (SELECT id FROM ids WHERE name = 'team'), 'x', '[{"name": "a", "url": "https://x", "size": -1}]'), '22023', NULL, 'negative attachment size');
SELECT throws_ok(format('SELECT api.chat_send(%s, %L, attachments => %L)', (SELECT id FROM ids WHERE name = 'team'), 'x',
                        (SELECT jsonb_agg(jsonb_build_object('name', 'f' || i, 'url', 'https://x/' || i)) FROM generate_series(1, 11) i)),
                 'PT413', NULL, 'more than 10 attachments');
SELECT throws_ok(format('SELECT api.chat_send(%s, %L, 999)', (SELECT id FROM ids WHERE name = 'team'), 'x'), 'PT404', NULL, 'reply to an unknown message');
SELECT throws_ok(format('SELECT api.chat_send(%s, %L)', (SELECT id FROM ids WHERE name = 'dm') + 1000, 'x'), 'PT404', NULL, 'send to an unknown room');
SELECT pg_temp.act('eve');
SELECT throws_ok(format('SELECT api.chat_send(%s, %L)', (SELECT id FROM ids WHERE name = 'team'), 'x'), 'PT404', NULL, 'a non-member cannot send (PT404: the room is not revealed)');
SELECT throws_ok(format('SELECT api.chat_history(%s)', (SELECT id FROM ids WHERE name = 'team')), 'PT404', NULL, 'a non-member cannot read the history');
SELECT is((SELECT count(*)::int FROM chat.messages), 0, 'RLS: a non-member sees no message');

-- ---- threads ----
SELECT pg_temp.act('bob');
SELECT is((api.chat_send((SELECT id FROM ids WHERE name = 'team'), 'a reply', 1)) ->> 'thread_root', '1', 'a reply starts a thread on its root');
SELECT is((api.chat_send((SELECT id FROM ids WHERE name = 'team'), 'reply to the reply @carol', 5)) ->> 'thread_root', '1', 'threads are flat: a reply to a reply stays in the root''s thread');
SELECT is(pg_temp.rs('alice', (SELECT id FROM ids WHERE name = 'team'), 1), '1/2/0', 'the root''s author follows the thread: 2 unread');
SELECT is(pg_temp.rs('carol', (SELECT id FROM ids WHERE name = 'team'), 1), '5/1/1', 'carol, mentioned in the thread, follows it from the mention');
SELECT is(pg_temp.rs('bob', (SELECT id FROM ids WHERE name = 'team'), 1), '6/0/0', 'the replier has read the thread');
SELECT is(pg_temp.rs('alice', (SELECT id FROM ids WHERE name = 'team')), '4/0/0', 'thread replies do not count on the main timeline');
SELECT is((SELECT (j ->> 'reply_count')::int FROM api.chat_history((SELECT id FROM ids WHERE name = 'team'), around => 1, page_size => 1) j), 2, 'the root counts its replies');
SELECT is((SELECT count(*)::int FROM api.chat_history((SELECT id FROM ids WHERE name = 'team'), thread => 1)), 3, 'a thread page: the root and its replies');
SELECT pg_temp.act('alice');
SELECT is((SELECT thread_unread::int FROM api.chat_rooms() WHERE name = 'Team'), 2, 'the room list adds thread unread counts');

-- ---- receipts ----
SELECT pg_temp.act('bob');
SELECT is((api.chat_read((SELECT id FROM ids WHERE name = 'team'), 1)) ->> 'unread', '3', 'read up to 1: 3 unread left (2, 3, the long one)');
SELECT is(pg_temp.rs('bob', (SELECT id FROM ids WHERE name = 'team')), '1/3/0', 'the receipt and the counters moved together');
SELECT is((api.chat_read((SELECT id FROM ids WHERE name = 'team'), 0)) ->> 'read_seq', '1', 'receipts never go backwards');
SELECT is((api.chat_read((SELECT id FROM ids WHERE name = 'team'), 999999)) ->> 'read_seq', '6', 'a receipt beyond the last message stops at it');
SELECT throws_ok(format('SELECT api.chat_read(%s, -5)', (SELECT id FROM ids WHERE name = 'team')), '22023', NULL, 'negative receipt');
SELECT throws_ok(format('SELECT api.chat_read(%s, NULL, 5)', (SELECT id FROM ids WHERE name = 'team')), 'PT404', NULL, 'a thread must be a root');
SELECT is((SELECT read_seq::int FROM api.chat_members((SELECT id FROM ids WHERE name = 'team')) WHERE user_id = 'bob'), 6, 'members see each other''s read receipts');

-- ---- edits (history in bv_audit) ----
SELECT pg_temp.act('alice');
SELECT lives_ok(format('SELECT api.chat_edit(%s, 2, %L)', (SELECT id FROM ids WHERE name = 'team'), 'second, now for @carol'), 'alice edits her message');
SELECT is(pg_temp.rs('carol', (SELECT id FROM ids WHERE name = 'team')), '0/4/2', 'an edit that adds a mention adds it to the counter');
RESET ROLE;
SELECT is((SELECT count(*)::int FROM chat.notifications WHERE user_id = 'carol' AND seq = 2 AND kind = 'mention' AND (payload ->> 'edited')::boolean),
          1, 'and notifies the newly mentioned member');
SELECT pg_temp.act('alice');
SELECT is((SELECT array_agg(body ORDER BY version) FROM api.chat_edits((SELECT id FROM ids WHERE name = 'team'), 2)),
          ARRAY['second, @nobody @alice', 'second, now for @carol'], 'the edit history has every version');
SELECT lives_ok(format('SELECT api.chat_edit(%s, 2, %L)', (SELECT id FROM ids WHERE name = 'team'), 'second'), 'and edits it back');
SELECT is(pg_temp.rs('carol', (SELECT id FROM ids WHERE name = 'team')), '0/4/1', 'removing the mention removes it from the counter');
SELECT pg_temp.act('bob');
SELECT throws_ok(format('SELECT api.chat_edit(%s, 2, %L)', (SELECT id FROM ids WHERE name = 'team'), 'hijack'), 'PT403', NULL, 'only the sender edits');
SELECT throws_ok(format('SELECT api.chat_edit(%s, 5, %L)', (SELECT id FROM ids WHERE name = 'team'), repeat('x', 4001)), 'PT413', NULL, 'an edit obeys the size limit');

-- ---- reactions and pins ----
SELECT lives_ok(format('SELECT api.chat_react(%s, 1, %L)', (SELECT id FROM ids WHERE name = 'team'), '👍'), 'bob reacts');
SELECT lives_ok(format('SELECT api.chat_react(%s, 1, %L)', (SELECT id FROM ids WHERE name = 'team'), '👍'), 'reacting twice is idempotent');
SELECT throws_ok(format('SELECT api.chat_react(%s, 1, %L)', (SELECT id FROM ids WHERE name = 'team'), 'a b'), '22023', NULL, 'a reaction has no spaces');
SELECT throws_ok(format('SELECT api.chat_react(%s, 1, %L)', (SELECT id FROM ids WHERE name = 'team'), repeat('x', 33)), '22023', NULL, 'a reaction has at most 32 characters');
SELECT throws_ok(format('SELECT api.chat_pin(%s, 1)', (SELECT id FROM ids WHERE name = 'team')), 'PT403', NULL, 'members cannot pin in a group');
SELECT pg_temp.act('alice');
SELECT lives_ok(format('SELECT api.chat_pin(%s, 1)', (SELECT id FROM ids WHERE name = 'team')), 'the owner pins');
SELECT is((SELECT j -> 'reactions' FROM api.chat_pinned((SELECT id FROM ids WHERE name = 'team')) j), '{"👍": ["bob"]}'::jsonb, 'the pinned message with its reactions');

-- ---- deletes (tombstones) ----
SELECT pg_temp.act('bob');
SELECT throws_ok(format('SELECT api.chat_delete(%s, 1)', (SELECT id FROM ids WHERE name = 'team')), 'PT403', NULL, 'members delete their own messages only');
SELECT lives_ok(format('SELECT api.chat_delete(%s, 5)', (SELECT id FROM ids WHERE name = 'team')), 'bob deletes his reply');
SELECT is(pg_temp.rs('alice', (SELECT id FROM ids WHERE name = 'team'), 1), '1/1/0', 'the deleted reply leaves the thread counter');
SELECT is((SELECT j ->> 'body' FROM api.chat_history((SELECT id FROM ids WHERE name = 'team'), around => 5, page_size => 1) j), '', 'a tombstone stays in the history without its text');
SELECT throws_ok(format('SELECT api.chat_delete(%s, 5)', (SELECT id FROM ids WHERE name = 'team')), 'PT404', NULL, 'deleting twice');
SELECT throws_ok(format('SELECT api.chat_edit(%s, 5, %L)', (SELECT id FROM ids WHERE name = 'team'), 'back'), 'PT404', NULL, 'a tombstone cannot be edited');
SELECT pg_temp.act('alice');
SELECT lives_ok(format('SELECT api.chat_delete(%s, 3)', (SELECT id FROM ids WHERE name = 'team')), 'the owner deletes a message with attachments');
SELECT is(pg_temp.rs('carol', (SELECT id FROM ids WHERE name = 'team')), '0/3/1', 'carol''s counter drops the deleted message');

-- ---- keyset pagination ----
SELECT is(ARRAY(SELECT (j ->> 'seq')::int FROM api.chat_history((SELECT id FROM ids WHERE name = 'team'), page_size => 3) j), ARRAY[6, 5, 4], 'newest page, newest first');
SELECT is(ARRAY(SELECT (j ->> 'seq')::int FROM api.chat_history((SELECT id FROM ids WHERE name = 'team'), before => 4, page_size => 2) j), ARRAY[3, 2], 'before: older, newest first');
SELECT is(ARRAY(SELECT (j ->> 'seq')::int FROM api.chat_history((SELECT id FROM ids WHERE name = 'team'), after => 2, page_size => 2) j), ARRAY[3, 4], 'after: newer, oldest first');
SELECT is(ARRAY(SELECT (j ->> 'seq')::int FROM api.chat_history((SELECT id FROM ids WHERE name = 'team'), around => 3, page_size => 4) j), ARRAY[1, 2, 3, 4], 'around: both sides, oldest first');
SELECT throws_ok(format('SELECT * FROM api.chat_history(%s, page_size => 0)', (SELECT id FROM ids WHERE name = 'team')), '22023', NULL, 'page size 0');
SELECT throws_ok(format('SELECT * FROM api.chat_history(%s, page_size => 201)', (SELECT id FROM ids WHERE name = 'team')), '22023', NULL, 'page size over the maximum');
SELECT throws_ok(format('SELECT * FROM api.chat_history(%s, before => 3, after => 1)', (SELECT id FROM ids WHERE name = 'team')), '22023', NULL, 'before and after together');

-- ---- search ----
SELECT lives_ok(format('SELECT api.chat_send(%s, %L)', (SELECT id FROM ids WHERE name = 'team'), '東京で会いましょう。明日の会議は <b>10時</b>'), 'a Japanese message');
SELECT lives_ok(format('SELECT api.chat_send(%s, %L)', (SELECT id FROM ids WHERE name = 'team'), '我们明天在北京开会 deployment pipeline'), 'a Chinese message');
SELECT is((SELECT count(*)::int FROM api.chat_search('会議')), 1, 'search finds Japanese text inside a sentence');
SELECT is((SELECT count(*)::int FROM api.chat_search('北京')), 1, 'search finds Chinese text inside a sentence');
SELECT is((SELECT count(*)::int FROM api.chat_search('ploym')), 1, 'search finds a word fragment');
SELECT is((SELECT count(*)::int FROM api.chat_search('PIPELINE deploy')), 1, 'every term, any case');
SELECT is((SELECT highlight FROM api.chat_search('会議')), '東京で会いましょう。明日の<mark>会議</mark>は &lt;b&gt;10時&lt;/b&gt;', 'the highlight marks the match and escapes the text');
SELECT is((SELECT count(*)::int FROM api.chat_search('%')), 0, 'LIKE wildcards are literal');
SELECT is((SELECT count(*)::int FROM api.chat_search('(.*')), 0, 'regular expression characters are literal');
SELECT throws_ok($$SELECT * FROM api.chat_search('')$$, '22023', NULL, 'empty query');
SELECT throws_ok($$SELECT * FROM api.chat_search(repeat('q', 201))$$, '22023', NULL, 'query over 200 characters');
SELECT is((SELECT count(*)::int FROM api.chat_search('attach')), 0, 'deleted messages are not found');
SELECT pg_temp.act('dave');
SELECT is((SELECT count(*)::int FROM api.chat_search('北京')), 0, 'search never finds messages of rooms one is not in');

-- ---- moderation: roles, kick, ban ----
SELECT pg_temp.act('bob');
SELECT throws_ok(format('SELECT api.chat_add_member(%s, %L)', (SELECT id FROM ids WHERE name = 'team'), 'frank'), 'PT403', NULL, 'members cannot add members');
SELECT throws_ok(format('SELECT api.chat_kick(%s, %L)', (SELECT id FROM ids WHERE name = 'team'), 'carol'), 'PT403', NULL, 'members cannot kick');
SELECT pg_temp.act('alice');
SELECT lives_ok(format('SELECT api.chat_set_role(%s, %L, %L)', (SELECT id FROM ids WHERE name = 'team'), 'bob', 'admin'), 'the owner makes bob an admin');
SELECT throws_ok(format('SELECT api.chat_set_role(%s, %L, %L)', (SELECT id FROM ids WHERE name = 'team'), 'bob', 'king'), '22023', NULL, 'unknown role');
SELECT pg_temp.act('bob');
SELECT throws_ok(format('SELECT api.chat_kick(%s, %L)', (SELECT id FROM ids WHERE name = 'team'), 'alice'), 'PT403', NULL, 'an admin cannot kick the owner');
SELECT lives_ok(format('SELECT api.chat_kick(%s, %L)', (SELECT id FROM ids WHERE name = 'team'), 'carol'), 'an admin kicks carol');
SELECT is((SELECT count(*)::int FROM chat.read_state WHERE user_id = 'carol'), 0, 'a kicked member''s counters are gone');
SELECT lives_ok(format('SELECT api.chat_add_member(%s, %L)', (SELECT id FROM ids WHERE name = 'team'), 'carol'), 'and adds her back');
SELECT is(pg_temp.rs('carol', (SELECT id FROM ids WHERE name = 'team')), '8/0/0', 'nothing before a (re)join is unread');
SELECT lives_ok(format('SELECT api.chat_ban(%s, %L)', (SELECT id FROM ids WHERE name = 'team'), 'carol'), 'bob bans carol');
SELECT pg_temp.act('carol');
SELECT is((SELECT count(*)::int FROM chat.messages WHERE room_id = (SELECT id FROM ids WHERE name = 'team')), 0, 'RLS: a banned user sees no message, at once');
SELECT is((SELECT count(*)::int FROM chat.rooms WHERE id = (SELECT id FROM ids WHERE name = 'team')), 0, 'RLS: nor the room');
SELECT throws_ok(format('SELECT * FROM api.chat_history(%s)', (SELECT id FROM ids WHERE name = 'team')), 'PT403', NULL, 'the history is refused (PT403, banned)');
SELECT throws_ok(format('SELECT api.chat_send(%s, %L)', (SELECT id FROM ids WHERE name = 'team'), 'let me in'), 'PT403', NULL, 'sending is refused');
SELECT ok(NOT chat.can_subscribe('chat:room:' || (SELECT id FROM ids WHERE name = 'team'), 'subscribe'), 'live subscription refused');
SELECT pg_temp.act('alice');
SELECT throws_ok(format('SELECT api.chat_add_member(%s, %L)', (SELECT id FROM ids WHERE name = 'team'), 'carol'), 'PT403', NULL, 'a banned user cannot be added back before the ban is lifted');
SELECT ok(chat.can_subscribe('chat:room:' || (SELECT id FROM ids WHERE name = 'team'), 'subscribe'), 'members may subscribe to the room topic');
SELECT ok(NOT chat.can_subscribe('chat:room:1;drop', 'subscribe'), 'malformed topics are refused');

-- ---- leave, notifications, mute, digest ----
SELECT lives_ok(format('SELECT api.chat_notify(%s, %L)', (SELECT id FROM ids WHERE name = 'dm'), 'none'), 'alice mutes the direct room');
SELECT throws_ok(format('SELECT api.chat_notify(%s, %L)', (SELECT id FROM ids WHERE name = 'dm'), 'loud'), '22023', NULL, 'unknown notification level');
SELECT pg_temp.act('bob');
SELECT lives_ok(format('SELECT api.chat_send(%s, %L)', (SELECT id FROM ids WHERE name = 'dm'), 'psst @alice'), 'bob writes to alice');
RESET ROLE;
SELECT is((SELECT count(*)::int FROM chat.notifications WHERE user_id = 'alice' AND room_id = (SELECT id FROM ids WHERE name = 'dm')), 0, 'a muted room notifies nothing, mentions included');
UPDATE chat.users SET last_active_at = now() - interval '1 hour' WHERE user_id = 'dave';
SELECT pg_temp.act('alice');
SELECT lives_ok(format('SELECT api.chat_send(%s, %L)', (SELECT id FROM ids WHERE name = 'general'), 'hey @dave'), 'alice mentions dave in the channel');
SELECT pg_temp.act('dave');
SELECT is((SELECT kind FROM api.chat_notifications() LIMIT 1), 'mention', 'dave has a mention notification');
SELECT is((SELECT (d -> 0 ->> 'mentions')::int FROM (SELECT api.chat_digest() d) x), 1, 'the digest lists the room with its mention');
SELECT lives_ok(format('SELECT api.chat_leave(%s)', (SELECT id FROM ids WHERE name = 'general')), 'dave leaves the channel');
SELECT is((SELECT count(*)::int FROM api.chat_notifications()), 0, 'notifications of rooms left are hidden');
SELECT pg_temp.act('alice');
SELECT lives_ok(format('SELECT api.chat_leave(%s)', (SELECT id FROM ids WHERE name = 'team')), 'the owner leaves the group');
RESET ROLE;
SELECT is((SELECT role FROM chat.members WHERE room_id = (SELECT id FROM ids WHERE name = 'team') AND user_id = 'bob'), 'owner', 'the admin inherits the room');

-- ---- more refusals: other users' rows, roles, hostile ids ----
SELECT pg_temp.act('eve');
SELECT throws_ok(format('SELECT api.chat_read(%s)', (SELECT id FROM ids WHERE name = 'team')), 'PT404', NULL, 'a non-member cannot post receipts');
SELECT throws_ok(format('SELECT api.chat_typing(%s)', (SELECT id FROM ids WHERE name = 'team')), 'PT404', NULL, 'a non-member cannot type');
SELECT throws_ok(format('SELECT * FROM api.chat_edits(%s, 1)', (SELECT id FROM ids WHERE name = 'team')), 'PT404', NULL, 'a non-member cannot read the edit history');
SELECT throws_ok(format('SELECT * FROM api.chat_members(%s)', (SELECT id FROM ids WHERE name = 'team')), 'PT404', NULL, 'a non-member cannot list the members');
SELECT throws_ok(format('SELECT * FROM api.chat_search(%L, %s)', 'x', (SELECT id FROM ids WHERE name = 'team')), 'PT404', NULL, 'a non-member cannot search a room');
SELECT is((SELECT count(*)::int FROM chat.notifications), 0, 'RLS: nobody else''s notifications');
SELECT is((SELECT count(*)::int FROM chat.read_state), 0, 'RLS: nobody else''s receipts');
SELECT is((SELECT count(*)::int FROM chat.counters), 0, 'RLS: nobody else''s counters (the view runs as its reader)');
SELECT pg_temp.act('bob');
SELECT ok((SELECT count(*) FROM chat.counters) > 0 AND NOT EXISTS (SELECT 1 FROM chat.counters WHERE user_id <> 'bob'),
          'bob reads his own counters through chat.counters, nobody else''s');
SELECT is((SELECT count(*)::int FROM chat.notifications WHERE user_id <> 'bob'), 0, 'RLS: bob sees his own notifications only');
SELECT throws_ok(format('SELECT api.chat_set_role(%s, %L, %L)', (SELECT id FROM ids WHERE name = 'dm'), 'alice', 'member'), 'PT403', NULL, 'no roles to change in a direct room');
SELECT throws_ok(format('SELECT api.chat_ban(%s, %L, NULL)', (SELECT id FROM ids WHERE name = 'team'), 'carol'), '22023', NULL, 'ban flag NULL');
SELECT throws_ok(format('SELECT api.chat_react(%s, 5, %L)', (SELECT id FROM ids WHERE name = 'team'), 'x'), 'PT404', NULL, 'no reaction on a deleted message');
SELECT throws_ok(format('SELECT api.chat_kick(%s, %L)', (SELECT id FROM ids WHERE name = 'dm'), 'alice'), 'PT403', NULL, 'no moderation in a direct room');
SELECT throws_ok(format('SELECT api.chat_add_member(%s, %L, %L)', (SELECT id FROM ids WHERE name = 'team'), E'x\ny', 'member'), '22023', NULL, 'a user id with a newline');
SELECT lives_ok($$SELECT api.chat_settings(push => NULL, muted_until => 'infinity')$$, 'do not disturb forever is allowed');

-- ---- offline members: one notification per room until they read ----
SELECT pg_temp.act('alice');
INSERT INTO ids SELECT 'quiet', ((api.chat_create_room('group', 'quiet', '', ARRAY['frank'])) ->> 'id')::bigint;
SELECT lives_ok(format('SELECT api.chat_send(%s, %L), api.chat_send(%s, %L)', (SELECT id FROM ids WHERE name = 'quiet'), 'one',
                       (SELECT id FROM ids WHERE name = 'quiet'), 'two'), 'alice writes twice to frank, who is offline');
SELECT pg_temp.act('frank');
SELECT is((SELECT count(*)::int FROM api.chat_notifications()), 1, 'frank is notified once, for the first unread message');
SELECT lives_ok(format('SELECT api.chat_read(%s)', (SELECT id FROM ids WHERE name = 'quiet')), 'frank reads the room');
RESET ROLE;
UPDATE chat.users SET last_active_at = now() - interval '1 hour' WHERE user_id = 'frank';
SELECT pg_temp.act('alice');
SELECT lives_ok(format('SELECT api.chat_send(%s, %L)', (SELECT id FROM ids WHERE name = 'quiet'), 'three'), 'alice writes again after frank left');
SELECT pg_temp.act('frank');
SELECT is((SELECT count(*)::int FROM api.chat_notifications()), 2, 'after reading, the next unread message notifies again');

RESET ROLE;
-- ---- a send records the sender's activity at most every 10 s (0.3.0: the
-- UPDATE runs only when due, decided from the row read with the membership)
UPDATE chat.users SET last_active_at = now() - interval '1 hour' WHERE user_id = 'alice';
SELECT pg_temp.act('alice');
SELECT lives_ok(format('SELECT api.chat_send(%s, %L)', (SELECT id FROM ids WHERE name = 'quiet'), 'activity'), 'alice sends after an hour away');
RESET ROLE;
SELECT is((SELECT last_active_at FROM chat.users WHERE user_id = 'alice'), now(), 'the send marks the sender active');
UPDATE chat.users SET last_active_at = now() - interval '5 seconds' WHERE user_id = 'alice';
SELECT pg_temp.act('alice');
SELECT lives_ok(format('SELECT api.chat_send(%s, %L)', (SELECT id FROM ids WHERE name = 'quiet'), 'activity 2'), 'alice sends 5 s later');
RESET ROLE;
SELECT is((SELECT last_active_at FROM chat.users WHERE user_id = 'alice'), now() - interval '5 seconds', 'a mark younger than 10 s is not rewritten');
-- the search indexes keep short pending lists (a bounded merge pause in a send)
SELECT is((SELECT count(*)::int FROM pg_class c WHERE c.oid IN ('chat.messages_fts'::regclass, 'chat.messages_trgm'::regclass)
            AND 'gin_pending_list_limit=256' = ANY (c.reloptions)), 2, 'search indexes: gin_pending_list_limit 256 kB');

-- ---- every counter equals its recount ----
SELECT is(pg_temp.counter_errors(), 0::bigint, 'every counter equals the recount from messages and receipts');

-- ---- the rate limiter ----
UPDATE chat.settings SET value = 1 WHERE name = 'send_rate';
UPDATE chat.settings SET value = 3 WHERE name = 'send_burst';
SELECT pg_temp.act('ratelimited');
SELECT lives_ok($$SELECT api.chat_create_room('group', 'rl')$$, 'a fresh user');
SELECT throws_ok($$SELECT api.chat_send(r.room_id, 'm' || g) FROM api.chat_rooms() r, generate_series(1, 10) g$$, 'PT429', NULL, 'sending faster than the limit: PT429 (HTTP 429)');
-- edits, reactions (and deletes, pins) publish like a send: same bucket
SELECT pg_temp.act('ratelimited2');
SELECT lives_ok($$SELECT api.chat_create_room('group', 'rl2')$$, 'another fresh user');
SELECT lives_ok($$SELECT api.chat_send(r.room_id, 'one') FROM api.chat_rooms() r$$, 'one message within the limit');
SELECT throws_ok($$SELECT api.chat_edit(r.room_id, 1, 'edit ' || g) FROM api.chat_rooms() r, generate_series(1, 10) g$$, 'PT429', NULL, 'editing faster than the send limit: PT429');
SELECT pg_temp.act('ratelimited3');
SELECT lives_ok($$SELECT api.chat_create_room('group', 'rl3')$$, 'a third fresh user');
SELECT lives_ok($$SELECT api.chat_send(r.room_id, 'one') FROM api.chat_rooms() r$$, 'one message within the limit');
SELECT throws_ok($$SELECT api.chat_react(r.room_id, 1, 'e' || g) FROM api.chat_rooms() r, generate_series(1, 10) g$$, 'PT429', NULL, 'reacting faster than the send limit: PT429');

SELECT * FROM finish();
ROLLBACK;
