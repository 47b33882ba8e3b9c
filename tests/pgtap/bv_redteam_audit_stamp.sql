-- Red-team review of bv_audit's stamps: "created_* cannot be forged" holds
-- for writers, but the table's owner (not a superuser) rewrites them with
-- ALTER TABLE ... ALTER COLUMN created_by TYPE text USING '<anything>': a
-- table rewrite, no row trigger fires, and an untracked stamped table keeps
-- no trace.  The capture guard stopped the owner from disabling the stamp
-- trigger, not from this.  bv_audit 0.4.0's event trigger
-- bv_audit_guard_stamp refuses it (42501) unless the role is a superuser.
BEGIN;
SELECT plan(5);

CREATE ROLE rt_stamp_owner;
GRANT CREATE ON SCHEMA public TO rt_stamp_owner;
SET ROLE rt_stamp_owner;
CREATE TABLE public.rt_stamped (id int PRIMARY KEY, v int);
RESET ROLE;
SELECT bv_audit.stamp('public.rt_stamped');
INSERT INTO public.rt_stamped VALUES (1, 1);
SELECT is((SELECT created_by FROM public.rt_stamped), session_user::text, 'the stamp names the writer');

SET ROLE rt_stamp_owner;
SELECT throws_ok($$ALTER TABLE public.rt_stamped ALTER COLUMN created_by TYPE text USING 'forged'$$,
    '42501', NULL, 'the owner cannot rewrite created_by with ALTER COLUMN ... TYPE ... USING');
RESET ROLE;
SELECT is((SELECT created_by FROM public.rt_stamped), session_user::text, 'created_by still names the writer');
-- Other type changes of the owner's columns still work; a superuser may.
SET ROLE rt_stamp_owner;
SELECT lives_ok($$ALTER TABLE public.rt_stamped ALTER COLUMN v TYPE bigint USING v * 10$$,
    'the owner changes the type of its own other columns');
RESET ROLE;
SELECT lives_ok($$ALTER TABLE public.rt_stamped ALTER COLUMN updated_by TYPE text USING 'migrated'$$,
    'a superuser may rewrite a stamp column (the documented bypass)');

SELECT * FROM finish();
ROLLBACK;
