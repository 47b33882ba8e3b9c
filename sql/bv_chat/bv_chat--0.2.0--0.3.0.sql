/*
 * bv_chat 0.2.0 -> 0.3.0
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION bv_chat UPDATE TO '0.3.0'" to load this file. \quit

/* ---------- sending over the WebSocket (bv_realtime 0.4.0 handlers) ----------
 *
 * A client sends {"type":"broadcast","topic":"chat:room:<id>",
 * "event":"message.send","ref":..,"payload":{"body":..,"reply_to":..,
 * "attachments":[..]}} on its socket; the gateway calls chat.ws_send() as
 * the client (its role and claims, as PostgREST would) and replies with the
 * message chat.send() returns, or with an error status (chat.send()'s
 * PT403/PT404 become 403/404, bad payloads 400).  The message reaches the
 * room's subscribers as message.created through the WAL, as a REST send.
 * Typing stays a plain client message (the grant of 0.1.0).
 */

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                   WHERE attrelid = 'bv_realtime.topic_grants'::regclass AND attname = 'handler'
                     AND NOT attisdropped) THEN
        RAISE EXCEPTION 'bv_chat 0.3.0 needs bv_realtime 0.4.0 (topic handlers)'
            USING ERRCODE = '55000', HINT = 'Run ALTER EXTENSION bv_realtime UPDATE first.';
    END IF;
END
$$;

CREATE FUNCTION chat.ws_send_allowed(topic text, action text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT action = 'publish'
       AND topic ~ '^chat:room:[0-9]{1,18}$'
       AND coalesce(current_setting('request.realtime.event', true), '') = 'message.send'
$$;
COMMENT ON FUNCTION chat.ws_send_allowed(text, text) IS 'bv_realtime check function of the message.send handler grant: event message.send on chat:room:<id> (membership is checked by chat.send() at every message, so a ban applies at once).';

CREATE FUNCTION chat.ws_send(topic text, event text, payload jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    room bigint;
    reply_to bigint;
    att jsonb;
BEGIN
    IF topic IS NULL OR topic !~ '^chat:room:[0-9]{1,18}$' THEN
        RAISE EXCEPTION 'not a chat room topic'
            USING ERRCODE = '22023', HINT = 'Send on topic chat:room:<room id>.';
    END IF;
    IF event IS DISTINCT FROM 'message.send' THEN
        RAISE EXCEPTION 'unsupported event'
            USING ERRCODE = '22023', HINT = 'Use event message.send.';
    END IF;
    IF payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
        RAISE EXCEPTION 'payload must be a JSON object'
            USING ERRCODE = '22023', HINT = 'Send {"body": "...", "reply_to": <seq or null>, "attachments": [...]}.';
    END IF;
    IF jsonb_typeof(payload -> 'body') NOT IN ('string', 'null') THEN
        RAISE EXCEPTION 'body must be a string'
            USING ERRCODE = '22023', HINT = 'Send the text of the message as "body".';
    END IF;
    IF jsonb_typeof(payload -> 'reply_to') NOT IN ('number', 'null') THEN
        RAISE EXCEPTION 'reply_to must be a message seq (a number) or null'
            USING ERRCODE = '22023', HINT = 'Pass the seq of the message you reply to, or leave reply_to out.';
    END IF;
    IF jsonb_typeof(payload -> 'attachments') NOT IN ('array', 'null') THEN
        RAISE EXCEPTION 'attachments must be an array'
            USING ERRCODE = '22023', HINT = 'Send attachments as [{"name", "mime", "size", "url"}].';
    END IF;
    room := substr(topic, 11)::bigint;
    -- the socket's answer for a room one is not in, existing or not (no probing)
    IF NOT chat.is_member(room) THEN
        RAISE EXCEPTION 'you are not a member of this room'
            USING ERRCODE = 'PT403', HINT = 'Join the room (or ask to be added) before sending.';
    END IF;
    IF jsonb_typeof(payload -> 'reply_to') = 'number' THEN
        IF (payload ->> 'reply_to') !~ '^[0-9]{1,18}$' THEN
            RAISE EXCEPTION 'reply_to must be a positive integer'
                USING ERRCODE = '22023', HINT = 'Pass the seq of the message you reply to.';
        END IF;
        reply_to := (payload ->> 'reply_to')::bigint;
    END IF;
    att := coalesce(NULLIF(payload -> 'attachments', 'null'::jsonb), '[]'::jsonb);
    RETURN chat.send(room, payload ->> 'body', reply_to, att);
END
$$;
COMMENT ON FUNCTION chat.ws_send(text, text, jsonb) IS 'bv_realtime handler of event message.send on chat:room:<id>: sends the payload''s body, reply_to and attachments with chat.send() as the client and returns its result.';

REVOKE ALL ON FUNCTION chat.ws_send_allowed(text, text), chat.ws_send(text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION chat.ws_send_allowed(text, text) TO bv_anon;
GRANT EXECUTE ON FUNCTION chat.ws_send(text, text, jsonb) TO bv_user;

INSERT INTO bv_realtime.topic_grants (topic_pattern, action, grantee, check_function, handler, comment)
VALUES ('chat:room:*', 'publish', 'bv_user', 'chat.ws_send_allowed(text,text)'::regprocedure,
        'chat.ws_send(text,text,jsonb)'::regprocedure,
        'bv_chat: room members send messages over the WebSocket (event message.send, answered by chat.ws_send)');
