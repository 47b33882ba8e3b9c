/*
 * bv_vector 0.1.0: schema "bv_vector": the vector(n) type, its casts,
 * distance operators and helpers, and the hnsw index access method with one
 * operator class per distance.
 *
 * Queries name the operators without a schema when bv_vector is on the
 * search_path (ALTER DATABASE ... SET search_path = "$user", public,
 * bv_vector); otherwise as OPERATOR(bv_vector.<->).  The access method hnsw
 * is database-wide, as every access method.
 */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION bv_vector" to load this file. \quit

COMMENT ON SCHEMA bv_vector IS 'BitVelocity vectors: the vector(n) type, distance operators and the hnsw index.';

-- ---- the type ----

CREATE TYPE bv_vector.vector;

CREATE FUNCTION bv_vector.vector_in(cstring, oid, integer) RETURNS bv_vector.vector
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'vector_in';
CREATE FUNCTION bv_vector.vector_out(bv_vector.vector) RETURNS cstring
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'vector_out';
CREATE FUNCTION bv_vector.vector_typmod_in(cstring[]) RETURNS integer
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'vector_typmod_in';
CREATE FUNCTION bv_vector.vector_typmod_out(integer) RETURNS cstring
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'vector_typmod_out';
CREATE FUNCTION bv_vector.vector_recv(internal, oid, integer) RETURNS bv_vector.vector
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'vector_recv';
CREATE FUNCTION bv_vector.vector_send(bv_vector.vector) RETURNS bytea
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'vector_send';

CREATE TYPE bv_vector.vector (
    INPUT = bv_vector.vector_in,
    OUTPUT = bv_vector.vector_out,
    TYPMOD_IN = bv_vector.vector_typmod_in,
    TYPMOD_OUT = bv_vector.vector_typmod_out,
    RECEIVE = bv_vector.vector_recv,
    SEND = bv_vector.vector_send,
    STORAGE = external,
    ALIGNMENT = int
);
COMMENT ON TYPE bv_vector.vector IS 'A vector of 1 to 16,000 finite float4 values; vector(n) fixes n.';

COMMENT ON FUNCTION bv_vector.vector_in(cstring, oid, integer) IS 'Text input of vector: ''[1, 2, 3]''.';
COMMENT ON FUNCTION bv_vector.vector_out(bv_vector.vector) IS 'Text output of vector.';
COMMENT ON FUNCTION bv_vector.vector_typmod_in(cstring[]) IS 'The n of vector(n).';
COMMENT ON FUNCTION bv_vector.vector_typmod_out(integer) IS 'Prints the n of vector(n).';
COMMENT ON FUNCTION bv_vector.vector_recv(internal, oid, integer) IS 'Binary input: int16 dimensions, int16 zero, float4 values.';
COMMENT ON FUNCTION bv_vector.vector_send(bv_vector.vector) IS 'Binary output: int16 dimensions, int16 zero, float4 values.';

-- ---- casts ----

CREATE FUNCTION bv_vector.vector(bv_vector.vector, integer, boolean) RETURNS bv_vector.vector
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'vector_coerce';
COMMENT ON FUNCTION bv_vector.vector(bv_vector.vector, integer, boolean) IS 'Checks a vector against vector(n).';
CREATE CAST (bv_vector.vector AS bv_vector.vector)
    WITH FUNCTION bv_vector.vector(bv_vector.vector, integer, boolean) AS IMPLICIT;

