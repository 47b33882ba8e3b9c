/*
 * bv_cdc 0.1.0: change data capture to Kafka.
 *
 * Configuration lives in two tables, bv_cdc.sinks (where to send: Kafka
 * clusters with their librdkafka properties) and bv_cdc.routes (which
 * tables go to which sink and topic, with column and operation filters).
 * They are changed through the functions below, which validate everything
 * when it is set; a trigger wakes the worker when the transaction commits,
 * so changes apply without a restart.  The worker itself is the preloaded
 * library's background worker (see docs/bv_cdc.md).
 */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION bv_cdc" to load this file. \quit

COMMENT ON SCHEMA bv_cdc IS
'BitVelocity CDC: sinks, routes, statistics and quarantine of the worker that streams committed changes to Kafka.';

CREATE TABLE bv_cdc.sinks (
    name text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    kind text NOT NULL CHECK (kind = 'kafka'),
    config jsonb NOT NULL CHECK (jsonb_typeof(config) = 'object'),
    paused boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

COMMENT ON TABLE bv_cdc.sinks IS
'Destinations of change events. Change with bv_cdc.add_sink, alter_sink, drop_sink, pause and resume, which validate the configuration.';
COMMENT ON COLUMN bv_cdc.sinks.name IS 'Sink name: lower case letters, digits and underscores.';
COMMENT ON COLUMN bv_cdc.sinks.kind IS 'Sink kind; only ''kafka'' for now.';
COMMENT ON COLUMN bv_cdc.sinks.config IS 'librdkafka producer properties, e.g. {"bootstrap.servers": "broker:9092", "compression.type": "lz4"}. enable.idempotence and acks are fixed to true and all.';
COMMENT ON COLUMN bv_cdc.sinks.paused IS 'When true the worker stops reading the slot (nothing is lost; WAL is retained) until the sink is resumed.';
COMMENT ON COLUMN bv_cdc.sinks.created_at IS 'When the sink was added.';
COMMENT ON COLUMN bv_cdc.sinks.updated_at IS 'When the sink was last changed.';

CREATE TABLE bv_cdc.routes (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_pattern text NOT NULL CHECK (table_pattern ~ '^[^.]+\.[^.]+$'),
    sink text NOT NULL REFERENCES bv_cdc.sinks (name) ON DELETE CASCADE,
    topic_template text NOT NULL DEFAULT 'bv.{schema}.{table}',
    include_columns text[],
    exclude_columns text[],
    operations text[] NOT NULL DEFAULT '{c,u,d,t,r}'
        CHECK (operations <@ '{c,u,d,t,r}'::text[] AND cardinality(operations) > 0),
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    UNIQUE (table_pattern, sink, topic_template)
);

COMMENT ON TABLE bv_cdc.routes IS
'Which tables go to which sink and topic. Change with bv_cdc.add_route and drop_route.';
COMMENT ON COLUMN bv_cdc.routes.id IS 'Route id.';
COMMENT ON COLUMN bv_cdc.routes.table_pattern IS 'schema.table with shell wildcards (* and ?), e.g. public.* or app.order?.';
COMMENT ON COLUMN bv_cdc.routes.sink IS 'Sink the matching tables'' changes go to.';
COMMENT ON COLUMN bv_cdc.routes.topic_template IS 'Kafka topic; {schema} and {table} are replaced, characters Kafka does not allow become _.';
COMMENT ON COLUMN bv_cdc.routes.include_columns IS 'When set, only these columns appear in before/after (the key is always complete).';
COMMENT ON COLUMN bv_cdc.routes.exclude_columns IS 'When set, these columns never appear in before/after.';
COMMENT ON COLUMN bv_cdc.routes.operations IS 'Operations published: c (insert), u (update), d (delete), t (truncate), r (snapshot read).';
COMMENT ON COLUMN bv_cdc.routes.created_at IS 'When the route was added.';

CREATE TABLE bv_cdc.quarantine (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    lsn pg_lsn,
    reason text NOT NULL,
    payload text
);

COMMENT ON TABLE bv_cdc.quarantine IS
'Decoded changes the worker could not turn into an event or that a sink refused (e.g. too large), kept with the reason; the stream goes on.';
COMMENT ON COLUMN bv_cdc.quarantine.id IS 'Entry id.';
COMMENT ON COLUMN bv_cdc.quarantine.received_at IS 'When the worker quarantined it.';
COMMENT ON COLUMN bv_cdc.quarantine.lsn IS 'WAL position of the change.';
COMMENT ON COLUMN bv_cdc.quarantine.reason IS 'Why it could not be delivered.';
COMMENT ON COLUMN bv_cdc.quarantine.payload IS 'The wal2json message or the envelope.';

CREATE TABLE bv_cdc.snapshots (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    relid regclass NOT NULL,
    chunk_size integer NOT NULL DEFAULT 1000 CHECK (chunk_size BETWEEN 1 AND 100000),
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'done', 'failed')),
    last_key text[],
    rows bigint NOT NULL DEFAULT 0,
    requested_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    finished_at timestamptz,
    error text
);

