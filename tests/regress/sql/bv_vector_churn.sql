-- bv_vector: deleted space is reused.  Twenty rounds of churn (delete a
-- random 30% of the rows, VACUUM, insert as many new ones) keep the index
-- at about its first size: VACUUM frees the slots of deleted elements once
-- no link leads to them, and inserts take them.  The table is the model:
-- after every round an index scan must return each live row once and no
-- deleted row (hnsw_check's unreachable count aside), recall against the
-- exact search stays high, and hnsw_check passes.  The seed is printed.
-- The tables are temporary: no other session can see their rows, so each
-- VACUUM removes every deleted row whatever other snapshots are open (the
-- parallel schedule's other tests, background workers), and the levels
-- come from the heap TIDs: the same run builds the same graph every time.
SET search_path = public, bv_vector;
SET max_parallel_workers_per_gather = 0;
SELECT setseed(0.4242) AS seed_0_4242;

CREATE TEMP TABLE churn (id int PRIMARY KEY, v vector(16) NOT NULL);
CREATE TEMP SEQUENCE churn_id START 2001;
CREATE FUNCTION pg_temp.point(g int) RETURNS vector LANGUAGE sql AS
$$ SELECT array_agg(((g % 20) * 0.5 + random() * 0.4)::real * (1 + (d % 3)))::vector
   FROM generate_series(1, 16) d WHERE g > 0 $$;
INSERT INTO churn SELECT g, pg_temp.point(g) FROM generate_series(1, 2000) g;
CREATE INDEX churn_v ON churn USING hnsw (v) WITH (m = 8, ef_construction = 32);
CREATE TEMP TABLE churn_log (round int, pages bigint, live bigint, elements bigint, deleted bigint,
                        unreachable bigint, dead_links bigint, returned bigint,
                        distinct_returned bigint, ghosts bigint, recall numeric);
CREATE FUNCTION pg_temp.recall(nq int) RETURNS numeric LANGUAGE plpgsql AS $$
DECLARE
    hits int := 0;
    total int := 0;
    q vector(16);
    exact int[];
    approx int[];
BEGIN
    FOR i IN 1..nq LOOP
        q := pg_temp.point((random() * 10000)::int);
        SET LOCAL enable_seqscan = off;
        SET LOCAL enable_sort = off;
        SELECT array_agg(id) INTO approx FROM (SELECT id FROM churn ORDER BY v <-> q LIMIT 10) s;
        SET LOCAL enable_indexscan = off;
        SET LOCAL enable_seqscan = on;
        SET LOCAL enable_sort = on;
        SELECT array_agg(id) INTO exact FROM (SELECT id FROM churn ORDER BY v <-> q LIMIT 10) s;
        RESET enable_indexscan;
        hits := hits + (SELECT count(*) FROM unnest(approx) a WHERE a = ANY (exact));
        total := total + cardinality(exact);
    END LOOP;
    RETURN round(hits::numeric / total, 3);
END
$$;
-- one round's figures: the index against the table
CREATE FUNCTION pg_temp.observe(r int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    c record;
    s record;
BEGIN
    SELECT * INTO c FROM hnsw_check('churn_v');
    SET LOCAL enable_seqscan = off;
    SET LOCAL enable_sort = off;
    SELECT count(*) AS n, count(DISTINCT x.id) AS nd,
           count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM churn t WHERE t.id = x.id)) AS ghosts
    INTO s
    FROM (SELECT id FROM churn ORDER BY v <-> pg_temp.point(7)) x;
    RESET enable_seqscan;
    RESET enable_sort;
    INSERT INTO churn_log VALUES (r, pg_relation_size('churn_v') / 8192, (SELECT count(*) FROM churn),
        c.elements, c.deleted, c.unreachable, c.dead_links, s.n, s.nd, s.ghosts, pg_temp.recall(10));
END
$$;
SELECT pg_temp.observe(0);

-- twenty rounds: delete 30%, VACUUM, insert as many (each statement on its own, VACUUM included)
SELECT stmt FROM generate_series(1, 20) r,
  LATERAL (VALUES (1, 'DELETE FROM churn WHERE random() < 0.3'),
                  (2, 'VACUUM churn'),
                  (3, 'INSERT INTO churn SELECT nextval(''churn_id''), pg_temp.point(g) FROM generate_series(1, 2000 - (SELECT count(*) FROM churn)::int) g'),
                  (4, format('SELECT pg_temp.observe(%s)', r))) v(o, stmt)
ORDER BY r, o \gexec

-- every round: hnsw_check passed (it raises on damage), no deleted row came
-- back, no row twice, at least 98% of the live rows returned by a full
-- index scan (the scan seeds layer 0 from every upper-layer candidate, so
-- it also finds rows hnsw_check counts unreachable from the entry point:
-- after a round's inserts, before the next VACUUM reconnects them, that
-- count was 0-200 of 2,000), recall@10 >= 0.9, one element per row
SELECT count(*) AS rounds,
       bool_and(ghosts = 0) AS no_deleted_rows_returned,
       bool_and(returned = distinct_returned) AS no_duplicates,
       bool_and(returned >= 0.98 * live) AS live_rows_returned,
       bool_and(dead_links = 0) AS no_dead_links,
       bool_and(recall >= 0.9) AS recall_ok,
       bool_and(elements - deleted = live) AS one_element_per_row
FROM churn_log;
-- the index stays about its first size: without reuse it grows by the
-- inserted rows every round (20 x 30% = 6x the table, about 7x the size).
-- Every freed slot is taken: a new element takes the level of the free
-- slot it goes into, so it always fits (with levels of their own, a
-- higher-level element found only smaller slots and the index grew)
SELECT max(pages) FILTER (WHERE round > 0) <= 1.3 * (SELECT pages FROM churn_log WHERE round = 0)
       AS size_bounded,
       max(elements) = 2000 AS no_element_added
FROM churn_log;
-- a DELETE of everything, VACUUM, and new rows: all slots free, then reused
DELETE FROM churn;
VACUUM churn;
SELECT elements = 2000 AS no_element_added, deleted = elements AS all_free, entry_level
FROM hnsw_check('churn_v');
INSERT INTO churn SELECT g, pg_temp.point(g) FROM generate_series(1, 500) g;
SELECT elements = 2000 AS no_growth,
       elements - deleted AS live
FROM hnsw_check('churn_v');
SET enable_seqscan = off;
SELECT count(*) AS returned_after_refill FROM (SELECT id FROM churn ORDER BY v <-> pg_temp.point(3)) s;
RESET enable_seqscan;
DROP TABLE churn, churn_log;
DROP SEQUENCE churn_id;
