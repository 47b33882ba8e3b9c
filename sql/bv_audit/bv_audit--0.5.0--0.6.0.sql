-- bv_audit 0.5.0 -> 0.6.0
\echo Use "ALTER EXTENSION bv_audit UPDATE TO '0.6.0'" to load this file. \quit

-- ===========================================================================
-- #19 WAL mode: enable(..., mode => 'wal') waits until the worker's slot is
-- consistent, not merely visible (ADR 0013, "The loss race").
-- ===========================================================================

-- Internal: a running-transactions record now (see wal_context.c).  A slot
-- being created reaches its consistent point only at such records.
CREATE FUNCTION bv_audit._wal_log_running_xacts()
RETURNS pg_lsn
AS 'MODULE_PATHNAME', 'bv_audit_wal_log_running_xacts'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION bv_audit._wal_log_running_xacts() IS
'Internal: logs a running-transactions record and returns its position, so that a replication slot being created reaches its consistent point without waiting for the bgwriter.';
REVOKE ALL ON FUNCTION bv_audit._wal_log_running_xacts() FROM PUBLIC;

-- Whether a table can be recorded from the WAL, and the worker's slot ready
-- to decode every transaction that commits from now on.
--
-- The slot is ready when it has a confirmed position: a slot appears in
-- pg_replication_slots as soon as its creation starts, but decodes only the
-- transactions that commit after its consistent point, which it reaches
-- once every transaction running when its creation started has ended.
-- 0.5.0 waited only for the slot to appear: a table enabled meanwhile had
-- its first changes committed before that point, never decoded, and
-- wait_for() (the slot's confirmed position) then said they were recorded.
--
-- While this waits it holds the lock that the worker takes before it drops
-- an unused slot (WAL mode off, no table in it), so the slot cannot vanish
-- between this check and the commit of enable().
CREATE OR REPLACE FUNCTION bv_audit._wal_check(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
    slot_ready boolean;
    i integer;
BEGIN
    SELECT x.relpersistence, x.relreplident INTO c FROM pg_catalog.pg_class x WHERE x.oid = tbl;
    IF c.relpersistence <> 'p' THEN
        RAISE EXCEPTION 'table "%" is not logged', tbl
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'WAL mode reads changes from the WAL, which has none of an unlogged table.',
                  HINT = format('Use trigger mode (bv_audit.enable(%L, mode => ''trigger'')), or ALTER TABLE %s SET LOGGED.', tbl::text, tbl);
    END IF;
    IF c.relreplident NOT IN ('d', 'f') THEN
        RAISE EXCEPTION 'table "%" does not log its primary key with deletes', tbl
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'WAL mode finds the row of a DELETE by the primary key its WAL record carries (REPLICA IDENTITY DEFAULT or FULL).',
                  HINT = format('ALTER TABLE %s REPLICA IDENTITY DEFAULT, or use trigger mode.', tbl);
    END IF;
    IF c.relreplident = 'd' AND EXISTS (SELECT FROM pg_catalog.pg_index i
                                         WHERE i.indrelid = tbl AND i.indisprimary AND NOT i.indimmediate) THEN
        RAISE EXCEPTION 'the primary key of table "%" is deferrable', tbl
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'A deferrable key cannot be the replica identity: deletes and key changes would not log the old key, which WAL mode follows rows by.',
                  HINT = format('ALTER TABLE %s REPLICA IDENTITY FULL, or use trigger mode.', tbl);
    END IF;
    IF current_setting('wal_level') <> 'logical' THEN
        RAISE EXCEPTION 'WAL mode needs wal_level = logical'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Set wal_level = logical (BitVelocity clusters do) and restart, or use trigger mode.';
    END IF;
    IF current_database() IS DISTINCT FROM current_setting('bv_audit.database', true) THEN
        RAISE EXCEPTION 'WAL mode records tables of database "%" only', left(coalesce(current_setting('bv_audit.database', true), ''), 63)
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'The bv_audit WAL worker decodes one database, bv_audit.database (bv_audit must be preloaded).',
                  HINT = 'Use trigger mode in this database, or set bv_audit.database and restart.';
    END IF;
    -- The worker drops its slot only under this lock (exclusive, try-only).
    PERFORM pg_catalog.pg_advisory_xact_lock_shared(1652125, 19);
    IF NOT EXISTS (SELECT FROM bv_audit.tracked t WHERE t.wal_lsn IS NOT NULL AND t.wal_until IS NULL)
       AND current_setting('bv_audit.wal_mode', true) IS DISTINCT FROM 'on'
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_replication_slots s
                        WHERE s.slot_name = 'bv_audit_wal' AND s.database = current_database()) THEN
        RAISE EXCEPTION 'WAL mode is off in this cluster'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'bv_audit.wal_mode is off: the bv_audit WAL worker keeps no replication slot.',
                  HINT = 'Set bv_audit.wal_mode = on in postgresql.conf and reload (the worker then keeps a slot that decodes all of this database''s WAL), or use trigger mode.';
    END IF;
    -- The worker creates its slot when WAL mode is on; a table must not
    -- switch before the slot is consistent (see above).
    FOR i IN 1..200 LOOP
        SELECT s.confirmed_flush_lsn IS NOT NULL INTO slot_ready
          FROM pg_catalog.pg_replication_slots s
         WHERE s.slot_name = 'bv_audit_wal' AND s.database = current_database();
        EXIT WHEN slot_ready;
        IF slot_ready IS NOT NULL AND pg_catalog.pg_current_xact_id_if_assigned() IS NOT NULL THEN
            -- The slot waits for every transaction older than it, this one too.
            RAISE EXCEPTION 'the bv_audit WAL worker''s replication slot waits for this transaction to end'
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = 'The slot bv_audit_wal is being created; it is ready once the transactions that were running when its creation started have ended, and this transaction has written already.',
                      HINT = 'Call bv_audit.enable(..., mode => ''wal'') in a transaction that has not written yet, or commit and try again.';
        END IF;
        IF i = 200 THEN
            RAISE EXCEPTION 'the bv_audit WAL worker has no replication slot ready yet'
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = CASE WHEN slot_ready IS NULL
                                    THEN 'It creates the slot bv_audit_wal when WAL mode is on; it is not running or cannot create it.'
                                    ELSE 'The slot bv_audit_wal is being created and waits for transactions that started before it to end.' END,
                      HINT = 'Check bv_audit.wal_status(), pg_stat_activity (long transactions) and the server log (max_replication_slots), then try again.';
        END IF;
        IF slot_ready IS NOT NULL THEN
            PERFORM bv_audit._wal_log_running_xacts();
        END IF;
        PERFORM pg_catalog.pg_sleep(0.05);
    END LOOP;
END
$$;
COMMENT ON FUNCTION bv_audit._wal_check(regclass) IS
'Internal: refuses a table that WAL mode cannot record (unlogged, deletes not logging the primary key, wal_level below logical) and waits until the WAL worker''s slot decodes every transaction that commits from now on.';
REVOKE ALL ON FUNCTION bv_audit._wal_check(regclass) FROM PUBLIC;

-- ===========================================================================
-- stamp() of a partition whose columns are missing: a clear refusal with a
-- hint, instead of ALTER TABLE's "cannot add column to a partition".
-- ===========================================================================
CREATE OR REPLACE FUNCTION bv_audit.stamp(tbl regclass)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    kind "char";
    col record;
    missing text;
    parent text;
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'table must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the table to stamp, e.g. ''public.invoice''.';
    END IF;
    SELECT c.relkind INTO kind FROM pg_catalog.pg_class c WHERE c.oid = tbl;
    IF kind IS NULL THEN
        RAISE EXCEPTION 'relation with OID % does not exist', tbl::oid
            USING ERRCODE = 'undefined_table',
                  HINT = 'Pass an existing table.';
    END IF;
    IF kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '"%" is not a table', tbl
            USING ERRCODE = 'wrong_object_type',
                  DETAIL = 'Audit columns are filled by a row trigger, which only tables have.',
                  HINT = 'Call bv_audit.stamp() on the underlying table.';
    END IF;
    -- A partition takes its columns from its parent: the missing ones are
    -- added there (and reach every partition), not here.
    SELECT string_agg(format('%I', v.name), ', ' ORDER BY v.ord), max(pi.inhparent::regclass::text)
      INTO missing, parent
      FROM (VALUES (1, 'created_by'), (2, 'created_at'), (3, 'updated_by'), (4, 'updated_at')) AS v(ord, name)
      JOIN pg_catalog.pg_class c ON c.oid = tbl AND c.relispartition
      JOIN pg_catalog.pg_inherits pi ON pi.inhrelid = tbl
     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                        WHERE a.attrelid = tbl AND a.attname = v.name AND NOT a.attisdropped);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'table % is a partition of %, which lacks the audit columns %', tbl, parent, missing
            USING ERRCODE = 'wrong_object_type',
                  DETAIL = 'A partition has exactly the columns of its partitioned table: bv_audit.stamp() cannot add them to the partition alone.',
                  HINT = format('Call bv_audit.stamp(%L) on the partitioned table (its trigger reaches every partition), or add the columns to it first.', parent);
    END IF;
    FOR col IN
        SELECT * FROM (VALUES ('created_by', 'pg_catalog.text'::regtype),
                              ('created_at', 'pg_catalog.timestamptz'::regtype),
                              ('updated_by', 'pg_catalog.text'::regtype),
                              ('updated_at', 'pg_catalog.timestamptz'::regtype)) AS v(name, typ)
    LOOP
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                    WHERE a.attrelid = tbl AND a.attname = col.name AND NOT a.attisdropped
                      AND a.atttypid <> col.typ) THEN
            RAISE EXCEPTION 'column "%" of table % is not of type %', col.name, tbl, col.typ
                USING ERRCODE = 'datatype_mismatch',
                      DETAIL = 'bv_audit.stamp() fills created_by/updated_by with text and created_at/updated_at with timestamptz.',
                      HINT = 'Rename or convert the existing column, then call bv_audit.stamp() again.';
        END IF;
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                    WHERE a.attrelid = tbl AND a.attname = col.name AND NOT a.attisdropped) THEN
            CONTINUE;
        END IF;
        EXECUTE format('ALTER TABLE %s ADD COLUMN %I %s', tbl, col.name, col.typ);
        EXECUTE format('COMMENT ON COLUMN %s.%I IS %L', tbl, col.name,
                       CASE col.name
                           WHEN 'created_by' THEN 'Actor (bv.actor()) who inserted the row; set by bv_audit, cannot be changed.'
                           WHEN 'created_at' THEN 'Transaction time of the insert; set by bv_audit, cannot be changed.'
                           WHEN 'updated_by' THEN 'Actor (bv.actor()) of the last insert or update; set by bv_audit.'
                           ELSE 'Transaction time of the last insert or update; set by bv_audit.' END);
    END LOOP;
    -- A partition of a stamped table has the parent's trigger already.
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_trigger tg
                    WHERE tg.tgrelid = tbl AND tg.tgname = 'bv_audit_stamp' AND tg.tgparentid <> 0) THEN
        EXECUTE format('CREATE OR REPLACE TRIGGER bv_audit_stamp BEFORE INSERT OR UPDATE ON %s '
                       'FOR EACH ROW EXECUTE FUNCTION bv_audit.stamp_trigger()', tbl);
    END IF;
