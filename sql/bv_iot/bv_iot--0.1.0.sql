/*
 * bv_iot 0.1.0: IoT devices, telemetry, rollups and commands (schema iot).
 *
 *  - Registry: device types, groups, devices (owner, status, metadata,
 *    firmware, group).  iot.provision_device() returns a device's secret
 *    once; only its PBKDF2-SHA512 hash is stored, in mosquitto's password
 *    file format, so iot.mosquitto_passwd() can feed the broker.  Devices
 *    and groups are audited (bv_audit); RLS shows an owner only their own.
 *  - Telemetry: iot.telemetry, partitioned by day on ts, BRIN on ts, one
 *    reading per (device, metric, ts): a redelivered reading is a duplicate
 *    and is dropped, which makes QoS 1 redelivery land exactly once.
 *    Partitions ahead and retention: iot.maintain_partitions() (pg_cron).
 *  - Ingestion: iot.ingest(jsonb) and the bridge worker share one C
 *    validator; bad readings go to iot.quarantine with a reason.
 *  - Rollups: minute and hour buckets recomputed from raw data for the
 *    buckets marked dirty by ingestion (iot.rollup_dirty), so late and
 *    out-of-order readings update the buckets they belong to
 *    (iot.refresh_rollups(), pg_cron).
 *  - Commands: iot.send_command() queues; the bridge publishes to
 *    devices/<id>/commands at QoS 1 when the device is online; the device
 *    answers on devices/<id>/ack and devices/<id>/result; every transition
 *    is recorded in iot.command_transitions.
 */

\echo Use "CREATE EXTENSION bv_iot" to load this file. \quit

COMMENT ON SCHEMA iot IS 'BitVelocity IoT: device registry, telemetry, rollups, commands and the MQTT bridge''s configuration and statistics.';

/* ---------- registry ---------- */

CREATE TABLE iot.device_types (
    name        text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.-]{1,64}$'),
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE iot.device_types IS 'Kinds of device (a sensor model, a gateway).';

CREATE TABLE iot.device_groups (
    name        text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.-]{1,64}$'),
    owner       text NOT NULL DEFAULT bv.actor(),
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE iot.device_groups IS 'Groups of devices (a site, a fleet), owned by an actor.';

