-- Red-team review: the tracking catalog (bv_audit.tracked, bv_audit.columns)
-- was readable by every role, API roles included: every tracked table of
-- every schema, dropped tables' names, the columns excluded as secrets.
-- Now a role sees the tracking of the tables it owns or holds a privilege
-- on; bv_admin sees all; capture and the capture guard keep working for
-- owners and for writers that hold only a column privilege.
\set SHOW_CONTEXT never

CREATE ROLE rt_owner_a;
CREATE ROLE rt_owner_b;
CREATE ROLE rt_writer;
CREATE SCHEMA rt_a AUTHORIZATION rt_owner_a;
CREATE SCHEMA rt_b AUTHORIZATION rt_owner_b;
GRANT USAGE ON SCHEMA rt_a TO rt_writer;
SET ROLE rt_owner_a;
CREATE TABLE rt_a.payroll (id int PRIMARY KEY, name text, iban text, salary int);
CREATE TABLE rt_a.gone (id int PRIMARY KEY);
GRANT SELECT (id), UPDATE (salary) ON rt_a.payroll TO rt_writer;
RESET ROLE;
SET ROLE rt_owner_b;
CREATE TABLE rt_b.secret_project (id int PRIMARY KEY, codename text);
RESET ROLE;
SELECT bv_audit.enable('rt_a.payroll', '{iban}') IS NOT NULL AS a,
       bv_audit.enable('rt_a.gone') IS NOT NULL AS gone,
       bv_audit.enable('rt_b.secret_project') IS NOT NULL AS b;
INSERT INTO rt_a.payroll VALUES (1, 'ann', 'DE00', 100);
DROP TABLE rt_a.gone;

-- API roles see nothing of tables they have no privilege on.
SET ROLE bv_anon;
SELECT count(*) AS anon_tracked FROM bv_audit.tracked WHERE source_schema IN ('rt_a', 'rt_b');
SELECT count(*) AS anon_columns FROM bv_audit.columns c
 WHERE c.tracked_id IN (SELECT id FROM bv_audit.tracked WHERE source_schema IN ('rt_a', 'rt_b'));
RESET ROLE;
SET ROLE bv_user;
SELECT count(*) AS user_tracked FROM bv_audit.tracked WHERE source_schema IN ('rt_a', 'rt_b');
RESET ROLE;

-- An owner sees its own live tables only (not another owner's, not its
-- dropped one), with their exclusions and column mapping.
SET ROLE rt_owner_b;
SELECT source_schema, source_table, exclude_columns FROM bv_audit.tracked
 WHERE source_schema IN ('rt_a', 'rt_b') ORDER BY 1, 2;
RESET ROLE;
SET ROLE rt_owner_a;
SELECT source_schema, source_table, exclude_columns FROM bv_audit.tracked
 WHERE source_schema IN ('rt_a', 'rt_b') ORDER BY 1, 2;
SELECT count(*) AS owner_a_columns FROM bv_audit.columns;
-- The capture guard still sees the owner's table and refuses to stop capture.
ALTER TABLE rt_a.payroll DISABLE TRIGGER bv_audit_capture;
RESET ROLE;

-- A writer with a column privilege only, in a new session (the capture
-- trigger builds its state as the writer): its update is recorded.
\c -
\set SHOW_CONTEXT never
SET ROLE rt_writer;
UPDATE rt_a.payroll SET salary = 120 WHERE id = 1;
SELECT source_table FROM bv_audit.tracked WHERE source_schema IN ('rt_a', 'rt_b');
RESET ROLE;
-- The owner writes its own tracked table in a new session without USAGE
-- on schema bv (bv_audit found bv.actor() with a lookup that checked it:
-- "permission denied for schema bv").
\c -
\set SHOW_CONTEXT never
SET ROLE rt_owner_a;
INSERT INTO rt_a.payroll VALUES (2, 'bob', 'FR00', 90);
RESET ROLE;
SELECT audit_op, audit_actor, salary, audit_changed FROM bv_audit.rt_a__payroll ORDER BY audit_id;

-- bv_admin sees every row, the dropped table's too.
SET ROLE bv_admin;
SELECT source_schema, source_table, relid IS NULL AS dropped FROM bv_audit.tracked
 WHERE source_schema IN ('rt_a', 'rt_b') ORDER BY 1, 2;
RESET ROLE;

-- Nobody but the extension's functions writes the catalog.
SET ROLE rt_owner_a;
UPDATE bv_audit.tracked SET enabled = false WHERE source_table = 'payroll';
DELETE FROM bv_audit.columns;
RESET ROLE;

SELECT bv_audit.disable('rt_a.payroll'), bv_audit.disable('rt_b.secret_project');
DROP SCHEMA rt_a CASCADE;
DROP SCHEMA rt_b CASCADE;
DROP ROLE rt_owner_a, rt_owner_b, rt_writer;