CREATE FUNCTION bv_vector.array_to_vector(real[], integer, boolean) RETURNS bv_vector.vector
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'array_to_vector';
CREATE FUNCTION bv_vector.array_to_vector(double precision[], integer, boolean) RETURNS bv_vector.vector
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'array_to_vector';
CREATE FUNCTION bv_vector.array_to_vector(integer[], integer, boolean) RETURNS bv_vector.vector
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'array_to_vector';
CREATE FUNCTION bv_vector.array_to_vector(numeric[], integer, boolean) RETURNS bv_vector.vector
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'array_to_vector';
CREATE FUNCTION bv_vector.vector_to_float4(bv_vector.vector, integer, boolean) RETURNS real[]
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'vector_to_float4';
COMMENT ON FUNCTION bv_vector.array_to_vector(real[], integer, boolean) IS 'Cast real[] to vector.';
COMMENT ON FUNCTION bv_vector.array_to_vector(double precision[], integer, boolean) IS 'Cast double precision[] to vector.';
COMMENT ON FUNCTION bv_vector.array_to_vector(integer[], integer, boolean) IS 'Cast integer[] to vector.';
COMMENT ON FUNCTION bv_vector.array_to_vector(numeric[], integer, boolean) IS 'Cast numeric[] to vector.';
COMMENT ON FUNCTION bv_vector.vector_to_float4(bv_vector.vector, integer, boolean) IS 'Cast vector to real[].';

CREATE CAST (real[] AS bv_vector.vector)
    WITH FUNCTION bv_vector.array_to_vector(real[], integer, boolean) AS ASSIGNMENT;
CREATE CAST (double precision[] AS bv_vector.vector)
    WITH FUNCTION bv_vector.array_to_vector(double precision[], integer, boolean) AS ASSIGNMENT;
CREATE CAST (integer[] AS bv_vector.vector)
    WITH FUNCTION bv_vector.array_to_vector(integer[], integer, boolean) AS ASSIGNMENT;
CREATE CAST (numeric[] AS bv_vector.vector)
    WITH FUNCTION bv_vector.array_to_vector(numeric[], integer, boolean) AS ASSIGNMENT;
CREATE CAST (bv_vector.vector AS real[])
    WITH FUNCTION bv_vector.vector_to_float4(bv_vector.vector, integer, boolean) AS IMPLICIT;

-- ---- distances and helpers ----

CREATE FUNCTION bv_vector.l2_distance(bv_vector.vector, bv_vector.vector) RETURNS double precision
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'l2_distance';
CREATE FUNCTION bv_vector.vector_l2_squared_distance(bv_vector.vector, bv_vector.vector) RETURNS double precision
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'vector_l2_squared_distance';
CREATE FUNCTION bv_vector.inner_product(bv_vector.vector, bv_vector.vector) RETURNS double precision
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'inner_product';
CREATE FUNCTION bv_vector.negative_inner_product(bv_vector.vector, bv_vector.vector) RETURNS double precision
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'negative_inner_product';
CREATE FUNCTION bv_vector.cosine_distance(bv_vector.vector, bv_vector.vector) RETURNS double precision
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'cosine_distance';
CREATE FUNCTION bv_vector.l2_norm(bv_vector.vector) RETURNS double precision
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'vector_l2_norm';
CREATE FUNCTION bv_vector.l2_normalize(bv_vector.vector) RETURNS bv_vector.vector
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'vector_normalize';
CREATE FUNCTION bv_vector.vector_dims(bv_vector.vector) RETURNS integer
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'vector_dims';

COMMENT ON FUNCTION bv_vector.l2_distance(bv_vector.vector, bv_vector.vector) IS 'Euclidean distance (the <-> operator).';
COMMENT ON FUNCTION bv_vector.vector_l2_squared_distance(bv_vector.vector, bv_vector.vector) IS 'Squared Euclidean distance: the hnsw index''s order for <->.';
COMMENT ON FUNCTION bv_vector.inner_product(bv_vector.vector, bv_vector.vector) IS 'Inner (dot) product.';
COMMENT ON FUNCTION bv_vector.negative_inner_product(bv_vector.vector, bv_vector.vector) IS 'Negative inner product (the <#> operator): ascending order is most similar first.';
COMMENT ON FUNCTION bv_vector.cosine_distance(bv_vector.vector, bv_vector.vector) IS 'Cosine distance 1 - cos (the <=> operator); NaN when a vector is zero.';
COMMENT ON FUNCTION bv_vector.l2_norm(bv_vector.vector) IS 'Euclidean norm.';
COMMENT ON FUNCTION bv_vector.l2_normalize(bv_vector.vector) IS 'The vector divided by its Euclidean norm; a zero vector stays zero. (Not "normalize": NORMALIZE is an SQL keyword bound to pg_catalog.normalize(text).)';
COMMENT ON FUNCTION bv_vector.vector_dims(bv_vector.vector) IS 'Number of dimensions.';

