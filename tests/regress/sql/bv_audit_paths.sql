-- The two ways the capture trigger writes a record, and DDL inside a
-- transaction that also writes audited rows.
\set SHOW_CONTEXT never

CREATE TABLE public.paths (id int PRIMARY KEY, v text);
SELECT bv_audit.enable('public.paths') IS NOT NULL AS enabled;

-- Writes, ALTER TABLE (mirrored into the audit table by the event trigger,
-- which alters its partitions too), more writes, TRUNCATE: one transaction.
BEGIN;
INSERT INTO public.paths VALUES (1, 'a');
ALTER TABLE public.paths ADD COLUMN w int;
INSERT INTO public.paths VALUES (2, 'b', 20);
UPDATE public.paths SET w = 10 WHERE id = 1;
ALTER TABLE public.paths RENAME COLUMN v TO label;
INSERT INTO public.paths VALUES (3, 'c', 30);
TRUNCATE public.paths;
INSERT INTO public.paths VALUES (4, 'd', 40);
COMMIT;
SELECT audit_op, audit_changed, id, label, w FROM bv_audit.public__paths ORDER BY audit_id;

-- Savepoints: a rolled-back subtransaction leaves no record.
BEGIN;
INSERT INTO public.paths VALUES (5, 'e', 50);
SAVEPOINT s;
INSERT INTO public.paths VALUES (6, 'f', 60);
ROLLBACK TO SAVEPOINT s;
INSERT INTO public.paths VALUES (7, 'g', 70);
COMMIT;
SELECT audit_op, id FROM bv_audit.public__paths WHERE id >= 5 ORDER BY audit_id;

-- ON CONFLICT DO NOTHING writes no record for the row not inserted.
INSERT INTO public.paths VALUES (7, 'dup', 0) ON CONFLICT DO NOTHING;
SELECT count(*) AS records_for_7 FROM bv_audit.public__paths WHERE id = 7;
-- ON CONFLICT DO UPDATE records the update.
INSERT INTO public.paths VALUES (7, 'upsert', 71) ON CONFLICT (id) DO UPDATE SET w = excluded.w;
SELECT audit_op, audit_changed, w FROM bv_audit.public__paths WHERE id = 7 ORDER BY audit_id;

-- An audit table an administrator has added a CHECK constraint to is
-- written through the executor, which enforces it.
ALTER TABLE bv_audit.public__paths ADD CONSTRAINT small_w CHECK (w IS NULL OR w < 1000);
INSERT INTO public.paths VALUES (8, 'h', 80);
SELECT audit_op, id, w FROM bv_audit.public__paths WHERE id = 8;
\set VERBOSITY sqlstate
INSERT INTO public.paths VALUES (9, 'i', 5000);
\set VERBOSITY default
SELECT count(*) AS rows_9 FROM public.paths WHERE id = 9;
ALTER TABLE bv_audit.public__paths DROP CONSTRAINT small_w;
INSERT INTO public.paths VALUES (9, 'i', 5000);
SELECT audit_op, id, w FROM bv_audit.public__paths WHERE id = 9;

DROP TABLE public.paths;

-- Enums are stored as their text and domains as their base type (#18 item
-- 7), and still written straight into the partition (the fast path locks
-- the month's partition only, the executor the audit table too).
CREATE TYPE public.paths_state AS ENUM ('new', 'done');
CREATE DOMAIN public.paths_qty AS int CHECK (VALUE >= 0);
CREATE TABLE public.paths_typed (id int PRIMARY KEY, s public.paths_state, ss public.paths_state[], q public.paths_qty);
SELECT bv_audit.enable('public.paths_typed') IS NOT NULL AS enabled;
INSERT INTO public.paths_typed VALUES (1, 'new', '{new,done}', 1);
BEGIN;
INSERT INTO public.paths_typed VALUES (2, 'done', NULL, 2);
UPDATE public.paths_typed SET s = 'done', ss = '{done}' WHERE id = 1;
SELECT count(*) AS audit_table_locks FROM pg_locks
 WHERE pid = pg_backend_pid() AND relation = 'bv_audit.public__paths_typed'::regclass;
COMMIT;
SELECT audit_op, id, s, ss, q, pg_typeof(s) AS s_type, pg_typeof(q) AS q_type
  FROM bv_audit.public__paths_typed ORDER BY audit_id;
DROP TABLE public.paths_typed;
DROP TYPE public.paths_state;
DROP DOMAIN public.paths_qty;

-- Long and multibyte names: audit table names stay within 48 bytes, so that
-- partition names fit in an identifier; a clash gets a numeric suffix.
CREATE SCHEMA "schéma_with_a_rather_long_name";
CREATE TABLE "schéma_with_a_rather_long_name"."tàble_whose_name_is_also_quite_long_really" (id int PRIMARY KEY);
SELECT bv_audit.enable('"schéma_with_a_rather_long_name"."tàble_whose_name_is_also_quite_long_really"') AS audit_table;
CREATE TABLE "schéma_with_a_rather_long_name"."tàble_whose_name_is_also_quite_long_really2" (id int PRIMARY KEY);
SELECT bv_audit.enable('"schéma_with_a_rather_long_name"."tàble_whose_name_is_also_quite_long_really2"') AS audit_table;
SELECT octet_length(audit_table) <= 48 AS fits FROM bv_audit.tracked WHERE source_schema = 'schéma_with_a_rather_long_name';
INSERT INTO "schéma_with_a_rather_long_name"."tàble_whose_name_is_also_quite_long_really2" VALUES (1);
SELECT audit_op, id FROM bv_audit."schéma_with_a_rather_long_name__tàble_wh_1";
DROP SCHEMA "schéma_with_a_rather_long_name" CASCADE;
SELECT count(*) AS dropped_and_kept FROM bv_audit.tracked
 WHERE source_schema = 'schéma_with_a_rather_long_name' AND relid IS NULL AND dropped_at IS NOT NULL;
