/*
 * bv_audit 0.3.0 -> 0.4.0.
 *
 * A fresh install of 0.4.0 runs bv_audit--0.1.0.sql and the upgrade
 * scripts in order.  Each block below is delimited and names what it fixes.
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION bv_audit UPDATE TO '0.4.0'" to load this file. \quit

------------------------------------------------------------------------
-- BEGIN red-team block: who can read the tracking catalog
--
-- bv_audit.tracked and bv_audit.columns were readable by every role (API
-- roles included): any login could list every tracked table of every
-- schema, the names of tables dropped long ago (kept after DROP TABLE),
-- which columns were excluded as secrets, retention periods and the audit
-- table names.  Now a role sees the rows of the tables it owns (is a
-- member of the owner) or holds a privilege on, and bv_admin sees all.
--
-- Row-level security, not a revoke: two readers run as the caller.  The
-- capture trigger builds its per-table state as the writer (who has a
-- privilege on the table it writes, possibly on a column only), and the
-- capture guard (an event trigger) runs as the role whose ALTER TABLE it
-- judges (the owner).  Both keep seeing their table's row; superusers
-- and the SECURITY DEFINER functions (owned by the extension's owner)
-- bypass the policies.
------------------------------------------------------------------------

ALTER TABLE bv_audit.tracked ENABLE ROW LEVEL SECURITY;
ALTER TABLE bv_audit.columns ENABLE ROW LEVEL SECURITY;

CREATE POLICY tracked_visible ON bv_audit.tracked FOR SELECT TO PUBLIC
USING (
    pg_catalog.pg_has_role('bv_admin', 'USAGE')
    OR EXISTS (
        SELECT 1 FROM pg_catalog.pg_class c
         WHERE c.oid = relid
           AND (pg_catalog.pg_has_role(c.relowner, 'MEMBER')
                OR pg_catalog.has_any_column_privilege(c.oid, 'SELECT, INSERT, UPDATE, REFERENCES')
                OR pg_catalog.has_table_privilege(c.oid, 'DELETE, TRUNCATE, TRIGGER'))));

CREATE POLICY columns_visible ON bv_audit.columns FOR SELECT TO PUBLIC
USING (EXISTS (SELECT 1 FROM bv_audit.tracked t WHERE t.id = tracked_id));

COMMENT ON POLICY tracked_visible ON bv_audit.tracked IS
'A role sees the tracking of the tables it owns or holds a privilege on; bv_admin sees all (dropped tables included).';
COMMENT ON POLICY columns_visible ON bv_audit.columns IS
'The column mapping of the tracked tables the role can see in bv_audit.tracked.';

-- END red-team block
------------------------------------------------------------------------

------------------------------------------------------------------------
-- BEGIN red-team block: purge() removes sealed records only
--
-- purge() removed every record older than the retention, sealed or not:
-- with a retention shorter than the time to the next seal (bv_admin may
-- set one: set_retention('t', '1 second')), or while the seal job was not
-- running, records were deleted without any seal ever covering them, so
-- the chain never attested them (a bv_admin could change a row and erase
-- the record of it before the next seal).  Now the cut-off stops at the
-- oldest record that is not sealed yet, with a WARNING.
------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION bv_audit.purge()
RETURNS TABLE (audit_table name, dropped_partitions integer, deleted_rows bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t bv_audit.tracked;
    cutoff timestamptz;
    part record;
    dropped integer;
    deleted bigint;
    removed bigint;
    trimmed integer[];
    bad integer;
    unsealed timestamptz;
BEGIN
    -- After waiting for a seal, the purge must see what it committed (the
    -- entries it must remove, the link it must follow).
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'bv_audit.purge() must run in a read committed transaction'
            USING ERRCODE = 'invalid_transaction_state',
                  DETAIL = format('This transaction is %s: it would not see a seal that committed while it waited, and could leave seal entries without their records.',
                                  current_setting('transaction_isolation')),
                  HINT = 'Call bv_audit.purge() in a transaction of its own (read committed, the default).';
    END IF;
    -- One purge at a time; writers are not blocked (DROP of an old partition
    -- takes its lock only, and writers only write the current month's).
    PERFORM pg_advisory_xact_lock(hashtext('bv_audit.purge'));
    -- Purges and seals both append to the chains: one at a time.
    PERFORM pg_advisory_xact_lock(hashtext('bv_audit.seal'));
    FOR t IN SELECT * FROM bv_audit.tracked tr
              WHERE tr.retention IS NOT NULL
                AND to_regclass(format('bv_audit.%I', tr.audit_table)) IS NOT NULL
              ORDER BY tr.id LOOP
        -- A retention longer than the calendar (set before set_retention()
        -- refused it, or through enable()): nothing is old enough.
        IF t.retention > now() - '4713-01-01 00:00+00 BC'::timestamptz THEN
            CONTINUE;
        END IF;
        cutoff := now() - t.retention;
        -- Only sealed records are removed (red-team review): a record that
        -- no seal covers yet (the seal job stopped, or a retention shorter
        -- than the time to the next seal) would vanish without ever having
        -- been attested by the chain.  The cut-off stops at the oldest one.
        EXECUTE format('SELECT min(a.audit_ts) FROM bv_audit.%I a '
                       ' WHERE a.audit_ts < $1 AND NOT EXISTS (SELECT 1 FROM bv_audit.seal_entries e '
                       '                                        WHERE e.tracked_id = $2 AND e.audit_id = a.audit_id)',
                       t.audit_table) INTO unsealed USING cutoff, t.id;
        IF unsealed IS NOT NULL THEN
            RAISE WARNING 'audit table "%" keeps records older than its retention that are not sealed yet', t.audit_table
                USING DETAIL = pg_catalog.format('Records from %s on are kept until bv_audit.seal() covers them.', unsealed),
                      HINT = 'Check that the bv_audit-seal job runs; purge() removes them once they are sealed.';
            cutoff := unsealed;
        END IF;
        dropped := 0;
        deleted := 0;
        -- The seals that lose entries must check out first: a purge
        -- re-attests what it leaves of them, and must not launder a
        -- deletion made before it.
        SELECT array_agg(DISTINCT e.seal_no) INTO trimmed
          FROM bv_audit.seal_entries e WHERE e.tracked_id = t.id AND e.audit_ts < cutoff;
        IF trimmed IS NOT NULL THEN
            bad := bv_audit._seal_entries_mismatch(t.id, trimmed);
            IF bad IS NOT NULL THEN
                RAISE WARNING 'audit table "%" was not purged: seal % does not match its entries', t.audit_table, bad
                    USING ERRCODE = 'data_corrupted',
                          DETAIL = 'Purging would remove the evidence of records altered or deleted after they were sealed.',
                          HINT = 'Run bv_audit.verify() on the table and investigate; purge() leaves it alone until its seals check out.';
                CONTINUE;
            END IF;
        END IF;
        FOR part IN
            SELECT c.oid, c.relname,
                   to_date(substring(c.relname FROM '_p([0-9]{6})$'), 'YYYYMM') AS month
              FROM pg_catalog.pg_inherits i
              JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = t.audit_relid
        LOOP
            IF part.month IS NOT NULL
               AND ((part.month + interval '1 month')::timestamp AT TIME ZONE 'UTC') <= cutoff THEN
                EXECUTE format('DROP TABLE bv_audit.%I', part.relname);
                dropped := dropped + 1;
            ELSIF part.month IS NULL
                  OR (part.month::timestamp AT TIME ZONE 'UTC') < cutoff THEN
                -- The partition straddling the cut-off, and the default one.
                deleted := deleted + bv_audit._purge_delete(part.oid, cutoff);
            END IF;
        END LOOP;
        DELETE FROM bv_audit.seal_entries e WHERE e.tracked_id = t.id AND e.audit_ts < cutoff;
        GET DIAGNOSTICS removed = ROW_COUNT;
        -- The boundary: a link saying what was removed and re-attesting
        -- what is left of each trimmed seal.
        IF removed > 0 OR deleted > 0 OR dropped > 0 THEN
            PERFORM bv_audit._purge_link(t.id, cutoff, removed, coalesce(trimmed, '{}'));
        END IF;
        UPDATE bv_audit.tracked tr SET purged_before = cutoff WHERE tr.id = t.id;
        audit_table := t.audit_table;
        dropped_partitions := dropped;
        deleted_rows := deleted;
        RETURN NEXT;
    END LOOP;
END
$$;

COMMENT ON FUNCTION bv_audit.purge() IS
'Removes audit records older than each table''s retention that a seal covers: drops whole expired partitions and trims the one straddling the cut-off, then appends a purge link to the table''s seal chain that re-attests what is left of each trimmed seal. Records not sealed yet are kept (a WARNING says so) until bv_audit.seal() covers them. Skips (with a WARNING) a table whose trimmed seals no longer match their entries. The only way audit records are ever deleted; scheduled daily through pg_cron.';

-- END red-team block
------------------------------------------------------------------------

------------------------------------------------------------------------
-- BEGIN red-team block: stamp columns cannot be rewritten by DDL
--
-- The stamp trigger makes created_* unforgeable for writers, and the
-- capture guard stops a table's owner from disabling it; but the owner
-- (not a superuser) could still rewrite every stamp with
-- ALTER TABLE t ALTER COLUMN created_by TYPE text USING 'anyone': a table
-- rewrite fires no row trigger.  This guard refuses a type change with
-- USING of a stamp column of a stamped table unless the session's role is
-- a superuser.  It is SECURITY DEFINER (bv_audit._rewritten_columns() is
-- not executable by PUBLIC) and judges the issuer by is_superuser, which
-- follows SET ROLE and SET SESSION AUTHORIZATION, not SECURITY DEFINER
-- (bv_audit's own functions never change a stamp column's type).
------------------------------------------------------------------------

CREATE FUNCTION bv_audit._guard_stamp_rewrite()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    col name;
BEGIN
    IF pg_catalog.current_setting('is_superuser') = 'on' THEN
        RETURN;
    END IF;
    FOR r IN SELECT c.objid, c.command FROM pg_catalog.pg_event_trigger_ddl_commands() c
              WHERE c.command_tag = 'ALTER TABLE' AND c.object_type = 'table'
                AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger tg
                             WHERE tg.tgrelid = c.objid AND tg.tgname = 'bv_audit_stamp') LOOP
        SELECT a.attname INTO col
          FROM pg_catalog.unnest(bv_audit._rewritten_columns(r.command)) AS x(attnum)
          JOIN pg_catalog.pg_attribute a ON a.attrelid = r.objid AND a.attnum = x.attnum
         WHERE a.attname IN ('created_by', 'created_at', 'updated_by', 'updated_at')
         LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'only a superuser can rewrite the stamp column % of %', col, r.objid::regclass
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = 'ALTER COLUMN ... TYPE ... USING would replace the values the stamp trigger wrote, and no row trigger fires during a table rewrite.',
                      HINT = 'Stamp columns record who created and changed each row; leave them to the stamp trigger.';
        END IF;
    END LOOP;
END
$$;

COMMENT ON FUNCTION bv_audit._guard_stamp_rewrite() IS
'Internal: event trigger that refuses a non-superuser''s ALTER COLUMN ... TYPE ... USING of a stamp column (created_by, created_at, updated_by, updated_at) of a stamped table.';
REVOKE ALL ON FUNCTION bv_audit._guard_stamp_rewrite() FROM PUBLIC;

CREATE EVENT TRIGGER bv_audit_guard_stamp ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION bv_audit._guard_stamp_rewrite();

-- END red-team block
------------------------------------------------------------------------
