-- #18 audit review: attacks on history and capture that the first round of
-- fixes missed.  Each block failed before the fix of the same commit.
\set SHOW_CONTEXT never
\set VERBOSITY default

-- 1. A tracked table without a primary key: its rows were recorded under
--    the old key, and rows with equal old keys hid each other (as_of()
--    showed one of two rows with id 2).  Writes are refused until a key is
--    added again (dropping and adding in two commands stays possible).
CREATE TABLE public.atk_pk (id int PRIMARY KEY, v text NOT NULL);
SELECT bv_audit.enable('public.atk_pk') IS NOT NULL AS enabled;
INSERT INTO public.atk_pk VALUES (1, 'a'), (2, 'b');
BEGIN;
ALTER TABLE public.atk_pk DROP CONSTRAINT atk_pk_pkey;
INSERT INTO public.atk_pk VALUES (2, 'dup');
ROLLBACK;
BEGIN;
ALTER TABLE public.atk_pk DROP COLUMN id;
UPDATE public.atk_pk SET v = 'z';
ROLLBACK;
BEGIN;
ALTER TABLE public.atk_pk DROP CONSTRAINT atk_pk_pkey;
ALTER TABLE public.atk_pk ADD PRIMARY KEY (id) DEFERRABLE;
INSERT INTO public.atk_pk VALUES (3, 'c');
COMMIT;
SELECT count(*) AS rows_as_of FROM bv_audit.as_of('public.atk_pk', now());
DELETE FROM public.atk_pk WHERE id = 3;
-- 2. A primary key on other columns in the same command: the histories
--    that the new key no longer shows end ('a' was the v of row 1 before
--    it became 'c'; as_of() showed it as a third row).
UPDATE public.atk_pk SET v = 'c' WHERE id = 1;
ALTER TABLE public.atk_pk DROP CONSTRAINT atk_pk_pkey, ADD PRIMARY KEY (v);
SELECT j FROM bv_audit.as_of('public.atk_pk', now()) j ORDER BY j->>'v';
SELECT operation, changed_columns, row_data FROM bv_audit.history('public.atk_pk', '{"v": "a"}') ORDER BY audit_id;
-- the new key's history reads on: a move under it is a D and an I
UPDATE public.atk_pk SET v = 'd' WHERE v = 'c';
SELECT j FROM bv_audit.as_of('public.atk_pk', now()) j ORDER BY j->>'v';
SELECT pk_columns FROM bv_audit.tracked WHERE source_table = 'atk_pk';
-- after disable() the key is the owner's business
SELECT bv_audit.disable('public.atk_pk');
ALTER TABLE public.atk_pk DROP CONSTRAINT atk_pk_pkey;
DROP TABLE public.atk_pk;

-- 3. Inheritance: the snapshot of a parent took its children's rows,
--    whose later changes the parent's triggers never see (a deleted child
--    row stayed in as_of() of the parent).
CREATE TABLE public.atk_par (id int PRIMARY KEY, v text);
CREATE TABLE public.atk_chi (PRIMARY KEY (id)) INHERITS (public.atk_par);
INSERT INTO public.atk_par VALUES (1, 'parent');
INSERT INTO public.atk_chi VALUES (2, 'child');
SELECT bv_audit.enable('public.atk_par') IS NOT NULL AS enabled;
DELETE FROM public.atk_par WHERE id = 2;
SELECT j FROM bv_audit.as_of('public.atk_par', now()) j;
SELECT bv_audit.disable('public.atk_par');
DROP TABLE public.atk_par CASCADE;

-- 4. A type change made while tracking was disabled: enable() refused it
--    forever ("cannot change the type"), so the table could never be
--    tracked again.  The old audit column keeps its history under another
--    name; a new one mirrors the column.
CREATE TABLE public.atk_re (id int PRIMARY KEY, v text);
SELECT bv_audit.enable('public.atk_re') IS NOT NULL AS enabled;
INSERT INTO public.atk_re VALUES (1, '5');
SELECT bv_audit.disable('public.atk_re');
ALTER TABLE public.atk_re ALTER COLUMN v TYPE int USING v::int;
SELECT bv_audit.enable('public.atk_re') IS NOT NULL AS enabled;
UPDATE public.atk_re SET v = v + 1;
SELECT operation, row_data FROM bv_audit.history('public.atk_re', '{"id": 1}') ORDER BY audit_id;
SELECT (SELECT jsonb_agg(jsonb_populate_record(NULL::public.atk_re, j)) FROM bv_audit.as_of('public.atk_re', now()) j)
     = (SELECT jsonb_agg(a) FROM public.atk_re a) AS as_of_is_table;
SELECT bv_audit.seal() > 0 AS sealed;
SELECT ok FROM bv_audit.verify('public.atk_re');
-- a key column's type change still cannot be followed
SELECT bv_audit.disable('public.atk_re');
ALTER TABLE public.atk_re ALTER COLUMN id TYPE text;
SELECT bv_audit.enable('public.atk_re') IS NOT NULL AS enabled;
DROP TABLE public.atk_re;

