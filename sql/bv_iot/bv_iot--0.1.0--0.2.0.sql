/*
 * bv_iot 0.1.0 -> 0.2.0
 *
 *  - Online/offline by MQTT last will: devices set a will on
 *    devices/<id>/status ("offline") and publish "online" when they
 *    connect; the bridge subscribes to devices/+/status and records the
 *    time of the last "offline" in iot.device_state.offline_at.  A device
 *    is online when it was seen within offline_after AND nothing said
 *    "offline" since it was last seen.  Commands wait while a device is
 *    offline and leave when it says "online" (or sends anything).
 *  - The broker ACL lets each device write its own status topic.
 *  - iot.provision_device refuses non-object metadata and over-long
 *    firmware with 22023 (they were raw check-constraint errors).
 *  - Device certificates: iot.device_certificates records the SHA-256
 *    fingerprint of each device's client certificate
 *    (iot.set_device_certificate); the make-run broker's TLS listener takes
 *    the device id from the certificate's CN.
 *  - REST through PostgREST (schema api, names prefixed iot_): devices
 *    (list, provision, enable/disable, rotate the secret), commands (send,
 *    list, status with transitions), readings and rollups over a range.
 *    Row-level security decides what a caller sees: an owner sees only
 *    their devices and their data.  Errors carry PostgREST's PTxyz codes
 *    (401, 404, 409) or 22023 (400).
 *  - REST quotas (iot.settings.max_devices_per_owner, max_pending_commands):
 *    PT429 beyond them (see iot._api_quota).
 */

\echo Use "ALTER EXTENSION bv_iot UPDATE TO '0.2.0'" to load this file. \quit

/* ---------- online/offline by last will ---------- */

ALTER TABLE iot.device_state ADD COLUMN offline_at timestamptz;
COMMENT ON COLUMN iot.device_state.offline_at IS 'When the device (or the broker, as its last will) last said "offline" on devices/<id>/status; NULL after "online".  The device is offline while offline_at >= last_seen.';

CREATE FUNCTION iot._device_status(p_device text, p_status text)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_device IS NULL OR p_status IS NULL THEN
        RETURN 'bad_status';
    END IF;
    -- "online", online, {"status": "online"} are all accepted.
    p_status := CASE WHEN left(btrim(p_status), 1) = '{'
                     THEN (SELECT j->>'status' FROM (SELECT p_status::jsonb AS j) x WHERE jsonb_typeof(j) = 'object')
                     ELSE btrim(p_status, E' \t\r\n"') END;
    IF p_status IS NULL OR p_status NOT IN ('online', 'offline') THEN
        RETURN 'bad_status';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM iot.devices d WHERE d.device_id = p_device) THEN
        RETURN 'unknown_device';
    END IF;
    IF p_status = 'online' THEN
        INSERT INTO iot.device_state AS s (device_id, last_seen, offline_at) VALUES (p_device, now(), NULL)
        ON CONFLICT (device_id) DO UPDATE SET last_seen = greatest(s.last_seen, EXCLUDED.last_seen), offline_at = NULL;
    ELSE
        INSERT INTO iot.device_state AS s (device_id, last_seen, offline_at) VALUES (p_device, now(), now())
        ON CONFLICT (device_id) DO UPDATE SET offline_at = EXCLUDED.offline_at;
    END IF;
    RETURN 'ok';
EXCEPTION WHEN invalid_text_representation THEN
    RETURN 'bad_status';
END
$$;
COMMENT ON FUNCTION iot._device_status(text, text) IS 'Internal (the bridge): applies a message on devices/<id>/status, "online" or "offline" (a device''s last will); returns ok, bad_status or unknown_device.';
REVOKE ALL ON FUNCTION iot._device_status(text, text) FROM PUBLIC;

