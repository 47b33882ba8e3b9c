/*
 * bv_realtime 0.3.0 -> 0.4.0: a per-user connection limit (setting
 * bv_realtime.max_connections_per_user; the library enforces it) and client
 * messages answered by SQL handlers.
 *
 *   topic_grants.handler   a publish grant may name a handler
 *                          f(topic text, event text, payload jsonb)
 *                          RETURNS jsonb: a client message it allows is not
 *                          broadcast, the gateway calls the handler as the
 *                          client and replies with its result
 *   publish_handler()      the handler of a topic and event (as the client)
 *   topic_matches()        a prefix pattern matches tokens without a sub;
 *                          {sub} before a final * ends at ':' or the end,
 *                          an empty sub matches no {sub} pattern
 *   stats                  more columns: user_refused, handler_calls,
 *                          handler_errors, handler_timeouts
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION bv_realtime UPDATE TO '0.4.0'" to load this file. \quit

ALTER TABLE bv_realtime.topic_grants ADD COLUMN handler regprocedure;
ALTER TABLE bv_realtime.topic_grants ADD CONSTRAINT topic_grants_handler_publish
    CHECK (handler IS NULL OR action = 'publish');

COMMENT ON COLUMN bv_realtime.topic_grants.handler IS
'publish grants only: f(topic text, event text, payload jsonb) RETURNS jsonb. A client message this row allows is not broadcast: the gateway calls f as the client (role, request.jwt.claims, request.realtime.event) in a transaction of its own bounded by bv_realtime.handler_timeout and replies {"type":"reply","ref":..,"status":200,"result":..} or an error status.';

/*
 * A handler must take (text, text, jsonb) and return jsonb: checked when a
 * row is written, with a clear error instead of a failure at the first
 * client message.
 */
CREATE FUNCTION bv_realtime.topic_grants_check()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p record;
BEGIN
    IF NEW.handler IS NULL THEN
        RETURN NEW;
    END IF;
    IF NEW.action <> 'publish' THEN
        RAISE EXCEPTION 'a handler needs action ''publish'''
            USING ERRCODE = '22023',
                  HINT = 'Set handler on the topic''s publish grant only.';
    END IF;
    SELECT pr.prorettype, pr.prokind, pr.proretset, pr.pronargs,
           pr.proargtypes[0] AS a0, pr.proargtypes[1] AS a1, pr.proargtypes[2] AS a2
    INTO p FROM pg_catalog.pg_proc pr WHERE pr.oid = NEW.handler;
    IF p.prokind <> 'f' OR p.proretset OR p.prorettype <> 'jsonb'::regtype OR p.pronargs <> 3
       OR p.a0 <> 'text'::regtype OR p.a1 <> 'text'::regtype OR p.a2 <> 'jsonb'::regtype THEN
        RAISE EXCEPTION 'handler % must be a function (topic text, event text, payload jsonb) returning jsonb',
                        pg_catalog.left(NEW.handler::text, 100)
            USING ERRCODE = '42P13',
                  HINT = 'Create the handler with that signature, e.g. CREATE FUNCTION app.on_send(topic text, event text, payload jsonb) RETURNS jsonb.';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER topic_grants_check BEFORE INSERT OR UPDATE ON bv_realtime.topic_grants
    FOR EACH ROW EXECUTE FUNCTION bv_realtime.topic_grants_check();

