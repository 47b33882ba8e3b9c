-- bv_audit's API contract: functions, privileges, security settings,
-- comments, and the SQLSTATE of every refusal.
BEGIN;
SELECT plan(64);

SELECT has_schema('bv_audit');
SELECT has_extension('bv_audit');
SELECT functions_are('bv_audit', ARRAY[
    'stamp', 'enable', 'disable', 'audit_table', 'history', 'as_of', 'changes',
    'create_partitions', 'set_retention', 'purge', 'seal', 'verify', 'schedule_jobs',
    'stamp_trigger', 'capture_trigger', 'append_only_trigger', 'row_digest',
    '_purge_delete', '_invalidate', '_tracked', '_safe_type_change', '_create_partition', '_history_index',
    '_sync_columns', '_snapshot', '_row_expr', '_on_ddl', '_on_drop', 'next_audit_id',
    -- 0.3.0, #18 items 1-8
    '_audit_type', '_capture_intact', '_free_audit_name', '_guard_capture', '_record_rows',
    '_record_vanished', '_rewritten_columns',
    -- 0.3.0, #18 items 9-13
    '_link_header', '_purge_link', '_row_digest_v1', '_seal_entries_mismatch',
    -- 0.3.0, #18 audit review
    '_stamp_intact', '_check_read',
    -- 0.4.0, red-team review
    '_guard_stamp_rewrite',
    -- 0.5.0, red-team round 3
    '_ddl_altered_tables', '_guard_stamp_order', '_on_alter_type', '_record_rows_where',
    '_renamed_enum_label',
    -- 0.6.0, red-team round 5
    '_base_type', '_guard_stamp_drop', '_retyped_columns', '_types_containing',
    -- 0.4.0, #19 WAL mode
    'wait_for', 'wal_status', 'wal_marker_trigger', '_wal_flush', '_wal_apply', '_wal_begin',
    '_wal_changes', '_wal_sql', '_wal_end', '_wal_quarantine', '_wal_applied', '_wal_drain',
    '_wal_check',
    -- 0.6.0, #19 the loss race
    '_wal_log_running_xacts',
    -- 0.7.0, keys whose equality ignores bytes
    '_check_key_types', '_key_type_exact',
    -- 0.7.0: red-team 6b hardening (findings 2, 7, 10)
    '_guard_wal_key', '_guard_window', '_wal_reinclude', '_wal_reinclude_drain']);
-- The extension's own tables (the schema also holds the audit tables of
-- whatever is tracked, such as bv_commerce's).
SELECT set_eq($$SELECT c.relname::text FROM pg_class c JOIN pg_depend d ON d.objid = c.oid
                 AND d.classid = 'pg_class'::regclass AND d.deptype = 'e'
                 AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'bv_audit')
               WHERE c.relkind IN ('r', 'p')$$,
              ARRAY['tracked', 'columns', 'seals', 'seal_entries', 'seal_remainders', 'wal_progress', 'wal_quarantine'],
              'bv_audit owns exactly its configuration tables');

-- Every SECURITY DEFINER function pins its search_path.
SELECT is_empty($$
    SELECT p.oid::regprocedure FROM pg_proc p
     WHERE p.pronamespace = 'bv_audit'::regnamespace AND p.prosecdef
       AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)$$,
    'every SECURITY DEFINER function sets search_path = pg_catalog, pg_temp');
-- Every function, table and the schema carry a comment.
SELECT is_empty($$
    SELECT p.oid::regprocedure FROM pg_proc p
     WHERE p.pronamespace = 'bv_audit'::regnamespace
       AND obj_description(p.oid, 'pg_proc') IS NULL$$,
    'every function has a comment');
SELECT is_empty($$
    SELECT c.oid::regclass FROM pg_class c
     WHERE c.relnamespace = 'bv_audit'::regnamespace AND c.relkind IN ('r', 'p')
       AND obj_description(c.oid, 'pg_class') IS NULL$$,
    'every table has a comment');
