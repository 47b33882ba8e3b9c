/*
 * bv_realtime 0.2.0 -> 0.3.0: limits against one abusive client (settings
 * bv_realtime.client_messages_per_second, client_messages_burst,
 * max_connections_per_ip; the library enforces them).
 *
 *   stats             more columns: client messages refused over the rate
 *                     (rate_limited), connections closed for flooding
 *                     (rate_limit_closes), connections refused by the
 *                     per-address limit (ip_refused)
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION bv_realtime UPDATE TO '0.3.0'" to load this file. \quit

-- stats: 0.2.0's columns, then 0.3.0's (the same C function fills every shape)
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
    OUT rate_limited bigint, OUT rate_limit_closes bigint, OUT ip_refused bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'bv_realtime_stats'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION bv_realtime.stats() IS
'The gateway''s figures since the server started; see the view bv_realtime.stats.';

CREATE VIEW bv_realtime.stats AS SELECT * FROM bv_realtime.stats();

COMMENT ON VIEW bv_realtime.stats IS
'The gateway: state, address, current connections (WebSocket, SSE) and subscriptions; totals of connections, authentication failures, messages decoded from the WAL (messages_in) and written to clients (messages_out), client messages, slow clients dropped, resume hits and misses, joins denied, connections closed at token expiry or revocation, history rows pruned; delivery latency from commit to the write to a client (p50/p99, ms, about 9% resolution); table changes decoded (changes_in) and written to clients (changes_out), visibility queries run (rls_queries: one per group of subscribers, table and batch), client messages relayed to a topic (client_broadcasts), presence joins and leaves, and current presence entries; client messages refused over bv_realtime.client_messages_per_second (rate_limited), connections closed for flooding (rate_limit_closes) and connections refused by bv_realtime.max_connections_per_ip (ip_refused).';

REVOKE ALL ON FUNCTION bv_realtime.stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bv_realtime.stats() TO bv_service;
GRANT SELECT ON bv_realtime.stats TO bv_service;
