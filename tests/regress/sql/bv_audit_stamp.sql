-- bv_audit.stamp(): audit columns filled by a C BEFORE trigger.
\set SHOW_CONTEXT never

CREATE TABLE public.stamp_t (id int PRIMARY KEY, v text, created_by text);
INSERT INTO public.stamp_t VALUES (0, 'before stamp', NULL);
SELECT bv_audit.stamp('public.stamp_t');
-- Existing created_by kept; the three others added, in order.
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
 WHERE attrelid = 'public.stamp_t'::regclass AND attnum > 0 ORDER BY attnum;
-- Rows that predate stamp() have no audit values.
SELECT id, created_by, created_at, updated_by, updated_at FROM public.stamp_t;

-- INSERT: all four set from bv.actor() and the transaction time, whatever the client sent.
BEGIN;
SELECT bv.set_actor('alice');
INSERT INTO public.stamp_t (id, v, created_by, created_at) VALUES (1, 'one', 'mallory', '2000-01-01');
SELECT id, created_by, updated_by, created_at = now() AS created_now, updated_at = now() AS updated_now
  FROM public.stamp_t WHERE id = 1;
COMMIT;

-- UPDATE: created_* cannot be forged; updated_* follow the new actor and time.
SELECT created_at AS created_1 FROM public.stamp_t WHERE id = 1 \gset
BEGIN;
SELECT bv.set_actor('bob');
UPDATE public.stamp_t SET v = 'uno', created_by = 'mallory', created_at = '2000-01-01', updated_by = 'mallory' WHERE id = 1;
SELECT id, v, created_by, updated_by, created_at = :'created_1'::timestamptz AS created_kept,
       updated_at = now() AS updated_now, updated_at > created_at AS updated_later
  FROM public.stamp_t WHERE id = 1;
COMMIT;

-- The JWT "sub" claim names the actor when nothing else does.
BEGIN;
SELECT set_config('request.jwt.claims', '{"sub":"user-7"}', true) IS NOT NULL AS claims_set;
INSERT INTO public.stamp_t (id, v) VALUES (2, 'two');
SELECT created_by, updated_by FROM public.stamp_t WHERE id = 2;
COMMIT;

-- Idempotent: calling it again changes nothing and keeps one trigger.
SELECT bv_audit.stamp('public.stamp_t');
SELECT count(*) AS stamp_triggers FROM pg_trigger
 WHERE tgrelid = 'public.stamp_t'::regclass AND tgname = 'bv_audit_stamp';

-- A column of the wrong type is refused.
CREATE TABLE public.stamp_bad (id int PRIMARY KEY, created_at date);
SELECT bv_audit.stamp('public.stamp_bad');
-- Only tables.
CREATE VIEW public.stamp_v AS SELECT 1 AS id;
SELECT bv_audit.stamp('public.stamp_v');

-- Dropping a stamped column makes the trigger refuse writes, with a hint.
CREATE TABLE public.stamp_drop (id int PRIMARY KEY);
SELECT bv_audit.stamp('public.stamp_drop');
ALTER TABLE public.stamp_drop DROP COLUMN updated_by;
INSERT INTO public.stamp_drop VALUES (1);
SELECT bv_audit.stamp('public.stamp_drop');
INSERT INTO public.stamp_drop VALUES (1);
SELECT count(*) FROM public.stamp_drop WHERE updated_by IS NOT NULL;

-- Ordinary roles need no privilege on bv_audit to write stamped tables.
GRANT SELECT, INSERT, UPDATE ON public.stamp_t TO bv_user;
SET ROLE bv_user;
INSERT INTO public.stamp_t (id, v) VALUES (3, 'three');
SELECT created_by = session_user AS by_session_user FROM public.stamp_t WHERE id = 3;
-- ...but may not call the administrative functions.
SELECT bv_audit.stamp('public.stamp_t');
RESET ROLE;

DROP TABLE public.stamp_t, public.stamp_bad, public.stamp_drop;
DROP VIEW public.stamp_v;