SELECT isnt(obj_description('bv_audit'::regnamespace, 'pg_namespace'), NULL, 'the schema has a comment');

-- Administration: bv_admin yes, everybody else no; internals: nobody.
SELECT function_privs_are('bv_audit', 'enable', ARRAY['regclass', 'text[]', 'interval', 'text', 'text'], 'bv_admin', ARRAY['EXECUTE']);
SELECT function_privs_are('bv_audit', 'enable', ARRAY['regclass', 'text[]', 'interval', 'text', 'text'], 'bv_user', ARRAY[]::text[]);
SELECT function_privs_are('bv_audit', 'wait_for', ARRAY['pg_lsn', 'interval'], 'bv_admin', ARRAY['EXECUTE']);
SELECT function_privs_are('bv_audit', 'wait_for', ARRAY['pg_lsn', 'interval'], 'bv_user', ARRAY[]::text[]);
SELECT function_privs_are('bv_audit', '_wal_apply', ARRAY['name', 'integer', 'boolean'], 'bv_admin', ARRAY[]::text[]);
SELECT function_privs_are('bv_audit', 'purge', ARRAY[]::text[], 'bv_admin', ARRAY['EXECUTE']);
SELECT function_privs_are('bv_audit', 'purge', ARRAY[]::text[], 'bv_service', ARRAY[]::text[]);
SELECT function_privs_are('bv_audit', '_purge_delete', ARRAY['regclass', 'timestamptz'], 'bv_admin', ARRAY[]::text[]);
SELECT function_privs_are('bv_audit', '_invalidate', ARRAY['regclass'], 'bv_admin', ARRAY[]::text[]);
SELECT function_privs_are('bv_audit', 'history', ARRAY['regclass', 'jsonb'], 'bv_anon', ARRAY[]::text[]);
SELECT function_privs_are('bv_audit', 'next_audit_id', ARRAY[]::text[], 'bv_admin', ARRAY[]::text[]);

-- A tracked table to exercise the API.
CREATE TABLE public.tap_t (id int PRIMARY KEY, v text, pw text);
INSERT INTO public.tap_t VALUES (1, 'a', 'x');
SELECT is(bv_audit.enable('public.tap_t', '{pw}')::text, 'bv_audit.public__tap_t', 'enable() returns the audit table');
SELECT is(bv_audit.enable('public.tap_t', '{pw}')::text, 'bv_audit.public__tap_t', 'enable() twice returns the same table');
SELECT lives_ok($$SELECT bv_audit.stamp('public.tap_t')$$, 'stamp() on a tracked table');
SELECT has_column('bv_audit', 'public__tap_t', 'created_by', 'stamp columns are mirrored into the audit table');
SELECT hasnt_column('bv_audit', 'public__tap_t', 'pw', 'excluded columns are not mirrored');
UPDATE public.tap_t SET v = 'b';
SELECT results_eq($$SELECT operation, changed_columns FROM bv_audit.history('public.tap_t', '{"id":1}')$$,
                  $$VALUES ('S'::text, NULL::text[]), ('U', '{v,updated_by,updated_at}')$$,
                  'history() shows the snapshot and the update with changed columns');
-- In the writing transaction: its records are later than now() (its start).
SELECT is((SELECT count(*)::int FROM bv_audit.as_of('public.tap_t', clock_timestamp())), 1, 'as_of() now has the row');
SELECT is((SELECT count(*)::int FROM bv_audit.as_of('public.tap_t', now())), 0,
          'as_of(now()) in the writing transaction: its records are later than its start');

-- The history index: bloom (BRIN) by default, btree on request; history()'s
-- key condition (key = constant, or NULL key for TRUNCATE records) can use it.
SELECT is((SELECT history_index FROM bv_audit.tracked WHERE relid = 'public.tap_t'::regclass), 'bloom',
          'the default history index is bloom');
