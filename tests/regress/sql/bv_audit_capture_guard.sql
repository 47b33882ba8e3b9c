-- Only a superuser can stop capture (#18 item 8): the owner of a tracked
-- table cannot disable, drop, rename or replace its capture triggers.
\set SHOW_CONTEXT never

CREATE ROLE bv_audit_owner LOGIN;
GRANT CREATE ON SCHEMA public TO bv_audit_owner;
SET ROLE bv_audit_owner;
CREATE TABLE public.guarded (id int PRIMARY KEY, amt int);
CREATE FUNCTION public.noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
RESET ROLE;
SELECT bv_audit.enable('public.guarded') IS NOT NULL AS enabled;

SET ROLE bv_audit_owner;
ALTER TABLE public.guarded DISABLE TRIGGER bv_audit_capture;
ALTER TABLE public.guarded DISABLE TRIGGER ALL;
ALTER TABLE public.guarded DISABLE TRIGGER USER;
ALTER TABLE public.guarded ENABLE REPLICA TRIGGER bv_audit_capture;
ALTER TABLE public.guarded DISABLE TRIGGER bv_audit_capture_truncate;
DROP TRIGGER bv_audit_capture ON public.guarded;
DROP TRIGGER bv_audit_capture_truncate ON public.guarded;
ALTER TRIGGER bv_audit_capture ON public.guarded RENAME TO gone;
CREATE OR REPLACE TRIGGER bv_audit_capture AFTER INSERT ON public.guarded
    FOR EACH ROW EXECUTE FUNCTION public.noop();
CREATE OR REPLACE TRIGGER bv_audit_capture AFTER INSERT OR UPDATE OR DELETE ON public.guarded
    FOR EACH ROW WHEN (false) EXECUTE FUNCTION bv_audit.capture_trigger('1');
-- Everything else the owner may do still works, and writes are recorded.
ALTER TABLE public.guarded ADD COLUMN note text;
ALTER TABLE public.guarded ENABLE ALWAYS TRIGGER bv_audit_capture;
CREATE TRIGGER other AFTER INSERT ON public.guarded FOR EACH ROW EXECUTE FUNCTION public.noop();
DROP TRIGGER other ON public.guarded;
RESET ROLE;
INSERT INTO public.guarded VALUES (1, 10);
SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'public.guarded'::regclass ORDER BY tgname;
SELECT operation, row_data FROM bv_audit.history('public.guarded', '{"id": 1}');

-- A superuser may (the documented bypass), and bv_audit.disable() does.
ALTER TABLE public.guarded DISABLE TRIGGER bv_audit_capture;
ALTER TABLE public.guarded ENABLE TRIGGER bv_audit_capture;
SELECT bv_audit.disable('public.guarded');
-- With tracking disabled the owner's trigger commands are the owner's business.
SET ROLE bv_audit_owner;
CREATE TRIGGER other AFTER INSERT ON public.guarded FOR EACH ROW EXECUTE FUNCTION public.noop();
DROP TABLE public.guarded;
DROP FUNCTION public.noop();
RESET ROLE;
REVOKE CREATE ON SCHEMA public FROM bv_audit_owner;
DROP ROLE bv_audit_owner;