CREATE OR REPLACE VIEW iot.device_status WITH (security_invoker = true) AS
SELECT d.device_id, d.owner, d.status, s.last_seen,
       coalesce(s.last_seen > now() - (SELECT offline_after FROM iot.bridge_config)
                AND (s.offline_at IS NULL OR s.last_seen > s.offline_at), false) AS online,
       s.offline_at
  FROM iot.devices d LEFT JOIN iot.device_state s USING (device_id);
COMMENT ON VIEW iot.device_status IS 'Each device''s last-seen time and online flag: seen within bridge_config.offline_after, and no "offline" status (last will) since.';

CREATE OR REPLACE FUNCTION iot._commands_due(p_limit integer)
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
                                 AND (s.offline_at IS NULL OR s.last_seen > s.offline_at)
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

CREATE OR REPLACE FUNCTION iot.mosquitto_acl(bridge_user text DEFAULT 'bv_iot_bridge')
RETURNS SETOF text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    VALUES ('# bv_iot: a device speaks only on its own topics; the bridge reads and writes them all'),
           ('user ' || bridge_user), ('topic readwrite devices/#'), (''),
           ('pattern read devices/%u/commands'), ('pattern write devices/%u/telemetry'),
           ('pattern write devices/%u/ack'), ('pattern write devices/%u/result'),
           ('pattern write devices/%u/status')
$$;
COMMENT ON FUNCTION iot.mosquitto_acl(text) IS 'The mosquitto ACL file: each device may publish only on devices/<its id>/{telemetry,ack,result,status} (status: its last will) and read devices/<its id>/commands.';

/* ---------- provisioning: clear errors for metadata and firmware ---------- */

