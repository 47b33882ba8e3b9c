-- bv_vector: VACUUM repairs the graph.  After deleting most rows, no live
-- element links to a deleted one (dead_links), live rows stay reachable,
-- recall on the survivors stays high, a deleted entry point gives way to a
-- live element, and an index emptied by VACUUM takes new rows.  The graph's
-- levels are random: only pass/fail figures are printed.
SET search_path = public, bv_vector;
SET max_parallel_workers_per_gather = 0;
SELECT setseed(0.31) AS seed_0_31;

-- 2,000 rows in 20 clusters of 16 dimensions
CREATE TEMP TABLE vac_items (id int PRIMARY KEY, v vector(16) NOT NULL);
INSERT INTO vac_items
SELECT g, (SELECT array_agg(((g % 20) * 0.5 + random() * 0.4)::real * (1 + (d % 3)))
           FROM generate_series(1, 16) d WHERE g > 0)
FROM generate_series(1, 2000) g;
CREATE INDEX vac_items_v ON vac_items USING hnsw (v) WITH (m = 8, ef_construction = 32);
CREATE FUNCTION pg_temp.recall(nq int) RETURNS numeric LANGUAGE plpgsql AS $$
DECLARE
    hits int := 0;
    total int := 0;
    q vector(16);
    exact int[];
    approx int[];
BEGIN
    FOR i IN 1..nq LOOP
        q := (SELECT v FROM vac_items ORDER BY random() LIMIT 1);
        SET LOCAL enable_seqscan = off;
        SET LOCAL enable_sort = off;
        SELECT array_agg(id) INTO approx FROM (SELECT id FROM vac_items ORDER BY v <-> q LIMIT 10) s;
        SET LOCAL enable_indexscan = off;
        SET LOCAL enable_seqscan = on;
        SET LOCAL enable_sort = on;
        SELECT array_agg(id) INTO exact FROM (SELECT id FROM vac_items ORDER BY v <-> q LIMIT 10) s;
        RESET enable_indexscan;
        hits := hits + (SELECT count(*) FROM unnest(approx) a WHERE a = ANY (exact));
        total := total + cardinality(exact);
    END LOOP;
    RETURN round(hits::numeric / total, 2);
END
$$;

-- 70% of the rows go (whole clusters among them: their links were the only
-- paths between the others), then new rows arrive before VACUUM (they may
-- link to rows deleted but not yet vacuumed)
DELETE FROM vac_items WHERE id % 10 < 7;
INSERT INTO vac_items
SELECT g, (SELECT array_agg(((g % 20) * 0.5 + random() * 0.4)::real * (1 + (d % 3)))
           FROM generate_series(1, 16) d WHERE g > 0)
FROM generate_series(2001, 2200) g;
VACUUM vac_items;
SELECT deleted = 1400 AS deleted_marked, dead_links, unreachable <= 2 AS all_but_few_reachable,
       elements - deleted = (SELECT count(*) FROM vac_items) AS live_elements
FROM hnsw_check('vac_items_v');
SET enable_seqscan = off;
SET enable_sort = off;
SELECT count(*) >= (SELECT count(*) FROM vac_items) - (SELECT unreachable FROM hnsw_check('vac_items_v'))
       AS live_rows_returned,
       count(*) = count(DISTINCT id) AS no_duplicates,
       count(*) FILTER (WHERE id <= 2000 AND id % 10 < 7) AS deleted_rows_returned
FROM (SELECT id FROM vac_items ORDER BY v <-> (SELECT v FROM vac_items WHERE id = 8)) s;
RESET enable_seqscan;
RESET enable_sort;
SELECT pg_temp.recall(20) >= 0.9 AS recall_after_vacuum;
-- a second VACUUM finds nothing to repair and changes nothing
VACUUM vac_items;
SELECT dead_links, unreachable <= 2 AS all_but_few_reachable FROM hnsw_check('vac_items_v');

-- the entry point's row is deleted: a live element takes its place
DELETE FROM vac_items WHERE id <> 2199;
VACUUM vac_items;
SELECT entry_level >= 0 AS has_entry, dead_links, unreachable FROM hnsw_check('vac_items_v');
SET enable_seqscan = off;
SELECT id FROM vac_items ORDER BY v <-> (SELECT v FROM vac_items WHERE id = 2199) LIMIT 3;
RESET enable_seqscan;

-- every row deleted: the index is empty again and takes new rows
DELETE FROM vac_items;
VACUUM vac_items;
SELECT entry_level, dead_links, unreachable FROM hnsw_check('vac_items_v');
INSERT INTO vac_items VALUES (1, array_fill(1, ARRAY[16])::real[]), (2, array_fill(2, ARRAY[16])::real[]);
SET enable_seqscan = off;
SELECT id FROM vac_items ORDER BY v <-> array_fill(1.9, ARRAY[16])::real[]::vector LIMIT 5;
RESET enable_seqscan;
SELECT elements - deleted AS live, entry_level >= 0 AS has_entry, dead_links, unreachable
FROM hnsw_check('vac_items_v');
DROP TABLE vac_items;