CREATE OPERATOR bv_vector.<-> (
    LEFTARG = bv_vector.vector, RIGHTARG = bv_vector.vector,
    FUNCTION = bv_vector.l2_distance, COMMUTATOR = OPERATOR(bv_vector.<->)
);
CREATE OPERATOR bv_vector.<#> (
    LEFTARG = bv_vector.vector, RIGHTARG = bv_vector.vector,
    FUNCTION = bv_vector.negative_inner_product, COMMUTATOR = OPERATOR(bv_vector.<#>)
);
CREATE OPERATOR bv_vector.<=> (
    LEFTARG = bv_vector.vector, RIGHTARG = bv_vector.vector,
    FUNCTION = bv_vector.cosine_distance, COMMUTATOR = OPERATOR(bv_vector.<=>)
);
COMMENT ON OPERATOR bv_vector.<-> (bv_vector.vector, bv_vector.vector) IS 'Euclidean distance.';
COMMENT ON OPERATOR bv_vector.<#> (bv_vector.vector, bv_vector.vector) IS 'Negative inner product.';
COMMENT ON OPERATOR bv_vector.<=> (bv_vector.vector, bv_vector.vector) IS 'Cosine distance.';

-- ---- the hnsw index ----

CREATE FUNCTION bv_vector.hnsw_handler(internal) RETURNS index_am_handler
    LANGUAGE c AS 'MODULE_PATHNAME', 'hnsw_handler';
COMMENT ON FUNCTION bv_vector.hnsw_handler(internal) IS 'The hnsw index access method.';

CREATE ACCESS METHOD hnsw TYPE INDEX HANDLER bv_vector.hnsw_handler;
COMMENT ON ACCESS METHOD hnsw IS 'Hierarchical navigable small world graphs for nearest-neighbor search (bv_vector).';

CREATE OPERATOR CLASS bv_vector.vector_l2_ops DEFAULT FOR TYPE bv_vector.vector USING hnsw AS
    OPERATOR 1 bv_vector.<-> (bv_vector.vector, bv_vector.vector) FOR ORDER BY pg_catalog.float_ops,
    FUNCTION 1 bv_vector.vector_l2_squared_distance(bv_vector.vector, bv_vector.vector);
CREATE OPERATOR CLASS bv_vector.vector_ip_ops FOR TYPE bv_vector.vector USING hnsw AS
    OPERATOR 1 bv_vector.<#> (bv_vector.vector, bv_vector.vector) FOR ORDER BY pg_catalog.float_ops,
    FUNCTION 1 bv_vector.negative_inner_product(bv_vector.vector, bv_vector.vector);
CREATE OPERATOR CLASS bv_vector.vector_cosine_ops FOR TYPE bv_vector.vector USING hnsw AS
    OPERATOR 1 bv_vector.<=> (bv_vector.vector, bv_vector.vector) FOR ORDER BY pg_catalog.float_ops,
    FUNCTION 1 bv_vector.cosine_distance(bv_vector.vector, bv_vector.vector);

CREATE FUNCTION bv_vector.hnsw_check(index regclass, OUT elements bigint, OUT deleted bigint,
                                     OUT entry_level integer, OUT unreachable bigint,
                                     OUT above_entry bigint)
    LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'hnsw_check';
COMMENT ON FUNCTION bv_vector.hnsw_check(regclass) IS
    'Verifies an hnsw index''s structure (tuples, links, entry point); raises index_corrupted (XX002) on damage. Returns element counts; unreachable counts live elements no layer-0 path from the entry point reaches (scans miss their rows; inserts after the build and crashes can leave a few).';
REVOKE ALL ON FUNCTION bv_vector.hnsw_check(regclass) FROM PUBLIC;