CREATE OR REPLACE FUNCTION iot.provision_device(device_id text, device_type text DEFAULT NULL,
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
    IF provision_device.metadata IS NOT NULL AND (jsonb_typeof(provision_device.metadata) <> 'object'
                                                  OR octet_length(provision_device.metadata::text) > 16384) THEN
        RAISE EXCEPTION 'invalid device metadata'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Metadata is a JSON object of at most 16 kB.',
                  HINT = 'Pass an object such as {"site": "lab"}.';
    END IF;
    IF length(provision_device.firmware) > 64 THEN
        RAISE EXCEPTION 'invalid firmware version'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A firmware version is at most 64 characters.',
                  HINT = 'Pass a version such as "1.4.2".';
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

/* ---------- device certificates ---------- */

CREATE TABLE iot.device_certificates (
    device_id   text PRIMARY KEY REFERENCES iot.devices ON DELETE CASCADE,
    fingerprint text NOT NULL UNIQUE,
    added_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE iot.device_certificates IS 'The client certificate each device holds, by SHA-256 fingerprint of its DER encoding (as openssl x509 -fingerprint -sha256 prints it, lower case, without colons).  A broker listener with use_identity_as_username takes the device id from the certificate''s CN; this registry says which certificate was issued to which device.';

CREATE FUNCTION iot.set_device_certificate(device_id text, certificate text)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id text := set_device_certificate.device_id;
    v_b64 text;
    v_der bytea;
    v_fp text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM iot.devices d WHERE d.device_id = v_id
                      AND (d.owner = bv.actor() OR iot._caller_is_privileged())) THEN
        RAISE EXCEPTION 'device % does not exist', quote_literal(left(coalesce(v_id, 'NULL'), 64))
            USING ERRCODE = 'no_data_found', HINT = 'Provision it with iot.provision_device().';
    END IF;
    IF certificate IS NULL THEN
        DELETE FROM iot.device_certificates c WHERE c.device_id = v_id;
        RETURN NULL;
    END IF;
    v_b64 := substring(certificate FROM '^\s*-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----\s*$');
    IF octet_length(certificate) > 16384 OR v_b64 IS NULL THEN
        RAISE EXCEPTION 'invalid certificate'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A certificate is one PEM block (-----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----) of at most 16 kB.',
                  HINT = 'Pass the device''s certificate file as text, e.g. pg_read_file() or the file''s contents.';
    END IF;
    BEGIN
        v_der := decode(regexp_replace(v_b64, '\s', '', 'g'), 'base64');
    EXCEPTION WHEN invalid_parameter_value OR data_exception THEN
        v_der := NULL;
    END;
    -- DER of an X.509 certificate: a SEQUENCE (0x30) with a long-form length.
    IF v_der IS NULL OR octet_length(v_der) < 64 OR get_byte(v_der, 0) <> 48 OR get_byte(v_der, 1) NOT IN (129, 130) THEN
        RAISE EXCEPTION 'invalid certificate'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'The PEM block does not hold a DER-encoded certificate.',
                  HINT = 'Pass the device''s certificate file as text.';
    END IF;
    v_fp := encode(sha256(v_der), 'hex');
    BEGIN
        INSERT INTO iot.device_certificates AS c (device_id, fingerprint) VALUES (v_id, v_fp)
        ON CONFLICT ON CONSTRAINT device_certificates_pkey DO UPDATE SET fingerprint = EXCLUDED.fingerprint, added_at = now();
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'this certificate is registered for another device'
            USING ERRCODE = 'unique_violation', HINT = 'Issue a certificate of its own to each device (its CN is the device id).';
    END;
    RETURN v_fp;
END
$$;
COMMENT ON FUNCTION iot.set_device_certificate(text, text) IS 'Records the client certificate (PEM) of a device you own and returns its SHA-256 fingerprint; NULL removes it.  The broker takes the device''s identity from the certificate''s CN (use_identity_as_username); tools/peers/iot.sh issue-cert issues one from the make-run CA and records it.';

SELECT bv_audit.enable('iot.device_certificates');
ALTER TABLE iot.device_certificates ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON iot.device_certificates USING (iot.sees_device(device_id));
GRANT SELECT ON iot.device_certificates TO bv_user, bv_service;
GRANT EXECUTE ON FUNCTION iot.set_device_certificate(text, text) TO bv_user, bv_service;

/* ---------- REST (PostgREST serves schema api) ---------- */

/* The acting user of a REST call: PT401 when anonymous. */
CREATE FUNCTION iot._api_user()
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    u text := bv.current_user_id();
BEGIN
    IF u IS NULL THEN
        RAISE EXCEPTION 'authentication required'
            USING ERRCODE = 'PT401', HINT = 'Send a bearer token whose sub names the user.';
    END IF;
    RETURN u;
END
$$;
COMMENT ON FUNCTION iot._api_user() IS 'Internal (REST): the request''s user id (the JWT sub); PT401 (HTTP 401) when anonymous.';

/*
 * A device the caller sees (row-level security of iot.devices, as the
 * caller): its status, or PT404 -- the same answer for a device that does
 * not exist and one that belongs to somebody else.
 */
CREATE FUNCTION iot._api_device(p_device text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_status text;
BEGIN
    PERFORM iot._api_user();
    SELECT d.status INTO v_status FROM iot.devices d WHERE d.device_id = p_device;
    IF v_status IS NULL THEN
        RAISE EXCEPTION 'device % not found', quote_literal(left(coalesce(p_device, 'NULL'), 64))
            USING ERRCODE = 'PT404', HINT = 'List your devices with GET /iot_devices.';
    END IF;
    RETURN v_status;
END
$$;
COMMENT ON FUNCTION iot._api_device(text) IS 'Internal (REST): the status of a device the caller may see; PT404 (HTTP 404) otherwise, whether it is missing or not theirs.';

/* A time range of a query: both ends given, from < to, at most max_span long. */
CREATE FUNCTION iot._api_range(p_since timestamptz, p_until timestamptz, p_max_span interval)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_since IS NULL OR p_until IS NULL OR NOT isfinite(p_since) OR NOT isfinite(p_until)
       OR p_since >= p_until OR p_until - p_since > p_max_span THEN
        RAISE EXCEPTION 'invalid time range'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('since and until are finite timestamps, since before until, at most %s apart.', p_max_span),
                  HINT = 'Pass since=2026-12-06T10:00:00Z&until=2026-12-06T11:00:00Z (ISO 8601).';
    END IF;
END
$$;

CREATE TYPE iot.reading AS (ts timestamptz, metric text, value double precision, payload jsonb);
COMMENT ON TYPE iot.reading IS 'A raw reading as the REST API returns it.';
CREATE TYPE iot.bucket_stats AS (bucket timestamptz, n bigint, min double precision, max double precision, avg double precision);
COMMENT ON TYPE iot.bucket_stats IS 'Aggregates of one rollup bucket as the REST API returns them.';

-- One table in FROM (state by scalar subqueries): PATCH and DELETE through
-- PostgREST then fail on privileges (403), not on "cannot update view".
CREATE VIEW api.iot_devices WITH (security_invoker = true) AS
SELECT d.device_id, d.device_type, d.group_name, d.status, d.metadata, d.firmware, d.created_at,
       (SELECT s.last_seen FROM iot.device_state s WHERE s.device_id = d.device_id) AS last_seen,
       coalesce((SELECT s.online FROM iot.device_status s WHERE s.device_id = d.device_id), false) AS online,
       (SELECT s.offline_at FROM iot.device_state s WHERE s.device_id = d.device_id) AS offline_at,
       (SELECT c.fingerprint FROM iot.device_certificates c WHERE c.device_id = d.device_id) AS cert_fingerprint
  FROM iot.devices d;
COMMENT ON VIEW api.iot_devices IS 'Your devices (row-level security: an owner sees only their own), with last-seen time and online status (MQTT last will and the offline_after timeout).';
COMMENT ON COLUMN api.iot_devices.device_id IS 'The device id: its MQTT user name and the second level of its topics (devices/<device_id>/...).';
COMMENT ON COLUMN api.iot_devices.status IS 'active, or disabled: readings, status and commands of a disabled device are refused.';
COMMENT ON COLUMN api.iot_devices.cert_fingerprint IS 'SHA-256 of the client certificate recorded for the device (POST /rpc/iot_set_device_certificate), if any.';
COMMENT ON COLUMN api.iot_devices.online IS 'Seen within offline_after and no "offline" status (last will) since.';

CREATE VIEW api.iot_commands WITH (security_invoker = true) AS
SELECT c.id, c.device_id, c.name, c.args, c.state, extract(epoch FROM c.timeout)::integer AS timeout_s,
       c.retries, c.attempts, c.expires_at, c.created_at, c.state_at, c.result
  FROM iot.commands c;
COMMENT ON VIEW api.iot_commands IS 'Your commands and their state: queued, sent, delivered, succeeded, failed, timed_out or expired.';

CREATE VIEW api.iot_command_transitions WITH (security_invoker = true) AS
SELECT t.command_id, t.from_state, t.to_state, t.at, t.detail
  FROM iot.command_transitions t;
COMMENT ON VIEW api.iot_command_transitions IS 'Every state change of your commands, with its time.';

/*
 * Per-owner quotas of the REST surface (red-team 2).  A signed-in user could
 * provision devices and queue commands (64 kB of args each) as fast as the
 * request rate limit allowed, without bound: rows no one would ever read,
 * a broker password file that grows with every device.  Now REST callers
 * may own at most iot.settings.max_devices_per_owner devices (default
 * 1000) and have at most iot.settings.max_pending_commands commands queued
 * or sent to one device (default 100); beyond, PT429 (HTTP 429) with a
 * hint.  An advisory lock per owner / per device makes concurrent requests
 * count each other.  The SQL functions (iot.provision_device,
 * iot.send_command) used by back-end services are not limited.
 */
ALTER TABLE iot.settings
    ADD COLUMN max_devices_per_owner integer NOT NULL DEFAULT 1000 CHECK (max_devices_per_owner >= 1),
    ADD COLUMN max_pending_commands integer NOT NULL DEFAULT 100 CHECK (max_pending_commands >= 1);
COMMENT ON COLUMN iot.settings.max_devices_per_owner IS 'REST: devices one owner may provision through /rpc/iot_provision_device.';
COMMENT ON COLUMN iot.settings.max_pending_commands IS 'REST: commands queued or sent (not yet answered) to one device through /rpc/iot_send_command.';

CREATE FUNCTION iot._api_quota(p_kind text, p_device text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_owner text := bv.actor();
    v_max integer;
    v_have bigint;
BEGIN
    IF p_kind = 'devices' THEN
        SELECT s.max_devices_per_owner INTO v_max FROM iot.settings s;
        PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('iot.quota.devices'), pg_catalog.hashtext(v_owner));
        SELECT count(*) INTO v_have FROM iot.devices d WHERE d.owner = v_owner;
        IF v_have >= v_max THEN
            RAISE EXCEPTION 'too many devices'
                USING ERRCODE = 'PT429', DETAIL = format('You own %s devices; at most %s are allowed.', v_have, v_max),
                      HINT = 'Remove devices you no longer use, or ask an operator to raise iot.settings.max_devices_per_owner.';
        END IF;
    ELSIF p_kind = 'commands' THEN
        SELECT s.max_pending_commands INTO v_max FROM iot.settings s;
        PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('iot.quota.commands'), pg_catalog.hashtext(p_device));
        SELECT count(*) INTO v_have FROM iot.commands c
         WHERE c.device_id = p_device AND c.owner = v_owner AND c.state IN ('queued', 'sent');
        IF v_have >= v_max THEN
            RAISE EXCEPTION 'too many pending commands for device %', quote_literal(left(p_device, 64))
                USING ERRCODE = 'PT429', DETAIL = format('%s commands are queued or sent; at most %s are allowed.', v_have, v_max),
                      HINT = 'Wait until the device answers (GET /iot_commands), or let queued commands expire.';
        END IF;
    ELSE
        RAISE EXCEPTION 'unknown quota %', quote_literal(left(p_kind, 32)) USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;
COMMENT ON FUNCTION iot._api_quota(text, text) IS 'Internal (REST): PT429 (HTTP 429) when the caller is at a REST quota (devices owned, commands pending for one device).';
REVOKE ALL ON FUNCTION iot._api_quota(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION iot._api_quota(text, text) TO bv_user, bv_service;

CREATE FUNCTION api.iot_provision_device(device_id text, device_type text DEFAULT NULL, group_name text DEFAULT NULL,
                                         metadata jsonb DEFAULT '{}', firmware text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    PERFORM iot._api_user();
    PERFORM iot._api_quota('devices');
    SELECT * INTO r FROM iot.provision_device(device_id, device_type, group_name, metadata, firmware);
    -- The secret is shown once: no cache may keep it.
    PERFORM set_config('response.headers', '[{"Cache-Control": "no-store"}]', true);
    RETURN jsonb_build_object('device_id', r.username, 'username', r.username, 'secret', r.secret,
                              'telemetry_topic', r.telemetry_topic, 'command_topic', r.command_topic,
                              'status_topic', 'devices/' || r.username || '/status');
END
$$;
COMMENT ON FUNCTION api.iot_provision_device(text, text, text, jsonb, text) IS 'Registers a device that you own and returns its MQTT credentials once (the secret is stored only hashed).  400 for an invalid id, metadata or unknown type/group; 409 when the id is taken.  The broker learns new devices when its password file is written again.';

CREATE FUNCTION api.iot_rotate_device_secret(device_id text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM iot._api_device(device_id);
    PERFORM set_config('response.headers', '[{"Cache-Control": "no-store"}]', true);
    RETURN jsonb_build_object('device_id', device_id, 'secret', iot.rotate_device_secret(device_id));
END
$$;
COMMENT ON FUNCTION api.iot_rotate_device_secret(text) IS 'Gives one of your devices a new secret and returns it once; 404 for a device you do not own.';

CREATE FUNCTION api.iot_set_device_certificate(device_id text, certificate text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM iot._api_device(device_id);
    RETURN jsonb_build_object('device_id', device_id, 'cert_fingerprint', iot.set_device_certificate(device_id, certificate));
END
$$;
COMMENT ON FUNCTION api.iot_set_device_certificate(text, text) IS 'Records the client certificate (PEM) of one of your devices; returns its SHA-256 fingerprint (null certificate: removes it).  400 for anything but one PEM certificate, 404 for a device you do not own, 409 for a certificate registered for another device.';

CREATE FUNCTION api.iot_set_device_enabled(device_id text, enabled boolean)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_status text;
BEGIN
    PERFORM iot._api_device(device_id);
    IF enabled IS NULL THEN
        RAISE EXCEPTION 'enabled must be true or false'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass {"device_id": "...", "enabled": false}.';
    END IF;
    -- As the caller: row-level security lets an owner change only their own.
    UPDATE iot.devices d SET status = CASE WHEN enabled THEN 'active' ELSE 'disabled' END
     WHERE d.device_id = iot_set_device_enabled.device_id
    RETURNING d.status INTO v_status;
    IF v_status IS NULL THEN
        RAISE EXCEPTION 'device % not found', quote_literal(left(device_id, 64))
            USING ERRCODE = 'PT404', HINT = 'List your devices with GET /iot_devices.';
    END IF;
    RETURN jsonb_build_object('device_id', device_id, 'status', v_status);
END
$$;
COMMENT ON FUNCTION api.iot_set_device_enabled(text, boolean) IS 'Enables or disables one of your devices (a disabled device''s readings and commands are refused; the broker drops it at the next password-file write); 404 for a device you do not own.';

CREATE FUNCTION api.iot_send_command(device_id text, name text, args jsonb DEFAULT '{}', timeout_s integer DEFAULT 30,
                                     retries integer DEFAULT 0, ttl_s integer DEFAULT 3600)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id bigint;
BEGIN
    IF iot._api_device(device_id) <> 'active' THEN
        RAISE EXCEPTION 'device % is disabled', quote_literal(left(device_id, 64))
            USING ERRCODE = 'PT409', HINT = 'Enable it first (POST /rpc/iot_set_device_enabled).';
    END IF;
    PERFORM iot._api_quota('commands', device_id);
    v_id := iot.send_command(device_id, name, args, make_interval(secs => timeout_s), retries,
                             make_interval(secs => ttl_s));
    RETURN (SELECT to_jsonb(c) FROM api.iot_commands c WHERE c.id = v_id);
END
$$;
COMMENT ON FUNCTION api.iot_send_command(text, text, jsonb, integer, integer, integer) IS 'Queues a command to one of your devices: published at QoS 1 on devices/<id>/commands while the device is online, sent again after timeout_s up to retries times, expired if never sent within ttl_s.  Returns the command; 404 for a device you do not own, 409 if it is disabled, 400 for bad arguments.';

CREATE FUNCTION api.iot_command(id bigint)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v jsonb;
BEGIN
    PERFORM iot._api_user();
    SELECT to_jsonb(c) || jsonb_build_object('transitions',
               (SELECT coalesce(jsonb_agg(to_jsonb(t) - 'command_id' ORDER BY t.at), '[]')
                  FROM api.iot_command_transitions t WHERE t.command_id = c.id))
      INTO v FROM api.iot_commands c WHERE c.id = iot_command.id;
    IF v IS NULL THEN
        RAISE EXCEPTION 'command % not found', iot_command.id
            USING ERRCODE = 'PT404', HINT = 'List your commands with GET /iot_commands.';
    END IF;
    RETURN v;
END
$$;
COMMENT ON FUNCTION api.iot_command(bigint) IS 'One of your commands with its state and every transition; 404 for a command that is not yours.';

CREATE FUNCTION api.iot_readings(device_id text, since timestamptz, until timestamptz DEFAULT now(),
                                 metric text DEFAULT NULL, max_rows integer DEFAULT 1000)
RETURNS SETOF iot.reading
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM iot._api_device(device_id);
    PERFORM iot._api_range(since, until, interval '366 days');
    IF max_rows IS NULL OR max_rows NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'max_rows must be between 1 and 10000'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Page through long ranges by moving since.';
    END IF;
    RETURN QUERY
    SELECT t.ts, t.metric, t.value, t.payload FROM iot.telemetry t
     WHERE t.device_id = iot_readings.device_id AND t.ts >= since AND t.ts < until
       AND (iot_readings.metric IS NULL OR t.metric = iot_readings.metric)
     ORDER BY t.ts, t.metric LIMIT max_rows;
END
$$;
COMMENT ON FUNCTION api.iot_readings(text, timestamptz, timestamptz, text, integer) IS 'Raw readings of one of your devices in [since, until), oldest first, at most max_rows (1-10000); metric filters.  404 for a device you do not own.';

CREATE FUNCTION api.iot_rollups(device_id text, metric text, since timestamptz, until timestamptz DEFAULT now(),
                                bucket text DEFAULT 'minute')
RETURNS SETOF iot.bucket_stats
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM iot._api_device(device_id);
    IF iot_rollups.bucket IS NULL OR iot_rollups.bucket NOT IN ('minute', 'hour') THEN
        RAISE EXCEPTION 'unknown bucket %', quote_literal(left(coalesce(iot_rollups.bucket, 'NULL'), 32))
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use bucket=minute or bucket=hour.';
    END IF;
    IF metric IS NULL THEN
        RAISE EXCEPTION 'metric is required'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass metric=<name>, e.g. metric=temp.';
    END IF;
    -- At most 10000 buckets.
    PERFORM iot._api_range(since, until, CASE WHEN iot_rollups.bucket = 'minute' THEN interval '10000 minutes'
                                               ELSE interval '10000 hours' END);
    RETURN QUERY SELECT q.bucket, q.n, q.min, q.max, q.avg
                   FROM iot.query(device_id, metric, since, until, iot_rollups.bucket) q ORDER BY q.bucket;
END
$$;
COMMENT ON FUNCTION api.iot_rollups(text, text, timestamptz, timestamptz, text) IS 'min/max/avg/count of one of your devices'' metric per minute or hour in [since, until) (at most 10000 buckets): rollups for the old range, raw readings for the last hour.  404 for a device you do not own.';

REVOKE ALL ON FUNCTION iot._api_user(), iot._api_device(text), iot._api_range(timestamptz, timestamptz, interval),
    api.iot_provision_device(text, text, text, jsonb, text), api.iot_rotate_device_secret(text),
    api.iot_set_device_certificate(text, text), api.iot_set_device_enabled(text, boolean), api.iot_send_command(text, text, jsonb, integer, integer, integer),
    api.iot_command(bigint), api.iot_readings(text, timestamptz, timestamptz, text, integer),
    api.iot_rollups(text, text, timestamptz, timestamptz, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION iot._api_user(), iot._api_device(text), iot._api_range(timestamptz, timestamptz, interval),
    api.iot_provision_device(text, text, text, jsonb, text), api.iot_rotate_device_secret(text),
    api.iot_set_device_certificate(text, text), api.iot_set_device_enabled(text, boolean), api.iot_send_command(text, text, jsonb, integer, integer, integer),
    api.iot_command(bigint), api.iot_readings(text, timestamptz, timestamptz, text, integer),
    api.iot_rollups(text, text, timestamptz, timestamptz, text) TO bv_user, bv_service;
GRANT USAGE ON TYPE iot.reading, iot.bucket_stats TO bv_user, bv_service;
GRANT SELECT ON api.iot_devices, api.iot_commands, api.iot_command_transitions TO bv_user, bv_service;