-- 5. A retention longer than the calendar made purge() fail for every
--    audit table ("timestamp out of range"), the pg_cron job with it.
CREATE TABLE public.atk_long (id int PRIMARY KEY);
CREATE TABLE public.atk_short (id int PRIMARY KEY);
SELECT bv_audit.enable('public.atk_long', '{}', '100000 years') IS NOT NULL AS enabled;
SELECT bv_audit.enable('public.atk_short', '{}', '1 microsecond') IS NOT NULL AS enabled;
INSERT INTO public.atk_long VALUES (1);
INSERT INTO public.atk_short VALUES (1);
-- purge() removes sealed records only (0.4.0): seal them first.
SELECT bv_audit.seal() > 0 AS sealed;
SELECT audit_table, deleted_rows FROM bv_audit.purge() WHERE audit_table LIKE 'public__atk_%' ORDER BY 1;
SELECT count(*) AS kept FROM bv_audit.history('public.atk_long', '{"id": 1}');
SELECT bv_audit.set_retention('public.atk_short', '100000 years');
SELECT bv_audit.set_retention('public.atk_short', '6000 years');
SELECT bv_audit.disable('public.atk_long'), bv_audit.disable('public.atk_short');
DROP TABLE public.atk_long, public.atk_short;

-- 6. A superuser deleted the newest seal link but kept its entries:
--    verify() said ok, and seal() could never seal the table again.
CREATE TABLE public.atk_link (id int PRIMARY KEY);
SELECT bv_audit.enable('public.atk_link') IS NOT NULL AS enabled;
INSERT INTO public.atk_link VALUES (1);
SELECT bv_audit.seal() > 0 AS sealed;
INSERT INTO public.atk_link VALUES (2);
SELECT bv_audit.seal() > 0 AS sealed;
BEGIN;
SET LOCAL session_replication_role = replica;
DELETE FROM bv_audit.seals s USING bv_audit.tracked t
 WHERE t.id = s.tracked_id AND t.relid = 'public.atk_link'::regclass
   AND s.seal_no = (SELECT max(x.seal_no) FROM bv_audit.seals x WHERE x.tracked_id = t.id);
COMMIT;
SELECT ok, problem, seal_no FROM bv_audit.verify('public.atk_link');
-- repaired (the orphaned entries removed), the next seal re-seals the records
BEGIN;
SET LOCAL session_replication_role = replica;
DELETE FROM bv_audit.seal_entries e USING bv_audit.tracked t
 WHERE t.id = e.tracked_id AND t.relid = 'public.atk_link'::regclass
   AND NOT EXISTS (SELECT 1 FROM bv_audit.seals x WHERE x.tracked_id = t.id AND x.seal_no = e.seal_no);
COMMIT;
SELECT bv_audit.seal() > 0 AS sealed;
SELECT ok, problem, seal_no FROM bv_audit.verify('public.atk_link');
SELECT bv_audit.disable('public.atk_link');
DROP TABLE public.atk_link;

-- 7. The history of a dropped table is still sealed, and can be verified
--    through its audit table (verify() took the live table only).
CREATE TABLE public.atk_gone (id int PRIMARY KEY, v text);
SELECT bv_audit.enable('public.atk_gone') IS NOT NULL AS enabled;
INSERT INTO public.atk_gone VALUES (1, 'a');
DROP TABLE public.atk_gone;
SELECT bv_audit.seal() > 0 AS sealed;
SELECT ok FROM bv_audit.verify('bv_audit.public__atk_gone');
BEGIN;
SET LOCAL session_replication_role = replica;
UPDATE bv_audit.public__atk_gone SET v = 'forged';
COMMIT;
SELECT ok, problem FROM bv_audit.verify('bv_audit.public__atk_gone');
BEGIN;
SET LOCAL session_replication_role = replica;
UPDATE bv_audit.public__atk_gone SET v = 'a';
COMMIT;
SELECT ok, problem FROM bv_audit.verify('bv_audit.public__atk_gone');
SELECT ok FROM bv_audit.verify('bv_audit.seals');

