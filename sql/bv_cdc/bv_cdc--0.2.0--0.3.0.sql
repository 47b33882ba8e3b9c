/*
 * bv_cdc 0.2.0 -> 0.3.0: hardening (issues #17, #18, #27).
 *
 * A fresh install of 0.3.0 runs bv_cdc--0.1.0.sql and the upgrade scripts in
 * order.  Each section below names the issue item it fixes.
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION bv_cdc UPDATE TO '0.3.0'" to load this file. \quit


-- ---- helpers: bounded quoting, the calling role, internal schemas ----

-- #17 item 15: messages quote at most a short prefix of client data.
CREATE FUNCTION bv_cdc.clip(value text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN value IS NULL THEN 'NULL'
                WHEN pg_catalog.length(value) <= 64 THEN value
                ELSE pg_catalog.left(value, 64) || '...' END
$$;

COMMENT ON FUNCTION bv_cdc.clip(text) IS
'Internal: a client value as error messages quote it, at most its first 64 characters (then "...").';

-- #17 item 14: the role that called the SECURITY DEFINER API (current_user
-- outside it, SET ROLE included), whose privileges routes and snapshots use.
CREATE FUNCTION bv_cdc.invoker()
RETURNS oid
AS 'MODULE_PATHNAME', 'bv_cdc_invoker'
LANGUAGE C STRICT STABLE;

COMMENT ON FUNCTION bv_cdc.invoker() IS
'Internal: the role that called bv_cdc''s API (the current role outside SECURITY DEFINER functions); routes and snapshots are limited to the tables it may SELECT.';

CREATE FUNCTION bv_cdc.is_internal_schema(nspname text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT nspname IN ('pg_catalog', 'information_schema', 'pg_toast', 'bv', 'bv_audit', 'bv_cdc', 'cron')
        OR nspname LIKE 'pg\_temp\_%' OR nspname LIKE 'pg\_toast\_temp\_%'
$$;

COMMENT ON FUNCTION bv_cdc.is_internal_schema(text) IS
'true for schemas bv_cdc never routes nor snapshots: system catalogs (pg_catalog, information_schema, pg_toast, temporary schemas) and the suite''s internals (bv, bv_audit, bv_cdc, cron). The worker applies the same rule.';

-- May role publish every row of tbl?  SELECT on the table, and row-level
-- security does not hide rows from it (bv_cdc reads every row, as the
-- worker's superuser): no RLS, or the role bypasses it (superuser,
-- BYPASSRLS, or the table's owner unless FORCE ROW LEVEL SECURITY).
CREATE FUNCTION bv_cdc.may_publish(role oid, tbl oid)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(bool_and(pg_catalog.has_table_privilege(r.oid, c.oid, 'SELECT')
                             AND (NOT c.relrowsecurity OR r.rolsuper OR r.rolbypassrls
                                  OR (NOT c.relforcerowsecurity
                                      AND pg_catalog.pg_has_role(r.oid, c.relowner, 'USAGE')))), false)
      FROM pg_catalog.pg_class c, pg_catalog.pg_roles r
     WHERE c.oid = tbl AND r.oid = role
$$;

COMMENT ON FUNCTION bv_cdc.may_publish(oid, oid) IS
'true when role may SELECT every row of table tbl: SELECT privilege, and no row-level security hiding rows from it (no RLS, superuser, BYPASSRLS, or the owner without FORCE ROW LEVEL SECURITY). Routes and snapshots publish every row, so they require it.';

-- Who added a route: the worker publishes only tables that role may SELECT.
ALTER TABLE bv_cdc.routes ADD COLUMN created_by name;
COMMENT ON COLUMN bv_cdc.routes.created_by IS
'Role that added the route (bv_cdc.invoker()); the worker publishes only tables this role may SELECT, also tables created later that match the pattern. NULL for routes added before 0.3.0.';

-- ---- #17 item 15: NULL arguments are 22004, bad values 22023 with a hint ----

CREATE OR REPLACE FUNCTION bv_cdc.check_sink_name(name text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'sink name must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Use a name such as ''main'' or ''analytics_kafka''.';
    END IF;
    IF name !~ '^[a-z][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'invalid sink name "%"', bv_cdc.clip(name)
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A sink name starts with a lower case letter, followed by up to 62 lower case letters, digits or underscores.',
                  HINT = 'Use a name such as ''main'' or ''analytics_kafka''.';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION bv_cdc.check_topic_template(topic_template text, kind text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rest text := replace(replace(topic_template, '{schema}', ''), '{table}', '');
BEGIN
    IF topic_template IS NULL THEN
        RAISE EXCEPTION 'topic template must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Omit it to use the default of the sink''s kind.';
    END IF;
    IF kind = 'mqtt' THEN
        rest := replace(rest, '{key}', '');
        IF topic_template = '' OR length(topic_template) > 1000
           OR rest ~ '[+#[:cntrl:]]' OR topic_template LIKE '$%' THEN
            RAISE EXCEPTION 'invalid MQTT topic template "%"', bv_cdc.clip(topic_template)
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'An MQTT topic template is 1 to 1000 characters without the wildcards + and #, not starting with $; placeholders {schema}, {table} and {key}.',
                      HINT = 'For example ''bv/{schema}/{table}/{key}''.';
        END IF;
    ELSIF topic_template = '' OR length(topic_template) > 200
       OR rest !~ '^[A-Za-z0-9._-]*$' OR topic_template IN ('.', '..') THEN
        RAISE EXCEPTION 'invalid topic template "%"', bv_cdc.clip(topic_template)
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A topic template is 1 to 200 characters: letters, digits, ".", "_", "-" and the placeholders {schema} and {table}.',
                  HINT = 'For example ''bv.{schema}.{table}'' or ''orders''.';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION bv_cdc.add_sink(name text, kind text, config jsonb)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM bv_cdc.check_sink_name(name);
    IF kind IS NULL THEN
        RAISE EXCEPTION 'sink kind must not be null'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Use ''kafka'', ''mqtt'' or ''webhook''.';
    END IF;
    IF config IS NULL THEN
        RAISE EXCEPTION 'sink configuration must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the sink''s properties as a JSON object, e.g. {"bootstrap.servers": "host:9092"}.';
    END IF;
    PERFORM bv_cdc.validate_sink(kind, config);
    PERFORM bv_cdc.check_sink_secrets(kind, config);
    BEGIN
        INSERT INTO bv_cdc.sinks (name, kind, config) VALUES (name, kind, config);
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'sink "%" already exists', name
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Use bv_cdc.alter_sink to change its configuration, or choose another name.';
    END;
END
$$;

CREATE OR REPLACE FUNCTION bv_cdc.alter_sink(name text, config jsonb)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text;
BEGIN
    PERFORM bv_cdc.check_sink_name(name);
    IF config IS NULL THEN
        RAISE EXCEPTION 'sink configuration must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the sink''s complete new properties as a JSON object.';
    END IF;
    SELECT s.kind INTO k FROM bv_cdc.sinks s WHERE s.name = alter_sink.name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'sink "%" does not exist', name
            USING ERRCODE = 'undefined_object', HINT = 'Add it with bv_cdc.add_sink.';
    END IF;
    PERFORM bv_cdc.validate_sink(k, config);
    PERFORM bv_cdc.check_sink_secrets(k, config);
    UPDATE bv_cdc.sinks s SET config = alter_sink.config, updated_at = pg_catalog.now()
     WHERE s.name = alter_sink.name;
END
$$;

CREATE OR REPLACE FUNCTION bv_cdc.drop_sink(name text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM bv_cdc.check_sink_name(name);
    DELETE FROM bv_cdc.sinks s WHERE s.name = drop_sink.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'sink "%" does not exist', name
            USING ERRCODE = 'undefined_object', HINT = 'See the table bv_cdc.sinks.';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION bv_cdc.set_paused(name text, paused boolean)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM bv_cdc.check_sink_name(name);
    IF paused IS NULL THEN
        RAISE EXCEPTION 'paused must not be null'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Use bv_cdc.pause(name) or bv_cdc.resume(name).';
    END IF;
    UPDATE bv_cdc.sinks s SET paused = set_paused.paused, updated_at = pg_catalog.now()
     WHERE s.name = set_paused.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'sink "%" does not exist', name
            USING ERRCODE = 'undefined_object', HINT = 'See the table bv_cdc.sinks.';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION bv_cdc.drop_route(id bigint)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF id IS NULL THEN
        RAISE EXCEPTION 'route id must not be null'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'See the table bv_cdc.routes.';
    END IF;
    DELETE FROM bv_cdc.routes r WHERE r.id = drop_route.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'route % does not exist', id
            USING ERRCODE = 'undefined_object', HINT = 'See the table bv_cdc.routes.';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION bv_cdc.replay_dead_letters(sink text, ids bigint[] DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM bv_cdc.check_sink_name(sink);
    IF ids IS NOT NULL AND (array_ndims(ids) > 1 OR array_position(ids, NULL) IS NOT NULL) THEN
        RAISE EXCEPTION 'ids must be a one-dimensional array without NULL elements'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the ids of bv_cdc.dead_letter rows, e.g. ''{1,2}'', or omit them to replay all.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM bv_cdc.sinks s WHERE s.name = replay_dead_letters.sink AND s.kind = 'webhook') THEN
        RAISE EXCEPTION 'webhook sink "%" does not exist', sink
            USING ERRCODE = 'undefined_object', HINT = 'See the table bv_cdc.sinks.';
    END IF;
    WITH moved AS (
        DELETE FROM bv_cdc.dead_letter d
         WHERE d.sink = replay_dead_letters.sink
           AND (replay_dead_letters.ids IS NULL OR d.id = ANY (replay_dead_letters.ids))
        RETURNING d.*)
    INSERT INTO bv_cdc.webhook_spool (sink, route_id, event_id, key, topic, op, tbl, lsn,
                                      traceparent, hold, body, attempts, first_attempt_at,
                                      last_attempt_at, last_status, last_error)
    SELECT m.sink, m.route_id, m.event_id, m.key, m.topic, m.op, m.tbl, m.lsn, m.traceparent,
           m.hold, m.body, 0, NULL, m.last_attempt_at, m.last_status, m.last_error
      FROM moved m ORDER BY m.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM bv_cdc.spool_changed();
    RETURN n;
END
$$;

-- ---- #27 §0, #17 items 14 and 15: routes ----

-- A list of column names: one dimension, no NULL or empty element, names
-- no longer than PostgreSQL's.
CREATE FUNCTION bv_cdc.check_column_list(argument text, columns text[])
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF columns IS NULL THEN
        RETURN;
    END IF;
    IF array_ndims(columns) > 1 OR cardinality(columns) > 1600
       OR EXISTS (SELECT 1 FROM unnest(columns) c WHERE c IS NULL OR c = '' OR octet_length(c) > 63) THEN
        RAISE EXCEPTION 'invalid %: a one-dimensional list of column names is expected', argument
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Column lists have at most 1600 names of 1 to 63 bytes; NULL elements and nested arrays are not allowed.',
                  HINT = format('For example %s => ''{id,total}''.', argument);
    END IF;
END
$$;

COMMENT ON FUNCTION bv_cdc.check_column_list(text, text[]) IS
'Raises 22023 unless columns (the argument named argument of add_route) is NULL or a one-dimensional array of 1 to 1600 non-empty column names of at most 63 bytes.';

-- The existing tables a route pattern matches, and whether the calling role
-- may route them: never internal schemas, only tables it may SELECT, and
-- with u or d published only tables whose updates and deletes are decoded
-- (a primary key, a replica identity index, or REPLICA IDENTITY FULL).
CREATE FUNCTION bv_cdc.check_route_tables(table_pattern text, operations text[])
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    schema_part text := split_part(table_pattern, '.', 1);
    like_pattern text := replace(replace(replace(replace(replace(table_pattern, '\', '\\'),
                                 '%', '\%'), '_', '\_'), '*', '%'), '?', '_');
    caller oid := bv_cdc.invoker();
    t record;
BEGIN
    IF schema_part !~ '[*?]' AND bv_cdc.is_internal_schema(schema_part) THEN
        RAISE EXCEPTION 'tables of schema "%" cannot be routed', bv_cdc.clip(schema_part)
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'bv_cdc never publishes system catalogs (pg_catalog, information_schema, pg_toast) nor the suite''s internal schemas (bv, bv_audit, bv_cdc, cron).',
                  HINT = 'Route the application''s own tables.';
    END IF;
    FOR t IN
        SELECT c.oid, n.nspname, c.relname, c.relreplident,
               EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                        WHERE i.indrelid = c.oid
                          AND ((c.relreplident = 'd' AND i.indisprimary)
                               OR (c.relreplident = 'i' AND i.indisreplident))) AS has_index
          FROM pg_catalog.pg_class c
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p')
           AND NOT bv_cdc.is_internal_schema(n.nspname)
           AND (n.nspname || '.' || c.relname) LIKE like_pattern
         ORDER BY n.nspname, c.relname
    LOOP
        IF NOT pg_catalog.has_table_privilege(caller, t.oid, 'SELECT') THEN
            RAISE EXCEPTION 'permission denied to route table %.%', quote_ident(t.nspname), quote_ident(t.relname)
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = 'A route publishes the rows of the tables it matches; you may only route tables you can SELECT.',
                      HINT = 'Ask the table''s owner for SELECT, or use a pattern that does not match it.';
        END IF;
        IF NOT bv_cdc.may_publish(caller, t.oid) THEN
            RAISE EXCEPTION 'permission denied to route table %.%: it has row-level security', quote_ident(t.nspname), quote_ident(t.relname)
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = 'A route publishes every row, past row-level security; only a role that bypasses it (its owner, a role with BYPASSRLS) may route the table.',
                      HINT = 'Add the route as such a role, or use a pattern that does not match the table.';
        END IF;
        IF operations && '{u,d}'::text[] AND t.relreplident <> 'f' AND NOT t.has_index THEN
            RAISE EXCEPTION 'table %.% has no replica identity', quote_ident(t.nspname), quote_ident(t.relname)
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = 'Without a primary key, a replica identity index or REPLICA IDENTITY FULL, its updates and deletes cannot be decoded from the WAL.',
                      HINT = format('Add a primary key, or run ALTER TABLE %I.%I REPLICA IDENTITY FULL, or route only inserts and truncates with operations => ''{c,t,r}''.',
                                    t.nspname, t.relname);
        END IF;
    END LOOP;
END
$$;

COMMENT ON FUNCTION bv_cdc.check_route_tables(text, text[]) IS
'Raises 42501 when table_pattern names an internal schema or matches a table the calling role cannot SELECT, and 55000 when it matches a table without replica identity while operations include u or d.';

CREATE OR REPLACE FUNCTION bv_cdc.add_route(
    table_pattern text,
    sink text,
    topic_template text DEFAULT NULL,
    include_columns text[] DEFAULT NULL,
    exclude_columns text[] DEFAULT NULL,
    operations text[] DEFAULT '{c,u,d,t,r}',
    options jsonb DEFAULT '{}')
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    new_id bigint;
    sink_kind text;
    tmpl text := topic_template;
    k text;
BEGIN
    IF table_pattern IS NULL THEN
        RAISE EXCEPTION 'table pattern must not be null'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'For example ''public.orders'' or ''public.*''.';
    END IF;
    IF table_pattern !~ '^[^.]+\.[^.]+$' OR octet_length(table_pattern) > 300 THEN
        RAISE EXCEPTION 'invalid table pattern "%"', bv_cdc.clip(table_pattern)
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A table pattern is schema.table (at most 300 bytes), where either part may use the wildcards * and ?.',
                  HINT = 'For example ''public.orders'' or ''public.*''.';
    END IF;
    PERFORM bv_cdc.check_sink_name(sink);
    SELECT s.kind INTO sink_kind FROM bv_cdc.sinks s WHERE s.name = add_route.sink;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'sink "%" does not exist', sink
            USING ERRCODE = 'undefined_object', HINT = 'Add it first with bv_cdc.add_sink.';
    END IF;
    tmpl := coalesce(tmpl, CASE sink_kind WHEN 'mqtt' THEN 'bv/{schema}/{table}/{key}'
                                          WHEN 'webhook' THEN '{schema}.{table}'
                                          ELSE 'bv.{schema}.{table}' END);
    PERFORM bv_cdc.check_topic_template(tmpl, sink_kind);
    PERFORM bv_cdc.check_column_list('include_columns', include_columns);
    PERFORM bv_cdc.check_column_list('exclude_columns', exclude_columns);
    IF include_columns IS NOT NULL AND exclude_columns IS NOT NULL THEN
        RAISE EXCEPTION 'include_columns and exclude_columns cannot both be set'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'List the columns to publish, or the columns to leave out, not both.';
    END IF;
    IF operations IS NULL THEN
        RAISE EXCEPTION 'operations must not be null'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Omit it to publish every operation, or pass e.g. ''{c,u,d}''.';
    END IF;
    IF cardinality(operations) = 0 OR array_ndims(operations) > 1
       OR array_position(operations, NULL) IS NOT NULL
       OR NOT operations <@ '{c,u,d,t,r}'::text[] THEN
        RAISE EXCEPTION 'invalid operations %', bv_cdc.clip(operations::text)
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Operations are c (insert), u (update), d (delete), t (truncate) and r (snapshot read).',
                  HINT = 'For example ''{c,u,d}''.';
    END IF;
    IF options IS NULL THEN
        RAISE EXCEPTION 'route options must not be null'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Omit them, or pass e.g. ''{"qos": 1}''.';
    END IF;
    IF jsonb_typeof(options) <> 'object' OR octet_length(options::text) > 1000 THEN
        RAISE EXCEPTION 'route options must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'For example ''{"qos": 1}''.';
    END IF;
    FOR k IN SELECT jsonb_object_keys(options) LOOP
        IF NOT (k = ANY (CASE sink_kind WHEN 'mqtt' THEN '{qos,retain}'::text[]
                                        WHEN 'webhook' THEN '{on_dead_letter}'::text[]
                                        ELSE '{}'::text[] END)) THEN
            RAISE EXCEPTION 'unknown route option "%" for a % sink', bv_cdc.clip(k), sink_kind
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'MQTT routes take qos and retain; webhook routes take on_dead_letter; Kafka routes take none.';
        END IF;
    END LOOP;
    IF options ? 'qos' AND (jsonb_typeof(options -> 'qos') <> 'number'
                            OR (options ->> 'qos') NOT IN ('0', '1', '2')) THEN
        RAISE EXCEPTION 'invalid MQTT QoS %', bv_cdc.clip(options ->> 'qos')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use 0, 1 (the default) or 2.';
    END IF;
    IF options ? 'retain' AND jsonb_typeof(options -> 'retain') <> 'boolean' THEN
        RAISE EXCEPTION 'invalid retain flag %', bv_cdc.clip(options ->> 'retain')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use true or false.';
    END IF;
    IF options ? 'on_dead_letter' AND (jsonb_typeof(options -> 'on_dead_letter') <> 'string'
                                       OR (options ->> 'on_dead_letter') NOT IN ('continue', 'hold')) THEN
        RAISE EXCEPTION 'invalid on_dead_letter %', bv_cdc.clip(options ->> 'on_dead_letter')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use "continue" (later events of the key are still delivered) or "hold" (they wait behind the parked one).';
    END IF;
    PERFORM bv_cdc.check_route_tables(table_pattern, operations);
    BEGIN
        INSERT INTO bv_cdc.routes (table_pattern, sink, topic_template, include_columns,
                                   exclude_columns, operations, options, created_by)
        VALUES (table_pattern, sink, tmpl, include_columns, exclude_columns, operations, options,
                (SELECT r.rolname FROM pg_catalog.pg_roles r WHERE r.oid = bv_cdc.invoker()))
        RETURNING id INTO new_id;
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'a route from "%" to sink "%" and topic "%" already exists',
                        bv_cdc.clip(table_pattern), sink, bv_cdc.clip(tmpl)
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Drop it first with bv_cdc.drop_route.';
    END;
    RETURN new_id;
END
$$;

COMMENT ON FUNCTION bv_cdc.add_route(text, text, text, text[], text[], text[], jsonb) IS
'Routes the changes of the tables matching table_pattern (schema.table, wildcards * and ?) to a sink and topic (default by kind: bv.{schema}.{table} for Kafka, bv/{schema}/{table}/{key} for MQTT, {schema}.{table} as a webhook''s BV-Topic), optionally only some columns and operations, with per-route options (MQTT qos/retain, webhook on_dead_letter). Only tables the calling role may SELECT, never system catalogs or the suite''s internal schemas; updates and deletes only of tables with a replica identity. Returns the route id; applies on commit.';

-- ---- #17 item 14: snapshots ----

CREATE OR REPLACE FUNCTION bv_cdc.snapshot(tbl regclass, chunk_size integer DEFAULT 1000)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    new_id bigint;
    nsp text;
    kind "char";
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'table must not be null'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'For example bv_cdc.snapshot(''public.orders'').';
    END IF;
    IF chunk_size IS NULL THEN
        RAISE EXCEPTION 'chunk size must not be null'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Use 1 to 100000 rows; 1000 is a good default.';
    END IF;
    SELECT n.nspname, c.relkind INTO nsp, kind
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table with OID % does not exist', tbl::oid
            USING ERRCODE = 'undefined_table', HINT = 'Name an existing table.';
    END IF;
    IF bv_cdc.is_internal_schema(nsp) THEN
        RAISE EXCEPTION 'tables of schema "%" cannot be snapshotted', nsp
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'bv_cdc never publishes system catalogs (pg_catalog, information_schema, pg_toast) nor the suite''s internal schemas (bv, bv_audit, bv_cdc, cron).',
                  HINT = 'Snapshot the application''s own tables.';
    END IF;
    IF kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', tbl
            USING ERRCODE = 'wrong_object_type', HINT = 'Snapshots read ordinary tables.';
    END IF;
    IF NOT pg_catalog.has_table_privilege(bv_cdc.invoker(), tbl, 'SELECT') THEN
        RAISE EXCEPTION 'permission denied to snapshot table %', tbl
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'A snapshot publishes every row of the table; you may only snapshot tables you can SELECT.',
                  HINT = 'Ask the table''s owner for SELECT.';
    END IF;
    IF NOT bv_cdc.may_publish(bv_cdc.invoker(), tbl) THEN
        RAISE EXCEPTION 'permission denied to snapshot table %: it has row-level security', tbl
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'A snapshot publishes every row, past row-level security; only a role that bypasses it (its owner, a role with BYPASSRLS) may snapshot the table.',
                  HINT = 'Request the snapshot as such a role.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = tbl AND i.indisprimary) THEN
        RAISE EXCEPTION 'table % has no primary key', tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'A snapshot reads the table in chunks in primary key order.',
                  HINT = 'Add a primary key to the table.';
    END IF;
    IF chunk_size NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'invalid chunk size %', chunk_size
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use 1 to 100000 rows; 1000 is a good default.';
    END IF;
    IF EXISTS (SELECT 1 FROM bv_cdc.snapshots s
                WHERE s.relid = tbl AND s.status IN ('pending', 'running')) THEN
        RAISE EXCEPTION 'a snapshot of % is already pending or running', tbl
            USING ERRCODE = 'duplicate_object', HINT = 'See the table bv_cdc.snapshots.';
    END IF;
    INSERT INTO bv_cdc.snapshots (relid, chunk_size) VALUES (tbl, chunk_size)
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$;

COMMENT ON FUNCTION bv_cdc.snapshot(regclass, integer) IS
'Publishes the existing rows of a table as r events through its routes, chunk by chunk in primary key order, while streaming continues; concurrent changes win over snapshot rows (watermarks). Only tables the calling role may SELECT, never system catalogs or the suite''s internal schemas. Returns the snapshot id; see bv_cdc.snapshots.';

-- ---- privileges of the new helpers ----

REVOKE ALL ON FUNCTION bv_cdc.clip(text), bv_cdc.invoker(), bv_cdc.is_internal_schema(text),
    bv_cdc.check_column_list(text, text[]), bv_cdc.check_route_tables(text, text[]),
    bv_cdc.may_publish(oid, oid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bv_cdc.clip(text), bv_cdc.invoker(), bv_cdc.is_internal_schema(text),
    bv_cdc.check_column_list(text, text[]), bv_cdc.check_route_tables(text, text[]),
    bv_cdc.may_publish(oid, oid) TO bv_admin;

CREATE OR REPLACE FUNCTION bv_cdc.check_sink_secrets(kind text, config jsonb)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    secret_name text;
BEGIN
    FOR secret_name IN
        SELECT btrim(n) FROM unnest(string_to_array(config ->> 'secret', ',')) n
         WHERE kind = 'webhook'
        UNION ALL
        SELECT config ->> 'password_secret' WHERE kind = 'mqtt' AND config ? 'password_secret'
    LOOP
        IF NOT EXISTS (SELECT 1 FROM bv.secrets s WHERE s.name = secret_name) THEN
            RAISE EXCEPTION 'secret "%" does not exist', bv_cdc.clip(secret_name)
                USING ERRCODE = 'undefined_object',
                      DETAIL = 'Sink configurations name secrets of bv_core''s store; they never hold the values.',
                      HINT = 'Store it first with bv.secret_set(name, value).';
        END IF;
    END LOOP;
END
$$;

-- ---- #27 §0: sink states stalled and failed ----

COMMENT ON VIEW bv_cdc.stats IS
'Per sink: kind, events and bytes acknowledged by the receiver (Kafka, MQTT PUBACK/PUBCOMP, webhook 2xx), last acknowledged LSN, slot lag in bytes (WAL retained) and ms (age of the oldest unacknowledged commit), errors, stream restarts, state (up; down: no broker reachable or circuit open; stalled: messages in flight and no acknowledgement for bv_cdc.stall_timeout; failed: the sink cannot start, retried on its own back-off while the others stream; paused; idle) and last error; for webhooks the circuit breaker (closed, open, half-open), events waiting in the spool, events dead-lettered and spool redeliveries since the worker started; plus the worker''s state.';

-- ---- #27 §1-§3: sink kinds amqp and nats; the property tables as a function ----

ALTER TABLE bv_cdc.sinks DROP CONSTRAINT sinks_kind_check;
ALTER TABLE bv_cdc.sinks ADD CONSTRAINT sinks_kind_check
    CHECK (kind IN ('kafka', 'mqtt', 'webhook', 'amqp', 'nats'));
COMMENT ON COLUMN bv_cdc.sinks.kind IS 'Sink kind: kafka, mqtt, webhook, amqp (RabbitMQ, AMQP 0-9-1) or nats (JetStream or core NATS).';

CREATE FUNCTION bv_cdc.sink_properties(
    OUT kind text, OUT name text, OUT type text, OUT default_value text,
    OUT min bigint, OUT max bigint, OUT secret boolean)
RETURNS SETOF record
LANGUAGE c STABLE
AS 'MODULE_PATHNAME', 'bv_cdc_sink_properties';
COMMENT ON FUNCTION bv_cdc.sink_properties() IS
'The declared properties of each sink kind: name, JSON type, default, range (integers) or length in bytes (strings, files), and whether the value names a secret of bv.secrets. The same table validate_sink checks against and the worker reads defaults from; Kafka sinks also take any librdkafka property.';

CREATE OR REPLACE FUNCTION bv_cdc.check_topic_template(topic_template text, kind text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rest text := replace(replace(topic_template, '{schema}', ''), '{table}', '');
BEGIN
    IF topic_template IS NULL THEN
        RAISE EXCEPTION 'topic template must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Omit it to use the default of the sink''s kind.';
    END IF;
    IF kind = 'mqtt' THEN
        rest := replace(rest, '{key}', '');
        IF topic_template = '' OR length(topic_template) > 1000
           OR rest ~ '[+#[:cntrl:]]' OR topic_template LIKE '$%' THEN
            RAISE EXCEPTION 'invalid MQTT topic template "%"', bv_cdc.clip(topic_template)
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'An MQTT topic template is 1 to 1000 characters without the wildcards + and #, not starting with $; placeholders {schema}, {table} and {key}.',
                      HINT = 'For example ''bv/{schema}/{table}/{key}''.';
        END IF;
    ELSIF kind = 'amqp' THEN
        IF octet_length(topic_template) > 200 OR rest ~ '[*#[:cntrl:][:space:]{}]' THEN
            RAISE EXCEPTION 'invalid AMQP routing key template "%"', bv_cdc.clip(topic_template)
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'A routing key template has at most 200 bytes, words separated by ".", without the binding wildcards * and #, spaces or control characters; placeholders {schema} and {table}.',
                      HINT = 'For example ''bv.{schema}.{table}''.';
        END IF;
    ELSIF kind = 'nats' THEN
        IF topic_template = '' OR octet_length(topic_template) > 200
           OR rest ~ '[*>[:cntrl:][:space:]{}]' OR topic_template ~ '(^\.|\.$|\.\.)' THEN
            RAISE EXCEPTION 'invalid NATS subject template "%"', bv_cdc.clip(topic_template)
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'A subject template is 1 to 200 bytes of non-empty tokens separated by ".", without the wildcards * and >, spaces or control characters; placeholders {schema} and {table}.',
                      HINT = 'For example ''bv.{schema}.{table}''.';
        END IF;
    ELSIF topic_template = '' OR length(topic_template) > 200
       OR rest !~ '^[A-Za-z0-9._-]*$' OR topic_template IN ('.', '..') THEN
        RAISE EXCEPTION 'invalid topic template "%"', bv_cdc.clip(topic_template)
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A topic template is 1 to 200 characters: letters, digits, ".", "_", "-" and the placeholders {schema} and {table}.',
                  HINT = 'For example ''bv.{schema}.{table}'' or ''orders''.';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION bv_cdc.check_sink_secrets(kind text, config jsonb)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    secret_name text;
BEGIN
    FOR secret_name IN
        SELECT btrim(n) FROM unnest(string_to_array(config ->> 'secret', ',')) n
         WHERE kind = 'webhook'
        UNION ALL
        SELECT config ->> 'password_secret'
         WHERE kind IN ('mqtt', 'amqp', 'nats') AND config ? 'password_secret'
        UNION ALL
        SELECT config ->> 'token_secret' WHERE kind = 'nats' AND config ? 'token_secret'
    LOOP
        IF NOT EXISTS (SELECT 1 FROM bv.secrets s WHERE s.name = secret_name) THEN
            RAISE EXCEPTION 'secret "%" does not exist', bv_cdc.clip(secret_name)
                USING ERRCODE = 'undefined_object',
                      DETAIL = 'Sink configurations name secrets of bv_core''s store; they never hold the values.',
                      HINT = 'Store it first with bv.secret_set(name, value).';
        END IF;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION bv_cdc.add_sink(name text, kind text, config jsonb)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM bv_cdc.check_sink_name(name);
    IF kind IS NULL THEN
        RAISE EXCEPTION 'sink kind must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Use ''kafka'', ''mqtt'', ''webhook'', ''amqp'' or ''nats''.';
    END IF;
    IF config IS NULL THEN
        RAISE EXCEPTION 'sink configuration must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the sink''s properties as a JSON object, e.g. {"bootstrap.servers": "host:9092"}.';
    END IF;
    PERFORM bv_cdc.validate_sink(kind, config);
    PERFORM bv_cdc.check_sink_secrets(kind, config);
    BEGIN
        INSERT INTO bv_cdc.sinks (name, kind, config) VALUES (name, kind, config);
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'sink "%" already exists', name
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Use bv_cdc.alter_sink to change its configuration, or choose another name.';
    END;
END
$$;

CREATE OR REPLACE FUNCTION bv_cdc.add_route(
    table_pattern text,
    sink text,
    topic_template text DEFAULT NULL,
    include_columns text[] DEFAULT NULL,
    exclude_columns text[] DEFAULT NULL,
    operations text[] DEFAULT '{c,u,d,t,r}',
    options jsonb DEFAULT '{}')
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    new_id bigint;
    sink_kind text;
    tmpl text := topic_template;
    k text;
BEGIN
    IF table_pattern IS NULL THEN
        RAISE EXCEPTION 'table pattern must not be null'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'For example ''public.orders'' or ''public.*''.';
    END IF;
    IF table_pattern !~ '^[^.]+\.[^.]+$' OR octet_length(table_pattern) > 300 THEN
        RAISE EXCEPTION 'invalid table pattern "%"', bv_cdc.clip(table_pattern)
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A table pattern is schema.table (at most 300 bytes), where either part may use the wildcards * and ?.',
                  HINT = 'For example ''public.orders'' or ''public.*''.';
    END IF;
    PERFORM bv_cdc.check_sink_name(sink);
    SELECT s.kind INTO sink_kind FROM bv_cdc.sinks s WHERE s.name = add_route.sink;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'sink "%" does not exist', sink
            USING ERRCODE = 'undefined_object', HINT = 'Add it first with bv_cdc.add_sink.';
    END IF;
    tmpl := coalesce(tmpl, CASE sink_kind WHEN 'mqtt' THEN 'bv/{schema}/{table}/{key}'
                                          WHEN 'webhook' THEN '{schema}.{table}'
                                          ELSE 'bv.{schema}.{table}' END);
    PERFORM bv_cdc.check_topic_template(tmpl, sink_kind);
    PERFORM bv_cdc.check_column_list('include_columns', include_columns);
    PERFORM bv_cdc.check_column_list('exclude_columns', exclude_columns);
    IF include_columns IS NOT NULL AND exclude_columns IS NOT NULL THEN
        RAISE EXCEPTION 'include_columns and exclude_columns cannot both be set'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'List the columns to publish, or the columns to leave out, not both.';
    END IF;
    IF operations IS NULL THEN
        RAISE EXCEPTION 'operations must not be null'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Omit it to publish every operation, or pass e.g. ''{c,u,d}''.';
    END IF;
    IF cardinality(operations) = 0 OR array_ndims(operations) > 1
       OR array_position(operations, NULL) IS NOT NULL
       OR NOT operations <@ '{c,u,d,t,r}'::text[] THEN
        RAISE EXCEPTION 'invalid operations %', bv_cdc.clip(operations::text)
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Operations are c (insert), u (update), d (delete), t (truncate) and r (snapshot read).',
                  HINT = 'For example ''{c,u,d}''.';
    END IF;
    IF options IS NULL THEN
        RAISE EXCEPTION 'route options must not be null'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Omit them, or pass e.g. ''{"qos": 1}''.';
    END IF;
    IF jsonb_typeof(options) <> 'object' OR octet_length(options::text) > 1000 THEN
        RAISE EXCEPTION 'route options must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'For example ''{"qos": 1}''.';
    END IF;
    FOR k IN SELECT jsonb_object_keys(options) LOOP
        IF NOT (k = ANY (CASE sink_kind WHEN 'mqtt' THEN '{qos,retain}'::text[]
                                        WHEN 'webhook' THEN '{on_dead_letter}'::text[]
                                        WHEN 'amqp' THEN '{on_return}'::text[]
                                        ELSE '{}'::text[] END)) THEN
            RAISE EXCEPTION 'unknown route option "%" for a % sink', bv_cdc.clip(k), sink_kind
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'MQTT routes take qos and retain; webhook routes take on_dead_letter; AMQP routes take on_return; Kafka and NATS routes take none.';
        END IF;
    END LOOP;
    IF options ? 'qos' AND (jsonb_typeof(options -> 'qos') <> 'number'
                            OR (options ->> 'qos') NOT IN ('0', '1', '2')) THEN
        RAISE EXCEPTION 'invalid MQTT QoS %', bv_cdc.clip(options ->> 'qos')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use 0, 1 (the default) or 2.';
    END IF;
    IF options ? 'retain' AND jsonb_typeof(options -> 'retain') <> 'boolean' THEN
        RAISE EXCEPTION 'invalid retain flag %', bv_cdc.clip(options ->> 'retain')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use true or false.';
    END IF;
    IF options ? 'on_dead_letter' AND (jsonb_typeof(options -> 'on_dead_letter') <> 'string'
                                       OR (options ->> 'on_dead_letter') NOT IN ('continue', 'hold')) THEN
        RAISE EXCEPTION 'invalid on_dead_letter %', bv_cdc.clip(options ->> 'on_dead_letter')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use "continue" (later events of the key are still delivered) or "hold" (they wait behind the parked one).';
    END IF;
    IF options ? 'on_return' AND (jsonb_typeof(options -> 'on_return') <> 'string'
                                  OR (options ->> 'on_return') NOT IN ('dead_letter', 'retry')) THEN
        RAISE EXCEPTION 'invalid on_return %', bv_cdc.clip(options ->> 'on_return')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use "dead_letter" (an unroutable message is parked in bv_cdc.dead_letter; the default) or "retry" (the sink fails and retries it until a queue is bound).';
    END IF;
    PERFORM bv_cdc.check_route_tables(table_pattern, operations);
    BEGIN
        INSERT INTO bv_cdc.routes (table_pattern, sink, topic_template, include_columns,
                                   exclude_columns, operations, options, created_by)
        VALUES (table_pattern, sink, tmpl, include_columns, exclude_columns, operations, options,
                (SELECT r.rolname FROM pg_catalog.pg_roles r WHERE r.oid = bv_cdc.invoker()))
        RETURNING id INTO new_id;
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'a route from "%" to sink "%" and topic "%" already exists',
                        bv_cdc.clip(table_pattern), sink, bv_cdc.clip(tmpl)
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Drop it first with bv_cdc.drop_route.';
    END;
    RETURN new_id;
END
$$;

COMMENT ON FUNCTION bv_cdc.add_route(text, text, text, text[], text[], text[], jsonb) IS
'Routes the changes of the tables matching table_pattern (schema.table, wildcards * and ?) to a sink and topic (default by kind: bv.{schema}.{table} for Kafka, AMQP routing keys and NATS subjects, bv/{schema}/{table}/{key} for MQTT, {schema}.{table} as a webhook''s BV-Topic), optionally only some columns and operations, with per-route options (MQTT qos/retain, webhook on_dead_letter, AMQP on_return). Only tables the calling role may SELECT, never system catalogs or the suite''s internal schemas; updates and deletes only of tables with a replica identity. Returns the route id; applies on commit.';