CREATE FUNCTION bv_realtime.publish_handler(topic text)
RETURNS regprocedure
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g record;
    ok boolean;
    sub text := NULLIF(pg_catalog.current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub';
BEGIN
    -- the first (by id) publish grant with a handler that allows the message
    -- (pattern, grantee, check function, which sees request.realtime.event)
    FOR g IN
        SELECT t.topic_pattern, t.check_function, t.handler
        FROM bv_realtime.topic_grants t
        WHERE t.action = 'publish' AND t.handler IS NOT NULL
          AND pg_catalog.pg_has_role(current_user, t.grantee, 'MEMBER')
        ORDER BY t.id
    LOOP
        IF bv_realtime.topic_matches(g.topic_pattern, publish_handler.topic, sub) THEN
            IF g.check_function IS NULL THEN
                RETURN g.handler;
            END IF;
            EXECUTE pg_catalog.format('SELECT %s($1, $2)', g.check_function::regproc)
                INTO ok USING publish_handler.topic, 'publish';
            IF ok THEN
                RETURN g.handler;
            END IF;
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION bv_realtime.publish_handler(text) IS
'The SQL handler that answers the current role''s client messages on topic (event in setting request.realtime.event): the handler of the first publish grant, by id, that has one and allows the message; NULL: the message is broadcast. When any grant that allows a message has a handler, the message goes to it, even if another grant would allow a broadcast. The gateway calls it once per connection, topic and event, with authorize().';

GRANT EXECUTE ON FUNCTION bv_realtime.publish_handler(text) TO bv_anon;

-- A prefix pattern without {sub} matched no token without a sub claim
-- (replace(.., '{sub}', NULL) is NULL): anonymous clients could join exact
-- topics only.  {sub} patterns still never match such tokens.
CREATE OR REPLACE FUNCTION bv_realtime.topic_matches(pattern text, topic text, sub text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    -- A missing or empty sub matches no pattern naming {sub}.  A sub put in
    -- place of {sub} right before the final * ends at the end of the topic
    -- or at a ':' (red-team 5b: under 'inbox:{sub}*' a user "al" matched
    -- inbox:alice, and an empty sub every inbox).
    SELECT CASE
        WHEN pattern LIKE '%{sub}%' AND (sub IS NULL OR sub = '') THEN false
        WHEN pattern LIKE '%{sub}*' THEN
            topic = pg_catalog.replace(pg_catalog.left(pattern, -1), '{sub}', sub)
            OR pg_catalog.starts_with(topic, pg_catalog.replace(pg_catalog.left(pattern, -1), '{sub}', sub) || ':')
        WHEN pattern LIKE '%*' THEN
            pg_catalog.starts_with(topic, pg_catalog.replace(pg_catalog.left(pattern, -1), '{sub}', COALESCE(sub, '')))
        ELSE topic = pg_catalog.replace(pattern, '{sub}', COALESCE(sub, ''))
    END;
$$;

COMMENT ON FUNCTION bv_realtime.topic_matches(text, text, text) IS
'Whether a topic_grants pattern matches topic for a token whose sub claim is sub. A sub put in place of {sub} right before the final * must be followed by the end of the topic or by ":" ("inbox:{sub}*" gives alice inbox:alice and inbox:alice:..., never inbox:alicex to a user "al"); a missing or empty sub matches no pattern with {sub}; patterns without {sub} match tokens without a sub too.';

-- stats: 0.3.0's columns, then 0.4.0's (the same C function fills every shape)
DROP VIEW bv_realtime.stats;
DROP FUNCTION bv_realtime.stats();

CREATE FUNCTION bv_realtime.stats(
    OUT state text, OUT listen text, OUT worker_pid integer,
    OUT connections integer, OUT ws_connections integer, OUT sse_connections integer,
    OUT subscriptions integer, OUT connections_total bigint, OUT auth_failures bigint,
    OUT messages_in bigint, OUT messages_out bigint, OUT client_messages bigint,
    OUT drops bigint, OUT resume_hits bigint, OUT resume_misses bigint,
    OUT joins_denied bigint, OUT expired_closes bigint, OUT history_pruned bigint,
    OUT latency_p50_ms double precision, OUT latency_p99_ms double precision,
    OUT last_error text,
    OUT changes_in bigint, OUT changes_out bigint, OUT rls_queries bigint,
    OUT client_broadcasts bigint, OUT presence_joins bigint, OUT presence_leaves bigint,
    OUT presence integer,
    OUT rate_limited bigint, OUT rate_limit_closes bigint, OUT ip_refused bigint,
    OUT user_refused bigint, OUT handler_calls bigint, OUT handler_errors bigint,
    OUT handler_timeouts bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'bv_realtime_stats'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION bv_realtime.stats() IS
'The gateway''s figures since the server started; see the view bv_realtime.stats.';

CREATE VIEW bv_realtime.stats AS SELECT * FROM bv_realtime.stats();

COMMENT ON VIEW bv_realtime.stats IS
'The gateway: state, address, current connections (WebSocket, SSE) and subscriptions; totals of connections, authentication failures, messages decoded from the WAL (messages_in) and written to clients (messages_out), client messages, slow clients dropped, resume hits and misses, joins denied, connections closed at token expiry or revocation, history rows pruned; delivery latency from commit to the write to a client (p50/p99, ms, about 9% resolution); table changes decoded (changes_in) and written to clients (changes_out), visibility queries run (rls_queries: one per group of subscribers, table and batch), client messages relayed to a topic (client_broadcasts), presence joins and leaves, and current presence entries; client messages refused over bv_realtime.client_messages_per_second (rate_limited), connections closed for flooding (rate_limit_closes) and connections refused by bv_realtime.max_connections_per_ip (ip_refused); since 0.4.0 connections refused by bv_realtime.max_connections_per_user (user_refused), client messages handed to SQL handlers (handler_calls), those answered with an error status (handler_errors) and those cancelled by bv_realtime.handler_timeout (handler_timeouts).';

REVOKE ALL ON FUNCTION bv_realtime.stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bv_realtime.stats() TO bv_service;
GRANT SELECT ON bv_realtime.stats TO bv_service;
