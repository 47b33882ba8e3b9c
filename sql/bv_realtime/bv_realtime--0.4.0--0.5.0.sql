/*
 * bv_realtime 0.4.0 -> 0.5.0: SQL handlers run off the gateway's event loop.
 *
 *   handler_call()   internal: the gateway's handler pool (a few ordinary
 *                    backends, setting bv_realtime.handler_connections)
 *                    runs each client message's handler through it, so a
 *                    slow handler no longer stalls every connection
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
