-- bv_chat demo rooms for `make run` (idempotent: loaded once).  Users
-- alice, bob and carol (the JWT sub); a group "team" of the three with a
-- short conversation, a thread, a reaction and a pin; a channel "general"
-- that anyone may join; a direct room of alice and bob.  Acts through the
-- domain functions, as the users would.
DO $$
DECLARE
    team bigint;
    general bigint;
BEGIN
    IF EXISTS (SELECT 1 FROM chat.rooms WHERE name = 'team' AND created_by = 'alice') THEN
        RETURN;
    END IF;
    PERFORM set_config('request.jwt.claims', '{"role": "bv_user", "sub": "alice"}', true);
    team := (chat.create_room('group', 'team', 'Demo group of alice, bob and carol', ARRAY['bob', 'carol']) ->> 'id')::bigint;
    general := (chat.create_room('channel', 'general', 'Anyone may join') ->> 'id')::bigint;
    PERFORM chat.send(team, 'Welcome to the team room, @bob and @carol!');
    PERFORM chat.send(general, 'This channel is open: api.chat_join(room_id) to come in.');
    PERFORM chat.pin(team, 1);
    PERFORM chat.open_direct('bob');
    PERFORM set_config('request.jwt.claims', '{"role": "bv_user", "sub": "bob"}', true);
    PERFORM chat.send(team, 'Thanks! Shall we meet in 東京 next week?');
    PERFORM chat.send(team, 'Thread: agenda for the meeting', 2);
    PERFORM chat.react(team, 1, '👋');
    PERFORM set_config('request.jwt.claims', '{"role": "bv_user", "sub": "carol"}', true);
    PERFORM chat.join_room(general);
    PERFORM set_config('request.jwt.claims', '', true);
END
$$;
