/*
 * bv_chat 0.3.0 -> 0.4.0, hardening (red-team round 6b, findings 11, 4, 9).
 *
 * This section is self-contained: another section of this file (the send
 * path) may come before or after it.  It redefines no send function.
 */

\echo Use "ALTER EXTENSION bv_chat UPDATE TO '0.4.0'" to load this file. \quit

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
