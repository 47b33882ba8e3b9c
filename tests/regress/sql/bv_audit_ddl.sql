-- Schema changes of tracked tables never lose history.
\set SHOW_CONTEXT never

CREATE TABLE public.emp (id int PRIMARY KEY, name text, salary int, dept varchar(10), code varchar(5));
INSERT INTO public.emp VALUES (1, 'ann', 100, 'ops', 'A1');
SELECT bv_audit.enable('public.emp') IS NOT NULL AS enabled;

-- ADD COLUMN is mirrored, and recorded from then on.
ALTER TABLE public.emp ADD COLUMN email text;
UPDATE public.emp SET email = 'ann@example.com' WHERE id = 1;
SELECT audit_op, audit_changed, email FROM bv_audit.public__emp ORDER BY audit_id;

-- RENAME COLUMN is mirrored: the audit column keeps its history under the new name.
ALTER TABLE public.emp RENAME COLUMN name TO full_name;
UPDATE public.emp SET full_name = 'Ann' WHERE id = 1;
SELECT audit_op, full_name FROM bv_audit.public__emp ORDER BY audit_id;
SELECT src_attnum, audit_column FROM bv_audit.columns c JOIN bv_audit.tracked t ON t.id = c.tracked_id
 WHERE t.relid = 'public.emp'::regclass ORDER BY src_attnum;

-- DROP COLUMN keeps the audit column and its values.
ALTER TABLE public.emp DROP COLUMN dept;
UPDATE public.emp SET salary = 110 WHERE id = 1;
SELECT audit_op, salary, dept FROM bv_audit.public__emp ORDER BY audit_id;
-- A new column with a dropped one's name gets its own audit column under
-- that name; the dropped one's audit column moves to <name>_dropped<attnum>
-- with its history (#18 item 3).
ALTER TABLE public.emp ADD COLUMN dept text;
UPDATE public.emp SET dept = 'dev' WHERE id = 1;
SELECT audit_op, dept, dept_dropped4 FROM bv_audit.public__emp ORDER BY audit_id DESC LIMIT 3;

-- Safe type changes are followed...
ALTER TABLE public.emp ALTER COLUMN salary TYPE bigint;
ALTER TABLE public.emp ALTER COLUMN email TYPE varchar;
ALTER TABLE public.emp ALTER COLUMN code TYPE varchar(20);
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
 WHERE attrelid = 'bv_audit.public__emp'::regclass AND attname IN ('salary', 'email', 'code') ORDER BY attname;
UPDATE public.emp SET salary = 3000000000 WHERE id = 1;
SELECT salary FROM bv_audit.public__emp ORDER BY audit_id DESC LIMIT 1;
-- ...unsafe ones are refused, and the table is left as it was.
UPDATE public.emp SET salary = 130 WHERE id = 1;
ALTER TABLE public.emp ALTER COLUMN salary TYPE int;
ALTER TABLE public.emp ALTER COLUMN code TYPE varchar(3);
ALTER TABLE public.emp ALTER COLUMN email TYPE char(40);
ALTER TABLE public.emp ALTER COLUMN full_name TYPE int USING length(full_name);
SELECT format_type(atttypid, atttypmod) FROM pg_attribute
 WHERE attrelid = 'public.emp'::regclass AND attname = 'salary';

-- Renaming the table keeps the tracking.
ALTER TABLE public.emp RENAME TO staff;
UPDATE public.staff SET salary = 120 WHERE id = 1;
SELECT source_schema, source_table, enabled FROM bv_audit.tracked WHERE relid = 'public.staff'::regclass;
SELECT audit_op, salary FROM bv_audit.public__emp ORDER BY audit_id DESC LIMIT 1;

-- DROP TABLE keeps the audit table and marks the tracking dropped.
DROP TABLE public.staff;
SELECT relid IS NULL AS relid_cleared, enabled, dropped_at IS NOT NULL AS dropped, source_table
  FROM bv_audit.tracked WHERE audit_table = 'public__emp';
SELECT count(*) > 0 AS history_kept FROM bv_audit.public__emp;

-- A table with the same name later gets a new audit table.
CREATE TABLE public.emp (id int PRIMARY KEY);
SELECT bv_audit.enable('public.emp');
DROP TABLE public.emp;
