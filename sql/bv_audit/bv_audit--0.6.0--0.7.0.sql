/*
 * bv_audit 0.6.0 -> 0.7.0, section "red-team round 6b hardening"
 * (findings 2, 7, 5 of tests/tap/bv_redteam6b_audit_*.pl; findings 1 and
 * 10 are fixed in C).  Self-contained: it creates only objects of its own.
 *
 * Finding 2: a WAL-mode table keeps its primary key.  Without one,
 *   REPLICA IDENTITY DEFAULT logs no old key: deletes and key changes were
 *   silently not recorded.  A command that leaves a table in WAL mode
 *   without a primary key (ALTER TABLE ... DROP CONSTRAINT, DROP COLUMN,
 *   DROP INDEX ... CASCADE) is refused for every role (55000); dropping and
 *   adding the key in one ALTER TABLE command stays possible.  Trigger mode
 *   is unchanged: it refuses writes until a key is added again.
 *
 * Finding 7: in WAL mode the worker records a transaction by the mode the
 *   table has at the transaction's commit (its window [wal_lsn, wal_until)
 *   is compared with the commit LSN), and trigger mode records a write when
 *   it happens.  So a transaction that has written a table cannot then
 *   move the table into or out of WAL mode (enable(..., mode => 'wal') of
 *   a table not in it, a switch to trigger mode, disable() of a WAL-mode
 *   table, enable() again after disable() in WAL mode): 55000.  Writes
 *   after such a call in the same transaction are recorded the new way,
 *   exactly once.
 */

-- ===========================================================================
-- Finding 2: the primary key of a WAL-mode table cannot be dropped.
-- ===========================================================================
CREATE FUNCTION bv_audit._guard_wal_key()
RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bad regclass;
BEGIN
    -- Few tables are in WAL mode: check them all (the command may have
    -- reached one through a parent, a cascade or an index).
    SELECT c.oid::regclass INTO bad
      FROM bv_audit.tracked t
      JOIN pg_catalog.pg_class c ON c.oid = t.relid
     WHERE t.enabled AND t.wal_lsn IS NOT NULL AND t.wal_until IS NULL
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
     LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'table "%" is recorded from the WAL and must keep a primary key', bad
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Without a primary key its deletes and key changes log no old key, and bv_audit could not record them.',
                  HINT = format('Drop and add the key in one command (ALTER TABLE %s DROP CONSTRAINT ..., ADD PRIMARY KEY (...)), or disable auditing first: bv_audit.disable(%L), or switch the table to trigger mode.', bad, bad::text);
    END IF;
END
$$;
COMMENT ON FUNCTION bv_audit._guard_wal_key() IS
'Event trigger function: refuses a command that leaves a table in WAL mode without a primary key (its deletes and key changes would go unrecorded).';
REVOKE ALL ON FUNCTION bv_audit._guard_wal_key() FROM PUBLIC;

CREATE EVENT TRIGGER bv_audit_guard_wal_key ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'DROP INDEX')
    EXECUTE FUNCTION bv_audit._guard_wal_key();
CREATE EVENT TRIGGER bv_audit_guard_wal_key_drop ON sql_drop
    WHEN TAG IN ('ALTER TABLE', 'DROP INDEX')
    EXECUTE FUNCTION bv_audit._guard_wal_key();

-- ===========================================================================
-- Finding 7: no switch into or out of WAL mode after a write of the table
-- in the same transaction.
-- ===========================================================================
CREATE FUNCTION bv_audit._guard_window()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.relid IS NULL
       OR (NEW.wal_lsn IS NOT DISTINCT FROM OLD.wal_lsn AND NEW.wal_until IS NOT DISTINCT FROM OLD.wal_until) THEN
        RETURN NEW;
    END IF;
    -- INSERT, UPDATE, DELETE, MERGE and COPY FROM hold this lock on the
    -- table to the end of the transaction (or of a rolled-back savepoint).
    IF EXISTS (SELECT FROM pg_catalog.pg_locks l
                WHERE l.locktype = 'relation' AND l.pid = pg_catalog.pg_backend_pid()
                  AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d
                                     WHERE d.datname = pg_catalog.current_database())
                  AND l.relation = NEW.relid AND l.mode = 'RowExclusiveLock' AND l.granted) THEN
        RAISE EXCEPTION 'table "%" was written earlier in this transaction', NEW.relid::regclass
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = CASE WHEN NEW.wal_until IS NULL
                                THEN 'The WAL worker records the whole transaction once it commits, so the writes made before this call would be recorded twice or as changes of an untracked table.'
                                ELSE 'The WAL worker skips the whole transaction once the table leaves WAL mode in it, so the writes made before this call would not be recorded.' END,
                  HINT = 'Call bv_audit.enable() or bv_audit.disable() before the transaction writes the table, best in a transaction of its own.';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION bv_audit._guard_window() IS
