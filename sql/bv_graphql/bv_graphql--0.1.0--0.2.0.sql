/*
 * bv_graphql 0.1.0 -> 0.2.0: responses in selection order.
 *
 * graphql.resolve() returns jsonb, whose object keys come out in jsonb's
 * own order (shorter keys first); the GraphQL specification (section
 * 7.2.2) wants a response's keys in the order of the query's selections.
 * graphql.resolve_json() gives the same response as json text in that
 * order, and api.graphql (PostgREST's POST /rpc/graphql) now returns it.
 * PostgREST sends a json result as it is, so HTTP clients get ordered keys.
 */

\echo Use "ALTER EXTENSION bv_graphql UPDATE TO '0.2.0'" to load this file. \quit

CREATE FUNCTION graphql.resolve_json(query text DEFAULT NULL, variables jsonb DEFAULT NULL,
                                     "operationName" text DEFAULT NULL, extensions jsonb DEFAULT NULL)
RETURNS json
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'bv_graphql_resolve_json';
COMMENT ON FUNCTION graphql.resolve_json(text, jsonb, text, jsonb) IS
    'Runs one GraphQL request as the calling role, like graphql.resolve, and returns the response as json with its keys in selection order.';

-- The return type changes from jsonb to json: drop and create again.
DROP FUNCTION api.graphql(text, jsonb, text, jsonb);
CREATE FUNCTION api.graphql(query text DEFAULT NULL, variables jsonb DEFAULT NULL,
                            "operationName" text DEFAULT NULL, extensions jsonb DEFAULT NULL)
RETURNS json
LANGUAGE sql VOLATILE
AS $$ SELECT graphql.resolve_json(query, variables, "operationName", extensions) $$;
COMMENT ON FUNCTION api.graphql(text, jsonb, text, jsonb) IS
    'GraphQL endpoint: POST /rpc/graphql with {"query": ..., "variables": ..., "operationName": ...}; the response keys follow the query''s selection order.';

REVOKE ALL ON FUNCTION graphql.resolve_json(text, jsonb, text, jsonb), api.graphql(text, jsonb, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION graphql.resolve_json(text, jsonb, text, jsonb), api.graphql(text, jsonb, text, jsonb)
    TO bv_anon;
