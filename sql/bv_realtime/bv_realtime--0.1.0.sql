/*
 * bv_realtime 0.1.0: broadcast from SQL to WebSocket and SSE clients.
 *
 *   send()          bv_realtime.send(topic, event, payload): a transactional
 *                   logical decoding message; delivered after commit, in
 *                   commit order, never on rollback
 *   messages        the bounded, durable history (written by the gateway
 *                   worker only) that resuming clients replay from
 *   topic_grants    who may subscribe to which topics; authorize() reads
 *                   it under the client's role at join
 *   stats           the gateway's figures
 *   publication     "bv_realtime", with no tables: the gateway's pgoutput
 *                   slot streams messages only
 */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION bv_realtime" to load this file. \quit

COMMENT ON SCHEMA bv_realtime IS
'BitVelocity realtime: WebSocket and Server-Sent Events delivery of database events, from a background worker fed by the WAL.';

GRANT USAGE ON SCHEMA bv_realtime TO bv_anon;

CREATE FUNCTION bv_realtime.send(topic text, event text, payload jsonb DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'bv_realtime_send'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION bv_realtime.send(text, text, jsonb) IS
'Broadcasts payload as event on topic to the gateway''s subscribers: written into the WAL as a transactional logical decoding message, delivered after commit, in commit order, never if the transaction rolls back. Topic and event: 1-200 and 1-100 bytes of printable ASCII without spaces, commas, double quotes or backslashes. Payload at most bv_realtime.max_payload bytes. bv_service and bv_admin.';

REVOKE ALL ON FUNCTION bv_realtime.send(text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bv_realtime.send(text, text, jsonb) TO bv_service;

CREATE TABLE bv_realtime.messages (
    commit_lsn   pg_lsn NOT NULL,
    seq          integer NOT NULL,
    topic        text NOT NULL,
    event        text NOT NULL,
    payload      jsonb,
    committed_at timestamptz NOT NULL,
    PRIMARY KEY (commit_lsn, seq)
);
CREATE INDEX messages_topic_pos ON bv_realtime.messages (topic, commit_lsn, seq);

COMMENT ON TABLE bv_realtime.messages IS
'The gateway''s history of broadcast messages, for clients that reconnect with their last position (WebSocket last_id, SSE Last-Event-ID). Written by the gateway worker only, after decoding; bounded by bv_realtime.history_retention and bv_realtime.history_max_rows. Not readable by API roles.';
COMMENT ON COLUMN bv_realtime.messages.commit_lsn IS 'Commit LSN of the transaction that sent the message; with seq, the message''s position (id "X/Y-seq").';
COMMENT ON COLUMN bv_realtime.messages.seq IS 'Index of the message within its transaction, from 0.';
COMMENT ON COLUMN bv_realtime.messages.topic IS 'Topic the message was sent on.';
COMMENT ON COLUMN bv_realtime.messages.event IS 'Event name.';
COMMENT ON COLUMN bv_realtime.messages.payload IS 'Payload (JSON).';
COMMENT ON COLUMN bv_realtime.messages.committed_at IS 'Commit time of the sending transaction.';

CREATE TABLE bv_realtime.history_state (
    singleton          boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    retained_after_lsn pg_lsn NOT NULL DEFAULT '0/0',
    retained_after_seq integer NOT NULL DEFAULT 0
);
INSERT INTO bv_realtime.history_state DEFAULT VALUES;

COMMENT ON TABLE bv_realtime.history_state IS
'The history''s low mark: every message after this position is still in bv_realtime.messages; a client resuming from before it is told to re-sync. Written by the gateway worker.';

CREATE TABLE bv_realtime.topic_grants (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic_pattern  text NOT NULL CHECK (length(topic_pattern) BETWEEN 1 AND 200),
    action         text NOT NULL CHECK (action IN ('subscribe', 'publish', 'presence')),
    grantee        name NOT NULL,
    check_function regprocedure,
    comment        text
);

COMMENT ON TABLE bv_realtime.topic_grants IS
'Who may join which topics. A row allows members of grantee to do action on the topics its pattern matches: the exact topic, or a prefix when the pattern ends in "*"; "{sub}" stands for the token''s sub claim (so "user:{sub}" is each user''s own topic; write "user:{sub}:*" rather than "user:{sub}*"). When check_function (f(topic text, action text) returns boolean) is set, it must also return true; it runs under the client''s role with request.jwt.claims set, so it can consult tables under RLS. bv_admin writes it.';
COMMENT ON COLUMN bv_realtime.topic_grants.topic_pattern IS 'Exact topic, or prefix ending in *, with {sub} for the sub claim.';
COMMENT ON COLUMN bv_realtime.topic_grants.action IS 'subscribe, publish (client messages) or presence.';
COMMENT ON COLUMN bv_realtime.topic_grants.grantee IS 'Role whose members (and itself) the row allows.';
COMMENT ON COLUMN bv_realtime.topic_grants.check_function IS 'Optional extra check f(topic text, action text) returns boolean, run under the client''s role.';
COMMENT ON COLUMN bv_realtime.topic_grants.comment IS 'Why the grant exists.';

GRANT SELECT ON bv_realtime.topic_grants TO bv_anon;
GRANT SELECT, INSERT, UPDATE, DELETE ON bv_realtime.topic_grants TO bv_admin;

CREATE FUNCTION bv_realtime.topic_matches(pattern text, topic text, sub text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN pattern LIKE '%{sub}%' AND sub IS NULL THEN false
        WHEN pattern LIKE '%*' THEN
            pg_catalog.starts_with(topic, pg_catalog.replace(pg_catalog.left(pattern, -1), '{sub}', sub))
        ELSE topic = pg_catalog.replace(pattern, '{sub}', COALESCE(sub, ''))
    END;
$$;

COMMENT ON FUNCTION bv_realtime.topic_matches(text, text, text) IS
'Whether a topic_grants pattern matches topic for a token whose sub claim is sub.';

CREATE FUNCTION bv_realtime.authorize(topic text, action text)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g record;
    ok boolean;
    sub text := NULLIF(pg_catalog.current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub';
BEGIN
    FOR g IN
        SELECT t.topic_pattern, t.check_function
        FROM bv_realtime.topic_grants t
        WHERE t.action = authorize.action
          AND pg_catalog.pg_has_role(current_user, t.grantee, 'MEMBER')
        ORDER BY t.id
    LOOP
        IF bv_realtime.topic_matches(g.topic_pattern, authorize.topic, sub) THEN
            IF g.check_function IS NULL THEN
                RETURN true;
            END IF;
            EXECUTE pg_catalog.format('SELECT %s($1, $2)', g.check_function::regproc)
                INTO ok USING authorize.topic, authorize.action;
            IF ok THEN
                RETURN true;
            END IF;
        END IF;
    END LOOP;
    RETURN false;
END
$$;

COMMENT ON FUNCTION bv_realtime.authorize(text, text) IS
'Whether the current role (the client''s, with request.jwt.claims set) may do action on topic, by bv_realtime.topic_grants. The gateway calls it once per connection and topic at join, never per message.';

GRANT EXECUTE ON FUNCTION bv_realtime.authorize(text, text) TO bv_anon;

CREATE FUNCTION bv_realtime.stats(
    OUT state text, OUT listen text, OUT worker_pid integer,
    OUT connections integer, OUT ws_connections integer, OUT sse_connections integer,
    OUT subscriptions integer, OUT connections_total bigint, OUT auth_failures bigint,
    OUT messages_in bigint, OUT messages_out bigint, OUT client_messages bigint,
    OUT drops bigint, OUT resume_hits bigint, OUT resume_misses bigint,
    OUT joins_denied bigint, OUT expired_closes bigint, OUT history_pruned bigint,
    OUT latency_p50_ms double precision, OUT latency_p99_ms double precision,
    OUT last_error text)
RETURNS record
AS 'MODULE_PATHNAME', 'bv_realtime_stats'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION bv_realtime.stats() IS
'The gateway''s figures since the server started; see the view bv_realtime.stats.';

CREATE VIEW bv_realtime.stats AS SELECT * FROM bv_realtime.stats();

COMMENT ON VIEW bv_realtime.stats IS
'The gateway: state, address, current connections (WebSocket, SSE) and subscriptions; totals of connections, authentication failures, messages decoded from the WAL (messages_in) and written to clients (messages_out), client messages, slow clients dropped, resume hits and misses, joins denied, connections closed at token expiry or revocation, history rows pruned; delivery latency from commit to the write to a client (p50/p99, ms, about 9% resolution).';

REVOKE ALL ON FUNCTION bv_realtime.stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bv_realtime.stats() TO bv_service;
GRANT SELECT ON bv_realtime.stats TO bv_service;

-- The gateway's slot streams pgoutput with this publication: no tables, so
-- only bv_realtime.send() messages are decoded.
-- It is not an extension member (PostgreSQL cannot make it one), so a
-- reinstall finds it in place.
DO $pub$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication p WHERE p.pubname = 'bv_realtime') THEN
        CREATE PUBLICATION bv_realtime;
    END IF;
END
$pub$;
