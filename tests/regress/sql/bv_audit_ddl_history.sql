-- DDL on tracked tables never makes history untrue (#18 items 2-7).
\set SHOW_CONTEXT never

-- The rows at now() from history, as the table's own type, equal the table.
CREATE FUNCTION pg_temp.as_of_is_table(tbl regclass) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE ok boolean;
BEGIN
    EXECUTE format('SELECT (SELECT coalesce(jsonb_agg(to_jsonb(jsonb_populate_record(NULL::%s, j)) ORDER BY j->>''id''), ''[]'')
                              FROM bv_audit.as_of(%L, now()) j)
                         = (SELECT coalesce(jsonb_agg(to_jsonb(tt) ORDER BY tt.id::text), ''[]'') FROM %s tt)', tbl, tbl, tbl)
      INTO ok;
    RETURN ok;
END $$;

-- Item 2: ADD COLUMN with a default gives every row a value without an
-- UPDATE; it is recorded as a U of every row naming the new column.
CREATE TABLE public.dh_acc (id int PRIMARY KEY, amt int, x text);
INSERT INTO public.dh_acc VALUES (1, 5, 'a'), (2, 6, 'b');
SELECT bv_audit.enable('public.dh_acc') IS NOT NULL AS enabled;
ALTER TABLE public.dh_acc ADD COLUMN c2 int DEFAULT 7;
SELECT j FROM bv_audit.as_of('public.dh_acc', now()) j ORDER BY j->>'id';
SELECT operation, changed_columns, row_data->'c2' AS c2 FROM bv_audit.history('public.dh_acc', '{"id": 1}');
-- A column added without a default (all NULL) records nothing.
ALTER TABLE public.dh_acc ADD COLUMN c3 int;
SELECT count(*) AS records FROM bv_audit.history('public.dh_acc', '{"id": 1}');
-- A volatile default is recorded per row too.
ALTER TABLE public.dh_acc ADD COLUMN c4 int DEFAULT (100 + 0 * random())::int;
SELECT pg_temp.as_of_is_table('public.dh_acc');

-- Item 3: DROP COLUMN x (text), ADD COLUMN x (int): the audit column "x"
-- follows the live column; the dropped one's history is kept beside it.
ALTER TABLE public.dh_acc DROP COLUMN x;
ALTER TABLE public.dh_acc ADD COLUMN x int;
UPDATE public.dh_acc SET x = 42 WHERE id = 1;
SELECT (jsonb_populate_record(NULL::public.dh_acc, j)).x FROM bv_audit.as_of('public.dh_acc', now()) j ORDER BY j->>'id';
SELECT operation, row_data - 'id' - 'amt' - 'c2' - 'c3' - 'c4' AS data FROM bv_audit.history('public.dh_acc', '{"id": 1}');
SELECT c.src_attnum, c.audit_column FROM bv_audit.columns c JOIN bv_audit.tracked t ON t.id = c.tracked_id
 WHERE t.relid = 'public.dh_acc'::regclass ORDER BY c.src_attnum;
SELECT pg_temp.as_of_is_table('public.dh_acc');
-- Renaming a column to the dropped one's name moves the old audit column too.
ALTER TABLE public.dh_acc DROP COLUMN c3;
ALTER TABLE public.dh_acc RENAME COLUMN c4 TO c3;
SELECT pg_temp.as_of_is_table('public.dh_acc');

-- Item 5: ALTER COLUMN TYPE ... USING rewrites every value: recorded as a U
-- of every row naming the column (history says 5000, as the table does).
ALTER TABLE public.dh_acc ALTER COLUMN amt TYPE bigint USING amt * 1000;
SELECT operation, changed_columns, row_data->'amt' AS amt FROM bv_audit.history('public.dh_acc', '{"id": 1}')
 ORDER BY audit_id DESC LIMIT 1;
SELECT pg_temp.as_of_is_table('public.dh_acc');
-- Even to the same type.
ALTER TABLE public.dh_acc ALTER COLUMN amt TYPE bigint USING amt + 1;
SELECT pg_temp.as_of_is_table('public.dh_acc');
-- A type change without USING keeps the values and records nothing.
SELECT count(*) AS before FROM bv_audit.history('public.dh_acc', '{"id": 2}') \gset
ALTER TABLE public.dh_acc ALTER COLUMN amt TYPE numeric;
SELECT count(*) - :before AS new_records FROM bv_audit.history('public.dh_acc', '{"id": 2}');

-- Item 4: a key type change (int -> bigint) with the default bloom history
-- index; the index is rebuilt for the new type and history() still finds rows.
SELECT history_index FROM bv_audit.tracked WHERE relid = 'public.dh_acc'::regclass;
ALTER TABLE public.dh_acc ALTER COLUMN id TYPE bigint;
SELECT pg_get_indexdef(i.indexrelid) LIKE '%int8_bloom_ops%' AS bloom_for_bigint
  FROM pg_index i WHERE i.indrelid = 'bv_audit.public__dh_acc'::regclass;
SELECT count(*) > 0 AS found FROM bv_audit.history('public.dh_acc', '{"id": 1}');
-- A key rewritten by USING: the old keys' histories end with a D.
ALTER TABLE public.dh_acc ALTER COLUMN id TYPE bigint USING id + 100;
SELECT operation, changed_columns FROM bv_audit.history('public.dh_acc', '{"id": 1}') ORDER BY audit_id DESC LIMIT 1;
SELECT operation, changed_columns FROM bv_audit.history('public.dh_acc', '{"id": 101}');
SELECT pg_temp.as_of_is_table('public.dh_acc');

-- Item 6: exclusions follow the column, not its name.
CREATE TABLE public.dh_pay (id int PRIMARY KEY, card text, note text);
INSERT INTO public.dh_pay VALUES (1, '4111-secret', 'n');
SELECT bv_audit.enable('public.dh_pay', '{card}') IS NOT NULL AS enabled;
ALTER TABLE public.dh_pay RENAME COLUMN card TO card_token;
UPDATE public.dh_pay SET card_token = '4111-secret-2', note = 'm' WHERE id = 1;
SELECT exclude_columns FROM bv_audit.tracked WHERE relid = 'public.dh_pay'::regclass;
SELECT count(*) AS copies_of_secret FROM bv_audit.public__dh_pay a WHERE a::text LIKE '%secret%';
SELECT changed_columns, row_data FROM bv_audit.history('public.dh_pay', '{"id": 1}') ORDER BY audit_id DESC LIMIT 1;
-- enable() again names the current columns.
SELECT bv_audit.enable('public.dh_pay', '{card_token}') IS NOT NULL AS enabled;
UPDATE public.dh_pay SET card_token = '4111-secret-3' WHERE id = 1;
SELECT count(*) AS copies_of_secret FROM bv_audit.public__dh_pay a WHERE a::text LIKE '%secret%';

-- Item 7: audit tables do not depend on user types: enums are stored as
-- text, domains as their base type; renaming an enum value does not
-- rewrite history (0.5.0: it records the rows holding the renamed label),
-- and dropping the types keeps it.
CREATE TYPE public.lvl AS ENUM ('low', 'high');
CREATE DOMAIN public.posint AS int CHECK (VALUE > 0);
CREATE TABLE public.dh_job (id public.posint PRIMARY KEY, level public.lvl, levels public.lvl[], n public.posint);
INSERT INTO public.dh_job VALUES (1, 'low', '{low,high}', 3);
SELECT bv_audit.enable('public.dh_job') IS NOT NULL AS enabled;
UPDATE public.dh_job SET level = 'high', n = 4 WHERE id = 1;
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
 WHERE attrelid = 'bv_audit.public__dh_job'::regclass AND attname IN ('id', 'level', 'levels', 'n') ORDER BY attname;
ALTER TYPE public.lvl RENAME VALUE 'low' TO 'minimal';
SELECT operation, row_data FROM bv_audit.history('public.dh_job', '{"id": 1}');
ALTER TABLE public.dh_job ADD COLUMN extra public.lvl;
SELECT format_type(atttypid, atttypmod) FROM pg_attribute
 WHERE attrelid = 'bv_audit.public__dh_job'::regclass AND attname = 'extra';
-- A user's collation is not copied either.
CREATE COLLATION public.dh_coll (provider = libc, locale = 'C');
ALTER TABLE public.dh_job ADD COLUMN label text COLLATE public.dh_coll;
UPDATE public.dh_job SET label = 'x' WHERE id = 1;
DROP TABLE public.dh_job;
DROP DOMAIN public.posint CASCADE;
DROP TYPE public.lvl CASCADE;
DROP COLLATION public.dh_coll CASCADE;
SELECT audit_op, id, level, levels, n, label FROM bv_audit.public__dh_job ORDER BY audit_id;

DROP TABLE public.dh_acc, public.dh_pay;
