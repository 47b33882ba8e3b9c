-- bv_vector 0.1.0 -> 0.2.0: VACUUM repairs the links to deleted elements;
-- hnsw_check() reports the links that remain (dead_links).
\echo Use "ALTER EXTENSION bv_vector UPDATE" to load this file. \quit

DROP FUNCTION bv_vector.hnsw_check(regclass);
CREATE FUNCTION bv_vector.hnsw_check(index regclass, OUT elements bigint, OUT deleted bigint,
                                     OUT entry_level integer, OUT unreachable bigint,
                                     OUT above_entry bigint, OUT dead_links bigint)
    LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'hnsw_check';
COMMENT ON FUNCTION bv_vector.hnsw_check(regclass) IS
    'Verifies an hnsw index''s structure (tuples, links, entry point); raises index_corrupted (XX002) on damage. Returns element counts; unreachable counts live elements no layer-0 path from the entry point reaches (scans miss their rows; inserts after the build and crashes can leave a few); dead_links counts links from live elements to deleted ones, which VACUUM repairs.';
REVOKE ALL ON FUNCTION bv_vector.hnsw_check(regclass) FROM PUBLIC;
