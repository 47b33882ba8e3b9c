-- Red-team round 3 (bv_vector): values near the float4 limit, and the size
-- of error messages.
SET search_path = public, bv_vector;

-- Distances of valid vectors whose components are near the float4 limit
-- (3.4e38): the float4 sums overflowed, so <=> answered NaN for two equal
-- vectors and <-> / <#> answered infinity although the true results fit in
-- the float8 they return.  0.3.0 computes such results again in double.
SELECT '[3e38,3e38]'::vector <=> '[3e38,3e38]' AS cos_equal_huge,
       round(('[3e38,3e38]'::vector <=> '[-3e38,-3e38]')::numeric, 6) AS cos_opposite_huge,
       round(('[3e38,3e38]'::vector <=> '[1,1]')::numeric, 6) AS cos_huge_small;
SELECT round(('[3e38,3e38]'::vector <-> '[-3e38,-3e38]')::numeric / 1e38, 6) AS l2_over_1e38,
       round(vector_l2_squared_distance('[3e38]', '[-3e38]')::numeric / 1e76, 6) AS l2sq_over_1e76,
       round(inner_product('[3e38,3e38]', '[3e38,3e38]')::numeric / 1e76, 6) AS ip_over_1e76,
       round(('[3e38,3e38]'::vector <#> '[3e38,3e38]')::numeric / 1e76, 6) AS negip_over_1e76;
-- 17 dimensions: the 8-wide loops and the tail
SELECT (array_fill(3e38::real, ARRAY[17])::vector <=> array_fill(3e38::real, ARRAY[17])::vector) AS cos_17,
       isfinite_ok
  FROM (SELECT (array_fill(3e38::real, ARRAY[17])::vector <-> array_fill(-3e38::real, ARRAY[17])::vector)
               < 'infinity'::float8 AS isfinite_ok) s;
-- ordinary values are unchanged
SELECT '[1,2,3]'::vector <-> '[4,6,3]' AS l2, '[1,2,3]'::vector <#> '[4,6,3]' AS negip,
       round(('[1,0]'::vector <=> '[0,1]')::numeric, 6) AS cos;
-- a zero vector still has no cosine
SELECT '[0,0]'::vector <=> '[1,1]' AS cos_zero;

-- An index over such vectors: the cosine index orders them by their true
-- cosine (before: NaN, treated as infinitely far).
CREATE TABLE red4_v (id int PRIMARY KEY, v vector(2));
INSERT INTO red4_v VALUES (1, '[3e38,3e38]'), (2, '[-3e38,3e38]'), (3, '[1,0.9]'), (4, '[-1,-1]');
CREATE INDEX red4_v_cos ON red4_v USING hnsw (v vector_cosine_ops);
SET enable_seqscan = off;
SELECT id FROM red4_v ORDER BY v <=> '[1,1]' LIMIT 4;
RESET enable_seqscan;

-- Error messages quote at most 40 bytes of the client's text (before: the
-- whole literal, which can be hundreds of kilobytes, or a number of any
-- number of digits).
DO $$
DECLARE
    msg text;
BEGIN
    BEGIN
        PERFORM ('[' || repeat('1,', 10000) || 'x]')::vector;
    EXCEPTION WHEN invalid_text_representation THEN
        GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
        RAISE NOTICE 'syntax error message: % bytes: %', octet_length(msg), msg;
    END;
    BEGIN
        PERFORM ('[1' || repeat('0', 5000) || ']')::vector;
    EXCEPTION WHEN numeric_value_out_of_range THEN
        GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
        RAISE NOTICE 'range error message: % bytes: %', octet_length(msg), msg;
    END;
    BEGIN
        PERFORM ('[' || repeat('é', 100) || ']')::vector;
    EXCEPTION WHEN invalid_text_representation THEN
        GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
        RAISE NOTICE 'multibyte: % bytes: %', octet_length(msg), msg;
    END;
END $$;
-- short literals are quoted whole, as before
SELECT '[1,,2]'::vector;
DROP TABLE red4_v;
