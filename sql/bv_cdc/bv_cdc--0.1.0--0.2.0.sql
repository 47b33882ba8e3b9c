/*
 * bv_cdc 0.1.0 -> 0.2.0: MQTT and webhook sinks, the webhook spool, dead
 * letters and their replay, route options, and verify_signature() for
 * receivers written in SQL (issue #5; docs/adr/0031).
 */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "ALTER EXTENSION bv_cdc UPDATE TO '0.2.0'" to load this file. \quit

COMMENT ON SCHEMA bv_cdc IS
'BitVelocity CDC: sinks (Kafka, MQTT, webhooks), routes, statistics, quarantine, the webhook spool and dead letters of the worker that streams committed changes.';

-- ---- sinks of three kinds ----

ALTER TABLE bv_cdc.sinks DROP CONSTRAINT sinks_kind_check;
ALTER TABLE bv_cdc.sinks ADD CONSTRAINT sinks_kind_check CHECK (kind IN ('kafka', 'mqtt', 'webhook'));
COMMENT ON COLUMN bv_cdc.sinks.kind IS 'Sink kind: kafka, mqtt or webhook.';
COMMENT ON COLUMN bv_cdc.sinks.config IS 'Properties of the sink, a flat JSON object. kafka: librdkafka producer properties (enable.idempotence and acks are fixed to true and all). mqtt: host, port, client_id, username, password_secret, tls_*, keepalive_s, max_inflight. webhook: url, secret, timeouts, concurrency, retry and circuit breaker settings, tls_*. Secrets are names in bv.secrets, never values. See docs/bv_cdc.md.';

-- ---- route options ----

ALTER TABLE bv_cdc.routes ADD COLUMN options jsonb NOT NULL DEFAULT '{}'
    CHECK (jsonb_typeof(options) = 'object');
COMMENT ON COLUMN bv_cdc.routes.options IS 'Per-route options: {"qos": 0|1|2, "retain": bool} for MQTT sinks (default QoS 1, not retained); {"on_dead_letter": "continue"|"hold"} for webhook sinks (default continue: later events of a key whose event was dead-lettered are still delivered; hold: they are parked behind it until it is replayed).';
COMMENT ON COLUMN bv_cdc.routes.topic_template IS 'Topic: Kafka topic, MQTT topic (levels with /, {key} = the primary key values), or the BV-Topic header of a webhook; {schema} and {table} are replaced.';

-- ---- the webhook spool and the dead letters ----

