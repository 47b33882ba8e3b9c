-- bv_audit.history(), as_of(), changes(): reading the history.
\set SHOW_CONTEXT never

CREATE TABLE public.item (sku text, shop int, qty int NOT NULL, note text, PRIMARY KEY (sku, shop));
INSERT INTO public.item VALUES ('a', 1, 10, 'first'), ('b', 1, 20, NULL);
SELECT bv_audit.enable('public.item') IS NOT NULL AS enabled;
SELECT clock_timestamp() AS t0 \gset

BEGIN;
SELECT bv.set_actor('clerk');
UPDATE public.item SET qty = 11 WHERE sku = 'a';
INSERT INTO public.item VALUES ('c', 2, 30, NULL);
COMMIT;
SELECT clock_timestamp() AS t1 \gset

BEGIN;
SELECT bv.set_actor('manager');
DELETE FROM public.item WHERE sku = 'b';
UPDATE public.item SET note = 'second', qty = 12 WHERE sku = 'a';
COMMIT;
SELECT clock_timestamp() AS t2 \gset

-- Every version of one row, by its (composite) primary key, oldest first.
SELECT operation, actor, changed_columns, row_data
  FROM bv_audit.history('public.item', '{"sku": "a", "shop": 1}');
-- A deleted row's history ends with its last image.
SELECT operation, actor, row_data
  FROM bv_audit.history('public.item', '{"sku": "b", "shop": 1}');
-- Key values are typed like the key columns: a number as string works too.
SELECT count(*) AS versions FROM bv_audit.history('public.item', '{"sku": "c", "shop": "2"}');
SELECT count(*) AS versions FROM bv_audit.history('public.item', '{"sku": "zz", "shop": 1}');

-- The table as it was at each point in time.
SELECT * FROM bv_audit.as_of('public.item', :'t0');
SELECT * FROM bv_audit.as_of('public.item', :'t1');
SELECT * FROM bv_audit.as_of('public.item', :'t2');
-- Typed rows, for joins: jsonb_populate_record.
SELECT r.* FROM bv_audit.as_of('public.item', :'t1') j,
       jsonb_populate_record(NULL::public.item, j) r ORDER BY r.sku;
-- Before tracking began there is nothing to show.
SELECT count(*) FROM bv_audit.as_of('public.item', '2000-01-01');

-- Who changed what, when, within a time range (snapshots are not changes).
SELECT operation, actor, changed_columns, row_data->>'sku' AS sku
  FROM bv_audit.changes('public.item', :'t0', :'t2');
SELECT operation, actor, row_data->>'sku' AS sku
  FROM bv_audit.changes('public.item', :'t1', :'t2');
SELECT count(*) FROM bv_audit.changes('public.item', :'t2');

-- A TRUNCATE empties the table from then on.
TRUNCATE public.item;
INSERT INTO public.item VALUES ('d', 3, 40, NULL);
SELECT clock_timestamp() AS t3 \gset
SELECT * FROM bv_audit.as_of('public.item', :'t3');
SELECT * FROM bv_audit.as_of('public.item', :'t2');
SELECT operation, row_data->>'sku' AS sku FROM bv_audit.history('public.item', '{"sku": "a", "shop": 1}');

-- Refusals.
SELECT * FROM bv_audit.history('public.item', '{"sku": "a"}');
SELECT * FROM bv_audit.history('public.item', '[1]');
SELECT * FROM bv_audit.changes('public.item', '2026-02-01 00:00+00', '2026-01-01 00:00+00');
CREATE TABLE public.untracked (id int PRIMARY KEY);
SELECT * FROM bv_audit.history('public.untracked', '{"id": 1}');
SELECT * FROM bv_audit.as_of('public.untracked', now());
SET ROLE bv_user;
SELECT * FROM bv_audit.history('public.item', '{"sku": "a", "shop": 1}');
RESET ROLE;
DROP TABLE public.untracked;
