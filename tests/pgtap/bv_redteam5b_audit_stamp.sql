-- Red-team round 5b (bv_audit stamps): "Stamp columns cannot be rewritten
-- by DDL (0.4.0)" and "created_* are copied from the stored row (they cannot
-- be forged)" (docs/bv_audit.md).  The 0.4.0 guard refuses a type change
-- *with USING* of a stamp column; the table's owner (not a superuser) still
-- rewrites the stamps of every row of a stamped table with DDL it does not
-- cover:
--
-- Finding 8 (fixed in 0.6.0: a non-superuser cannot retype, rename or drop a
-- stamp column of a stamped table):
--   a. a type change without USING that changes the values:
--      SET TimeZone = 'UTC'; ALTER COLUMN created_at TYPE timestamp;
--      SET TimeZone = 'Pacific/Kiritimati'; ALTER COLUMN created_at TYPE
--      timestamptz  -- every created_at is now 14 hours earlier
--      (or TYPE date and back: the time of day is gone);
--   b. RENAME the stamp column away, DROP it, ADD COLUMN created_by text
--      DEFAULT 'alice': every existing row now says alice created it, and
--      the stamp trigger keeps that on later updates (it copies created_*
--      from the stored row).
--   A table that is also tracked (enable()) refuses (a) (0A000) and records
--   (b); a stamped-only table keeps no trace.
BEGIN;
SELECT plan(9);

CREATE ROLE rt5b_stamp_owner;
GRANT CREATE ON SCHEMA public TO rt5b_stamp_owner;
SET ROLE rt5b_stamp_owner;
CREATE TABLE public.rt5b_stamped (id int PRIMARY KEY, v int);
RESET ROLE;
SELECT bv_audit.stamp('public.rt5b_stamped');
INSERT INTO public.rt5b_stamped (id, v) VALUES (1, 1);
CREATE TEMP TABLE rt5b_before AS SELECT created_by, created_at FROM public.rt5b_stamped;
GRANT SELECT ON rt5b_before TO PUBLIC;
SELECT is((SELECT created_by FROM rt5b_before), session_user::text, 'control: the stamp names the writer');

-- (a) a type change without USING, and back, under another TimeZone
SET ROLE rt5b_stamp_owner;
SET LOCAL TimeZone = 'UTC';
SELECT throws_ok($$ALTER TABLE public.rt5b_stamped ALTER COLUMN created_at TYPE timestamp$$,
    '42501', NULL, 'the owner cannot change the type of created_at (its values change with the TimeZone)');
SET LOCAL TimeZone = 'Pacific/Kiritimati';
-- back to timestamptz (whether or not the change above was refused)
DO $$ BEGIN ALTER TABLE public.rt5b_stamped ALTER COLUMN created_at TYPE timestamptz; EXCEPTION WHEN OTHERS THEN NULL; END $$;
RESET TimeZone;
SELECT is((SELECT created_at FROM public.rt5b_stamped), (SELECT created_at FROM rt5b_before),
          'created_at is what the stamp trigger wrote');
SELECT throws_ok($$ALTER TABLE public.rt5b_stamped ALTER COLUMN updated_at TYPE date$$,
    '42501', NULL, 'the owner cannot cut updated_at to a date');
DO $$ BEGIN ALTER TABLE public.rt5b_stamped ALTER COLUMN updated_at TYPE timestamptz; EXCEPTION WHEN OTHERS THEN NULL; END $$;

-- (b) rename, drop, add again with a default
SELECT throws_ok($$ALTER TABLE public.rt5b_stamped RENAME COLUMN created_by TO created_by_old$$,
    '42501', NULL, 'the owner cannot rename created_by away');
SELECT throws_ok($$ALTER TABLE public.rt5b_stamped DROP COLUMN created_by$$,
    '42501', NULL, 'the owner cannot drop created_by');
SELECT throws_ok($$ALTER TABLE public.rt5b_stamped DROP COLUMN created_by, ADD COLUMN created_by text DEFAULT 'alice'$$,
    '42501', NULL, 'the owner cannot drop created_by and add it again in one statement');
SELECT throws_ok($$ALTER TABLE public.rt5b_stamped ALTER COLUMN created_at TYPE timestamptz(0)$$,
    '42501', NULL, 'the owner cannot round created_at (a typmod change)');
-- a new created_by with a forged default, where there is none any more
DO $$ BEGIN ALTER TABLE public.rt5b_stamped ADD COLUMN IF NOT EXISTS created_by text DEFAULT 'alice'; EXCEPTION WHEN OTHERS THEN NULL; END $$;
RESET ROLE;
UPDATE public.rt5b_stamped SET v = 2;
SELECT is((SELECT created_by FROM public.rt5b_stamped), (SELECT created_by FROM rt5b_before),
          'created_by still names the writer of the row');

SELECT * FROM finish();
ROLLBACK;
