/*
 * bv_iot 0.4.0 -> 0.5.0: red-team round 6.
 *
 * The quarantine had no bound.  Every refused reading (from the bridge:
 * any authenticated device, or a client publishing on a topic the bridge
 * reads; from SQL: iot.ingest(), which /rpc/iot_ingest serves to signed-in
 * users) added a row of up to 256 bytes of payload to iot.quarantine, and
 * nothing ever removed one: telemetry partitions were dropped after
 * iot.settings.retention, the quarantine grew for ever.  One device sending
 * 1,000 malformed readings per message filled the disk at the broker's
 * speed.
 *
 * Now:
 *   - iot.settings.quarantine_per_minute (default 1000): at most that many
 *     rows are stored per minute (of received_at), whatever their source;
 *     the excess is counted, per minute, in iot.quarantine_overflow and
 *     still in the callers' counters (iot.ingest's "quarantined",
 *     iot.bridge_stats).  Concurrent writers may each add up to what they
 *     saw missing, so the bound is approximate by the batches in flight.
 *   - iot.settings.quarantine_retention (default 7 days): rows older than
 *     it are deleted by iot.purge_quarantine(), scheduled hourly with
 *     pg_cron (iot-quarantine-purge).
 * iot.schedule_jobs() was executable by PUBLIC (harmless without pg_cron's
 * schema, but not meant for API roles): superuser only now.
 * tests/tap/bv_redteam6_iot_quarantine.pl.
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION bv_iot UPDATE TO '0.5.0'" to load this file. \quit

ALTER TABLE iot.settings
    ADD COLUMN quarantine_per_minute integer NOT NULL DEFAULT 1000
        CHECK (quarantine_per_minute BETWEEN 1 AND 1000000),
    ADD COLUMN quarantine_retention interval NOT NULL DEFAULT '7 days'
        CHECK (quarantine_retention >= '1 hour');
COMMENT ON COLUMN iot.settings.quarantine_per_minute IS
'Most rows stored in iot.quarantine per minute; the excess is counted in iot.quarantine_overflow.';
COMMENT ON COLUMN iot.settings.quarantine_retention IS
'Quarantine rows (and overflow counts) older than this are deleted by iot.purge_quarantine() (pg_cron, hourly).';

CREATE TABLE iot.quarantine_overflow (
    minute  timestamptz PRIMARY KEY,
    dropped bigint NOT NULL CHECK (dropped > 0)
);
COMMENT ON TABLE iot.quarantine_overflow IS
'Refused inputs not stored in iot.quarantine because iot.settings.quarantine_per_minute was reached, counted per minute.';
GRANT SELECT ON iot.quarantine_overflow TO bv_service;

CREATE OR REPLACE FUNCTION iot._quarantine(p_source text, p_topic text[], p_device text[], p_reason text[],
                                           p_detail text[], p_raw text[], p_bytes integer[])
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
    cap integer;
    room bigint;
    total bigint;
    v_minute timestamptz := pg_catalog.date_trunc('minute', pg_catalog.now());
BEGIN
    IF p_source IS NULL OR p_reason IS NULL OR pg_catalog.array_position(p_reason, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'a quarantine batch needs a source and a reason for every entry'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Internal: called by the bridge and iot.ingest().';
    END IF;
    IF p_source NOT IN ('mqtt', 'sql') THEN
        RAISE EXCEPTION 'invalid quarantine source %', pg_catalog.quote_literal(pg_catalog.left(p_source, 16))
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The source is "mqtt" or "sql".';
    END IF;
    total := pg_catalog.cardinality(p_reason);
    SELECT s.quarantine_per_minute INTO cap FROM iot.settings s;
    cap := coalesce(cap, 1000);
    -- rows of this minute (received_at is now(): the transaction's start)
    SELECT cap - count(*) INTO room
      FROM (SELECT 1 FROM iot.quarantine q
             WHERE q.received_at >= v_minute AND q.received_at < v_minute + interval '1 minute'
             LIMIT cap) c;
    room := greatest(room, 0);
    WITH q AS (
        INSERT INTO iot.quarantine (source, topic, device_id, reason, detail, payload_prefix, payload_bytes)
        SELECT p_source, t, pg_catalog.left(d, 64), r, x, pg_catalog.left(w, 256), b
          FROM unnest(p_topic, p_device, p_reason, p_detail, p_raw, p_bytes) WITH ORDINALITY u(t, d, r, x, w, b, i)
         WHERE r IS NOT NULL AND i <= room
        RETURNING 1)
    SELECT count(*) INTO n FROM q;
    IF total > n THEN
        INSERT INTO iot.quarantine_overflow AS o (minute, dropped) VALUES (v_minute, total - n)
        ON CONFLICT ON CONSTRAINT quarantine_overflow_pkey DO UPDATE SET dropped = o.dropped + excluded.dropped;
    END IF;
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION iot._quarantine(text, text[], text[], text[], text[], text[], integer[]) FROM PUBLIC;

CREATE FUNCTION iot.purge_quarantine()
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    keep interval;
    n bigint;
BEGIN
    SELECT s.quarantine_retention INTO keep FROM iot.settings s;
    keep := coalesce(keep, interval '7 days');
    DELETE FROM iot.quarantine q WHERE q.received_at < pg_catalog.now() - keep;
    GET DIAGNOSTICS n = ROW_COUNT;
    DELETE FROM iot.quarantine_overflow o WHERE o.minute < pg_catalog.now() - keep;
    RETURN n;
END
$$;
COMMENT ON FUNCTION iot.purge_quarantine() IS
'Deletes quarantine rows and overflow counts older than iot.settings.quarantine_retention; returns the rows deleted (pg_cron job iot-quarantine-purge, hourly).';
REVOKE ALL ON FUNCTION iot.purge_quarantine() FROM PUBLIC;

CREATE OR REPLACE FUNCTION iot.schedule_jobs()
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
    PERFORM cron.schedule('iot-quarantine-purge', '23 * * * *', 'SELECT iot.purge_quarantine()');
END
$$;
COMMENT ON FUNCTION iot.schedule_jobs() IS 'Schedules iot.maintain_partitions() daily, iot.refresh_rollups() every minute and iot.purge_quarantine() hourly with pg_cron (called at install when pg_cron is present).';
REVOKE ALL ON FUNCTION iot.schedule_jobs() FROM PUBLIC;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        PERFORM iot.schedule_jobs();
    END IF;
END
$$;