'Trigger function on bv_audit.tracked: refuses moving a table into or out of WAL mode in a transaction that has written it.';
REVOKE ALL ON FUNCTION bv_audit._guard_window() FROM PUBLIC;

CREATE TRIGGER bv_audit_guard_window BEFORE UPDATE OF wal_lsn, wal_until ON bv_audit.tracked
    FOR EACH ROW EXECUTE FUNCTION bv_audit._guard_window();

-- ===========================================================================
-- Finding 10: a column that stops being excluded from a WAL-mode table is
-- recorded at once.  An UPDATE that leaves a TOASTed value unchanged does
-- not log it, and the worker takes it from the row's last record, which
-- (written while the column was excluded) has none: the record and as_of()
-- said NULL.  Now the commit of the enable() that ends the exclusion
-- records every row with a value in such a column as a U naming it (as
-- ADD COLUMN ... DEFAULT is recorded); trigger mode records it at the next
-- UPDATE, as before.  Before the exclusions change, the worker records what
-- was committed so far (the table's writers wait for enable() already), so
-- these records follow every earlier one of the table.
-- ===========================================================================
CREATE FUNCTION bv_audit._wal_reinclude_drain()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.relid IS NOT NULL AND OLD.wal_lsn IS NOT NULL AND OLD.wal_until IS NULL
       AND EXISTS (SELECT FROM unnest(OLD.exclude_attnums) AS x(attnum)
                    WHERE x.attnum <> ALL (NEW.exclude_attnums)) THEN
        PERFORM bv_audit._wal_drain('the end of a column''s exclusion');
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION bv_audit._wal_reinclude_drain() IS
'Trigger function on bv_audit.tracked: before a WAL-mode table''s exclusions shrink, waits until the WAL worker has recorded what was committed so far.';
REVOKE ALL ON FUNCTION bv_audit._wal_reinclude_drain() FROM PUBLIC;

CREATE TRIGGER bv_audit_reinclude_drain BEFORE UPDATE OF exclude_attnums ON bv_audit.tracked
    FOR EACH ROW EXECUTE FUNCTION bv_audit._wal_reinclude_drain();

-- At commit (deferred), when the audit table has its columns again.
-- SECURITY DEFINER: the commit runs as the caller of enable() (bv_admin),
-- who may neither read the table nor write its audit table; only enable()
-- can change bv_audit.tracked.
CREATE FUNCTION bv_audit._wal_reinclude()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t bv_audit.tracked;
    back smallint[];
BEGIN
    SELECT * INTO t FROM bv_audit.tracked tr WHERE tr.id = NEW.id;
    IF NOT FOUND OR t.relid IS NULL OR NOT t.enabled OR t.wal_lsn IS NULL OR t.wal_until IS NOT NULL THEN
        RETURN NULL;
    END IF;
    SELECT array_agg(c.src_attnum ORDER BY c.src_attnum) INTO back
      FROM bv_audit.columns c
     WHERE c.tracked_id = t.id AND c.src_attnum = ANY (OLD.exclude_attnums)
       AND c.src_attnum <> ALL (t.exclude_attnums);
    IF back IS NOT NULL THEN
        PERFORM bv_audit._record_rows(t, back, true);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION bv_audit._wal_reinclude() IS
'Deferred trigger function on bv_audit.tracked: at the commit of enable() that ends a WAL-mode table''s exclusion of columns, records every row with a value in them (the WAL does not carry unchanged TOASTed values).';
REVOKE ALL ON FUNCTION bv_audit._wal_reinclude() FROM PUBLIC;

CREATE CONSTRAINT TRIGGER bv_audit_reinclude AFTER UPDATE OF exclude_attnums ON bv_audit.tracked
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (OLD.exclude_attnums IS DISTINCT FROM NEW.exclude_attnums)
    EXECUTE FUNCTION bv_audit._wal_reinclude();
