-- bv.trace_context(): the W3C traceparent of the request, or NULL.

SELECT bv.trace_context() IS NULL AS no_context;

-- From the traceparent request header, as PostgREST exposes it.
BEGIN;
SELECT set_config('request.headers',
  '{"accept":"*/*","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}', true) IS NOT NULL;
SELECT bv.trace_context();
-- The bv.traceparent setting wins over the header.
SET LOCAL bv.traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00';
SELECT bv.trace_context();
ROLLBACK;
SELECT bv.trace_context() IS NULL AS no_context;

-- Invalid headers are ignored, as the W3C recommendation requires.
BEGIN;
SELECT set_config('request.headers', '{"traceparent":"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"}', true) IS NOT NULL;
SELECT bv.trace_context() IS NULL AS upper_case_ignored;
SELECT set_config('request.headers', '{"traceparent":"00-00000000000000000000000000000000-00f067aa0ba902b7-01"}', true) IS NOT NULL;
SELECT bv.trace_context() IS NULL AS zero_trace_id_ignored;
SELECT set_config('request.headers', '{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"}', true) IS NOT NULL;
SELECT bv.trace_context() IS NULL AS zero_parent_id_ignored;
SELECT set_config('request.headers', '{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"}', true) IS NOT NULL;
SELECT bv.trace_context() IS NULL AS wrong_length_ignored;
SELECT set_config('request.headers', '{"traceparent":42}', true) IS NOT NULL;
SELECT bv.trace_context() IS NULL AS non_string_ignored;
SELECT set_config('request.headers', 'not json', true) IS NOT NULL;
SELECT bv.trace_context() IS NULL AS bad_json_ignored;
ROLLBACK;

-- A malformed bv.traceparent setting is refused with SQLSTATE 22023.
SET bv.traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7';
\set VERBOSITY sqlstate
SET bv.traceparent = 'garbage';
\set VERBOSITY default
-- Empty means "none".
SET bv.traceparent = '';
SELECT bv.trace_context() IS NULL AS no_context;
RESET bv.traceparent;

-- Anyone may set and read the trace context.
SET ROLE bv_anon;
SET bv.traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
SELECT bv.trace_context();
RESET bv.traceparent;
RESET ROLE;

-- The "bv" prefix is reserved: typos are caught.
SET bv.tracepaernt = 'x';
