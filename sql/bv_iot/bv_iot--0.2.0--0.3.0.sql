/*
 * bv_iot 0.2.0 -> 0.3.0
 *
 *  - The broker learns registry changes at run time: the bridge worker
 *    writes the broker's password file and ACL files into
 *    iot.bridge_config.auth_dir (atomically: a temporary file, fsync,
 *    rename) and sends the broker SIGHUP (its pid from broker_pid_file)
 *    within a fraction of a second of a commit that provisions, disables,
 *    enables or deletes a device, rotates its secret or changes its
 *    certificate.  mosquitto re-checks every connected client's
 *    credentials on SIGHUP, so a disabled device or an old secret is
 *    disconnected.  iot.broker_auth says which change the broker has.
 *  - Certificates are bound to the registry: iot.device_certificates also
 *    keeps each certificate's subject (RFC 2253, as mosquitto's
 *    use_subject_as_username prints it), and iot.mosquitto_acl_certs()
 *    gives the ACL of the certificate listener: a certificate may use its
 *    device's topics only while it is the device's registered certificate
 *    and the device is active.  Certificates recorded before 0.3.0 have no
 *    subject and must be recorded again (iot.set_device_certificate).
 */

\echo Use "ALTER EXTENSION bv_iot UPDATE TO '0.3.0'" to load this file. \quit

/* ---------- change tracking for the broker's files ---------- */

