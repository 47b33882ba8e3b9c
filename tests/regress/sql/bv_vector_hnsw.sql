-- bv_vector: the hnsw index: the three operator classes, options and their
-- refusals, nulls, inserts after the build, VACUUM, a build that outgrows
-- maintenance_work_mem, unlogged tables, and hnsw_check.
SET search_path = public, bv_vector;
\set SHOW_CONTEXT never
SET max_parallel_workers_per_gather = 0;

CREATE FUNCTION pg_temp.refusal(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text;
    msg text;
    hint text;
BEGIN
    EXECUTE q;
    RETURN 'accepted';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
    RETURN st || ': ' || msg || coalesce(' (hint: ' || nullif(hint, '') || ')', '');
END
$$;

-- 40 points without ties, and a null.  With ef_search above the number of
-- elements a scan reaches the whole graph before its first row, so the index
-- must give exactly the exact order.
CREATE TEMP TABLE items (id int PRIMARY KEY, v vector(3));
INSERT INTO items SELECT g, ARRAY[sin(g * 1.1), cos(g * 0.7), (g % 7) / 3.3 + g * 0.001]::real[]
FROM generate_series(1, 40) g;
INSERT INTO items VALUES (41, NULL);

CREATE INDEX items_l2 ON items USING hnsw (v);
CREATE INDEX items_ip ON items USING hnsw (v vector_ip_ops) WITH (m = 4, ef_construction = 8);
CREATE INDEX items_cos ON items USING hnsw (v vector_cosine_ops);
SELECT elements, deleted, entry_level >= 0 AS has_entry, unreachable, above_entry FROM hnsw_check('items_l2');

-- each operator finds its index (on 40 rows the planner rightly prefers
-- a sort; bv_vector_recall checks its choice on 5000 rows)
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT id FROM items ORDER BY v <-> '[0.5,0.5,0.5]' LIMIT 5;
EXPLAIN (COSTS OFF) SELECT id FROM items ORDER BY v <#> '[0.5,0.5,0.5]' LIMIT 5;
EXPLAIN (COSTS OFF) SELECT id FROM items ORDER BY v <=> '[0.5,0.5,0.5]' LIMIT 5;
-- and never for a filter alone
EXPLAIN (COSTS OFF) SELECT id FROM items WHERE v IS NOT NULL;
RESET enable_seqscan;

CREATE FUNCTION pg_temp.ids(q text, use_index boolean) RETURNS int[] LANGUAGE plpgsql AS $$
DECLARE
    r int[];
BEGIN
    EXECUTE format('SET LOCAL enable_indexscan = %s', use_index);
    EXECUTE format('SET LOCAL enable_seqscan = %s', NOT use_index);
    EXECUTE format('SET LOCAL enable_bitmapscan = %s', NOT use_index);
    EXECUTE 'SELECT array_agg(id) FROM (' || q || ') s' INTO r;
    RETURN r;
END
$$;
SELECT q, pg_temp.ids(q, true) = pg_temp.ids(q, false) AS index_matches_exact, pg_temp.ids(q, true) AS ids
FROM (VALUES
    ('SELECT id FROM items ORDER BY v <-> ''[0.5,0.5,0.5]'' LIMIT 5'),
    ('SELECT id FROM items ORDER BY v <-> ''[-1,1,2]'' LIMIT 5'),
    ('SELECT id FROM items ORDER BY v <#> ''[0.5,0.5,0.5]'' LIMIT 5'),
    ('SELECT id FROM items ORDER BY v <=> ''[0.5,-0.5,0.1]'' LIMIT 5'),
    ('SELECT id FROM items ORDER BY v <-> ''[0,0,1]'' LIMIT 40')) t(q);

-- nulls are not indexed: an index scan returns the 40 non-null rows; a null
-- query vector orders nothing but still returns them
SET enable_seqscan = off;
SELECT count(*) FROM (SELECT id FROM items ORDER BY v <-> '[1,1,1]') s;
SELECT count(*) FROM (SELECT id FROM items ORDER BY v <-> NULL LIMIT 100) s;
-- a small ef_search is a window, not a limit: all 40 rows come back
SET bv_vector.ef_search = 1;
SELECT count(*), count(DISTINCT id) FROM (SELECT id FROM items ORDER BY v <-> '[1,1,1]' LIMIT 40) s;
RESET bv_vector.ef_search;
RESET enable_seqscan;

-- inserts after the build, deletes and VACUUM
INSERT INTO items SELECT g, ARRAY[sin(g * 1.1), cos(g * 0.7), (g % 7) / 3.3 + g * 0.001]::real[]
FROM generate_series(42, 200) g;
DELETE FROM items WHERE id % 3 = 0;
VACUUM items;
SELECT elements, deleted, entry_level >= 0 AS has_entry, unreachable, above_entry FROM hnsw_check('items_l2');
SET enable_seqscan = off;
SELECT count(*) = (SELECT count(*) FROM items WHERE v IS NOT NULL) AS all_live_rows,
       count(*) FILTER (WHERE id % 3 = 0) AS deleted_rows_returned
FROM (SELECT id FROM items ORDER BY v <-> '[0,0,0]') s;
RESET enable_seqscan;
SELECT q, pg_temp.ids(q, true) = pg_temp.ids(q, false) AS index_matches_exact
FROM (VALUES ('SELECT id FROM items ORDER BY v <-> ''[0.5,0.5,0.5]'' LIMIT 10')) t(q);

-- an empty index: no rows, then a first insert makes the entry point
CREATE TEMP TABLE empty_items (id int, v vector);
CREATE INDEX empty_items_v ON empty_items USING hnsw (v vector_l2_ops);
SELECT * FROM hnsw_check('empty_items_v');
SET enable_seqscan = off;
SELECT count(*) FROM (SELECT id FROM empty_items ORDER BY v <-> '[1,2]' LIMIT 3) s;
INSERT INTO empty_items VALUES (1, '[1,2]'), (2, '[3,4]');
SELECT id FROM empty_items ORDER BY v <-> '[3,3.9]' LIMIT 3;
RESET enable_seqscan;
SELECT elements, entry_level >= 0 AS has_entry FROM hnsw_check('empty_items_v');

-- refusals
SELECT q, pg_temp.refusal(q) FROM (VALUES
    ('CREATE INDEX ON items USING hnsw (v) WITH (m = 1)'),
    ('CREATE INDEX ON items USING hnsw (v) WITH (m = 101)'),
    ('CREATE INDEX ON items USING hnsw (v) WITH (ef_construction = 3)'),
    ('CREATE INDEX ON items USING hnsw (v) WITH (ef_construction = 1001)'),
    ('CREATE INDEX ON items USING hnsw (v) WITH (m = 16, ef_construction = 20)'),
    ('CREATE INDEX ON items USING hnsw (v) WITH (ef_search = 10)'),
    ('CREATE INDEX ON items USING hnsw (v, id)'),
    ('CREATE INDEX ON items USING hnsw (id)'),
    ('CREATE TABLE wide (v vector(2000)); CREATE INDEX ON wide USING hnsw (v)'),
    ('INSERT INTO empty_items VALUES (3, ''[1,2,3]'')'),
    ('SET bv_vector.ef_search = 0'),
    ('SET bv_vector.ef_search = 1001'),
    ('SET bv_vector.no_such_setting = 1'),
    ('SELECT * FROM bv_vector.hnsw_check(''items_pkey'')')) t(q);
-- vectors of two sizes in one index
CREATE TEMP TABLE mixed (v vector);
INSERT INTO mixed VALUES ('[1,2]'), ('[1,2,3]');
SELECT pg_temp.refusal('CREATE INDEX ON mixed USING hnsw (v)');
-- a query vector of the wrong size
SET enable_seqscan = off;
SELECT pg_temp.refusal('SELECT id FROM empty_items ORDER BY v <-> ''[1,2,3]'' LIMIT 1');
RESET enable_seqscan;
-- a vector too wide for a page when m is large (2000 dims fit with m = 4)
CREATE TEMP TABLE wide (v vector(1900));
INSERT INTO wide SELECT array_fill(g::real, ARRAY[1900]) FROM generate_series(1, 20) g;
SELECT pg_temp.refusal('CREATE INDEX ON wide USING hnsw (v) WITH (m = 100, ef_construction = 200)');
CREATE INDEX wide_v ON wide USING hnsw (v) WITH (m = 4, ef_construction = 8);
SELECT elements FROM hnsw_check('wide_v');

-- a build that outgrows maintenance_work_mem writes what it has and goes
-- on inserting on disk: same index, slower build
SELECT setseed(0.5);
CREATE TEMP TABLE many (id int, v vector(32));
INSERT INTO many SELECT g, (SELECT array_agg(random()::real) FROM generate_series(1, 32) WHERE g > 0) FROM generate_series(1, 4000) g;
SET maintenance_work_mem = '1MB';
\set VERBOSITY terse
CREATE INDEX many_v ON many USING hnsw (v);
\set VERBOSITY default
RESET maintenance_work_mem;
SELECT elements, deleted, unreachable <= 40 AS connected FROM hnsw_check('many_v');
SET enable_seqscan = off;
SELECT count(*) FROM (SELECT id FROM many ORDER BY v <-> (SELECT v FROM many WHERE id = 1) LIMIT 100) s;
SELECT id FROM many ORDER BY v <-> (SELECT v FROM many WHERE id = 1234) LIMIT 1;
RESET enable_seqscan;

-- unlogged tables get an init fork with an empty metapage
CREATE UNLOGGED TABLE scratch (id int, v vector(2));
CREATE INDEX scratch_v ON scratch USING hnsw (v);
INSERT INTO scratch VALUES (1, '[0,0]'), (2, '[5,5]');
SET enable_seqscan = off;
SELECT id FROM scratch ORDER BY v <-> '[4,4]' LIMIT 1;
RESET enable_seqscan;

DROP TABLE items, empty_items, mixed, wide, many, scratch;