COMMENT ON TABLE bv_cdc.snapshots IS
'Initial snapshots requested with bv_cdc.snapshot: existing rows published as r events, chunk by chunk, while streaming continues.';
COMMENT ON COLUMN bv_cdc.snapshots.id IS 'Snapshot id.';
COMMENT ON COLUMN bv_cdc.snapshots.relid IS 'The table.';
COMMENT ON COLUMN bv_cdc.snapshots.chunk_size IS 'Rows read per chunk (between two watermarks).';
COMMENT ON COLUMN bv_cdc.snapshots.status IS 'pending, running, done or failed.';
COMMENT ON COLUMN bv_cdc.snapshots.last_key IS 'Primary key (as text) of the last row of the last acknowledged chunk; the snapshot resumes after it.';
COMMENT ON COLUMN bv_cdc.snapshots.rows IS 'Rows published so far (rows superseded by concurrent changes are not counted).';
COMMENT ON COLUMN bv_cdc.snapshots.requested_at IS 'When bv_cdc.snapshot was called.';
COMMENT ON COLUMN bv_cdc.snapshots.finished_at IS 'When the snapshot finished or failed.';
COMMENT ON COLUMN bv_cdc.snapshots.error IS 'Why it failed.';

SELECT pg_catalog.pg_extension_config_dump('bv_cdc.sinks', '');
SELECT pg_catalog.pg_extension_config_dump('bv_cdc.routes', '');

-- ---- the worker's wake-up call ----

CREATE FUNCTION bv_cdc.config_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'bv_cdc_config_changed'
LANGUAGE C;

COMMENT ON FUNCTION bv_cdc.config_changed() IS
'Trigger: marks the transaction so that its commit makes the bv_cdc worker reload its configuration.';

CREATE TRIGGER config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON bv_cdc.sinks
    FOR EACH STATEMENT EXECUTE FUNCTION bv_cdc.config_changed();
CREATE TRIGGER config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON bv_cdc.routes
    FOR EACH STATEMENT EXECUTE FUNCTION bv_cdc.config_changed();
CREATE TRIGGER config_changed AFTER INSERT ON bv_cdc.snapshots
    FOR EACH STATEMENT EXECUTE FUNCTION bv_cdc.config_changed();

-- ---- validation ----

CREATE FUNCTION bv_cdc.validate_sink(kind text, config jsonb)
RETURNS void
AS 'MODULE_PATHNAME', 'bv_cdc_validate_sink'
LANGUAGE C STRICT STABLE;

COMMENT ON FUNCTION bv_cdc.validate_sink(text, jsonb) IS
'Raises 22023 when the sink kind is unknown or librdkafka refuses a property (each is applied with rd_kafka_conf_set), when bootstrap.servers is missing, or when a property would weaken delivery (enable.idempotence, acks).';

