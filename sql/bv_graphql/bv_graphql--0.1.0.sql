/*
 * bv_graphql 0.1.0: GraphQL resolved inside PostgreSQL.
 *
 * graphql.resolve() takes a GraphQL request (the fields of GraphQL over
 * HTTP's POST body) and returns the response object.  It is SECURITY
 * INVOKER: the schema it answers with and every statement it runs belong to
 * the calling role, so grants and row-level security hold as in REST.
 * api.graphql() is the same function in schema api, for PostgREST's
 * POST /rpc/graphql.  The schemas exposed are bv_graphql.schemas
 * (default 'commerce, api').  See docs/bv_graphql.md.
 */

\echo Use "CREATE EXTENSION bv_graphql" to load this file. \quit

COMMENT ON SCHEMA graphql IS 'GraphQL resolved inside PostgreSQL (bv_graphql).';

CREATE FUNCTION graphql.resolve(query text DEFAULT NULL, variables jsonb DEFAULT NULL,
                                "operationName" text DEFAULT NULL, extensions jsonb DEFAULT NULL)
RETURNS jsonb
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'bv_graphql_resolve';
COMMENT ON FUNCTION graphql.resolve(text, jsonb, text, jsonb) IS
    'Runs one GraphQL request (query, variables, operationName, extensions) as the calling role; returns {"data": ..., "errors": [...]}.';

-- Comment helpers used by the reflection queries (run as the caller):
-- @graphql({"name": "...", "primary_key_columns": [...]}) in a comment.
CREATE FUNCTION graphql._comment_directive(c text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d jsonb;
BEGIN
    IF c IS NULL OR strpos(c, '@graphql(') = 0 THEN
        RETURN NULL;
    END IF;
    d := substring(c FROM '@graphql\((\{.*\})\)')::jsonb;
    RETURN CASE WHEN jsonb_typeof(d) = 'object' THEN d END;
EXCEPTION WHEN others THEN
    RETURN NULL;  -- a malformed directive is ignored, the comment stays a description
END
$$;

CREATE FUNCTION graphql._comment_text(c text) RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT nullif(btrim(regexp_replace(c, '@graphql\(\{.*\}\)', '')), '') $$;

CREATE FUNCTION graphql._comment_name(c text) RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT CASE WHEN jsonb_typeof(graphql._comment_directive(c) -> 'name') = 'string'
                  THEN graphql._comment_directive(c) ->> 'name' END $$;

CREATE FUNCTION graphql._comment_pk(c text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k jsonb := graphql._comment_directive(c) -> 'primary_key_columns';
BEGIN
    IF jsonb_typeof(k) <> 'array' THEN
        RETURN NULL;
    END IF;
    RETURN ARRAY(SELECT jsonb_array_elements_text(k));
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$$;

-- Raised inside an update/delete statement when it changed more than atMost rows.
CREATE FUNCTION graphql._at_most(affected integer, at_most integer) RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF affected > at_most THEN
        RAISE EXCEPTION 'the mutation would change % records, more than atMost (%)', affected, at_most
            USING ERRCODE = 'GQ002',
                  HINT = 'Narrow the filter, or raise atMost if that many records are meant.';
    END IF;
    RETURN affected;
END
$$;

-- Every backend rebuilds its cached GraphQL schema after DDL: relations
-- and grants on them invalidate by themselves; comments and function
-- grants do not, so this event trigger sends an invalidation.
CREATE FUNCTION graphql._invalidate() RETURNS void
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'bv_graphql_invalidate';

CREATE FUNCTION graphql._on_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- temporary tables of any session are not worth every backend's rebuild
    IF EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands() c
                WHERE c.schema_name IS NULL OR c.schema_name NOT LIKE 'pg\_temp%') THEN
        PERFORM graphql._invalidate();
    END IF;
END
$$;

CREATE EVENT TRIGGER bv_graphql_ddl ON ddl_command_end EXECUTE FUNCTION graphql._on_ddl();

-- PostgREST's POST /rpc/graphql.  Schema api is bv_core's.
CREATE FUNCTION api.graphql(query text DEFAULT NULL, variables jsonb DEFAULT NULL,
                            "operationName" text DEFAULT NULL, extensions jsonb DEFAULT NULL)
RETURNS jsonb
LANGUAGE sql VOLATILE
AS $$ SELECT graphql.resolve(query, variables, "operationName", extensions) $$;
COMMENT ON FUNCTION api.graphql(text, jsonb, text, jsonb) IS
    'GraphQL endpoint: POST /rpc/graphql with {"query": ..., "variables": ..., "operationName": ...}.';

REVOKE ALL ON FUNCTION graphql.resolve(text, jsonb, text, jsonb), api.graphql(text, jsonb, text, jsonb),
    graphql._invalidate() FROM PUBLIC;
GRANT USAGE ON SCHEMA graphql TO bv_anon;
GRANT EXECUTE ON FUNCTION graphql.resolve(text, jsonb, text, jsonb), api.graphql(text, jsonb, text, jsonb)
    TO bv_anon;
