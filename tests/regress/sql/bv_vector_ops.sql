-- bv_vector: distance operators and helper functions, and their refusals.
SET search_path = public, bv_vector;
\set SHOW_CONTEXT never

SELECT '[0,0]'::vector <-> '[3,4]' AS l2, l2_distance('[1,1]', '[1,1]') AS zero,
       vector_l2_squared_distance('[0,0]', '[3,4]') AS l2_squared;
SELECT '[1,2]'::vector <#> '[3,4]' AS neg_ip, inner_product('[1,2]', '[3,4]') AS ip;
SELECT '[1,0]'::vector <=> '[0,1]' AS orthogonal, '[1,1]'::vector <=> '[2,2]' AS same_direction,
       '[1,0]'::vector <=> '[-1,0]' AS opposite;
-- the cosine of a zero vector is undefined: NaN, as 0/0
SELECT '[0,0]'::vector <=> '[1,1]' AS zero_vector;
SELECT l2_norm('[3,4]'), l2_norm('[0,0,0]'), l2_normalize('[3,4]'), l2_normalize('[0,0]'), vector_dims('[1,2,3]');
-- long vectors: the SIMD loops and their tails agree with SQL arithmetic
WITH v AS (SELECT array_agg(g::real / 7) a, array_agg((20 - g)::real / 3) b FROM generate_series(1, 19) g)
SELECT round((a::vector <-> b::vector)::numeric, 3) = round(sqrt((SELECT sum((x - y)^2) FROM unnest(a, b) u(x, y)))::numeric, 3) AS l2_ok,
       round((a::vector <#> b::vector)::numeric, 3) = round(-(SELECT sum(x * y) FROM unnest(a, b) u(x, y))::numeric, 3) AS ip_ok
FROM v;
-- operators are strict: NULL in, NULL out
SELECT '[1]'::vector <-> NULL IS NULL AS null_l2;
-- large values do not overflow float4 in the helpers
SELECT l2_norm('[3e38,3e38]') > 4e38 AS big_norm, l2_normalize('[3e38,3e38]');

-- different dimensions (22026), with their SQLSTATE, message and hint
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
SELECT q, pg_temp.refusal(q) FROM (VALUES
    ($q$SELECT '[1,2]'::bv_vector.vector OPERATOR(bv_vector.<->) '[1,2,3]'$q$),
    ($q$SELECT '[1,2]'::bv_vector.vector OPERATOR(bv_vector.<#>) '[1]'$q$),
    ($q$SELECT '[1,2]'::bv_vector.vector OPERATOR(bv_vector.<=>) '[1]'$q$),
    ($q$SELECT bv_vector.inner_product('[1,2]', '[1]')$q$),
    ($q$SELECT bv_vector.vector_l2_squared_distance('[1,2]', '[1]')$q$),
    ($q$SELECT bv_vector.l2_distance('[1,2]', '[1]')$q$)) v(q);

-- every function, the type and the operators are documented
SELECT p.proname AS undocumented FROM pg_proc p
WHERE p.pronamespace = 'bv_vector'::regnamespace AND obj_description(p.oid, 'pg_proc') IS NULL
UNION ALL
SELECT o.oprname FROM pg_operator o
WHERE o.oprnamespace = 'bv_vector'::regnamespace AND obj_description(o.oid, 'pg_operator') IS NULL;
