-- bv.version() and the bv.extensions view.

SELECT bv.version() = extversion AS library_matches_sql
FROM pg_extension WHERE extname = 'bv_core';

SELECT bv.version() ~ '^\d+\.\d+\.\d+$' AS semantic_version;

SELECT name, installed_version = default_version AS current, NOT update_available AS up_to_date, schema
FROM bv.extensions
WHERE name = 'bv_core';

-- Every installed BitVelocity extension is listed, and only those.
SELECT (SELECT count(*) FROM bv.extensions) =
       (SELECT count(*) FROM pg_extension WHERE extname LIKE 'bv\_%') AS all_listed;

-- Only BitVelocity extensions are listed.
SELECT count(*) AS foreign_rows FROM bv.extensions WHERE name NOT LIKE 'bv\_%';

-- Every function and view of the schema is documented (PostgREST and
-- PostGraphile turn comments into API documentation).
SELECT p.proname AS undocumented
FROM pg_proc p
WHERE p.pronamespace = 'bv'::regnamespace
  AND obj_description(p.oid, 'pg_proc') IS NULL
UNION ALL
SELECT c.relname
FROM pg_class c
WHERE c.relnamespace = 'bv'::regnamespace AND c.relkind IN ('r', 'v', 'p')
  AND obj_description(c.oid, 'pg_class') IS NULL;