CREATE FUNCTION bv_cdc.check_sink_name(name text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF name IS NULL OR name !~ '^[a-z][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'invalid sink name "%"', name
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A sink name starts with a lower case letter, followed by up to 62 lower case letters, digits or underscores.',
                  HINT = 'Use a name such as ''main'' or ''analytics_kafka''.';
    END IF;
END
$$;

COMMENT ON FUNCTION bv_cdc.check_sink_name(text) IS
'Raises 22023 unless name is a valid sink name.';

CREATE FUNCTION bv_cdc.check_topic_template(topic_template text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rest text := replace(replace(topic_template, '{schema}', ''), '{table}', '');
BEGIN
    IF topic_template IS NULL OR topic_template = '' OR length(topic_template) > 200
       OR rest !~ '^[A-Za-z0-9._-]*$' OR topic_template IN ('.', '..') THEN
        RAISE EXCEPTION 'invalid topic template "%"', topic_template
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A topic template is 1 to 200 characters: letters, digits, ".", "_", "-" and the placeholders {schema} and {table}.',
                  HINT = 'For example ''bv.{schema}.{table}'' or ''orders''.';
    END IF;
END
$$;

COMMENT ON FUNCTION bv_cdc.check_topic_template(text) IS
'Raises 22023 unless topic_template is a valid Kafka topic with {schema}/{table} placeholders.';

-- ---- the API ----

CREATE FUNCTION bv_cdc.add_sink(name text, kind text, config jsonb)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM bv_cdc.check_sink_name(name);
    IF config IS NULL THEN
        RAISE EXCEPTION 'sink configuration must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass librdkafka properties as {"bootstrap.servers": "host:9092"}.';
    END IF;
    PERFORM bv_cdc.validate_sink(kind, config);
    BEGIN
        INSERT INTO bv_cdc.sinks (name, kind, config) VALUES (name, kind, config);
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'sink "%" already exists', name
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Use bv_cdc.alter_sink to change its configuration, or choose another name.';
    END;
END
$$;

COMMENT ON FUNCTION bv_cdc.add_sink(text, text, jsonb) IS
'Adds a sink: add_sink(''main'', ''kafka'', ''{"bootstrap.servers": "broker:9092"}''). Any librdkafka producer property may be set; invalid ones are refused now, with librdkafka''s reason. Applies when the transaction commits.';

CREATE FUNCTION bv_cdc.alter_sink(name text, config jsonb)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text;
BEGIN
    SELECT s.kind INTO k FROM bv_cdc.sinks s WHERE s.name = alter_sink.name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'sink "%" does not exist', name
            USING ERRCODE = 'undefined_object', HINT = 'Add it with bv_cdc.add_sink.';
    END IF;
    PERFORM bv_cdc.validate_sink(k, config);
    UPDATE bv_cdc.sinks s SET config = alter_sink.config, updated_at = pg_catalog.now()
     WHERE s.name = alter_sink.name;
END
$$;

COMMENT ON FUNCTION bv_cdc.alter_sink(text, jsonb) IS
'Replaces a sink''s librdkafka properties (validated now); the worker drains in-flight messages and recreates the producer on commit.';

CREATE FUNCTION bv_cdc.drop_sink(name text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM bv_cdc.sinks s WHERE s.name = drop_sink.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'sink "%" does not exist', name
            USING ERRCODE = 'undefined_object', HINT = 'See the table bv_cdc.sinks.';
    END IF;
END
$$;

COMMENT ON FUNCTION bv_cdc.drop_sink(text) IS
'Removes a sink and its routes.';

CREATE FUNCTION bv_cdc.set_paused(name text, paused boolean)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE bv_cdc.sinks s SET paused = set_paused.paused, updated_at = pg_catalog.now()
     WHERE s.name = set_paused.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'sink "%" does not exist', name
            USING ERRCODE = 'undefined_object', HINT = 'See the table bv_cdc.sinks.';
    END IF;
END
$$;

COMMENT ON FUNCTION bv_cdc.set_paused(text, boolean) IS
'Pauses or resumes a sink (see bv_cdc.pause and bv_cdc.resume).';

CREATE FUNCTION bv_cdc.pause(sink text)
RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT bv_cdc.set_paused(sink, true) $$;

COMMENT ON FUNCTION bv_cdc.pause(text) IS
'Pauses a sink: on commit the worker stops reading the slot (WAL is retained, nothing is lost) until bv_cdc.resume.';

CREATE FUNCTION bv_cdc.resume(sink text)
RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT bv_cdc.set_paused(sink, false) $$;

COMMENT ON FUNCTION bv_cdc.resume(text) IS
'Resumes a paused sink; the worker catches up from the slot.';

CREATE FUNCTION bv_cdc.add_route(
    table_pattern text,
    sink text,
    topic_template text DEFAULT 'bv.{schema}.{table}',
    include_columns text[] DEFAULT NULL,
    exclude_columns text[] DEFAULT NULL,
    operations text[] DEFAULT '{c,u,d,t,r}')
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    new_id bigint;
BEGIN
    IF table_pattern IS NULL OR table_pattern !~ '^[^.]+\.[^.]+$' THEN
        RAISE EXCEPTION 'invalid table pattern "%"', table_pattern
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A table pattern is schema.table, where either part may use the wildcards * and ?.',
                  HINT = 'For example ''public.orders'' or ''public.*''.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM bv_cdc.sinks s WHERE s.name = add_route.sink) THEN
        RAISE EXCEPTION 'sink "%" does not exist', sink
            USING ERRCODE = 'undefined_object', HINT = 'Add it first with bv_cdc.add_sink.';
    END IF;
    PERFORM bv_cdc.check_topic_template(topic_template);
    IF include_columns IS NOT NULL AND exclude_columns IS NOT NULL THEN
        RAISE EXCEPTION 'include_columns and exclude_columns cannot both be set'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'List the columns to publish, or the columns to leave out, not both.';
    END IF;
    IF operations IS NULL OR cardinality(operations) = 0
       OR NOT operations <@ '{c,u,d,t,r}'::text[] THEN
        RAISE EXCEPTION 'invalid operations %', operations
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Operations are c (insert), u (update), d (delete), t (truncate) and r (snapshot read).',
                  HINT = 'For example ''{c,u,d}''.';
    END IF;
    BEGIN
        INSERT INTO bv_cdc.routes (table_pattern, sink, topic_template, include_columns,
                                   exclude_columns, operations)
        VALUES (table_pattern, sink, topic_template, include_columns, exclude_columns, operations)
        RETURNING id INTO new_id;
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'a route from "%" to sink "%" and topic "%" already exists',
                        table_pattern, sink, topic_template
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Drop it first with bv_cdc.drop_route.';
    END;
    RETURN new_id;
END
$$;

COMMENT ON FUNCTION bv_cdc.add_route(text, text, text, text[], text[], text[]) IS
'Routes the changes of the tables matching table_pattern (schema.table, wildcards * and ?) to a sink and topic ({schema} and {table} placeholders), optionally only some columns and operations. Returns the route id; applies on commit.';

CREATE FUNCTION bv_cdc.drop_route(id bigint)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM bv_cdc.routes r WHERE r.id = drop_route.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'route % does not exist', id
            USING ERRCODE = 'undefined_object', HINT = 'See the table bv_cdc.routes.';
    END IF;
END
$$;

COMMENT ON FUNCTION bv_cdc.drop_route(bigint) IS
'Removes a route; applies on commit.';

CREATE FUNCTION bv_cdc.snapshot(tbl regclass, chunk_size integer DEFAULT 1000)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    new_id bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = tbl AND i.indisprimary) THEN
        RAISE EXCEPTION 'table % has no primary key', tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'A snapshot reads the table in chunks in primary key order.',
                  HINT = 'Add a primary key to the table.';
    END IF;
    IF chunk_size IS NULL OR chunk_size NOT BETWEEN 1 AND 100000 THEN
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
'Publishes the existing rows of a table as r events through its routes, chunk by chunk in primary key order, while streaming continues; concurrent changes win over snapshot rows (watermarks). Returns the snapshot id; see bv_cdc.snapshots.';

-- ---- observability ----

CREATE FUNCTION bv_cdc.stats_raw(
    OUT sink text, OUT state text, OUT events bigint, OUT bytes bigint,
    OUT acked_lsn pg_lsn, OUT confirmed_lsn pg_lsn, OUT received_lsn pg_lsn,
    OUT inflight bigint, OUT lag_ms bigint, OUT errors bigint, OUT retries bigint,
    OUT last_error text, OUT last_ack timestamptz, OUT worker_state text,
    OUT worker_pid integer, OUT quarantined bigint, OUT last_heartbeat timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'bv_cdc_stats_raw'
LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION bv_cdc.stats_raw() IS
'The worker''s counters from shared memory, one row per sink; use the view bv_cdc.stats.';

CREATE VIEW bv_cdc.stats AS
SELECT s.sink, s.state, s.events, s.bytes, s.acked_lsn,
       pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(),
                                  coalesce(sl.confirmed_flush_lsn, s.confirmed_lsn))::bigint AS lag_bytes,
       s.lag_ms, s.errors, s.retries, s.last_error, s.last_ack,
       sl.confirmed_flush_lsn AS slot_confirmed_lsn, s.received_lsn, s.inflight,
       s.worker_state, s.worker_pid, s.quarantined, s.last_heartbeat
  FROM bv_cdc.stats_raw() s
  LEFT JOIN pg_catalog.pg_replication_slots sl
    ON sl.slot_name = pg_catalog.current_setting('bv_cdc.slot_name');

COMMENT ON VIEW bv_cdc.stats IS
'Per sink: events and bytes acknowledged by Kafka, last acknowledged LSN, slot lag in bytes (WAL retained) and ms (age of the oldest unacknowledged commit), errors, stream restarts, state (up, down, paused, idle) and last error; plus the worker''s state.';

CREATE FUNCTION bv_cdc.worker(
    OUT state text, OUT pid integer, OUT received_lsn pg_lsn, OUT confirmed_lsn pg_lsn,
    OUT inflight bigint, OUT restarts bigint, OUT quarantined bigint, OUT last_error text)
RETURNS record
AS 'MODULE_PATHNAME', 'bv_cdc_worker_raw'
LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION bv_cdc.worker() IS
'The worker''s state (waiting for extension, connecting, streaming, paused, window full, backing off), pid, stream positions, in-flight messages, restarts and last error.';

-- ---- privileges: operators (bv_admin) configure and observe ----

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA bv_cdc FROM PUBLIC;
GRANT USAGE ON SCHEMA bv_cdc TO bv_admin;
GRANT SELECT ON bv_cdc.sinks, bv_cdc.routes, bv_cdc.quarantine, bv_cdc.snapshots, bv_cdc.stats TO bv_admin;
GRANT EXECUTE ON FUNCTION bv_cdc.add_sink(text, text, jsonb), bv_cdc.alter_sink(text, jsonb),
    bv_cdc.drop_sink(text), bv_cdc.pause(text), bv_cdc.resume(text),
    bv_cdc.add_route(text, text, text, text[], text[], text[]), bv_cdc.drop_route(bigint),
    bv_cdc.snapshot(regclass, integer), bv_cdc.stats_raw(), bv_cdc.worker(), bv_cdc.validate_sink(text, jsonb),
    bv_cdc.check_sink_name(text), bv_cdc.check_topic_template(text)
    TO bv_admin;