-- 8. A table owner tied the capture trigger to an extension it owns and
--    dropped the extension: the trigger went with it, no DROP TRIGGER
--    command, and writes were no longer recorded.  The same for the stamp
--    trigger, which a table owner could also simply disable.
CREATE ROLE bv_audit_atk_owner LOGIN IN ROLE bv_user;
GRANT CREATE ON SCHEMA public TO bv_audit_atk_owner;
GRANT CREATE ON DATABASE bitvelocity TO bv_audit_atk_owner;
SET ROLE bv_audit_atk_owner;
CREATE TABLE public.atk_own (id int PRIMARY KEY, v text);
CREATE EXTENSION hstore SCHEMA public;   -- a trusted extension
RESET ROLE;
SELECT bv_audit.enable('public.atk_own') IS NOT NULL AS enabled;
SELECT bv_audit.stamp('public.atk_own');
SET ROLE bv_audit_atk_owner;
ALTER TRIGGER bv_audit_capture ON public.atk_own DEPENDS ON EXTENSION hstore;
ALTER TRIGGER bv_audit_capture_truncate ON public.atk_own DEPENDS ON EXTENSION hstore;
ALTER TRIGGER bv_audit_stamp ON public.atk_own DEPENDS ON EXTENSION hstore;
ALTER TABLE public.atk_own DISABLE TRIGGER bv_audit_stamp;
ALTER TABLE public.atk_own ENABLE REPLICA TRIGGER bv_audit_stamp;
ALTER TRIGGER bv_audit_stamp ON public.atk_own RENAME TO other;
DROP TRIGGER bv_audit_stamp ON public.atk_own;
-- a dependency a superuser made does not let the owner drop the trigger
-- through its extension either
RESET ROLE;
ALTER TRIGGER bv_audit_capture ON public.atk_own DEPENDS ON EXTENSION hstore;
SET ROLE bv_audit_atk_owner;
DROP EXTENSION hstore CASCADE;
INSERT INTO public.atk_own (id, v, created_by) VALUES (1, 'x', 'forged');
RESET ROLE;
SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'public.atk_own'::regclass ORDER BY tgname;
SELECT id, created_by = 'forged' AS forged FROM public.atk_own;
SELECT operation, row_data->>'v' AS v FROM bv_audit.history('public.atk_own', '{"id": 1}');
-- bv_audit.disable() (or a superuser) still may
SELECT bv_audit.disable('public.atk_own');
DROP TRIGGER bv_audit_stamp ON public.atk_own;
SET ROLE bv_audit_atk_owner;
DROP TABLE public.atk_own;
DROP EXTENSION hstore;
RESET ROLE;
REVOKE CREATE ON DATABASE bitvelocity FROM bv_audit_atk_owner;
REVOKE CREATE ON SCHEMA public FROM bv_audit_atk_owner;
DROP ROLE bv_audit_atk_owner;

-- 9. bv_audit does not reveal what its caller cannot SELECT: a member of
--    bv_admin could enable tracking of any table (bv.jwt_keys, a table with
--    column grants or row-level security) and read it from the audit table,
--    or read the history of a column or of rows hidden from it.
CREATE ROLE bv_audit_atk_admin LOGIN IN ROLE bv_admin;
CREATE TABLE public.atk_col (id int PRIMARY KEY, pub text, hidden text);
GRANT SELECT (id, pub) ON public.atk_col TO bv_admin;
INSERT INTO public.atk_col VALUES (1, 'p', 'COLUMN-SECRET');
CREATE TABLE public.atk_rls (id int PRIMARY KEY, owner_id text, body text);
GRANT SELECT ON public.atk_rls TO bv_admin;
ALTER TABLE public.atk_rls ENABLE ROW LEVEL SECURITY;
CREATE POLICY own ON public.atk_rls USING (owner_id = current_user);
INSERT INTO public.atk_rls VALUES (1, 'someone', 'PRIVATE-NOTE');
SET ROLE bv_audit_atk_admin;
SELECT bv_audit.enable('public.atk_col');
SELECT bv_audit.enable('public.atk_rls');
SELECT bv_audit.enable('bv.jwt_keys');
-- excluding what it cannot read, it may
SELECT bv_audit.enable('public.atk_col', '{hidden}') IS NOT NULL AS enabled;
SELECT row_data FROM bv_audit.history('public.atk_col', '{"id": 1}');
RESET ROLE;
SELECT bv_audit.enable('public.atk_col') IS NOT NULL AS enabled;   -- a superuser includes it again
SELECT bv_audit.enable('public.atk_rls') IS NOT NULL AS enabled;
SET ROLE bv_audit_atk_admin;
SELECT row_data FROM bv_audit.history('public.atk_col', '{"id": 1}');
SELECT count(*) FROM bv_audit.as_of('public.atk_col', now());
SELECT count(*) FROM bv_audit.changes('public.atk_col', '-infinity', 'infinity');
SELECT count(*) FROM bv_audit.as_of('public.atk_rls', now());
SELECT ok FROM bv_audit.verify('public.atk_rls');   -- verify shows no data
RESET ROLE;
-- no internal function is executable by API roles
SELECT p.oid::regprocedure FROM pg_proc p
 WHERE p.pronamespace = 'bv_audit'::regnamespace AND p.proname LIKE '\_%'
   AND has_function_privilege('bv_user', p.oid, 'EXECUTE');
SELECT bv_audit.disable('public.atk_col'), bv_audit.disable('public.atk_rls');
DROP TABLE public.atk_col, public.atk_rls;
DROP ROLE bv_audit_atk_admin;