END
$$;


-- ===========================================================================
-- #19 lag: wait_for() polls every 5 ms at most (was 20 ms), now that the
-- worker is woken at each commit of a WAL-mode write.
-- ===========================================================================
CREATE OR REPLACE FUNCTION bv_audit.wait_for(lsn pg_lsn, timeout interval DEFAULT interval '30 seconds')
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    deadline timestamptz;
    pause double precision := 0.001;
BEGIN
    IF lsn IS NULL OR timeout IS NULL THEN
        RAISE EXCEPTION 'lsn and timeout must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass a WAL position, e.g. bv_audit.wait_for(pg_current_wal_insert_lsn()).';
    END IF;
    IF timeout < interval '0' OR timeout > interval '1 day' THEN
        RAISE EXCEPTION 'timeout must lie between 0 and 1 day'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It was %s.', timeout),
                  HINT = 'Pass e.g. interval ''30 seconds''.';
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'bv_audit.wait_for() must run in a read committed transaction'
            USING ERRCODE = 'invalid_transaction_state',
                  DETAIL = 'Its snapshot would never see the worker''s progress.',
                  HINT = 'Call it in a transaction of its own (read committed, the default).';
    END IF;
    deadline := clock_timestamp() + timeout;
    LOOP
        IF bv_audit._wal_applied() >= lsn THEN
            RETURN true;
        END IF;
        IF clock_timestamp() >= deadline THEN
            RETURN false;
        END IF;
        PERFORM pg_catalog.pg_sleep(pause);
        pause := least(pause * 2, 0.005);
    END LOOP;
END
$$;
COMMENT ON FUNCTION bv_audit.wait_for(pg_lsn, interval) IS
'Waits until the history of WAL-mode tables covers every transaction whose commit record starts before lsn (e.g. pg_current_wal_insert_lsn() after a commit); true when it does, false after the timeout. Trigger-mode tables need no wait: their records commit with the change.';
