-- bv_vector: a seeded random workload against the hnsw index, checked
-- after every round against the table itself (the model): a full ordered
-- index scan returns every live row exactly once except at most those
-- hnsw_check counts as unreachable (which include elements of rows deleted
-- but not vacuumed yet) (inserts after the build can leave a few: m = 4
-- here makes lists short; at most 5% allowed: the level draw is not seeded, so the count varies from run to run), no deleted or updated-away
-- row, and the first rows of a LIMIT query agree with exact search.  Inserts, updates of the vector (a new element each), deletes and
-- VACUUM, 8 rounds.  The seed is printed; the graph's levels are random, so
-- only pass/fail figures are.
SET search_path = public, bv_vector;
SET max_parallel_workers_per_gather = 0;
SELECT setseed(0.77) AS seed_0_77;

CREATE TEMP TABLE m_items (id int PRIMARY KEY, v vector(8) NOT NULL);
INSERT INTO m_items SELECT g, (SELECT array_agg(random()::real) FROM generate_series(1, 8) WHERE g > 0)
FROM generate_series(1, 300) g;
CREATE INDEX m_items_v ON m_items USING hnsw (v) WITH (m = 4, ef_construction = 16);
CREATE TEMP TABLE m_log (round int, live bigint, scanned bigint, distinct_ids bigint, ghosts bigint,
                    unreachable bigint, top_matches boolean);

CREATE FUNCTION pg_temp.round(r int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    q vector(8) := (SELECT array_agg(random()::real) FROM generate_series(1, 8))::vector(8);
    exact int[];
    approx int[];
    nxt int := (SELECT max(id) FROM m_items) + 1;
BEGIN
    INSERT INTO m_items SELECT nxt + g, (SELECT array_agg(random()::real) FROM generate_series(1, 8) WHERE g >= 0)
    FROM generate_series(0, 39) g;
    UPDATE m_items SET v = (SELECT array_agg(random()::real) FROM generate_series(1, 8) WHERE id > 0)
    WHERE id IN (SELECT id FROM m_items ORDER BY random() LIMIT 15);
    DELETE FROM m_items WHERE id IN (SELECT id FROM m_items ORDER BY random() LIMIT 25);
    SET LOCAL enable_seqscan = off;
    SET LOCAL enable_sort = off;
    SET LOCAL bv_vector.ef_search = 200;
    INSERT INTO m_log
    SELECT r, (SELECT count(*) FROM m_items), count(*), count(DISTINCT s.id),
           count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM m_items i WHERE i.id = s.id)),
           (SELECT unreachable FROM hnsw_check('m_items_v')), NULL
    FROM (SELECT id FROM m_items ORDER BY v <-> q) s;
    SELECT array_agg(id) INTO approx FROM (SELECT id FROM m_items ORDER BY v <-> q LIMIT 5) s;
    SET LOCAL enable_indexscan = off;
    SET LOCAL enable_seqscan = on;
    SET LOCAL enable_sort = on;
    SELECT array_agg(id) INTO exact FROM (SELECT id FROM m_items ORDER BY v <-> q LIMIT 5) s;
    UPDATE m_log SET top_matches = (approx = exact) WHERE round = r;
END
$$;
SELECT pg_temp.round(1);
SELECT pg_temp.round(2);
VACUUM m_items;
SELECT pg_temp.round(3);
SELECT pg_temp.round(4);
SELECT pg_temp.round(5);
VACUUM m_items;
SELECT pg_temp.round(6);
SELECT pg_temp.round(7);
VACUUM m_items;
SELECT pg_temp.round(8);

SELECT round, live - scanned <= unreachable AS reachable_rows_returned, unreachable <= live * 0.05 AS few_unreachable,
       scanned = distinct_ids AS no_duplicates, ghosts AS dead_rows_returned, top_matches
FROM m_log ORDER BY round;
SELECT deleted > 0 AS vacuum_marked_deleted, elements - deleted >= (SELECT count(*) FROM m_items) AS no_live_row_lost
FROM hnsw_check('m_items_v');
DROP TABLE m_items, m_log;
