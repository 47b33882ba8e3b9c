/*
 * bv_iot 0.3.0 -> 0.4.0: the registry's rules hold for direct writes too
 * (red-team round 5).
 *
 * Device owners may UPDATE their rows of iot.devices (status, metadata,
 * firmware, group_name, device_type) and INSERT into iot.device_groups, in
 * SQL.  iot.provision_device() checks what it is given (a group of the
 * caller's own, metadata an object of at most 16 kB, ...), but a direct
 * UPDATE checked nothing of it:
 *   - UPDATE iot.devices SET group_name = '<another owner's group>'
 *     succeeded (a foreign key is checked without row-level security), so
 *     a customer put its devices into any group whose name it guessed;
 *   - metadata of any size (megabytes per device), and the raw 23514 /
 *     23503 of a CHECK or a foreign key for a long firmware or an unknown
 *     type;
 *   - a group's description of any size, a bad group name or a taken one
 *     answered with the raw 23514 / 23505.
 * Now BEFORE triggers check these writes as provision_device() does, with
 * its SQLSTATEs (22023, PT409 for a taken group name), hints and at most a
 * short prefix of client values.  The group check runs with the writer's
 * rights, so row-level security decides which groups it may use: its own
 * (bv_service and bv_admin see all).
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION bv_iot UPDATE TO '0.4.0'" to load this file. \quit

CREATE FUNCTION iot._check_device_row()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF (TG_OP = 'INSERT' OR NEW.metadata IS DISTINCT FROM OLD.metadata)
       AND NEW.metadata IS NOT NULL AND (pg_catalog.jsonb_typeof(NEW.metadata) IS DISTINCT FROM 'object'
                                     OR pg_catalog.octet_length(NEW.metadata::text) > 16384) THEN
        RAISE EXCEPTION 'invalid device metadata'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Metadata is a JSON object of at most 16 kB.',
                  HINT = 'Pass an object such as {"site": "lab"}.';
    END IF;
    IF (TG_OP = 'INSERT' OR NEW.firmware IS DISTINCT FROM OLD.firmware) AND pg_catalog.length(NEW.firmware) > 64 THEN
        RAISE EXCEPTION 'invalid firmware version'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A firmware version is at most 64 characters.',
                  HINT = 'Pass a version such as "1.4.2".';
    END IF;
    IF NEW.group_name IS NOT NULL AND (TG_OP = 'INSERT' OR NEW.group_name IS DISTINCT FROM OLD.group_name)
       AND NOT EXISTS (SELECT 1 FROM iot.device_groups g WHERE g.name OPERATOR(pg_catalog.=) NEW.group_name) THEN
        RAISE EXCEPTION 'device group % does not exist', pg_catalog.quote_literal(pg_catalog.left(NEW.group_name, 64))
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use one of your own groups, or create it first (INSERT INTO iot.device_groups).';
    END IF;
    IF NEW.device_type IS NOT NULL AND (TG_OP = 'INSERT' OR NEW.device_type IS DISTINCT FROM OLD.device_type)
       AND NOT EXISTS (SELECT 1 FROM iot.device_types t WHERE t.name OPERATOR(pg_catalog.=) NEW.device_type) THEN
        RAISE EXCEPTION 'device type % does not exist', pg_catalog.quote_literal(pg_catalog.left(NEW.device_type, 64))
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use a type listed in iot.device_types, or add it there first.';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION iot._check_device_row() IS
'Internal trigger: a device row written directly follows provision_device()''s rules (metadata object of at most 16 kB, firmware at most 64 characters, a group the writer can see, i.e. its own unless bv_service, a known type); 22023 with a hint.';
REVOKE ALL ON FUNCTION iot._check_device_row() FROM PUBLIC;

CREATE TRIGGER check_row BEFORE INSERT OR UPDATE ON iot.devices
    FOR EACH ROW EXECUTE FUNCTION iot._check_device_row();

CREATE FUNCTION iot._check_group_row()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.name IS NULL OR NEW.name !~ '^[A-Za-z0-9_.-]{1,64}$' THEN
        RAISE EXCEPTION 'invalid device group name %', pg_catalog.quote_literal(pg_catalog.left(coalesce(NEW.name, 'NULL'), 64))
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A group name is 1 to 64 letters, digits, ".", "_" or "-".',
                  HINT = 'Choose a name such as "warehouse-3".';
    END IF;
    IF pg_catalog.length(NEW.description) > 1000 THEN
        RAISE EXCEPTION 'invalid device group description'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A description is at most 1000 characters.',
                  HINT = 'Shorten the description.';
    END IF;
    -- Checked as the definer: the name may belong to a group the writer cannot see.
    IF (TG_OP = 'INSERT' OR NEW.name IS DISTINCT FROM OLD.name)
       AND EXISTS (SELECT 1 FROM iot.device_groups g WHERE g.name = NEW.name) THEN
        RAISE EXCEPTION 'device group name % is taken', pg_catalog.quote_literal(NEW.name)
            USING ERRCODE = 'PT409', HINT = 'Group names are unique across owners: choose another name.';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION iot._check_group_row() IS
'Internal trigger: a device group written directly gets 22023 for a bad name or a description over 1000 characters and PT409 for a taken name, each with a hint, instead of the raw constraint errors.';
REVOKE ALL ON FUNCTION iot._check_group_row() FROM PUBLIC;

CREATE TRIGGER check_row BEFORE INSERT OR UPDATE ON iot.device_groups
    FOR EACH ROW EXECUTE FUNCTION iot._check_group_row();

/*
 * The bridge's MQTT client id (red-team round 5).  MQTT client ids are one
 * namespace per broker, and a broker disconnects a client when another
 * connects with its id.  The bridge's id was the fixed, documented
 * 'bv_iot_bridge': any device, logged in with its own credentials,
 * connected with client id bv_iot_bridge and the broker closed the
 * bridge's connection and handed the device the bridge's persistent
 * session ("Client bv_iot_bridge already connected, closing old
 * connection"); the readings published meanwhile were not delivered to the
 * bridge (the ACL kept them from the device): lost, for every tenant, as
 * often as the device reconnects.  Refusing it at the broker
 * (use_username_as_clientid) would also make a device's own connections
 * (a command subscriber and a publisher, as make run's simulator) kick
 * each other.  So the bridge's id is now unguessable: 'bv_iot_bridge-'
 * and 32 random hex digits, readable by superusers only (as the rest of
 * iot.bridge_config).  A configured bridge (enabled) keeps its id, since
 * changing it strands the messages its session holds: a WARNING says to
 * change it.
 *
 * And a device may not be named as the bridge's broker user: its line in
 * the broker's password file shared the bridge's user name (the bridge's
 * came last and won, by the order of a UNION ALL).  Now such an id is
 * refused (22023) and never written to the password file.
 */
