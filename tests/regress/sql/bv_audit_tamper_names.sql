-- Generated SQL is immune to user column names (issue #18 item 13): a
-- tracked column named like an alias, a keyword, the table, or with quotes,
-- spaces and capitals must not break seal() or verify() for any table.
\set SHOW_CONTEXT never

CREATE TABLE public.tn (
    id int PRIMARY KEY, a int, t text, r text, "row" text, tn text, e int, s int, x int, l int,
    d text, i int, scan text, ins text, digest text, seal_no int, "Mixed Case" text,
    "quo""te" text, "sp ace" text, "a.b" text, "*" text
);
SELECT bv_audit.enable('public.tn') IS NOT NULL AS enabled;
-- A table named like the alias, with a column named like it, too.
CREATE TABLE public.a (a int PRIMARY KEY, "A" text);
SELECT bv_audit.enable('public.a') IS NOT NULL AS enabled;
CREATE TABLE public."Odd ""Name""" (id int PRIMARY KEY, "Odd ""Name""" text);
SELECT bv_audit.enable('public."Odd ""Name"""') IS NOT NULL AS enabled;

INSERT INTO public.tn (id, a, t, r, "row", tn, e, s, x, l, d, i, scan, ins, digest, seal_no,
                       "Mixed Case", "quo""te", "sp ace", "a.b", "*")
SELECT g, g, 't', 'r', 'row', 'tn', g, g, g, g, 'd', g, 'scan', 'ins', 'digest', g, 'M', 'q"', 's p', 'a.b', '*'
  FROM generate_series(1, 3) g;
UPDATE public.tn SET a = a + 10, "quo""te" = 'changed' WHERE id = 2;
INSERT INTO public.a VALUES (1, 'x'), (2, 'y');
UPDATE public.a SET "A" = 'z' WHERE a = 2;
INSERT INTO public."Odd ""Name""" VALUES (1, 'o');

DO $$
BEGIN
    FOR i IN 1..100 LOOP
        PERFORM bv_audit.seal();
        EXIT WHEN NOT EXISTS (SELECT FROM bv_audit.public__tn x WHERE NOT EXISTS
                                (SELECT FROM bv_audit.seal_entries e WHERE e.audit_id = x.audit_id))
              AND NOT EXISTS (SELECT FROM bv_audit.public__a x WHERE NOT EXISTS
                                (SELECT FROM bv_audit.seal_entries e WHERE e.audit_id = x.audit_id));
        PERFORM pg_sleep(0.1);
    END LOOP;
END
$$;
SELECT t.source_table, sum(s.row_count) AS sealed_records
  FROM bv_audit.seals s JOIN bv_audit.tracked t ON t.id = s.tracked_id
 WHERE t.source_table IN ('tn', 'a', 'Odd "Name"') GROUP BY 1 ORDER BY 1;
SELECT ok, problem FROM bv_audit.verify('public.tn');
SELECT ok, problem FROM bv_audit.verify('public.a');
SELECT ok, problem FROM bv_audit.verify('public."Odd ""Name"""');
-- Reading history works with these names too.
SELECT operation, row_data->>'a' AS a, row_data->>'quo"te' AS quote
  FROM bv_audit.history('public.tn', '{"id": 2}') ORDER BY audit_id;
SELECT j->>'A' AS "A" FROM bv_audit.as_of('public.a', now()) j ORDER BY 1;
-- An altered record behind a hostile name is still found.
SET session_replication_role = replica;
UPDATE bv_audit.public__tn SET "sp ace" = 'tampered' WHERE id = 3;
RESET session_replication_role;
SELECT ok, problem FROM bv_audit.verify('public.tn');

-- Disabled and dropped, the tables' audit tables are still sealed, and
-- they do not stop the seal of others.
SELECT bv_audit.disable('public.a');
DROP TABLE public.a;
CREATE TABLE public.after_drop (id int PRIMARY KEY);
SELECT bv_audit.enable('public.after_drop') IS NOT NULL AS enabled;
INSERT INTO public.after_drop VALUES (1);
DO $$
BEGIN
    FOR i IN 1..100 LOOP
        PERFORM bv_audit.seal();
        EXIT WHEN NOT EXISTS (SELECT FROM bv_audit.public__after_drop x WHERE NOT EXISTS
                                (SELECT FROM bv_audit.seal_entries e WHERE e.audit_id = x.audit_id));
        PERFORM pg_sleep(0.1);
    END LOOP;
END
$$;
SELECT ok, problem FROM bv_audit.verify('public.after_drop');

-- Audit-internal names are refused by enable(), with a hint.
CREATE TABLE public.internal_names (id int PRIMARY KEY, audit_op text);
SELECT bv_audit.enable('public.internal_names');
DROP TABLE public.internal_names;
