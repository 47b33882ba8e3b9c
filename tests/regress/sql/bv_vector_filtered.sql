-- bv_vector: filtered search returns k rows.  WHERE category = c ORDER BY
-- v <-> q LIMIT 10 at 1% selectivity (50 of 5000 rows): a plain HNSW scan
-- would stop after ef_search (40) candidates, of which about 0.4 match; the
-- expanding scan goes on until 10 rows passed the filter.  Data as in
-- bv_vector_recall (seeded clusters), categories spread over the clusters.
SET search_path = public, bv_vector;
SET max_parallel_workers_per_gather = 0;
SELECT setseed(0.42);

CREATE TABLE f_centers AS
SELECT c, array_agg((random() * 10)::real ORDER BY j) AS x
FROM generate_series(0, 19) c, generate_series(1, 32) j GROUP BY c;
CREATE TABLE fpts (id int PRIMARY KEY, category int NOT NULL, v vector(32) NOT NULL);
INSERT INTO fpts
SELECT i, (i * 7919) % 100,
       (SELECT array_agg((x[j] + (random() + random() + random() - 1.5))::real ORDER BY j)
        FROM generate_series(1, 32) j)
FROM generate_series(1, 5000) i JOIN f_centers ON c = i % 20;
CREATE TABLE f_queries AS
SELECT q, q % 100 AS category,
       (SELECT array_agg((x[j] + 2 * (random() + random() + random() - 1.5))::real ORDER BY j)
        FROM generate_series(1, 32) j)::vector(32) AS v
FROM generate_series(1, 30) q JOIN f_centers ON c = q % 20;
SELECT count(*) AS rows_per_category FROM fpts WHERE category = 3;
ANALYZE fpts;

CREATE TABLE f_truth AS
SELECT q.q, t.id FROM f_queries q
CROSS JOIN LATERAL (SELECT id FROM fpts WHERE category = q.category ORDER BY v <-> q.v LIMIT 10) t;

CREATE INDEX fpts_v ON fpts USING hnsw (v);
-- the plan: the index scan, filtered (at 5000 rows the planner would rather
-- sort 50 rows; the bench shows its choice at 100k rows)
SET enable_seqscan = off;
SET enable_bitmapscan = off;
EXPLAIN (COSTS OFF)
SELECT id FROM fpts WHERE category = 3 ORDER BY v <-> (SELECT v FROM f_queries WHERE q = 3) LIMIT 10;

CREATE TABLE f_found AS
SELECT q.q, t.id, t.category FROM f_queries q
CROSS JOIN LATERAL (SELECT id, category FROM fpts WHERE category = q.category ORDER BY v <-> q.v LIMIT 10) t;

EXPLAIN (COSTS OFF)
SELECT q.q, t.id, t.category FROM f_queries q
CROSS JOIN LATERAL (SELECT id, category FROM fpts WHERE category = q.category ORDER BY v <-> q.v LIMIT 10) t;

-- every query returns its 10 rows, all of its category, with recall >= 0.9
SELECT count(*) AS rows_returned, count(*) = 30 * 10 AS all_requested_rows,
       bool_and(f.category = q.category) AS filter_held
FROM f_found f JOIN f_queries q USING (q);
SELECT (SELECT count(*) FROM f_truth t WHERE (t.q, t.id) IN (SELECT q, id FROM f_found))::numeric
       / (SELECT count(*) FROM f_truth) >= 0.9 AS recall_at_least_0_9;

-- at the smallest ef_search too
SET bv_vector.ef_search = 1;
SELECT count(*) AS rows_returned
FROM f_queries q CROSS JOIN LATERAL (SELECT id FROM fpts WHERE category = q.category ORDER BY v <-> q.v LIMIT 10) t;
RESET bv_vector.ef_search;

-- a category with fewer rows than the LIMIT: all of them, then the scan
-- ends when the graph is exhausted
INSERT INTO fpts VALUES (100001, 1000, (SELECT v FROM f_queries WHERE q = 1)), (100002, 1000, (SELECT v FROM f_queries WHERE q = 2));
SELECT id FROM fpts WHERE category = 1000 ORDER BY v <-> (SELECT v FROM f_queries WHERE q = 1) LIMIT 10;
-- no rows at all
SELECT count(*) FROM (SELECT id FROM fpts WHERE category = -1 ORDER BY v <-> (SELECT v FROM f_queries WHERE q = 1) LIMIT 10) s;
RESET enable_seqscan;
RESET enable_bitmapscan;
DROP TABLE f_centers, f_queries, f_truth, f_found, fpts;