ALTER TABLE iot.bridge_config
    ALTER COLUMN client_id SET DEFAULT 'bv_iot_bridge-' || pg_catalog.replace(pg_catalog.gen_random_uuid()::text, '-', '');
UPDATE iot.bridge_config
   SET client_id = 'bv_iot_bridge-' || pg_catalog.replace(pg_catalog.gen_random_uuid()::text, '-', '')
 WHERE client_id = 'bv_iot_bridge' AND NOT enabled;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM iot.bridge_config WHERE client_id = 'bv_iot_bridge') THEN
        RAISE WARNING 'the MQTT bridge uses the well-known client id bv_iot_bridge'
            USING DETAIL = 'Any device can connect with that client id and make the broker disconnect the bridge.',
                  HINT = 'When the broker holds no messages for the bridge: UPDATE iot.bridge_config SET client_id = ''bv_iot_bridge-'' || replace(gen_random_uuid()::text, ''-'', '''');';
    END IF;
END
$$;

CREATE FUNCTION iot._bridge_user()
RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce((SELECT c.username FROM iot.bridge_config c), 'bv_iot_bridge')
$$;
COMMENT ON FUNCTION iot._bridge_user() IS 'Internal: the bridge''s broker user name (iot.bridge_config.username, default bv_iot_bridge), which no device may take.';
REVOKE ALL ON FUNCTION iot._bridge_user() FROM PUBLIC;

CREATE FUNCTION iot._check_device_id()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_catalog.lower(NEW.device_id) IN ('bv_iot_bridge', pg_catalog.lower(iot._bridge_user())) THEN
        RAISE EXCEPTION 'device id % is reserved', pg_catalog.quote_literal(pg_catalog.left(NEW.device_id, 64))
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'It is the MQTT bridge''s user name on the broker.',
                  HINT = 'Choose another id such as "sensor-0042".';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION iot._check_device_id() IS 'Internal trigger: refuses a device id that is the bridge''s broker user name (22023).';
REVOKE ALL ON FUNCTION iot._check_device_id() FROM PUBLIC;

CREATE TRIGGER check_id BEFORE INSERT OR UPDATE OF device_id ON iot.devices
    FOR EACH ROW EXECUTE FUNCTION iot._check_device_id();

-- mosquitto_passwd: never a device line under the bridge's user name.
CREATE OR REPLACE FUNCTION iot.mosquitto_passwd(bridge_user text DEFAULT NULL, bridge_password text DEFAULT NULL)
RETURNS SETOF text
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT d.device_id || ':' || d.secret_hash FROM iot.devices d
     WHERE d.status = 'active' AND d.device_id ~ '^[A-Za-z0-9_-]{1,64}$'
       AND d.device_id IS DISTINCT FROM bridge_user AND d.device_id <> 'bv_iot_bridge'
    UNION ALL
    SELECT bridge_user || ':' || iot._secret_hash(bridge_password)
     WHERE bridge_user ~ '^[A-Za-z0-9_.-]{1,64}$' AND bridge_password IS NOT NULL
$$;
