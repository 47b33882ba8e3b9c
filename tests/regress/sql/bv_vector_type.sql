-- bv_vector: the vector(n) type: text and binary I/O, typmod, casts, and
-- every refusal with its SQLSTATE.
SET search_path = public, bv_vector;
\set VERBOSITY default
\set SHOW_CONTEXT never

-- text I/O, spaces and exponents; output is the shortest exact float4 text
SELECT '[1,2,3]'::vector;
SELECT ' [ 1.5 , -2e-3,3.25e2 ] '::vector;
SELECT '[0.1]'::vector, '[-0]'::vector, '[3.4028235e38]'::vector;
SELECT '[1,2,3]'::vector(3);
SELECT pg_typeof('[1]'::vector), format_type('vector'::regtype, 7);

-- a column of vector(3) keeps its typmod
CREATE TABLE vt (v vector(3));
INSERT INTO vt VALUES ('[1,2,3]'), (NULL);
SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'vt'::regclass AND attname = 'v';
SELECT v FROM vt ORDER BY v IS NULL;

-- refusals are listed with their SQLSTATE, message and hint
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

-- refusals: syntax (22P02)
SELECT pg_temp.refusal($q$SELECT ''::vector$q$);
SELECT pg_temp.refusal($q$SELECT '1,2'::vector$q$);
SELECT pg_temp.refusal($q$SELECT '[1,2'::vector$q$);
SELECT pg_temp.refusal($q$SELECT '[1,,2]'::vector$q$);
SELECT pg_temp.refusal($q$SELECT '[1,2,]'::vector$q$);
SELECT pg_temp.refusal($q$SELECT '[a]'::vector$q$);
SELECT pg_temp.refusal($q$SELECT '[1 2]'::vector$q$);
SELECT pg_temp.refusal($q$SELECT '[1] x'::vector$q$);
SELECT pg_temp.refusal($q$SELECT '[1,é]'::vector$q$);
-- hexadecimal floats are accepted, as by real ('0x10'::real = 16)
SELECT '[0x10]'::vector;
-- no dimensions (22023), too many (54000)
SELECT pg_temp.refusal($q$SELECT '[]'::vector$q$);
SELECT pg_temp.refusal($q$SELECT ('[' || repeat('1,', 16000) || '1]')::vector$q$);
SELECT vector_dims(('[' || repeat('1,', 15999) || '1]')::vector);
-- NaN, infinity, out of float4 range (22003)
SELECT pg_temp.refusal($q$SELECT '[NaN]'::vector$q$);
SELECT pg_temp.refusal($q$SELECT '[1,Infinity]'::vector$q$);
SELECT pg_temp.refusal($q$SELECT '[-inf]'::vector$q$);
SELECT pg_temp.refusal($q$SELECT '[1e39]'::vector$q$);
-- typmod: wrong count (22026), invalid modifiers (22023, 54000)
SELECT pg_temp.refusal($q$SELECT '[1,2]'::vector(3)$q$);
SELECT pg_temp.refusal($q$INSERT INTO vt VALUES ('[1,2,3,4]')$q$);
SELECT pg_temp.refusal($q$SELECT '[1]'::vector(0)$q$);
SELECT pg_temp.refusal($q$SELECT '[1]'::vector(16001)$q$);
SELECT pg_temp.refusal($q$CREATE TABLE bad (v vector(2, 3))$q$);

-- casts from and to arrays
SELECT ARRAY[1, 2.5, -3]::real[]::vector;
SELECT ARRAY[1, 2.5]::float8[]::vector, ARRAY[1, 2]::int[]::vector, ARRAY[1.25, 2]::numeric[]::vector;
SELECT '[1,2.5]'::vector::real[];
SELECT ARRAY[1, 2, 3]::real[]::vector(3);
INSERT INTO vt VALUES (ARRAY[4, 5, 6]::real[]);
SELECT count(*) FROM vt;
SELECT pg_temp.refusal($q$SELECT ARRAY[1, NULL]::real[]::vector$q$);
SELECT pg_temp.refusal($q$SELECT ARRAY[[1, 2], [3, 4]]::real[]::vector$q$);
SELECT pg_temp.refusal($q$SELECT '{}'::real[]::vector$q$);
SELECT pg_temp.refusal($q$SELECT ARRAY['NaN']::real[]::vector$q$);
SELECT pg_temp.refusal($q$SELECT ARRAY['Infinity']::float8[]::vector$q$);
SELECT pg_temp.refusal($q$SELECT ARRAY[1e300]::float8[]::vector$q$);
SELECT pg_temp.refusal($q$SELECT ARRAY[1, 2]::real[]::vector(3)$q$);

-- binary I/O (COPY writes into the data directory): a round trip through COPY BINARY, then hand-made values fed
-- to vector_recv through a bytea column (its binary form is its bytes)
SELECT vector_send('[1,-2]');
CREATE TEMP TABLE bin_src (v vector);
INSERT INTO bin_src VALUES ('[1,-2,3.5]'), ('[0.1]');
CREATE TEMP TABLE bin_dst (v vector);
CREATE TEMP TABLE raw (b bytea);
CREATE FUNCTION pg_temp.recv(raw_bytes bytea) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    f text := current_setting('data_directory') || '/bv_vector_regress.bin';
BEGIN
    TRUNCATE raw, bin_dst;
    INSERT INTO raw VALUES (raw_bytes);
    EXECUTE format('COPY raw TO %L (FORMAT binary)', f);
    EXECUTE format('COPY bin_dst FROM %L (FORMAT binary)', f);
    RETURN QUERY SELECT v::text FROM bin_dst;
END
$$;
DO $$
DECLARE
    f text := current_setting('data_directory') || '/bv_vector_regress.bin';
BEGIN
    EXECUTE format('COPY bin_src TO %L (FORMAT binary)', f);
    EXECUTE format('COPY bin_dst FROM %L (FORMAT binary)', f);
END
$$;
SELECT v FROM bin_dst;
SELECT pg_temp.recv('\x000200003f800000c0000000');
-- reserved field not zero (22P03)
SELECT pg_temp.refusal($q$SELECT pg_temp.recv('\x000100013f800000')$q$);
-- too few, too many bytes (22P03)
SELECT pg_temp.refusal($q$SELECT pg_temp.recv('\x000200003f800000')$q$);
SELECT pg_temp.refusal($q$SELECT pg_temp.recv('\x000100003f80000000')$q$);
-- zero and too many dimensions, NaN, infinity
SELECT pg_temp.refusal($q$SELECT pg_temp.recv('\x00000000')$q$);
SELECT pg_temp.refusal($q$SELECT pg_temp.recv('\x7fff0000')$q$);
SELECT pg_temp.refusal($q$SELECT pg_temp.recv('\xffff0000')$q$);
SELECT pg_temp.refusal($q$SELECT pg_temp.recv('\x0001')$q$);
SELECT pg_temp.refusal($q$SELECT pg_temp.recv('\x000100007fc00000')$q$);
SELECT pg_temp.refusal($q$SELECT pg_temp.recv('\x000100007f800000')$q$);

DROP TABLE vt;
