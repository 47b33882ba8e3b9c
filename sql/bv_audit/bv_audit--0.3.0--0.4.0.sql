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
