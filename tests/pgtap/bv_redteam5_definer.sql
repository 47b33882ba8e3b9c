-- Red-team round 5: who can reach what.
--  1. Every SECURITY DEFINER function of every BitVelocity schema pins
--     search_path to pg_catalog, pg_temp (or an equally closed list that
--     starts with pg_catalog and names no schema a client may create in).
--  2. CDC sinks (whose broker hosts are not checked against an allow-list,
--     ADR 0034) are configured by bv_admin and superusers only: no API role
--     may add, alter or read them, and no function of the REST schema "api"
--     reaches bv_cdc's configuration functions.
BEGIN;
SELECT plan(4);

-- 1. SECURITY DEFINER functions without a closed search_path.
SELECT is(
    (SELECT coalesce(string_agg(p.oid::regprocedure::text || ' ' || coalesce(array_to_string(p.proconfig, ';'), '<no SET>'), E'\n'
                                ORDER BY p.oid::regprocedure::text), '')
       FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE p.prosecdef
        AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'cron', 'public')
        AND n.nspname NOT LIKE 'pg\_%'
        AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c
                         WHERE c ~ '^search_path=(pg_catalog, ?pg_temp|"?pg_catalog"?, ?"?pg_temp"?)$')),
    '', 'every SECURITY DEFINER function sets search_path = pg_catalog, pg_temp');

-- 2. CDC configuration: bv_admin only.
SELECT is(
    (SELECT coalesce(string_agg(r.rolname || ' ' || p.oid::regprocedure::text, E'\n' ORDER BY 1), '')
       FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
      CROSS JOIN (VALUES ('bv_anon'), ('bv_user'), ('bv_service'), ('bv_authenticator')) AS r(rolname)
      WHERE n.nspname = 'bv_cdc'
        AND p.proname IN ('add_sink', 'alter_sink', 'drop_sink', 'add_route', 'drop_route', 'pause', 'resume',
                          'snapshot', 'validate_sink', 'replay_dead_letters')
        AND has_function_privilege(r.rolname, p.oid, 'EXECUTE')),
    '', 'no API role may execute bv_cdc configuration functions');
SELECT is(
    (SELECT coalesce(string_agg(r.rolname || ' ' || c.relname, E'\n' ORDER BY 1), '')
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      CROSS JOIN (VALUES ('bv_anon'), ('bv_user'), ('bv_service'), ('bv_authenticator')) AS r(rolname)
      WHERE n.nspname = 'bv_cdc' AND c.relkind IN ('r', 'v', 'p')
        AND c.relname IN ('sinks', 'routes', 'stats', 'quarantine', 'dead_letter', 'webhook_spool')
        AND has_table_privilege(r.rolname, c.oid, 'SELECT')),
    '', 'no API role may read sink configuration, stats, spool or quarantine');
SELECT is(
    (SELECT coalesce(string_agg(p.oid::regprocedure::text, E'\n'), '')
       FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname = 'api' AND p.prosrc ~* 'bv_cdc\.(add_sink|alter_sink|add_route|validate_sink)'),
    '', 'no function of the REST schema reaches bv_cdc sink configuration');

SELECT * FROM finish();
ROLLBACK;
