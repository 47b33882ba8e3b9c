-- Key-changing UPDATEs are moves: the old key's history ends, the new key's
-- begins, and as_of() never shows a row under a key it left (#18 item 1).
\set SHOW_CONTEXT never

CREATE TABLE public.k_acct (id int PRIMARY KEY, owner text);
INSERT INTO public.k_acct VALUES (1, 'ann'), (2, 'bob'), (3, 'cy');
SELECT bv_audit.enable('public.k_acct') IS NOT NULL AS enabled;

UPDATE public.k_acct SET id = 10 WHERE id = 1;
-- as_of(now) is the table: no ghost under id 1.
SELECT j FROM bv_audit.as_of('public.k_acct', now()) j ORDER BY j->>'id';
SELECT (SELECT jsonb_agg(j ORDER BY (j->>'id')::int) FROM bv_audit.as_of('public.k_acct', now()) j)
     = (SELECT jsonb_agg(to_jsonb(a) ORDER BY a.id) FROM public.k_acct a) AS as_of_is_table;
-- The old key's history ends with a D that names the changed columns (a move);
-- the new key's begins with an I.
SELECT operation, changed_columns, row_data FROM bv_audit.history('public.k_acct', '{"id": 1}');
SELECT operation, changed_columns, row_data FROM bv_audit.history('public.k_acct', '{"id": 10}');

-- Twice in one transaction: 10 -> 20 -> 30; only 30 is left.
BEGIN;
UPDATE public.k_acct SET id = 20 WHERE id = 10;
UPDATE public.k_acct SET id = 30, owner = 'Ann' WHERE id = 20;
COMMIT;
SELECT j FROM bv_audit.as_of('public.k_acct', now()) j ORDER BY (j->>'id')::int;
SELECT operation, changed_columns, row_data->>'id' AS id FROM bv_audit.history('public.k_acct', '{"id": 20}');

-- A swap of two keys in one statement (deferred key): both keys still exist.
ALTER TABLE public.k_acct DROP CONSTRAINT k_acct_pkey;
ALTER TABLE public.k_acct ADD PRIMARY KEY (id) DEFERRABLE INITIALLY DEFERRED;
UPDATE public.k_acct SET id = 5 - id WHERE id IN (2, 3);
SELECT j FROM bv_audit.as_of('public.k_acct', now()) j ORDER BY (j->>'id')::int;
SELECT operation, changed_columns, row_data FROM bv_audit.history('public.k_acct', '{"id": 2}');
-- A shift of every key by one in one statement, in any row order.
UPDATE public.k_acct SET id = id + 1;
SELECT (SELECT jsonb_agg(j ORDER BY (j->>'id')::int) FROM bv_audit.as_of('public.k_acct', now()) j)
     = (SELECT jsonb_agg(to_jsonb(a) ORDER BY a.id) FROM public.k_acct a) AS as_of_is_table;

-- Composite keys: changing one key column is a move too.
CREATE TABLE public.k_stock (sku text, shop int, qty int, PRIMARY KEY (sku, shop));
INSERT INTO public.k_stock VALUES ('a', 1, 5), ('a', 2, 6);
SELECT bv_audit.enable('public.k_stock') IS NOT NULL AS enabled;
UPDATE public.k_stock SET shop = 3 WHERE sku = 'a' AND shop = 1;
SELECT j FROM bv_audit.as_of('public.k_stock', now()) j ORDER BY j->>'shop';
SELECT operation, changed_columns FROM bv_audit.history('public.k_stock', '{"sku": "a", "shop": 1}');
-- A plain UPDATE of other columns stays one U record.
UPDATE public.k_stock SET qty = 7 WHERE sku = 'a' AND shop = 2;
SELECT operation, changed_columns FROM bv_audit.history('public.k_stock', '{"sku": "a", "shop": 2}');

-- A new primary key on other columns: rows are found by it, through a
-- history index rebuilt on it.
ALTER TABLE public.k_stock DROP CONSTRAINT k_stock_pkey, ADD PRIMARY KEY (shop);
SELECT pk_columns FROM bv_audit.tracked WHERE relid = 'public.k_stock'::regclass;
SELECT pg_get_indexdef(i.indexrelid) ~ 'brin \(shop int4_bloom_ops' AS index_on_new_key
  FROM pg_index i JOIN bv_audit.tracked t ON i.indrelid = t.audit_relid WHERE t.relid = 'public.k_stock'::regclass;
UPDATE public.k_stock SET shop = 4 WHERE shop = 3;
SELECT operation, changed_columns, row_data FROM bv_audit.history('public.k_stock', '{"shop": 3}');

-- A key change rolled back leaves no record.
BEGIN;
UPDATE public.k_stock SET shop = 9 WHERE shop = 2;
ROLLBACK;
SELECT count(*) AS none FROM bv_audit.history('public.k_stock', '{"shop": 9}');

-- Tables without a primary key cannot be tracked: a row has no identity.
CREATE TABLE public.k_nokey (a int, b text);
SELECT bv_audit.enable('public.k_nokey');

-- Changes made while tracking was disabled: enable() again records the rows
-- deleted meanwhile as D, so as_of() has no ghosts.
SELECT bv_audit.disable('public.k_acct');
DELETE FROM public.k_acct WHERE id = 31;
UPDATE public.k_acct SET id = 40 WHERE id = 3;
SELECT bv_audit.enable('public.k_acct') IS NOT NULL AS enabled;
SELECT (SELECT jsonb_agg(j ORDER BY (j->>'id')::int) FROM bv_audit.as_of('public.k_acct', now()) j)
     = (SELECT jsonb_agg(to_jsonb(a) ORDER BY a.id) FROM public.k_acct a) AS as_of_is_table;

-- The same with an enum key (kept as text in the audit table), including a
-- label renamed since it was recorded.
CREATE TYPE public.k_state AS ENUM ('new', 'paid', 'gone');
CREATE TABLE public.k_enum (state public.k_state PRIMARY KEY, n int);
INSERT INTO public.k_enum VALUES ('new', 1), ('paid', 2), ('gone', 3);
SELECT bv_audit.enable('public.k_enum') IS NOT NULL AS enabled;
SELECT bv_audit.disable('public.k_enum');
DELETE FROM public.k_enum WHERE state = 'gone';
ALTER TYPE public.k_state RENAME VALUE 'paid' TO 'settled';
SELECT bv_audit.enable('public.k_enum') IS NOT NULL AS enabled;
SELECT audit_op, state, n FROM bv_audit.public__k_enum ORDER BY audit_id;
SELECT (SELECT jsonb_agg(j ORDER BY j->>'state') FROM bv_audit.as_of('public.k_enum', now()) j) AS as_of_enum;

DROP TABLE public.k_acct, public.k_stock, public.k_nokey;
DROP TABLE public.k_enum;
DROP TYPE public.k_state;
