-- bv_audit.enable()/disable(): mirrored audit tables written by a C AFTER trigger.
\set SHOW_CONTEXT never

CREATE TABLE public.acct (id int PRIMARY KEY, owner text NOT NULL, balance bigint, password text);
INSERT INTO public.acct VALUES (1, 'ann', 100, 'hunter2'), (2, 'ben', 200, 'secret');
SELECT bv_audit.enable('public.acct', exclude_columns => '{password}');

-- The audit table: metadata, then the mirrored columns, never the excluded one.
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
 WHERE attrelid = bv_audit.audit_table('public.acct') AND attnum > 0 AND NOT attisdropped ORDER BY attnum;
-- Partitioned by month, created ahead, with a default partition as safety net.
SELECT count(*) FILTER (WHERE c.relname ~ '_p[0-9]{6}$') >= 4 AS months_ahead,
       count(*) FILTER (WHERE c.relname ~ '_default$') AS default_partition
  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
 WHERE i.inhparent = bv_audit.audit_table('public.acct');
SELECT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = bv_audit.audit_table('public.acct')
                  AND c.relname = 'public__acct_p' || to_char(now() AT TIME ZONE 'UTC', 'YYYYMM')) AS current_month;

-- Existing rows are recorded as a snapshot ('S').
SELECT audit_op, id, owner, balance FROM bv_audit.public__acct ORDER BY audit_id;

-- INSERT, UPDATE, DELETE: the row after INSERT/UPDATE, before DELETE.
BEGIN;
SELECT bv.set_actor('teller-9');
SELECT set_config('bv.traceparent', '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', true) IS NOT NULL AS traced;
INSERT INTO public.acct VALUES (3, 'cat', 300, 'pw3');
UPDATE public.acct SET balance = balance - 50, password = 'changed' WHERE id = 1;
UPDATE public.acct SET balance = balance WHERE id = 2;
DELETE FROM public.acct WHERE id = 2;
COMMIT;
SELECT audit_op, audit_actor, audit_trace, audit_app, audit_changed, id, owner, balance,
       audit_xid = first_value(audit_xid) OVER () AS same_xact
  FROM bv_audit.public__acct WHERE audit_op <> 'S' ORDER BY audit_id;
-- The secret never reached the audit table.
SELECT count(*) AS values_with_secret
  FROM bv_audit.public__acct a, jsonb_each_text(to_jsonb(a)) AS kv
 WHERE kv.value IN ('hunter2', 'secret', 'changed', 'pw3');

-- TRUNCATE is recorded.
TRUNCATE public.acct;
SELECT audit_op, id, owner FROM bv_audit.public__acct ORDER BY audit_id DESC LIMIT 1;

-- Enabling twice is harmless: same audit table, one trigger, no second snapshot.
INSERT INTO public.acct VALUES (5, 'eve', 5, 'pw5');
SELECT count(*) AS records_before FROM bv_audit.public__acct \gset
SELECT bv_audit.enable('public.acct', '{password}');
SELECT count(*) - :records_before AS new_records FROM bv_audit.public__acct;
SELECT count(*) AS capture_triggers FROM pg_trigger WHERE tgrelid = 'public.acct'::regclass AND tgname LIKE 'bv_audit_capture%';

-- disable() stops tracking and keeps the history.
SELECT bv_audit.disable('public.acct');
UPDATE public.acct SET balance = 6 WHERE id = 5;
SELECT count(*) - :records_before AS new_records FROM bv_audit.public__acct;
SELECT enabled, disabled_at IS NOT NULL AS disabled_recorded FROM bv_audit.tracked WHERE relid = 'public.acct'::regclass;
-- Enabling again records a fresh snapshot (changes while disabled were not seen).
SELECT bv_audit.enable('public.acct', '{password}') = bv_audit.audit_table('public.acct') AS same_table;
SELECT audit_op, id, balance FROM bv_audit.public__acct ORDER BY audit_id DESC LIMIT 1;

-- Writers need no privilege on the audit table, and cannot read it.
GRANT SELECT, INSERT, UPDATE, DELETE ON public.acct TO bv_user;
SET ROLE bv_user;
INSERT INTO public.acct VALUES (6, 'fay', 6, 'pw6');
SELECT count(*) FROM bv_audit.public__acct;
RESET ROLE;
SELECT audit_op, audit_actor, id FROM bv_audit.public__acct ORDER BY audit_id DESC LIMIT 1;

-- Audit tables are append-only for every role, superusers included.
UPDATE bv_audit.public__acct SET audit_actor = 'nobody';
DELETE FROM bv_audit.public__acct;
TRUNCATE bv_audit.public__acct;
TRUNCATE bv_audit.public__acct_default;
SET ROLE bv_admin;
UPDATE bv_audit.public__acct SET audit_actor = 'nobody';
RESET ROLE;

-- Refusals.
CREATE TABLE public.no_pk (a int);
SELECT bv_audit.enable('public.no_pk');
CREATE VIEW public.acct_v AS SELECT * FROM public.acct;
SELECT bv_audit.enable('public.acct_v');
CREATE FOREIGN DATA WRAPPER bv_audit_test_fdw;
CREATE SERVER bv_audit_test_srv FOREIGN DATA WRAPPER bv_audit_test_fdw;
CREATE FOREIGN TABLE public.acct_f (id int) SERVER bv_audit_test_srv;
SELECT bv_audit.enable('public.acct_f');
CREATE TABLE public.parted (id int PRIMARY KEY) PARTITION BY RANGE (id);
SELECT bv_audit.enable('public.parted');
SELECT bv_audit.enable('public.acct', '{nosuch}');
SELECT bv_audit.enable('public.acct', '{id}');
SELECT bv_audit.enable('bv_audit.public__acct');
CREATE TABLE public.clash (id int PRIMARY KEY, audit_ts text);
SELECT bv_audit.enable('public.clash');
-- Types not owned by a superuser are not copied when copying runs their
-- functions (inside bv_audit's SECURITY DEFINER functions); excluding the
-- column works.  Enums (and arrays of them) are stored as their text,
-- rendered by built-in functions, whoever owns them.
CREATE ROLE bv_audit_type_owner;
CREATE TYPE public.span AS RANGE (subtype = int4);
ALTER TYPE public.span OWNER TO bv_audit_type_owner;
CREATE TYPE public.mood AS ENUM ('calm', 'angry');
ALTER TYPE public.mood OWNER TO bv_audit_type_owner;
CREATE TABLE public.moody (id int PRIMARY KEY, m public.span);
SELECT bv_audit.enable('public.moody');
SELECT bv_audit.enable('public.moody', '{m}') IS NOT NULL AS enabled_without_m;
ALTER TABLE public.moody ADD COLUMN m2 public.span[];
ALTER TABLE public.moody ADD COLUMN m3 public.mood[];
SELECT format_type(atttypid, atttypmod) FROM pg_attribute
 WHERE attrelid = 'bv_audit.public__moody'::regclass AND attname = 'm3';
SELECT bv_audit.disable('public.no_pk');
SELECT bv_audit.audit_table('public.no_pk');
SET ROLE bv_user;
SELECT bv_audit.enable('public.acct');
SELECT bv_audit.disable('public.acct');
RESET ROLE;

DROP TABLE public.no_pk, public.parted, public.clash, public.moody;
DROP TYPE public.mood, public.span;
DROP ROLE bv_audit_type_owner;
DROP VIEW public.acct_v;
DROP FOREIGN TABLE public.acct_f;
DROP SERVER bv_audit_test_srv;
DROP FOREIGN DATA WRAPPER bv_audit_test_fdw;