SELECT is((SELECT am.amname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
             JOIN pg_am am ON am.oid = c.relam WHERE i.indrelid = 'bv_audit.public__tap_t'::regclass), 'brin',
          'a bloom history index is a BRIN index on the audit table');
CREATE FUNCTION pg_temp.plan_of(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    line text;
    plan text := '';
BEGIN
    FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || q LOOP
        plan := plan || line || E'\n';
    END LOOP;
    RETURN plan;
END
$$;
SET LOCAL enable_seqscan = off;
SELECT unalike(pg_temp.plan_of($$SELECT * FROM bv_audit.public__tap_t a
                                  WHERE a.id = (SELECT 1) OR (a.id IS NULL AND a.audit_op = 'T')$$),
               '%Seq Scan on public__tap_t_p%',
               'history()''s key condition is answered through the history index');
RESET enable_seqscan;
SELECT lives_ok($$SELECT bv_audit.enable('public.tap_t', '{pw}', history_index => 'btree')$$,
               'enable() again with history_index => btree');
SELECT is((SELECT am.amname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
             JOIN pg_am am ON am.oid = c.relam WHERE i.indrelid = 'bv_audit.public__tap_t'::regclass), 'btree',
          'enable(history_index => btree) replaces the history index');
SELECT results_eq($$SELECT operation FROM bv_audit.history('public.tap_t', '{"id":1}')$$,
                  $$VALUES ('S'::text), ('U')$$, 'history() reads the same records through a btree history index');
SELECT is((SELECT count(*)::int FROM bv_audit.changes('public.tap_t', now() - interval '1 minute', now() + interval '1 minute')), 1,
          'changes() lists the update (not the snapshot)');

-- Refusals and their SQLSTATEs.
CREATE TABLE public.tap_nopk (a int);
CREATE VIEW public.tap_v AS SELECT 1 AS a;
SELECT throws_ok($$SELECT bv_audit.enable('public.tap_nopk')$$, '55000', NULL, 'no primary key: 55000');
SELECT throws_ok($$SELECT bv_audit.enable('public.tap_v')$$, '42809', NULL, 'view: 42809');
SELECT throws_ok($$SELECT bv_audit.enable('public.tap_t', '{nosuch}')$$, '42703', NULL, 'unknown excluded column: 42703');
SELECT throws_ok($$SELECT bv_audit.enable('public.tap_t', '{id}')$$, '22023', NULL, 'excluded key column: 22023');
SELECT throws_ok($$SELECT bv_audit.enable('public.tap_t', history_index => 'hash')$$, '22023', NULL, 'unknown history index: 22023');
SELECT throws_ok($$SELECT bv_audit.disable('public.tap_nopk')$$, '55000', NULL, 'disable() untracked: 55000');
SELECT throws_ok($$SELECT bv_audit.stamp('public.tap_v')$$, '42809', NULL, 'stamp() view: 42809');
SELECT throws_ok($$SELECT * FROM bv_audit.history('public.tap_t', '{"x":1}')$$, '22023', NULL, 'history() bad key: 22023');
SELECT throws_ok($$SELECT * FROM bv_audit.changes('public.tap_t', now(), now() - interval '1 day')$$, '22023', NULL, 'changes() reversed range: 22023');
SELECT throws_ok($$SELECT bv_audit.set_retention('public.tap_t', '-1 day')$$, '22023', NULL, 'negative retention: 22023');
SELECT throws_ok($$SELECT bv_audit.create_partitions(1000)$$, '22023', NULL, 'months_ahead out of range: 22023');
SELECT throws_ok($$UPDATE bv_audit.public__tap_t SET v = 'z'$$, '42501', NULL, 'UPDATE of an audit table: 42501');
SELECT throws_ok($$DELETE FROM bv_audit.public__tap_t$$, '42501', NULL, 'DELETE from an audit table: 42501');
SELECT throws_ok($$TRUNCATE bv_audit.public__tap_t$$, '42501', NULL, 'TRUNCATE of an audit table: 42501');
SELECT throws_ok($$ALTER TABLE public.tap_t ALTER COLUMN v TYPE int USING length(v)$$, '0A000', NULL, 'unsafe type change: 0A000');
SELECT throws_ok($$SELECT bv_audit.capture_trigger()$$, '39P01', NULL, 'trigger functions cannot be called directly: 39P01');

-- Disable keeps the history, and the trigger is gone.
SELECT lives_ok($$SELECT bv_audit.disable('public.tap_t')$$, 'disable()');
SELECT hasnt_trigger('public', 'tap_t', 'bv_audit_capture', 'disable() removes the capture trigger');
SELECT ok((SELECT count(*) FROM bv_audit.public__tap_t) = 2, 'disable() keeps the history');
-- The context is read once per statement: an actor set between two
-- statements of one transaction names the second one, in the record and in
-- the stamp columns alike.
CREATE TABLE public.tap_a (id int PRIMARY KEY, v text);
SELECT lives_ok($$SELECT bv_audit.stamp('public.tap_a'), bv_audit.enable('public.tap_a')$$, 'stamp() and enable() another table');
INSERT INTO public.tap_a VALUES (1, 'a');
SELECT is(bv.set_actor('alice'), 'alice', 'set_actor(alice) in the middle of the transaction');
UPDATE public.tap_a SET v = 'b';
SELECT is(bv.set_actor('bob'), 'bob', 'set_actor(bob) before the next statement');
UPDATE public.tap_a SET v = 'c';
SELECT results_eq($$SELECT operation, actor, row_data->>'updated_by' FROM bv_audit.history('public.tap_a', '{"id":1}')$$,
                  $$VALUES ('I'::text, session_user::text COLLATE "default", session_user::text COLLATE "default"),
                           ('U', 'alice', 'alice'), ('U', 'bob', 'bob')$$,
                  'each statement records the actor current when it ran');

-- audit_id: from bv_audit.next_audit_id(), a block of the sequence at a
-- time (bv_audit is preloaded here); unique and increasing in the order the
-- records were written, whatever path wrote them.
SELECT is((SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d
            JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
           WHERE d.adrelid = 'bv_audit.public__tap_a'::regclass AND a.attname = 'audit_id'),
          'bv_audit.next_audit_id()', 'audit tables take audit_id from next_audit_id()');
SELECT is((SELECT increment_by FROM pg_sequences WHERE schemaname = 'bv_audit' AND sequencename = 'audit_id_seq'),
          1024::bigint, 'the sequence reserves blocks of 1,024 ids');
SELECT ok((SELECT bool_and(next > prev) FROM (SELECT bv_audit.next_audit_id() AS next,
                                                     lag(bv_audit.next_audit_id()) OVER () AS prev
                                                FROM generate_series(1, 3000)) s WHERE prev IS NOT NULL),
          'next_audit_id() increases across blocks');
SELECT ok((SELECT max(bv_audit.next_audit_id()) - min(bv_audit.next_audit_id()) < 3 * 1024
             FROM generate_series(1, 100)),
          'ids of one block are consecutive (served from shared memory, not one nextval() each)');
SELECT is((SELECT count(DISTINCT audit_id) = count(*) AND bool_and(audit_id IS NOT NULL)
             FROM bv_audit.public__tap_a), true, 'every record has its own audit_id');
SELECT is(bv_audit.row_digest(ROW(1, 'a'::text)), bv_audit.row_digest(ROW(1, 'a'::text)), 'row_digest() is deterministic');
SELECT isnt(bv_audit.row_digest(ROW(1, 'a'::text)), bv_audit.row_digest(ROW(1, 'b'::text)), 'row_digest() sees a changed value');

SELECT * FROM finish();
ROLLBACK;
