/*
 * bv_realtime 0.1.0 -> 0.2.0: table changes under row level security,
 * client messages, presence.
 *
 *   enable_table()    a table's changes go to subscribers of topic
 *   disable_table()   "table:<schema>.<name>" (the publication bv_realtime)
 *   tables            the tables enabled
 *   revoke()          after commit, ends a user's subscription to a topic
 *                     (membership removed, ban)
 *   presence()        who is in a topic, with state (the gateway's shared
 *                     memory)
 *   stats             more columns: changes in/out, RLS queries, client
 *                     broadcasts, presence joins/leaves, presence entries
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION bv_realtime UPDATE TO '0.2.0'" to load this file. \quit

CREATE FUNCTION bv_realtime.invoker()
RETURNS oid
AS 'MODULE_PATHNAME', 'bv_realtime_invoker'
LANGUAGE C STRICT STABLE;

COMMENT ON FUNCTION bv_realtime.invoker() IS
'Internal: the role that called bv_realtime''s API (the current role outside SECURITY DEFINER functions).';

CREATE FUNCTION bv_realtime.enable_table(tbl regclass)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    caller oid := bv_realtime.invoker();
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'table must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Give the table, e.g. bv_realtime.enable_table(''public.items'').';
    END IF;
    SELECT c.oid, c.relkind, c.relowner, c.relreplident, n.nspname, c.relname INTO r
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = tbl;
    IF NOT pg_catalog.pg_has_role(caller, r.relowner, 'USAGE') THEN
        RAISE EXCEPTION 'only the owner of table % may enable its realtime changes', tbl
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Call it as the table''s owner (or a member of the owning role).';
    END IF;
    IF r.relkind <> 'r' THEN
        RAISE EXCEPTION '% is not an ordinary table', tbl
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Enable the ordinary table (partitioned tables and views are not supported).';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = tbl AND i.indisprimary)
       OR r.relreplident NOT IN ('d') THEN
        RAISE EXCEPTION 'table % needs a primary key as its replica identity', tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Subscribers'' rows are checked under row level security by their key.',
                  HINT = 'Add a primary key and keep REPLICA IDENTITY DEFAULT.';
    END IF;
    IF pg_catalog.length('table:' || r.nspname || '.' || r.relname) > 200
       OR ('table:' || r.nspname || '.' || r.relname) ~ '[^!-~]|[",\\]' THEN
        RAISE EXCEPTION 'the name of table % cannot be a topic', tbl
            USING ERRCODE = 'invalid_name',
                  DETAIL = 'Topics are printable ASCII without spaces, commas, double quotes or backslashes, at most 200 bytes.',
                  HINT = 'Rename the table or its schema.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel p
                   JOIN pg_catalog.pg_publication b ON b.oid = p.prpubid
                   WHERE b.pubname = 'bv_realtime' AND p.prrelid = tbl) THEN
        EXECUTE pg_catalog.format('ALTER PUBLICATION bv_realtime ADD TABLE %I.%I', r.nspname, r.relname);
    END IF;
END
$$;

COMMENT ON FUNCTION bv_realtime.enable_table(regclass) IS
'Delivers the table''s inserts, updates and deletes to WebSocket and SSE subscribers of topic "table:<schema>.<name>": adds it to publication bv_realtime. Subscribers need SELECT on the table and get only rows their role may SELECT under row level security. The table needs a primary key (replica identity default). The table''s owner only; bv_admin.';

REVOKE ALL ON FUNCTION bv_realtime.enable_table(regclass) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bv_realtime.enable_table(regclass) TO bv_admin;

CREATE FUNCTION bv_realtime.disable_table(tbl regclass)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'table must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Give the table, e.g. bv_realtime.disable_table(''public.items'').';
    END IF;
    SELECT c.relowner, n.nspname, c.relname INTO r
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = tbl;
    IF NOT pg_catalog.pg_has_role(bv_realtime.invoker(), r.relowner, 'USAGE') THEN
        RAISE EXCEPTION 'only the owner of table % may disable its realtime changes', tbl
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Call it as the table''s owner (or a member of the owning role).';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel p
               JOIN pg_catalog.pg_publication b ON b.oid = p.prpubid
               WHERE b.pubname = 'bv_realtime' AND p.prrelid = tbl) THEN
        EXECUTE pg_catalog.format('ALTER PUBLICATION bv_realtime DROP TABLE %I.%I', r.nspname, r.relname);
    END IF;
END
$$;

COMMENT ON FUNCTION bv_realtime.disable_table(regclass) IS
'Stops delivering the table''s changes (removes it from publication bv_realtime). The table''s owner only; bv_admin.';

REVOKE ALL ON FUNCTION bv_realtime.disable_table(regclass) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bv_realtime.disable_table(regclass) TO bv_admin;

CREATE VIEW bv_realtime.tables AS
    SELECT t.schemaname AS schema_name, t.tablename AS table_name,
           'table:' || t.schemaname || '.' || t.tablename AS topic
    FROM pg_catalog.pg_publication_tables t
    WHERE t.pubname = 'bv_realtime';

COMMENT ON VIEW bv_realtime.tables IS
'Tables whose changes the gateway delivers, and their topics.';

GRANT SELECT ON bv_realtime.tables TO bv_anon;

CREATE FUNCTION bv_realtime.revoke(topic text, sub text)
RETURNS void
AS 'MODULE_PATHNAME', 'bv_realtime_revoke'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION bv_realtime.revoke(text, text) IS
'After the transaction commits (never if it rolls back), the gateway ends the subscriptions to topic of every connection whose token''s sub claim is sub, with their presence there and their cached publish/presence decisions; the client gets an error "access revoked" for the topic (an SSE stream left without topics ends). For access that ends (a member leaves, is kicked or banned); joins are authorized again. bv_service and bv_admin.';

REVOKE ALL ON FUNCTION bv_realtime.revoke(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bv_realtime.revoke(text, text) TO bv_service;

CREATE FUNCTION bv_realtime.presence(topic text,
    OUT key text, OUT state jsonb, OUT joined_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'bv_realtime_presence'
LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION bv_realtime.presence(text) IS
'Who is in topic now (the gateway''s presence, in shared memory): one row per connection that tracked presence, with its key (the token''s sub claim, else its role) and the state it sent. bv_service and bv_admin.';

REVOKE ALL ON FUNCTION bv_realtime.presence(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bv_realtime.presence(text) TO bv_service;

-- stats: 0.1.0's columns, then 0.2.0's (the same C function fills both shapes)
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
    OUT presence integer)
RETURNS record
AS 'MODULE_PATHNAME', 'bv_realtime_stats'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION bv_realtime.stats() IS
'The gateway''s figures since the server started; see the view bv_realtime.stats.';

CREATE VIEW bv_realtime.stats AS SELECT * FROM bv_realtime.stats();

COMMENT ON VIEW bv_realtime.stats IS
'The gateway: state, address, current connections (WebSocket, SSE) and subscriptions; totals of connections, authentication failures, messages decoded from the WAL (messages_in) and written to clients (messages_out), client messages, slow clients dropped, resume hits and misses, joins denied, connections closed at token expiry or revocation, history rows pruned; delivery latency from commit to the write to a client (p50/p99, ms, about 9% resolution); table changes decoded (changes_in) and written to clients (changes_out), visibility queries run (rls_queries: one per group of subscribers, table and batch), client messages relayed to a topic (client_broadcasts), presence joins and leaves, and current presence entries.';

REVOKE ALL ON FUNCTION bv_realtime.stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bv_realtime.stats() TO bv_service;
GRANT SELECT ON bv_realtime.stats TO bv_service;