CREATE TABLE bv_cdc.webhook_spool (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sink text NOT NULL,
    route_id bigint,
    event_id text NOT NULL,
    key text NOT NULL,
    topic text,
    op text,
    tbl text,
    lsn pg_lsn,
    traceparent text,
    hold boolean NOT NULL DEFAULT false,
    body text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    first_attempt_at timestamptz,
    last_attempt_at timestamptz,
    next_attempt_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    last_status integer,
    last_error text,
    spooled_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX webhook_spool_sink_key ON bv_cdc.webhook_spool (sink, key, id);
CREATE INDEX webhook_spool_sink_due ON bv_cdc.webhook_spool (sink, next_attempt_at);

COMMENT ON TABLE bv_cdc.webhook_spool IS
'Webhook events not acknowledged on their first attempt (or spooled while the circuit breaker is open or the receiver falls behind), retried from here by the worker in key order. The slot has moved past them: this table is their only copy. Kept by drop_sink; a sink added again under the same name resumes them.';
COMMENT ON COLUMN bv_cdc.webhook_spool.sink IS 'Webhook sink.';
COMMENT ON COLUMN bv_cdc.webhook_spool.route_id IS 'Route that produced the event.';
COMMENT ON COLUMN bv_cdc.webhook_spool.event_id IS 'BV-Event-Id header, stable across retries: the receiver''s idempotency key.';
COMMENT ON COLUMN bv_cdc.webhook_spool.key IS 'schema.table and the primary key: events of one key are delivered one at a time, in order.';
COMMENT ON COLUMN bv_cdc.webhook_spool.body IS 'The envelope (docs/cdc-envelope.md).';
COMMENT ON COLUMN bv_cdc.webhook_spool.attempts IS 'Attempts made so far.';
COMMENT ON COLUMN bv_cdc.webhook_spool.next_attempt_at IS 'Not retried before this time (back-off with jitter, or the receiver''s Retry-After).';
COMMENT ON COLUMN bv_cdc.webhook_spool.last_status IS 'HTTP status of the last attempt (null: no answer).';
COMMENT ON COLUMN bv_cdc.webhook_spool.last_error IS 'Why the last attempt failed.';

CREATE TABLE bv_cdc.dead_letter (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sink text NOT NULL,
    route_id bigint,
    event_id text NOT NULL,
    key text NOT NULL,
    topic text,
    op text,
    tbl text,
    lsn pg_lsn,
    traceparent text,
    hold boolean NOT NULL DEFAULT false,
    body text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    first_attempt_at timestamptz,
    last_attempt_at timestamptz,
    last_status integer,
    last_error text,
    reason text NOT NULL CHECK (reason IN ('permanent', 'exhausted', 'held')),
    parked_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX dead_letter_sink_key ON bv_cdc.dead_letter (sink, key, id);

COMMENT ON TABLE bv_cdc.dead_letter IS
'Webhook events a receiver refused for good (a 4xx other than 408/429, or a redirect), that exhausted their retries (max_attempts, max_age_s), or that were held behind such an event of the same key (route option on_dead_letter = hold). Re-deliver them with bv_cdc.replay_dead_letters.';
COMMENT ON COLUMN bv_cdc.dead_letter.reason IS 'permanent (refused by the receiver), exhausted (retries used up) or held (behind a parked event of its key).';
COMMENT ON COLUMN bv_cdc.dead_letter.body IS 'The envelope (docs/cdc-envelope.md).';
COMMENT ON COLUMN bv_cdc.dead_letter.attempts IS 'Delivery attempts made.';
COMMENT ON COLUMN bv_cdc.dead_letter.first_attempt_at IS 'First attempt.';
COMMENT ON COLUMN bv_cdc.dead_letter.last_attempt_at IS 'Last attempt.';
COMMENT ON COLUMN bv_cdc.dead_letter.last_status IS 'HTTP status of the last attempt (null: no answer).';
COMMENT ON COLUMN bv_cdc.dead_letter.last_error IS 'What went wrong the last time.';
COMMENT ON COLUMN bv_cdc.dead_letter.parked_at IS 'When the event was parked.';

SELECT pg_catalog.pg_extension_config_dump('bv_cdc.webhook_spool', '');
SELECT pg_catalog.pg_extension_config_dump('bv_cdc.dead_letter', '');

CREATE FUNCTION bv_cdc.spool_changed()
RETURNS void
AS 'MODULE_PATHNAME', 'bv_cdc_spool_changed'
LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION bv_cdc.spool_changed() IS
'Internal: makes the worker re-read the webhook spool when the transaction commits (after a replay).';

CREATE FUNCTION bv_cdc.replay_dead_letters(sink text, ids bigint[] DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
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

COMMENT ON FUNCTION bv_cdc.replay_dead_letters(text, bigint[]) IS
'Moves dead letters of a webhook sink (all, or those with the given ids) back to the spool, in their order, with a fresh retry budget; the worker delivers them (same BV-Event-Id) after the transaction commits. Returns how many were moved.';

-- ---- signatures for receivers written in SQL ----

CREATE FUNCTION bv_cdc.verify_signature(secret text, header text, body text, tolerance integer DEFAULT 300)
RETURNS boolean
AS 'MODULE_PATHNAME', 'bv_cdc_verify_signature'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION bv_cdc.verify_signature(text, text, text, integer) IS
'true when header (BV-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>, several v1 allowed) signs body with secret and t is within tolerance seconds of now; false otherwise, also for NULL arguments. Constant-time comparison.';

-- ---- validation of the new kinds ----

CREATE FUNCTION bv_cdc.check_topic_template(topic_template text, kind text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rest text := replace(replace(topic_template, '{schema}', ''), '{table}', '');
BEGIN
    IF kind = 'mqtt' THEN
        rest := replace(rest, '{key}', '');
        IF topic_template IS NULL OR topic_template = '' OR length(topic_template) > 1000
           OR rest ~ '[+#[:cntrl:]]' OR topic_template LIKE '$%' THEN
            RAISE EXCEPTION 'invalid MQTT topic template "%"', topic_template
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'An MQTT topic template is 1 to 1000 characters without the wildcards + and #, not starting with $; placeholders {schema}, {table} and {key}.',
                      HINT = 'For example ''bv/{schema}/{table}/{key}''.';
        END IF;
    ELSIF topic_template IS NULL OR topic_template = '' OR length(topic_template) > 200
       OR rest !~ '^[A-Za-z0-9._-]*$' OR topic_template IN ('.', '..') THEN
        RAISE EXCEPTION 'invalid topic template "%"', topic_template
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A topic template is 1 to 200 characters: letters, digits, ".", "_", "-" and the placeholders {schema} and {table}.',
                  HINT = 'For example ''bv.{schema}.{table}'' or ''orders''.';
    END IF;
END
$$;

COMMENT ON FUNCTION bv_cdc.check_topic_template(text, text) IS
'Raises 22023 unless topic_template is valid for the sink kind: a Kafka topic (or webhook BV-Topic) with {schema}/{table}, or an MQTT topic with {schema}/{table}/{key}.';

DROP FUNCTION bv_cdc.check_topic_template(text);

CREATE FUNCTION bv_cdc.check_sink_secrets(kind text, config jsonb)
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
            RAISE EXCEPTION 'secret "%" does not exist', secret_name
                USING ERRCODE = 'undefined_object',
                      DETAIL = 'Sink configurations name secrets of bv_core''s store; they never hold the values.',
                      HINT = 'Store it first with bv.secret_set(name, value).';
        END IF;
    END LOOP;
END
$$;

COMMENT ON FUNCTION bv_cdc.check_sink_secrets(text, jsonb) IS
'Raises 42704 when a secret named by a webhook (secret) or MQTT (password_secret) sink configuration is not in bv.secrets.';

CREATE OR REPLACE FUNCTION bv_cdc.add_sink(name text, kind text, config jsonb)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM bv_cdc.check_sink_name(name);
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

COMMENT ON FUNCTION bv_cdc.add_sink(text, text, jsonb) IS
'Adds a sink: add_sink(''main'', ''kafka'', ''{"bootstrap.servers": "broker:9092"}''), add_sink(''iot'', ''mqtt'', ''{"host": "broker"}'') or add_sink(''hooks'', ''webhook'', ''{"url": "https://...", "secret": "webhook:hooks"}''). Invalid properties are refused now, with the reason. Applies when the transaction commits.';

CREATE OR REPLACE FUNCTION bv_cdc.alter_sink(name text, config jsonb)
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
    PERFORM bv_cdc.check_sink_secrets(k, config);
    UPDATE bv_cdc.sinks s SET config = alter_sink.config, updated_at = pg_catalog.now()
     WHERE s.name = alter_sink.name;
END
$$;

COMMENT ON FUNCTION bv_cdc.alter_sink(text, jsonb) IS
'Replaces a sink''s properties (validated now); the worker drains in-flight messages and restarts the sink on commit.';

DROP FUNCTION bv_cdc.add_route(text, text, text, text[], text[], text[]);

CREATE FUNCTION bv_cdc.add_route(
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
    IF table_pattern IS NULL OR table_pattern !~ '^[^.]+\.[^.]+$' THEN
        RAISE EXCEPTION 'invalid table pattern "%"', table_pattern
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A table pattern is schema.table, where either part may use the wildcards * and ?.',
                  HINT = 'For example ''public.orders'' or ''public.*''.';
    END IF;
    SELECT s.kind INTO sink_kind FROM bv_cdc.sinks s WHERE s.name = add_route.sink;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'sink "%" does not exist', sink
            USING ERRCODE = 'undefined_object', HINT = 'Add it first with bv_cdc.add_sink.';
    END IF;
    tmpl := coalesce(tmpl, CASE sink_kind WHEN 'mqtt' THEN 'bv/{schema}/{table}/{key}'
                                          WHEN 'webhook' THEN '{schema}.{table}'
                                          ELSE 'bv.{schema}.{table}' END);
    PERFORM bv_cdc.check_topic_template(tmpl, sink_kind);
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
    IF options IS NULL OR jsonb_typeof(options) <> 'object' THEN
        RAISE EXCEPTION 'route options must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'For example ''{"qos": 1}''.';
    END IF;
    FOR k IN SELECT jsonb_object_keys(options) LOOP
        IF NOT (k = ANY (CASE sink_kind WHEN 'mqtt' THEN '{qos,retain}'::text[]
                                        WHEN 'webhook' THEN '{on_dead_letter}'::text[]
                                        ELSE '{}'::text[] END)) THEN
            RAISE EXCEPTION 'unknown route option "%" for a % sink', k, sink_kind
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'MQTT routes take qos and retain; webhook routes take on_dead_letter; Kafka routes take none.';
        END IF;
    END LOOP;
    IF options ? 'qos' AND (jsonb_typeof(options -> 'qos') <> 'number'
                            OR (options ->> 'qos') NOT IN ('0', '1', '2')) THEN
        RAISE EXCEPTION 'invalid MQTT QoS %', options -> 'qos'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use 0, 1 (the default) or 2.';
    END IF;
    IF options ? 'retain' AND jsonb_typeof(options -> 'retain') <> 'boolean' THEN
        RAISE EXCEPTION 'invalid retain flag %', options -> 'retain'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use true or false.';
    END IF;
    IF options ? 'on_dead_letter' AND coalesce(options ->> 'on_dead_letter', '') NOT IN ('continue', 'hold') THEN
        RAISE EXCEPTION 'invalid on_dead_letter %', options -> 'on_dead_letter'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use "continue" (later events of the key are still delivered) or "hold" (they wait behind the parked one).';
    END IF;
    BEGIN
        INSERT INTO bv_cdc.routes (table_pattern, sink, topic_template, include_columns,
                                   exclude_columns, operations, options)
        VALUES (table_pattern, sink, tmpl, include_columns, exclude_columns, operations, options)
        RETURNING id INTO new_id;
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'a route from "%" to sink "%" and topic "%" already exists',
                        table_pattern, sink, tmpl
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Drop it first with bv_cdc.drop_route.';
    END;
    RETURN new_id;
END
$$;

COMMENT ON FUNCTION bv_cdc.add_route(text, text, text, text[], text[], text[], jsonb) IS
'Routes the changes of the tables matching table_pattern (schema.table, wildcards * and ?) to a sink and topic (default by kind: bv.{schema}.{table} for Kafka, bv/{schema}/{table}/{key} for MQTT, {schema}.{table} as a webhook''s BV-Topic), optionally only some columns and operations, with per-route options (MQTT qos/retain, webhook on_dead_letter). Returns the route id; applies on commit.';

-- ---- statistics with the new kinds ----

DROP VIEW bv_cdc.stats;
DROP FUNCTION bv_cdc.stats_raw();

CREATE FUNCTION bv_cdc.stats_raw(
    OUT sink text, OUT state text, OUT events bigint, OUT bytes bigint,
    OUT acked_lsn pg_lsn, OUT confirmed_lsn pg_lsn, OUT received_lsn pg_lsn,
    OUT inflight bigint, OUT lag_ms bigint, OUT errors bigint, OUT retries bigint,
    OUT last_error text, OUT last_ack timestamptz, OUT worker_state text,
    OUT worker_pid integer, OUT quarantined bigint, OUT last_heartbeat timestamptz,
    OUT kind text, OUT circuit text, OUT spooled bigint, OUT dead_letters bigint,
    OUT spool_retries bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'bv_cdc_stats_raw'
LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION bv_cdc.stats_raw() IS
'The worker''s counters from shared memory, one row per sink; use the view bv_cdc.stats.';

CREATE VIEW bv_cdc.stats AS
SELECT s.sink, s.kind, s.state, s.events, s.bytes, s.acked_lsn,
       pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(),
                                  coalesce(sl.confirmed_flush_lsn, s.confirmed_lsn))::bigint AS lag_bytes,
       s.lag_ms, s.errors, s.retries, s.last_error, s.last_ack,
       s.circuit, s.spooled, s.dead_letters, s.spool_retries,
       sl.confirmed_flush_lsn AS slot_confirmed_lsn, s.received_lsn, s.inflight,
       s.worker_state, s.worker_pid, s.quarantined, s.last_heartbeat
  FROM bv_cdc.stats_raw() s
  LEFT JOIN pg_catalog.pg_replication_slots sl
    ON sl.slot_name = pg_catalog.current_setting('bv_cdc.slot_name');

COMMENT ON VIEW bv_cdc.stats IS
'Per sink: kind, events and bytes acknowledged by the receiver (Kafka, MQTT PUBACK/PUBCOMP, webhook 2xx), last acknowledged LSN, slot lag in bytes (WAL retained) and ms (age of the oldest unacknowledged commit), errors, stream restarts, state (up, down, paused, idle) and last error; for webhooks the circuit breaker (closed, open, half-open), events waiting in the spool, events dead-lettered and spool redeliveries since the worker started; plus the worker''s state.';

-- ---- privileges ----

REVOKE ALL ON FUNCTION bv_cdc.spool_changed(), bv_cdc.replay_dead_letters(text, bigint[]),
    bv_cdc.verify_signature(text, text, text, integer), bv_cdc.check_topic_template(text, text),
    bv_cdc.check_sink_secrets(text, jsonb), bv_cdc.add_route(text, text, text, text[], text[], text[], jsonb),
    bv_cdc.stats_raw() FROM PUBLIC;
GRANT SELECT ON bv_cdc.webhook_spool, bv_cdc.dead_letter, bv_cdc.stats TO bv_admin;
GRANT EXECUTE ON FUNCTION bv_cdc.replay_dead_letters(text, bigint[]),
    bv_cdc.add_route(text, text, text, text[], text[], text[], jsonb), bv_cdc.stats_raw(),
    bv_cdc.check_topic_template(text, text), bv_cdc.check_sink_secrets(text, jsonb)
    TO bv_admin;
-- Receivers of any role may check signatures.
GRANT USAGE ON SCHEMA bv_cdc TO bv_user, bv_service;
GRANT EXECUTE ON FUNCTION bv_cdc.verify_signature(text, text, text, integer) TO bv_user, bv_service, bv_admin;
