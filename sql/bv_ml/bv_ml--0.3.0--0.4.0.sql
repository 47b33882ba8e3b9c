/*
 * bv_ml 0.3.0 -> 0.4.0: red-team round 6.
 *
 * The prediction log was kept for ever.  With ml.models.log_sample_rate
 * above 0, api.predict (POST /rpc/predict, any signed-in user) records the
 * caller's subject, the features they sent and the answer in
 * ml.prediction_log; nothing ever deleted a row.  The table grew with every
 * sampled request (a user at the request rate limit adds rows for as long
 * as they like), and personal data (who asked, with which features) stayed
 * for as long as the model did, which no retention policy allows.
 *
 * Now each model row has log_retention (default 30 days, at least 1 hour);
 * ml.purge_prediction_log() deletes older log rows, scheduled hourly with
 * pg_cron (ml-purge-prediction-log) when pg_cron is installed in the
 * database.  tests/tap/bv_redteam6_ml_log.pl.
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION bv_ml UPDATE TO '0.4.0'" to load this file. \quit

ALTER TABLE ml.models
    ADD COLUMN log_retention interval NOT NULL DEFAULT '30 days' CHECK (log_retention >= '1 hour');
COMMENT ON COLUMN ml.models.log_retention IS
'How long ml.prediction_log keeps this model''s sampled predictions (ml.purge_prediction_log, pg_cron hourly).';

CREATE FUNCTION ml.purge_prediction_log()
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    DELETE FROM ml.prediction_log l
     USING ml.models m
     WHERE l.model_id = m.id AND l.at < pg_catalog.now() - m.log_retention;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION ml.purge_prediction_log() IS
'Deletes the sampled predictions older than their model''s log_retention; returns the rows deleted (pg_cron job ml-purge-prediction-log, hourly).';
REVOKE ALL ON FUNCTION ml.purge_prediction_log() FROM PUBLIC;

CREATE FUNCTION ml.schedule_jobs()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        RAISE NOTICE 'pg_cron is not installed in this database; bv_ml jobs are not scheduled'
            USING HINT = 'Install pg_cron in the database named by cron.database_name and call ml.schedule_jobs().';
        RETURN;
    END IF;
    PERFORM cron.schedule('ml-purge-prediction-log', '41 * * * *', 'SELECT ml.purge_prediction_log()');
END
$$;
COMMENT ON FUNCTION ml.schedule_jobs() IS
'Schedules ml.purge_prediction_log() hourly with pg_cron (called at install when pg_cron is present).';
REVOKE ALL ON FUNCTION ml.schedule_jobs() FROM PUBLIC;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        PERFORM ml.schedule_jobs();
    END IF;
END
$$;
