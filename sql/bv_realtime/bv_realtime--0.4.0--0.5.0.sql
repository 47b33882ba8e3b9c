/*
 * bv_realtime 0.4.0 -> 0.5.0: SQL handlers run off the gateway's event loop.
 *
 *   handler_call()   internal: the gateway's handler pool (a few ordinary
 *                    backends, setting bv_realtime.handler_connections)
 *                    runs each client message's handler through it, so a
 *                    slow handler no longer stalls every connection
 *   topic_matches()  in a prefix pattern (ending in *), {sub} stands for the
 *                    sub with '%' and ':' written %25 and %3A, so a user's
 *                    topics never overlap another's (red-team 6b finding 3)
 *   topic_sub()      that form of a sub, for applications building topics
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION bv_realtime UPDATE TO '0.5.0'" to load this file. \quit

CREATE FUNCTION bv_realtime.handler_call(
    handler regprocedure, role text, claims text, topic text, event text, payload text,
    timeout_ms integer,
    OUT status integer, OUT sqlstate text, OUT result text, OUT message text, OUT hint text)
RETURNS record
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'bv_realtime_handler_call';

REVOKE ALL ON FUNCTION bv_realtime.handler_call(regprocedure, text, text, text, text, text, integer) FROM PUBLIC;

COMMENT ON FUNCTION bv_realtime.handler_call(regprocedure, text, text, text, text, text, integer) IS
'Internal, superusers only: the gateway''s handler pool calls a topic''s handler through it, as the client (role, request.jwt.claims, request.realtime.event), in a subtransaction bounded by timeout_ms (NULL: bv_realtime.handler_timeout), with the role locked as in a SECURITY DEFINER function; errors come back as status (HTTP-like), sqlstate, message and hint fit for the client.';

-- Topic patterns: {sub} encoded in prefix patterns (red-team 6b finding 3)

CREATE FUNCTION bv_realtime.topic_sub(sub text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pg_catalog.replace(pg_catalog.replace(sub, '%', '%25'), ':', '%3A') $$;

COMMENT ON FUNCTION bv_realtime.topic_sub(text) IS
'A sub claim as it stands for {sub} in a prefix topic pattern ("inbox:{sub}*"): with ''%'' and '':'' written %25 and %3A, since '':'' separates a user''s topics from the levels below them. Build per-user prefix topics with it: ''inbox:'' || bv_realtime.topic_sub(sub).';

GRANT EXECUTE ON FUNCTION bv_realtime.topic_sub(text) TO bv_anon;

CREATE OR REPLACE FUNCTION bv_realtime.topic_matches(pattern text, topic text, sub text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    -- A missing or empty sub matches no pattern naming {sub}.  In a prefix
    -- pattern the sub is encoded (topic_sub) and, right before the final *,
    -- ends at the end of the topic or at a ':' (red-team 5b: under
    -- 'inbox:{sub}*' a user "al" matched inbox:alice; 6b: a user "org"
    -- matched inbox:org:alice, the inbox of the user "org:alice").
    SELECT CASE
        WHEN pattern LIKE '%{sub}%' AND (sub IS NULL OR sub = '') THEN false
        WHEN pattern LIKE '%{sub}*' THEN
            topic = pg_catalog.replace(pg_catalog.left(pattern, -1), '{sub}', bv_realtime.topic_sub(sub))
            OR pg_catalog.starts_with(topic, pg_catalog.replace(pg_catalog.left(pattern, -1), '{sub}',
                                                                bv_realtime.topic_sub(sub)) || ':')
        WHEN pattern LIKE '%*' THEN
            pg_catalog.starts_with(topic, pg_catalog.replace(pg_catalog.left(pattern, -1), '{sub}',
                                                             COALESCE(bv_realtime.topic_sub(sub), '')))
        ELSE topic = pg_catalog.replace(pattern, '{sub}', COALESCE(sub, ''))
    END;
$$;

COMMENT ON FUNCTION bv_realtime.topic_matches(text, text, text) IS
'Whether a topic_grants pattern matches topic for a token whose sub claim is sub. In an exact pattern {sub} is the sub as it is ("chat:user:{sub}"). In a prefix pattern (ending in *) it is bv_realtime.topic_sub(sub), with ''%'' and '':'' written %25 and %3A, and right before the final * it must be followed by the end of the topic or by ":" ("inbox:{sub}*" gives alice inbox:alice and inbox:alice:..., never inbox:alicex to a user "al"; the user "org:alice" has inbox:org%3Aalice, never reachable by the user "org"). A missing or empty sub matches no pattern with {sub}; patterns without {sub} match tokens without a sub too.';