CREATE TABLE iot.broker_auth_changes (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    generation  bigint NOT NULL DEFAULT 1,
    changed_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE iot.broker_auth_changes IS 'One row: incremented (in the changing transaction) by every change that the broker''s password or ACL files depend on.  The bridge compares it with what it last wrote (iot.bridge_counters.auth_generation).';
INSERT INTO iot.broker_auth_changes DEFAULT VALUES;

CREATE FUNCTION iot._broker_auth_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE iot.broker_auth_changes SET generation = generation + 1, changed_at = now();
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION iot._broker_auth_changed() IS 'Internal (trigger): records that the broker''s password or ACL files must be written again.';
REVOKE ALL ON FUNCTION iot._broker_auth_changed() FROM PUBLIC;

CREATE TRIGGER broker_auth AFTER INSERT OR DELETE OR UPDATE OF device_id, status, secret_hash
    ON iot.devices FOR EACH STATEMENT EXECUTE FUNCTION iot._broker_auth_changed();
CREATE TRIGGER broker_auth_truncate AFTER TRUNCATE
    ON iot.devices FOR EACH STATEMENT EXECUTE FUNCTION iot._broker_auth_changed();
CREATE TRIGGER broker_auth AFTER INSERT OR DELETE OR UPDATE
    ON iot.device_certificates FOR EACH STATEMENT EXECUTE FUNCTION iot._broker_auth_changed();
CREATE TRIGGER broker_auth_truncate AFTER TRUNCATE
    ON iot.device_certificates FOR EACH STATEMENT EXECUTE FUNCTION iot._broker_auth_changed();

ALTER TABLE iot.bridge_config
    ADD COLUMN auth_dir text CHECK (auth_dir ~ '^/[A-Za-z0-9_./+-]*$' AND octet_length(auth_dir) <= 900 AND auth_dir !~ '(^|/)\.\.(/|$)'),
    ADD COLUMN broker_pid_file text CHECK (broker_pid_file ~ '^/[A-Za-z0-9_./+-]*$' AND octet_length(broker_pid_file) <= 900 AND broker_pid_file !~ '(^|/)\.\.(/|$)');
COMMENT ON COLUMN iot.bridge_config.auth_dir IS 'Directory where the bridge writes the broker''s password file (passwd), the password listener''s ACL (acl) and the certificate listener''s ACL (acl_certs) after every registry change; NULL: it writes nothing (write them from iot.mosquitto_passwd(), iot.mosquitto_acl(), iot.mosquitto_acl_certs()).';
COMMENT ON COLUMN iot.bridge_config.broker_pid_file IS 'File holding the pid of the mosquitto that reads auth_dir (its pid_file): it gets SIGHUP after each write, and reloads the files.';

ALTER TABLE iot.bridge_counters
    ADD COLUMN auth_generation bigint NOT NULL DEFAULT 0,
    ADD COLUMN auth_applied_at timestamptz,
    ADD COLUMN auth_error      text;
COMMENT ON COLUMN iot.bridge_counters.auth_generation IS 'The iot.broker_auth_changes generation the bridge last wrote to auth_dir and signalled to the broker.';

CREATE VIEW iot.broker_auth WITH (security_invoker = true) AS
SELECT c.generation, b.auth_generation AS applied_generation, c.changed_at, b.auth_applied_at AS applied_at,
       b.auth_generation >= c.generation AS in_sync, b.auth_error AS error
  FROM iot.broker_auth_changes c CROSS JOIN iot.bridge_counters b;
COMMENT ON VIEW iot.broker_auth IS 'Whether the broker has the registry''s current credentials: generation (bumped by each change) against the one the bridge last wrote and signalled (applied_generation); error says why the last write or signal failed.';
GRANT SELECT ON iot.broker_auth_changes, iot.broker_auth TO bv_service;

/* ---------- certificates bound by subject ---------- */

CREATE FUNCTION iot._certificate_subject(der bytea)
RETURNS text
AS 'MODULE_PATHNAME', 'iot_certificate_subject'
LANGUAGE C IMMUTABLE STRICT;
COMMENT ON FUNCTION iot._certificate_subject(bytea) IS 'Internal: the subject of a DER certificate in RFC 2253 form, as mosquitto''s use_subject_as_username prints it; NULL when the bytes are not one X.509 certificate.';
REVOKE ALL ON FUNCTION iot._certificate_subject(bytea) FROM PUBLIC;

ALTER TABLE iot.device_certificates
    ADD COLUMN subject text UNIQUE CHECK (subject ~ '^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$' AND octet_length(subject) <= 1024);
COMMENT ON COLUMN iot.device_certificates.subject IS 'The certificate''s subject (RFC 2253, printable ASCII, control and non-ASCII bytes escaped): its user name on the broker''s certificate listener (use_subject_as_username).  NULL for certificates recorded before bv_iot 0.3.0, which the broker no longer accepts until recorded again.';

CREATE OR REPLACE FUNCTION iot.set_device_certificate(device_id text, certificate text)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id text := set_device_certificate.device_id;
    v_b64 text;
    v_der bytea;
    v_fp text;
    v_subject text;
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
    IF v_der IS NOT NULL THEN
        v_subject := iot._certificate_subject(v_der);
    END IF;
    IF v_subject IS NULL THEN
        RAISE EXCEPTION 'invalid certificate'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'The PEM block does not hold a DER-encoded X.509 certificate.',
                  HINT = 'Pass the device''s certificate file as text.';
    END IF;
    IF v_subject !~ '^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$' OR octet_length(v_subject) > 1024 THEN
        RAISE EXCEPTION 'invalid certificate subject'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A certificate''s subject is its user name on the broker: 1 to 1024 printable characters.',
                  HINT = 'Issue the device a certificate with a short subject such as CN=<device id>.';
    END IF;
    v_fp := encode(sha256(v_der), 'hex');
    BEGIN
        INSERT INTO iot.device_certificates AS c (device_id, fingerprint, subject) VALUES (v_id, v_fp, v_subject)
        ON CONFLICT ON CONSTRAINT device_certificates_pkey
        DO UPDATE SET fingerprint = EXCLUDED.fingerprint, subject = EXCLUDED.subject, added_at = now();
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'this certificate is registered for another device'
            USING ERRCODE = 'unique_violation',
                  DETAIL = 'Another device holds this certificate or one with the same subject.',
                  HINT = 'Issue a certificate of its own to each device, with a subject no other device''s certificate has.';
    END;
    RETURN v_fp;
END
$$;
COMMENT ON FUNCTION iot.set_device_certificate(text, text) IS 'Records the client certificate (PEM) of a device you own and returns its SHA-256 fingerprint; NULL removes it.  The broker''s certificate listener lets exactly this certificate (by its subject) use the device''s topics while the device is active; tools/peers/iot.sh issue-cert issues one from the make-run CA and records it.';

CREATE FUNCTION iot.mosquitto_acl_certs()
RETURNS SETOF text
LANGUAGE sql SECURITY DEFINER STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT line FROM (
        SELECT 0 AS k, '' AS device_id, 0 AS n,
               '# bv_iot: a registered certificate of an active device may use that device''s topics; nothing else' AS line
        UNION ALL
        SELECT 1, c.device_id, x.n, x.line
          FROM iot.device_certificates c JOIN iot.devices d USING (device_id)
          CROSS JOIN LATERAL (VALUES (0, 'user ' || c.subject),
                                     (1, 'topic read devices/' || c.device_id || '/commands'),
                                     (2, 'topic write devices/' || c.device_id || '/telemetry'),
                                     (3, 'topic write devices/' || c.device_id || '/ack'),
                                     (4, 'topic write devices/' || c.device_id || '/result'),
                                     (5, 'topic write devices/' || c.device_id || '/status')) x(n, line)
         WHERE d.status = 'active' AND c.subject IS NOT NULL
           AND c.subject ~ '^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$' AND octet_length(c.subject) <= 1024
           AND c.device_id ~ '^[A-Za-z0-9_-]{1,64}$') l
    ORDER BY k, device_id, n
$$;
COMMENT ON FUNCTION iot.mosquitto_acl_certs() IS 'The ACL file of the broker''s certificate listener (per_listener_settings, use_subject_as_username): for each active device with a recorded certificate, that certificate''s subject may read devices/<id>/commands and write its telemetry, ack, result and status topics.  Any other certificate of the CA connects but may do nothing.';
REVOKE ALL ON FUNCTION iot.mosquitto_acl_certs() FROM PUBLIC;

/* The bridge reads the three files in one snapshot, with the generation they reflect. */
CREATE FUNCTION iot._broker_auth_files(p_bridge_user text, p_bridge_password text)
RETURNS TABLE (generation bigint, passwd text, acl text, acl_certs text)
LANGUAGE sql SECURITY DEFINER VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    -- A bridge user name that is not one plain token gets no line of its
    -- own (bridge_config only bounds its length): nothing can be injected.
    SELECT (SELECT c.generation FROM iot.broker_auth_changes c),
           (SELECT coalesce(string_agg(l, E'\n'), '') || E'\n'
              FROM iot.mosquitto_passwd(u.name, p_bridge_password) l),
           (SELECT string_agg(l, E'\n') || E'\n' FROM iot.mosquitto_acl(coalesce(u.name, 'bv_iot_bridge')) l),
           (SELECT string_agg(l, E'\n') || E'\n' FROM iot.mosquitto_acl_certs() l)
      FROM (SELECT CASE WHEN p_bridge_user ~ '^[A-Za-z0-9_.-]{1,64}$' THEN p_bridge_user END AS name) u
$$;
COMMENT ON FUNCTION iot._broker_auth_files(text, text) IS 'Internal (the bridge): the broker''s password file, its ACL and the certificate listener''s ACL, with the iot.broker_auth_changes generation they reflect.';
REVOKE ALL ON FUNCTION iot._broker_auth_files(text, text) FROM PUBLIC;

/* mosquitto_passwd: the bridge's line only with a user name mosquitto can parse. */
CREATE OR REPLACE FUNCTION iot.mosquitto_passwd(bridge_user text DEFAULT NULL, bridge_password text DEFAULT NULL)
RETURNS SETOF text
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT d.device_id || ':' || d.secret_hash FROM iot.devices d
     WHERE d.status = 'active' AND d.device_id ~ '^[A-Za-z0-9_-]{1,64}$'
    UNION ALL
    SELECT bridge_user || ':' || iot._secret_hash(bridge_password)
     WHERE bridge_user ~ '^[A-Za-z0-9_.-]{1,64}$' AND bridge_password IS NOT NULL
$$;

COMMENT ON FUNCTION api.iot_provision_device(text, text, text, jsonb, text) IS 'Registers a device that you own and returns its MQTT credentials once (the secret is stored only hashed).  400 for an invalid id, metadata or unknown type/group; 409 when the id is taken.  The broker knows the device within a second (the bridge rewrites its password file).';
COMMENT ON FUNCTION api.iot_set_device_enabled(text, boolean) IS 'Enables or disables one of your devices: a disabled device''s readings and commands are refused at once, and the broker disconnects it within a second; 404 for a device you do not own.';
