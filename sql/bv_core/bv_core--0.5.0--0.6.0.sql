/*
 * bv_core 0.5.0 -> 0.6.0: red-team round 6.
 *
 * pg_cron jobs outliving their extension.  bv_audit, bv_commerce, bv_iot,
 * bv_social and bv_chat schedule maintenance jobs at CREATE EXTENSION
 * (bv_ml per feature view, ml.schedule_materialization()), but pg_cron's
 * jobs are rows of cron.job, not members of the extension: DROP EXTENSION
 * left them scheduled.  Each then failed at every run ("schema ... does not
 * exist", every minute for the every-minute jobs) as the superuser that
 * owns it, filling cron.job_run_details and the server log, and would run
 * whatever function a later owner of a schema of that name defined there.
 *
 * (The extensions' schemas stay: the control files name them, so
 * CREATE EXTENSION makes them outside the extension.)  An sql_drop event
 * trigger of bv_core now unschedules, when a command drops an extension,
 * the jobs of this database that call, by schema-qualified name, a function
 * the same command dropped ("commerce.release_expired_reservations()":
 * every job the suite schedules).  Other jobs are kept.  The trigger runs with
 * its owner's rights (only a superuser or the job's owner may unschedule a
 * job), reads nothing a caller gives, and does nothing when pg_cron is not
 * installed in this database.  Not covered: dropping bv_core itself with
 * CASCADE drops this trigger in the same command (unschedule those jobs by
 * hand: SELECT cron.unschedule(jobid) FROM cron.job ...).
 * tests/tap/bv_redteam6_cron_drop.pl.
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION bv_core UPDATE TO '0.6.0'" to load this file. \quit

/*
 * The functions a pg_cron command calls by schema-qualified name, each as
 * format('%I.%I', schema, name): an identifier (unquoted, folded to lower
 * case, or double-quoted), a dot, another, then "(".
 */
CREATE FUNCTION bv._cron_command_calls(command text)
RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(pg_catalog.array_agg(DISTINCT pg_catalog.format('%I.%I',
               CASE WHEN m[1] IS NOT NULL THEN pg_catalog.replace(m[1], '""', '"') ELSE pg_catalog.lower(m[2]) END,
               CASE WHEN m[3] IS NOT NULL THEN pg_catalog.replace(m[3], '""', '"') ELSE pg_catalog.lower(m[4]) END)), '{}')
      FROM pg_catalog.regexp_matches(command,
               '(?:"((?:[^"]|"")+)"|([A-Za-z_][A-Za-z0-9_$]*))\s*\.\s*(?:"((?:[^"]|"")+)"|([A-Za-z_][A-Za-z0-9_$]*))\s*\(',
               'g') m
$$;
COMMENT ON FUNCTION bv._cron_command_calls(text) IS
'The functions that a pg_cron job''s command calls by schema-qualified name (used to unschedule the jobs of a dropped extension).';

CREATE FUNCTION bv._unschedule_dropped_jobs()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dropped text[];
    job record;
BEGIN
    IF pg_catalog.to_regclass('cron.job') IS NULL THEN
        RETURN;
    END IF;
    -- the functions an extension took with it (its members, and what
    -- CASCADE dropped with them) that no longer exist under that name
    SELECT pg_catalog.array_agg(DISTINCT pg_catalog.format('%I.%I', d.address_names[1], d.address_names[2]))
      INTO dropped
      FROM pg_catalog.pg_event_trigger_dropped_objects() d
     WHERE d.object_type IN ('function', 'procedure')
       AND pg_catalog.cardinality(d.address_names) = 2
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                        WHERE n.nspname = d.address_names[1] AND p.proname = d.address_names[2]);
    IF dropped IS NULL OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger_dropped_objects() d
                                       WHERE d.object_type = 'extension') THEN
        RETURN;
    END IF;
    FOR job IN EXECUTE 'SELECT j.jobid, j.jobname FROM cron.job j
                         WHERE j.database = pg_catalog.current_database()
                           AND bv._cron_command_calls(j.command) && $1
                         ORDER BY j.jobid'
               USING dropped
    LOOP
        EXECUTE 'SELECT cron.unschedule($1::bigint)' USING job.jobid;
        RAISE NOTICE 'unscheduled pg_cron job % (%): it calls a function dropped with its extension',
            job.jobid, pg_catalog.left(coalesce(job.jobname, ''), 64);
    END LOOP;
END
$$;
COMMENT ON FUNCTION bv._unschedule_dropped_jobs() IS
'sql_drop event trigger: unschedules the pg_cron jobs of this database that call a function dropped together with an extension.';
REVOKE ALL ON FUNCTION bv._unschedule_dropped_jobs() FROM PUBLIC;
REVOKE ALL ON FUNCTION bv._cron_command_calls(text) FROM PUBLIC;

CREATE EVENT TRIGGER bv_unschedule_dropped_jobs ON sql_drop
    WHEN TAG IN ('DROP EXTENSION', 'DROP SCHEMA', 'DROP OWNED')
    EXECUTE FUNCTION bv._unschedule_dropped_jobs();
