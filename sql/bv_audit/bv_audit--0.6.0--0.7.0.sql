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