CREATE TABLE iot.devices (
    device_id   text PRIMARY KEY CHECK (device_id ~ '^[A-Za-z0-9_-]{1,64}$'),
    owner       text NOT NULL DEFAULT bv.actor(),
    device_type text REFERENCES iot.device_types,
    group_name  text REFERENCES iot.device_groups,
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    metadata    jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    firmware    text CHECK (length(firmware) <= 64),
    secret_hash text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE iot.devices IS 'Registered devices.  device_id is also the device''s MQTT user name and the second level of its topics (devices/<device_id>/...).';
COMMENT ON COLUMN iot.devices.secret_hash IS 'PBKDF2-SHA512 of the device secret in mosquitto''s password-file format ($7$...); the secret itself is never stored.';
COMMENT ON COLUMN iot.devices.status IS 'active or disabled: readings and commands of a disabled device are refused (quarantined).';

CREATE TABLE iot.device_state (
    device_id  text PRIMARY KEY REFERENCES iot.devices ON DELETE CASCADE,
    last_seen  timestamptz NOT NULL
);
COMMENT ON TABLE iot.device_state IS 'Last time the bridge or iot.ingest accepted something from each device (kept apart from iot.devices so that it is not audited on every batch).';

/* ---------- configuration ---------- */

CREATE TABLE iot.bridge_config (
    id                 boolean PRIMARY KEY DEFAULT true CHECK (id),
    enabled            boolean NOT NULL DEFAULT false,
    host               text NOT NULL DEFAULT '127.0.0.1',
    port               integer NOT NULL DEFAULT 1883 CHECK (port BETWEEN 1 AND 65535),
    client_id          text NOT NULL DEFAULT 'bv_iot_bridge' CHECK (length(client_id) BETWEEN 1 AND 64),
    username           text CHECK (length(username) BETWEEN 1 AND 64),
    password_secret    text CHECK (length(password_secret) BETWEEN 1 AND 200),
    topics             text[] NOT NULL DEFAULT '{devices/+/telemetry}' CHECK (cardinality(topics) BETWEEN 1 AND 16),
    batch_size         integer NOT NULL DEFAULT 2000 CHECK (batch_size BETWEEN 1 AND 100000),
    batch_ms           integer NOT NULL DEFAULT 100 CHECK (batch_ms BETWEEN 1 AND 60000),
    max_payload_bytes  integer NOT NULL DEFAULT 65536 CHECK (max_payload_bytes BETWEEN 64 AND 16777216),
    max_readings       integer NOT NULL DEFAULT 1000 CHECK (max_readings BETWEEN 1 AND 100000),
    max_future         interval NOT NULL DEFAULT '10 minutes',
    max_age            interval NOT NULL DEFAULT '7 days',
    offline_after      interval NOT NULL DEFAULT '5 minutes',
    keepalive_s        integer NOT NULL DEFAULT 30 CHECK (keepalive_s BETWEEN 5 AND 3600),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE iot.bridge_config IS 'The MQTT bridge''s configuration (one row).  The bridge reads it again within a second of a change; no restart needed.';
COMMENT ON COLUMN iot.bridge_config.password_secret IS 'Name of the bv.secrets entry holding the bridge''s MQTT password.';
COMMENT ON COLUMN iot.bridge_config.topics IS 'Telemetry topic filters; the second level must be the device id (devices/+/telemetry).';
COMMENT ON COLUMN iot.bridge_config.max_future IS 'Readings stamped later than now() + max_future are quarantined (ts_future).';
COMMENT ON COLUMN iot.bridge_config.max_age IS 'Readings stamped earlier than now() - max_age are quarantined (ts_past); keep it below the retention.';
INSERT INTO iot.bridge_config DEFAULT VALUES;

CREATE FUNCTION iot._touch_config() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW.updated_at := pg_catalog.clock_timestamp();
    RETURN NEW;
END
$$;
CREATE TRIGGER touch BEFORE UPDATE ON iot.bridge_config FOR EACH ROW EXECUTE FUNCTION iot._touch_config();

CREATE TABLE iot.settings (
    id               boolean PRIMARY KEY DEFAULT true CHECK (id),
    retention        interval NOT NULL DEFAULT '30 days' CHECK (retention >= '1 day'),
    partitions_ahead integer NOT NULL DEFAULT 3 CHECK (partitions_ahead BETWEEN 1 AND 60)
);
COMMENT ON TABLE iot.settings IS 'Telemetry retention (raw partitions older than this are dropped; rollups stay) and how many daily partitions to create ahead.';
INSERT INTO iot.settings DEFAULT VALUES;

/* ---------- telemetry ---------- */

CREATE TABLE iot.telemetry (
    device_id   text NOT NULL,
    ts          timestamptz NOT NULL,
    metric      text NOT NULL,
    value       double precision,
    payload     jsonb,
    received_at timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (ts);
COMMENT ON TABLE iot.telemetry IS 'Readings, one per (device, metric, ts); partitioned by day on ts.';
CREATE UNIQUE INDEX telemetry_reading ON iot.telemetry (device_id, metric, ts);
CREATE INDEX telemetry_ts_brin ON iot.telemetry USING brin (ts);

CREATE TABLE iot.quarantine (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at    timestamptz NOT NULL DEFAULT now(),
    source         text NOT NULL CHECK (source IN ('mqtt', 'sql')),
    topic          text,
    device_id      text,
    reason         text NOT NULL,
    detail         text,
    payload_prefix text,
    payload_bytes  integer
);
COMMENT ON TABLE iot.quarantine IS 'Refused input: the reason, the topic, the claimed device and the first 256 bytes of the raw payload.';
CREATE INDEX quarantine_received ON iot.quarantine (received_at);

/* ---------- partitions ---------- */

CREATE FUNCTION iot.maintain_partitions(p_today date DEFAULT NULL)
RETURNS TABLE (action text, partition text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s iot.settings;
    d date;
    today date := coalesce(p_today, (now() AT TIME ZONE 'UTC')::date);
    name text;
    r record;
BEGIN
    SELECT * INTO s FROM iot.settings;
    -- Ahead: today - (max_age in days) .. today + partitions_ahead, so every
    -- timestamp validation accepts has its partition.
    FOR d IN SELECT g::date FROM generate_series(
                 today - (SELECT ceil(extract(epoch FROM max_age) / 86400)::integer + 1 FROM iot.bridge_config),
                 today + s.partitions_ahead, interval '1 day') g
    LOOP
        name := 'telemetry_' || to_char(d, 'YYYYMMDD');
        IF d >= today - s.retention AND to_regclass('iot.' || name) IS NULL THEN
            EXECUTE format('CREATE TABLE iot.%I PARTITION OF iot.telemetry FOR VALUES FROM (%L) TO (%L)',
                           name, (d::timestamp AT TIME ZONE 'UTC'), ((d + 1)::timestamp AT TIME ZONE 'UTC'));
            action := 'created'; partition := name; RETURN NEXT;
        END IF;
    END LOOP;
    -- Partitions made by CREATE EXTENSION are members of the extension;
    -- release them so that they can be dropped (and are dumped).
    FOR r IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               JOIN pg_depend dep ON dep.classid = 'pg_class'::regclass AND dep.objid = c.oid AND dep.deptype = 'e'
              WHERE i.inhparent = 'iot.telemetry'::regclass
    LOOP
        BEGIN
            EXECUTE format('ALTER EXTENSION bv_iot DROP TABLE iot.%I', r.relname);
        EXCEPTION WHEN OTHERS THEN
            NULL;   -- inside CREATE EXTENSION itself
        END;
    END LOOP;
    FOR r IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'iot.telemetry'::regclass AND c.relname ~ '^telemetry_[0-9]{8}$'
                AND to_date(substr(c.relname, 11), 'YYYYMMDD') < today - s.retention
    LOOP
        EXECUTE format('DROP TABLE iot.%I', r.relname);
        action := 'dropped'; partition := r.relname; RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION iot.maintain_partitions(date) IS 'Creates the daily telemetry partitions validation can accept (and iot.settings.partitions_ahead days ahead) and drops those older than iot.settings.retention; run daily by pg_cron.  p_today overrides the current date (tests).';
REVOKE ALL ON FUNCTION iot.maintain_partitions(date) FROM PUBLIC;

SELECT count(*) FROM iot.maintain_partitions();

/* ---------- provisioning ---------- */

CREATE FUNCTION iot._caller_is_privileged()
RETURNS boolean
AS 'MODULE_PATHNAME', 'iot_caller_is_privileged'
LANGUAGE C STABLE;
COMMENT ON FUNCTION iot._caller_is_privileged() IS 'Internal: whether the role calling a SECURITY DEFINER function (the outer role, not its owner) is a superuser or a bv_service member, who may act on any device.';

CREATE FUNCTION iot._secret_hash(secret text)
RETURNS text
AS 'MODULE_PATHNAME', 'iot_secret_hash'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION iot._secret_hash(text) IS 'Internal: PBKDF2-SHA512 of a secret with a random salt, in mosquitto''s password-file format ($7$iterations$salt$hash).';
REVOKE ALL ON FUNCTION iot._secret_hash(text) FROM PUBLIC;

CREATE FUNCTION iot._secret_new()
RETURNS text
AS 'MODULE_PATHNAME', 'iot_secret_new'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION iot._secret_new() IS 'Internal: a new random device secret (32 characters, 190 bits).';
REVOKE ALL ON FUNCTION iot._secret_new() FROM PUBLIC;

CREATE FUNCTION iot.provision_device(device_id text, device_type text DEFAULT NULL,
                                     group_name text DEFAULT NULL, metadata jsonb DEFAULT '{}',
                                     firmware text DEFAULT NULL)
RETURNS TABLE (username text, secret text, telemetry_topic text, command_topic text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id text := provision_device.device_id;
    v_secret text;
BEGIN
    IF v_id IS NULL OR v_id !~ '^[A-Za-z0-9_-]{1,64}$' THEN
        RAISE EXCEPTION 'invalid device id %', quote_literal(left(coalesce(v_id, 'NULL'), 64))
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A device id is 1 to 64 letters, digits, "_" or "-": it is the device''s MQTT user name and a topic level.',
                  HINT = 'Choose an id such as "sensor-0042".';
    END IF;
    IF provision_device.group_name IS NOT NULL AND NOT EXISTS (
           SELECT 1 FROM iot.device_groups g WHERE g.name = provision_device.group_name
              AND (g.owner = bv.actor() OR iot._caller_is_privileged())) THEN
        RAISE EXCEPTION 'device group % does not exist', quote_literal(left(provision_device.group_name, 64))
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Create the group first (INSERT INTO iot.device_groups).';
    END IF;
    IF provision_device.device_type IS NOT NULL AND NOT EXISTS (
           SELECT 1 FROM iot.device_types t WHERE t.name = provision_device.device_type) THEN
        RAISE EXCEPTION 'device type % does not exist', quote_literal(left(provision_device.device_type, 64))
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use a type listed in iot.device_types, or add it there first.';
    END IF;
    v_secret := iot._secret_new();
    BEGIN
        INSERT INTO iot.devices (device_id, owner, device_type, group_name, metadata, firmware, secret_hash)
        VALUES (v_id, bv.actor(), provision_device.device_type, provision_device.group_name,
                coalesce(provision_device.metadata, '{}'), provision_device.firmware, iot._secret_hash(v_secret));
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'device % already exists', quote_literal(v_id)
            USING ERRCODE = 'unique_violation',
                  HINT = 'Choose another id, or rotate its secret with iot.rotate_device_secret().';
    END;
    RETURN QUERY SELECT v_id, v_secret, 'devices/' || v_id || '/telemetry', 'devices/' || v_id || '/commands';
END
$$;
COMMENT ON FUNCTION iot.provision_device(text, text, text, jsonb, text) IS
'Registers a device owned by the caller (bv.actor()) and returns its MQTT credentials once: user name (the device id) and a random secret that is stored only hashed.';

CREATE FUNCTION iot.rotate_device_secret(device_id text)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_secret text := iot._secret_new();
BEGIN
    UPDATE iot.devices d SET secret_hash = iot._secret_hash(v_secret)
     WHERE d.device_id = rotate_device_secret.device_id
       AND (d.owner = bv.actor() OR iot._caller_is_privileged());
    IF NOT FOUND THEN
        RAISE EXCEPTION 'device % does not exist', quote_literal(left(rotate_device_secret.device_id, 64))
            USING ERRCODE = 'no_data_found', HINT = 'Provision it with iot.provision_device().';
    END IF;
    RETURN v_secret;
END
$$;
COMMENT ON FUNCTION iot.rotate_device_secret(text) IS 'Replaces a device''s secret and returns the new one once (regenerate the broker''s password file afterwards).';

CREATE FUNCTION iot.mosquitto_passwd(bridge_user text DEFAULT NULL, bridge_password text DEFAULT NULL)
RETURNS SETOF text
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT d.device_id || ':' || d.secret_hash FROM iot.devices d WHERE d.status = 'active'
    UNION ALL
    SELECT bridge_user || ':' || iot._secret_hash(bridge_password) WHERE bridge_user IS NOT NULL
$$;
COMMENT ON FUNCTION iot.mosquitto_passwd(text, text) IS
'The lines of a mosquitto password file: every active device (user = device id) and, if given, the bridge''s user.  Write them to the broker''s password_file and send it SIGHUP (tools/peers/iot.sh does).';
REVOKE ALL ON FUNCTION iot.mosquitto_passwd(text, text) FROM PUBLIC;

CREATE FUNCTION iot.mosquitto_acl(bridge_user text DEFAULT 'bv_iot_bridge')
RETURNS SETOF text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    VALUES ('# bv_iot: a device speaks only on its own topics; the bridge reads and writes them all'),
           ('user ' || bridge_user), ('topic readwrite devices/#'), (''),
           ('pattern read devices/%u/commands'), ('pattern write devices/%u/telemetry'),
           ('pattern write devices/%u/ack'), ('pattern write devices/%u/result')
$$;
COMMENT ON FUNCTION iot.mosquitto_acl(text) IS 'The mosquitto ACL file: each device may publish only on devices/<its id>/{telemetry,ack,result} and read devices/<its id>/commands.';

/* ---------- ingestion ---------- */

CREATE FUNCTION iot._quarantine(p_source text, p_topic text[], p_device text[], p_reason text[],
                                p_detail text[], p_raw text[], p_bytes integer[])
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    IF p_source IS NULL OR p_reason IS NULL OR array_position(p_reason, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'a quarantine batch needs a source and a reason for every entry'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Internal: called by the bridge and iot.ingest().';
    END IF;
    IF p_source NOT IN ('mqtt', 'sql') THEN
        RAISE EXCEPTION 'invalid quarantine source %', quote_literal(left(p_source, 16))
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The source is "mqtt" or "sql".';
    END IF;
    WITH q AS (
        INSERT INTO iot.quarantine (source, topic, device_id, reason, detail, payload_prefix, payload_bytes)
        SELECT p_source, t, left(d, 64), r, x, left(w, 256), b FROM unnest(p_topic, p_device, p_reason, p_detail, p_raw, p_bytes) u(t, d, r, x, w, b)
        WHERE r IS NOT NULL
        RETURNING 1)
    SELECT count(*) INTO n FROM q;
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION iot._quarantine(text, text[], text[], text[], text[], text[], integer[]) FROM PUBLIC;

CREATE FUNCTION iot.ingest(readings jsonb)
RETURNS TABLE (inserted bigint, quarantined bigint)
AS 'MODULE_PATHNAME', 'iot_ingest'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION iot.ingest(jsonb) IS
'Ingests one reading {"device","metric","value","ts"?,"payload"?} or an array of them, with the bridge''s validation: bad readings go to iot.quarantine with a reason, the others land.  Callers other than bv_service members and superusers may write only for devices they own.  Returns how many landed (duplicates excluded) and how many were quarantined.';
REVOKE ALL ON FUNCTION iot.ingest(jsonb) FROM PUBLIC;

/* ---------- rollups ---------- */

CREATE TABLE iot.rollup_dirty (
    device_id text NOT NULL,
    metric    text NOT NULL,
    bucket    timestamptz NOT NULL
);
COMMENT ON TABLE iot.rollup_dirty IS 'Minute buckets that got readings since the last iot.refresh_rollups(); written in the same transaction as the readings.';

CREATE TABLE iot.rollup_minute (
    device_id text NOT NULL,
    metric    text NOT NULL,
    bucket    timestamptz NOT NULL,
    n         bigint NOT NULL,
    min       double precision,
    max       double precision,
    sum       double precision,
    avg       double precision GENERATED ALWAYS AS (sum / nullif(n, 0)) STORED,
    PRIMARY KEY (device_id, metric, bucket)
);
COMMENT ON TABLE iot.rollup_minute IS 'min/max/avg/count per device, metric and minute (n counts readings, null values included).';

CREATE TABLE iot.rollup_hour (LIKE iot.rollup_minute INCLUDING ALL);
COMMENT ON TABLE iot.rollup_hour IS 'min/max/avg/count per device, metric and hour, from the minute rollups.';

CREATE FUNCTION iot.refresh_rollups()
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
BEGIN
    -- One refresh at a time; ingestion is never blocked (it only inserts
    -- into rollup_dirty).
    PERFORM pg_advisory_xact_lock(hashtext('iot.refresh_rollups'));
    -- Claim the dirty marks this statement sees: their readings committed
    -- with them, so the next statements (new snapshots) see the readings.
    -- Marks committed later stay for the next run.
    CREATE TEMP TABLE IF NOT EXISTS iot_dirty (device_id text, metric text, bucket timestamptz) ON COMMIT DROP;
    TRUNCATE iot_dirty;
    WITH d AS (DELETE FROM iot.rollup_dirty RETURNING device_id, metric, bucket)
    INSERT INTO iot_dirty SELECT DISTINCT device_id, metric, bucket FROM d;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n = 0 THEN
        RETURN 0;
    END IF;
    DELETE FROM iot.rollup_minute m USING iot_dirty d
     WHERE m.device_id = d.device_id AND m.metric = d.metric AND m.bucket = d.bucket;
    INSERT INTO iot.rollup_minute (device_id, metric, bucket, n, min, max, sum)
    SELECT t.device_id, t.metric, d.bucket, count(*), min(t.value), max(t.value), sum(t.value)
      FROM iot_dirty d JOIN iot.telemetry t
        ON t.device_id = d.device_id AND t.metric = d.metric
       AND t.ts >= d.bucket AND t.ts < d.bucket + interval '1 minute'
     GROUP BY t.device_id, t.metric, d.bucket;
    DELETE FROM iot.rollup_hour h USING (SELECT DISTINCT device_id, metric, date_trunc('hour', bucket) AS bucket FROM iot_dirty) d
     WHERE h.device_id = d.device_id AND h.metric = d.metric AND h.bucket = d.bucket;
    INSERT INTO iot.rollup_hour (device_id, metric, bucket, n, min, max, sum)
    SELECT m.device_id, m.metric, d.bucket, sum(m.n), min(m.min), max(m.max), sum(m.sum)
      FROM (SELECT DISTINCT device_id, metric, date_trunc('hour', bucket) AS bucket FROM iot_dirty) d
      JOIN iot.rollup_minute m ON m.device_id = d.device_id AND m.metric = d.metric
       AND m.bucket >= d.bucket AND m.bucket < d.bucket + interval '1 hour'
     GROUP BY m.device_id, m.metric, d.bucket;
    RETURN n;
END
$$;
COMMENT ON FUNCTION iot.refresh_rollups() IS 'Recomputes the minute and hour rollups of every bucket marked dirty since the last run (late and out-of-order readings included); run every minute by pg_cron.  Returns the number of minute buckets recomputed.';
REVOKE ALL ON FUNCTION iot.refresh_rollups() FROM PUBLIC;

CREATE FUNCTION iot.query(p_device text, p_metric text, p_from timestamptz, p_to timestamptz,
                          p_bucket text DEFAULT 'minute', p_raw_after interval DEFAULT '1 hour')
RETURNS TABLE (bucket timestamptz, n bigint, min double precision, max double precision, avg double precision)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    split timestamptz := greatest(p_from, date_trunc(p_bucket, now() - p_raw_after));
BEGIN
    IF p_bucket NOT IN ('minute', 'hour') THEN
        RAISE EXCEPTION 'unknown bucket %', quote_literal(left(p_bucket, 32))
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use ''minute'' or ''hour''.';
    END IF;
    -- Old range: the rollups; recent range (not yet refreshed): raw data.
    IF p_bucket = 'minute' THEN
        RETURN QUERY SELECT r.bucket, r.n, r.min, r.max, r.avg FROM iot.rollup_minute r
         WHERE r.device_id = p_device AND r.metric = p_metric AND r.bucket >= p_from AND r.bucket < least(split, p_to);
    ELSE
        RETURN QUERY SELECT r.bucket, r.n, r.min, r.max, r.avg FROM iot.rollup_hour r
         WHERE r.device_id = p_device AND r.metric = p_metric AND r.bucket >= p_from AND r.bucket < least(split, p_to);
    END IF;
    RETURN QUERY SELECT date_trunc(p_bucket, t.ts), count(*), min(t.value), max(t.value), avg(t.value)
      FROM iot.telemetry t
     WHERE t.device_id = p_device AND t.metric = p_metric AND t.ts >= split AND t.ts < p_to
     GROUP BY 1 ORDER BY 1;
END
$$;
COMMENT ON FUNCTION iot.query(text, text, timestamptz, timestamptz, text, interval) IS
'Aggregates of one device''s metric per minute or hour: rollups before now() - p_raw_after, raw readings after.  Row-level security applies: an owner sees only their devices.';

/* ---------- commands ---------- */

CREATE TABLE iot.commands (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id   text NOT NULL REFERENCES iot.devices ON DELETE CASCADE,
    owner       text NOT NULL DEFAULT bv.actor(),
    name        text NOT NULL CHECK (name ~ '^[A-Za-z0-9_.-]{1,64}$'),
    args        jsonb NOT NULL DEFAULT '{}',
    state       text NOT NULL DEFAULT 'queued'
                CHECK (state IN ('queued', 'sent', 'delivered', 'succeeded', 'failed', 'timed_out', 'expired')),
    timeout     interval NOT NULL DEFAULT '30 seconds',
    retries     integer NOT NULL DEFAULT 0 CHECK (retries BETWEEN 0 AND 100),
    attempts    integer NOT NULL DEFAULT 0,
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    state_at    timestamptz NOT NULL DEFAULT now(),
    result      jsonb
);
COMMENT ON TABLE iot.commands IS 'Commands to devices: queued -> sent -> delivered -> succeeded | failed, or timed_out (no answer after the last retry) or expired (never sent before expires_at).';
CREATE INDEX commands_open ON iot.commands (state, device_id) WHERE state IN ('queued', 'sent', 'delivered');

CREATE TABLE iot.command_transitions (
    command_id bigint NOT NULL REFERENCES iot.commands ON DELETE CASCADE,
    from_state text,
    to_state   text NOT NULL,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    detail     text
);
COMMENT ON TABLE iot.command_transitions IS 'Every state change of every command, with its time.';
CREATE INDEX command_transitions_command ON iot.command_transitions (command_id, at);

CREATE FUNCTION iot._command_transition() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO iot.command_transitions (command_id, from_state, to_state) VALUES (NEW.id, NULL, NEW.state);
    ELSIF NEW.state IS DISTINCT FROM OLD.state OR NEW.attempts <> OLD.attempts THEN
        INSERT INTO iot.command_transitions (command_id, from_state, to_state, detail)
        VALUES (NEW.id, OLD.state, NEW.state, CASE WHEN NEW.attempts <> OLD.attempts THEN 'attempt ' || NEW.attempts END);
        NEW.state_at := clock_timestamp();
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER transition_insert AFTER INSERT ON iot.commands FOR EACH ROW EXECUTE FUNCTION iot._command_transition();
CREATE TRIGGER transition_update BEFORE UPDATE ON iot.commands FOR EACH ROW EXECUTE FUNCTION iot._command_transition();

CREATE FUNCTION iot.send_command(device_id text, name text, args jsonb DEFAULT '{}',
                                 timeout interval DEFAULT '30 seconds', retries integer DEFAULT 0,
                                 ttl interval DEFAULT '1 hour')
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM iot.devices d WHERE d.device_id = send_command.device_id AND d.status = 'active'
                      AND (d.owner = bv.actor() OR iot._caller_is_privileged())) THEN
        RAISE EXCEPTION 'device % does not exist or is disabled', quote_literal(left(coalesce(send_command.device_id, 'NULL'), 64))
            USING ERRCODE = 'no_data_found', HINT = 'Send commands to an active device you own.';
    END IF;
    IF timeout IS NULL OR timeout < '1 second' OR timeout > '1 day' OR ttl IS NULL OR ttl < '1 second' OR ttl > '30 days'
       OR retries IS NULL OR retries NOT BETWEEN 0 AND 100 THEN
        RAISE EXCEPTION 'invalid command timing'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'timeout is 1 second to 1 day, ttl 1 second to 30 days, retries 0 to 100.',
                  HINT = 'Pass values in these ranges.';
    END IF;
    IF name IS NULL OR name !~ '^[A-Za-z0-9_.-]{1,64}$' OR args IS NULL OR octet_length(args::text) > 65536 THEN
        RAISE EXCEPTION 'invalid command'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A command name is 1 to 64 letters, digits, "_", "." or "-"; args is JSON of at most 64 kB.',
                  HINT = 'Pass a name such as "reboot" and a JSON object of arguments.';
    END IF;
    INSERT INTO iot.commands (device_id, owner, name, args, timeout, retries, expires_at)
    VALUES (send_command.device_id, bv.actor(), send_command.name, send_command.args,
            send_command.timeout, send_command.retries, now() + send_command.ttl)
    RETURNING id INTO v_id;
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION iot.send_command(text, text, jsonb, interval, integer, interval) IS
'Queues a command; the bridge publishes it at QoS 1 on devices/<id>/commands once the device is online (seen within offline_after).  Unanswered after timeout it is sent again up to retries times, then timed_out; never sent before now() + ttl, expired.  Returns its id.';

-- Called by the bridge for each message on devices/<id>/ack or /result.
CREATE FUNCTION iot._command_report(p_device text, p_kind text, p_payload jsonb)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id bigint;
    v_status text;
BEGIN
    IF jsonb_typeof(p_payload) <> 'object' OR jsonb_typeof(p_payload->'id') <> 'number' THEN
        RETURN 'bad_report';
    END IF;
    v_id := (p_payload->>'id')::numeric::bigint;
    INSERT INTO iot.device_state AS s (device_id, last_seen)
    SELECT p_device, now() WHERE EXISTS (SELECT 1 FROM iot.devices WHERE device_id = p_device)
    ON CONFLICT (device_id) DO UPDATE SET last_seen = EXCLUDED.last_seen;
    IF p_kind = 'ack' THEN
        UPDATE iot.commands SET state = 'delivered'
         WHERE id = v_id AND device_id = p_device AND state = 'sent';
    ELSE
        v_status := p_payload->>'status';
        IF v_status NOT IN ('succeeded', 'failed') THEN
            RETURN 'bad_report';
        END IF;
        UPDATE iot.commands SET state = v_status, result = p_payload->'result'
         WHERE id = v_id AND device_id = p_device AND state IN ('sent', 'delivered');
    END IF;
    RETURN CASE WHEN FOUND THEN 'ok' ELSE 'unknown_command' END;
EXCEPTION WHEN numeric_value_out_of_range OR invalid_text_representation THEN
    RETURN 'bad_report';
END
$$;
REVOKE ALL ON FUNCTION iot._command_report(text, text, jsonb) FROM PUBLIC;

-- Called by the bridge about once a second: time-outs, retries, expiry,
-- and the commands to publish now (queued, device online).
CREATE FUNCTION iot._commands_due(p_limit integer)
RETURNS TABLE (id bigint, device_id text, payload text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_offline interval := (SELECT offline_after FROM iot.bridge_config);
BEGIN
    UPDATE iot.commands c SET state = 'expired'
     WHERE c.state = 'queued' AND c.expires_at <= now();
    UPDATE iot.commands c SET state = CASE WHEN c.attempts > c.retries THEN 'timed_out' ELSE 'queued' END
     WHERE c.state IN ('sent', 'delivered') AND c.state_at + c.timeout <= now();
    RETURN QUERY
    WITH due AS (
        SELECT c.id FROM iot.commands c
          JOIN iot.devices d ON d.device_id = c.device_id AND d.status = 'active'
          JOIN iot.device_state s ON s.device_id = c.device_id AND s.last_seen > now() - v_offline
         WHERE c.state = 'queued'
         ORDER BY c.id LIMIT p_limit FOR UPDATE OF c SKIP LOCKED),
    upd AS (
        UPDATE iot.commands c SET state = 'sent', attempts = c.attempts + 1
          FROM due WHERE c.id = due.id
        RETURNING c.id, c.device_id, c.name, c.args, c.attempts)
    SELECT upd.id, upd.device_id,
           jsonb_build_object('id', upd.id, 'name', upd.name, 'args', upd.args, 'attempt', upd.attempts)::text
      FROM upd ORDER BY upd.id;
END
$$;
REVOKE ALL ON FUNCTION iot._commands_due(integer) FROM PUBLIC;

-- After a restart of the bridge: what was sent but not answered yet is
-- published again (the device deduplicates by id).
CREATE FUNCTION iot._commands_resend()
RETURNS TABLE (id bigint, device_id text, payload text)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.id, c.device_id,
           jsonb_build_object('id', c.id, 'name', c.name, 'args', c.args, 'attempt', c.attempts)::text
      FROM iot.commands c WHERE c.state = 'sent' ORDER BY c.id
$$;
REVOKE ALL ON FUNCTION iot._commands_resend() FROM PUBLIC;

/* ---------- statistics ---------- */

CREATE TABLE iot.bridge_counters (
    id              boolean PRIMARY KEY DEFAULT true CHECK (id),
    messages        bigint NOT NULL DEFAULT 0,
    readings        bigint NOT NULL DEFAULT 0,
    batches         bigint NOT NULL DEFAULT 0,
    quarantined     bigint NOT NULL DEFAULT 0,
    commit_ms_total double precision NOT NULL DEFAULT 0,
    commit_ms_max   double precision NOT NULL DEFAULT 0,
    last_lag_ms     double precision,
    reconnects      bigint NOT NULL DEFAULT 0,
    commands_sent   bigint NOT NULL DEFAULT 0,
    state           text NOT NULL DEFAULT 'stopped',
    last_batch_at   timestamptz,
    last_error      text
);
COMMENT ON TABLE iot.bridge_counters IS 'The bridge''s counters, updated in each batch''s transaction (so they count exactly what committed).';
INSERT INTO iot.bridge_counters DEFAULT VALUES;

CREATE VIEW iot.bridge_stats WITH (security_invoker = true) AS
SELECT c.state, c.messages, c.readings, c.batches, c.quarantined,
       (SELECT coalesce(jsonb_object_agg(reason, n), '{}') FROM
          (SELECT reason, count(*) AS n FROM iot.quarantine GROUP BY reason) q) AS quarantined_by_reason,
       c.commit_ms_total / nullif(c.batches, 0) AS commit_avg_ms, c.commit_ms_max AS commit_max_ms,
       c.last_lag_ms AS lag_ms, c.reconnects, c.commands_sent, c.last_batch_at, c.last_error
  FROM iot.bridge_counters c;
COMMENT ON VIEW iot.bridge_stats IS 'Bridge statistics: messages, readings landed, batches, quarantined (total and by reason, SQL ingestion included), commit latency, lag (commit time - broker receipt of the batch''s oldest message, as seen by the bridge), reconnects.';

CREATE VIEW iot.device_status WITH (security_invoker = true) AS
SELECT d.device_id, d.owner, d.status, s.last_seen,
       coalesce(s.last_seen > now() - (SELECT offline_after FROM iot.bridge_config), false) AS online
  FROM iot.devices d LEFT JOIN iot.device_state s USING (device_id);
COMMENT ON VIEW iot.device_status IS 'Each device''s last-seen time and online flag (seen within bridge_config.offline_after).';

/* ---------- jobs ---------- */

CREATE FUNCTION iot.schedule_jobs()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        RAISE NOTICE 'pg_cron is not installed in this database; iot jobs are not scheduled'
            USING HINT = 'Install pg_cron in the database named by cron.database_name and call iot.schedule_jobs().';
        RETURN;
    END IF;
    PERFORM cron.schedule('iot-partitions', '7 0 * * *', 'SELECT count(*) FROM iot.maintain_partitions()');
    PERFORM cron.schedule('iot-rollups', '* * * * *', 'SELECT iot.refresh_rollups()');
END
$$;
COMMENT ON FUNCTION iot.schedule_jobs() IS 'Schedules iot.maintain_partitions() daily and iot.refresh_rollups() every minute with pg_cron (called at install when pg_cron is present).';

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        PERFORM iot.schedule_jobs();
    END IF;
END
$$;

/* ---------- audit, privileges, row-level security ---------- */

SELECT bv_audit.enable('iot.devices', exclude_columns => '{secret_hash}');
SELECT bv_audit.enable('iot.device_groups');

CREATE FUNCTION iot.sees_owner(p_owner text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT p_owner = bv.actor() OR pg_catalog.pg_has_role(current_user, 'bv_service', 'MEMBER') $$;
COMMENT ON FUNCTION iot.sees_owner(text) IS 'Row-level security: the actor sees their own devices and data; bv_service sees all.';

CREATE FUNCTION iot.sees_device(p_device text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT EXISTS (SELECT 1 FROM iot.devices d WHERE d.device_id = p_device) $$;
COMMENT ON FUNCTION iot.sees_device(text) IS 'Row-level security: whether the caller sees this device (its own row-level security decides).';

ALTER TABLE iot.devices ENABLE ROW LEVEL SECURITY;
ALTER TABLE iot.device_groups ENABLE ROW LEVEL SECURITY;
ALTER TABLE iot.device_state ENABLE ROW LEVEL SECURITY;
ALTER TABLE iot.telemetry ENABLE ROW LEVEL SECURITY;
ALTER TABLE iot.rollup_minute ENABLE ROW LEVEL SECURITY;
ALTER TABLE iot.rollup_hour ENABLE ROW LEVEL SECURITY;
ALTER TABLE iot.commands ENABLE ROW LEVEL SECURITY;
ALTER TABLE iot.command_transitions ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON iot.devices USING (iot.sees_owner(owner));
CREATE POLICY own_rows ON iot.device_groups USING (iot.sees_owner(owner)) WITH CHECK (owner = bv.actor());
CREATE POLICY own_rows ON iot.device_state USING (iot.sees_device(device_id));
CREATE POLICY own_rows ON iot.telemetry USING (iot.sees_device(device_id));
CREATE POLICY own_rows ON iot.rollup_minute USING (iot.sees_device(device_id));
CREATE POLICY own_rows ON iot.rollup_hour USING (iot.sees_device(device_id));
CREATE POLICY own_rows ON iot.commands USING (iot.sees_owner(owner));
CREATE POLICY own_rows ON iot.command_transitions
    USING (EXISTS (SELECT 1 FROM iot.commands c WHERE c.id = command_id));

GRANT USAGE ON SCHEMA iot TO bv_user, bv_service;
GRANT SELECT ON iot.device_types TO bv_user, bv_service;
GRANT SELECT, INSERT ON iot.device_groups TO bv_user, bv_service;
GRANT SELECT (device_id, owner, device_type, group_name, status, metadata, firmware, created_at)
    ON iot.devices TO bv_user, bv_service;
GRANT SELECT (offline_after) ON iot.bridge_config TO bv_user, bv_service;
GRANT SELECT ON iot.device_state, iot.device_status, iot.telemetry, iot.rollup_minute,
                iot.rollup_hour, iot.commands, iot.command_transitions TO bv_user, bv_service;
GRANT UPDATE (status, metadata, firmware, group_name, device_type) ON iot.devices TO bv_user, bv_service;
GRANT SELECT ON iot.quarantine, iot.bridge_counters, iot.bridge_stats TO bv_service;
GRANT EXECUTE ON FUNCTION iot.provision_device(text, text, text, jsonb, text), iot.rotate_device_secret(text),
                          iot.send_command(text, text, jsonb, interval, integer, interval),
                          iot.query(text, text, timestamptz, timestamptz, text, interval),
                          iot.ingest(jsonb) TO bv_user, bv_service;
