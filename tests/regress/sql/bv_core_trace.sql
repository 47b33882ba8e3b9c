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

-- The request settings are found by a remembered position in the server's
-- sorted settings (extensions/common/bv_guc.c).  Settings created around
-- that position, before and after the remembered one, never hide a value
-- or return another setting's.  A new session: request.headers is absent.
\c
SELECT current_setting('request.headers', true) IS NULL AS headers_absent;
SELECT bv.trace_context() IS NULL AS no_context;
SELECT set_config('aaa.shift' || g, 'x', false) IS NOT NULL AS shifted FROM generate_series(1, 3) g;
SELECT set_config('request.headerr', '{"traceparent":"00-11111111111111111111111111111111-2222222222222222-01"}', false) IS NOT NULL AS left_neighbour;
SELECT set_config('request.headert', '{"traceparent":"00-33333333333333333333333333333333-4444444444444444-01"}', false) IS NOT NULL AS right_neighbour;
SELECT bv.trace_context() IS NULL AS still_no_context;
SELECT set_config('request.headers', '{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}', false) IS NOT NULL;
SELECT bv.trace_context();
SELECT set_config('aab.shift', 'x', false) IS NOT NULL AS shifted_again;
SELECT bv.trace_context();
SELECT set_config('request.headers', '', false) IS NOT NULL AS headers_emptied;
SELECT bv.trace_context() IS NULL AS no_context;
