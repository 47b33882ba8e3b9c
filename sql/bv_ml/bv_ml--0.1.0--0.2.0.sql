/*
 * bv_ml 0.1.0 -> 0.2.0: REST hardening from the second red-team pass over
 * /rpc/predict (docs/bv_ml.md, "REST").
 *
 *  - the model spec is exactly name or name@version ("churn@1@x" used to
 *    score churn@1): anything else is a model that is not available (404);
 *  - a feature number a double cannot hold (1e400, 1e-400) answers 22003
 *    "feature \"name\" is out of range" with a hint, instead of the server's
 *    cast error quoting the whole client number with no hint;
 *
 * Only ml.api_predict changes (CREATE OR REPLACE keeps its owner and
 * privileges); api.predict, the one-line wrapper, is unchanged.
 */

\echo Use "ALTER EXTENSION bv_ml UPDATE TO '0.2.0'" to load this file. \quit

CREATE OR REPLACE FUNCTION ml.api_predict(model text, features jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m ml.models;
    x double precision[];
    bad text;
    spec text;
    pred double precision;
    proba double precision[];
BEGIN
    IF model IS NULL OR length(model) > 200 THEN
        RAISE EXCEPTION 'model must name a registered model'
            USING ERRCODE = '22023', HINT = 'Pass "model": "name" or "name@version".';
    END IF;
    -- red-team 2: "name@1@x" used to score name@1.  The spec is exactly
    -- name or name@version; anything else names no model (404 below).
    IF model !~ '^[A-Za-z0-9_.-]{1,100}(@[1-9][0-9]{0,8})?$' THEN
        m := NULL;
    ELSE
        SELECT * INTO m FROM ml.models r
         WHERE r.name = split_part(api_predict.model, '@', 1) AND r.api_enabled
           AND CASE WHEN position('@' IN api_predict.model) > 0
                    THEN r.version::text = split_part(api_predict.model, '@', 2)
                    ELSE r.stage <> 'archived' END
         ORDER BY (r.stage = 'production') DESC, r.version DESC LIMIT 1;
    END IF;
    IF m.id IS NULL THEN
        RAISE EXCEPTION 'model "%" is not available', left(model, 64)
            USING ERRCODE = 'PT404', HINT = 'Ask an administrator which models are enabled for the API.';
    END IF;
    IF jsonb_typeof(features) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'features must be a JSON object of feature name to number'
            USING ERRCODE = '22023', HINT = format('This model takes: %s.', left(array_to_string(m.feature_names, ', '), 500));
    END IF;
    SELECT left(k, 64) INTO bad FROM jsonb_object_keys(features) k WHERE NOT k = ANY (m.feature_names) LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'unknown feature "%"', bad
            USING ERRCODE = '22023', HINT = format('This model takes: %s.', left(array_to_string(m.feature_names, ', '), 500));
    END IF;
    SELECT left(k, 64) INTO bad FROM jsonb_each(features) e(k, v)
     WHERE jsonb_typeof(v) NOT IN ('number', 'null') LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'feature "%" is not a number', bad
            USING ERRCODE = '22023', HINT = 'Send numbers; send null or leave a feature out when it is missing.';
    END IF;
    -- red-team 2: a number a double cannot hold (1e400, 1e-400) used to
    -- fail with the whole client number quoted (hundreds of digits, in the
    -- response and the server log) and no hint.
    BEGIN
        x := ARRAY(SELECT (features ->> n)::double precision FROM unnest(m.feature_names) WITH ORDINALITY u(n, i) ORDER BY i);
    EXCEPTION WHEN numeric_value_out_of_range THEN
        -- only on this error path: find the culprit, one cast at a time
        FOR bad, spec IN SELECT e.k, e.v FROM jsonb_each_text(features) e(k, v) WHERE e.v IS NOT NULL LOOP
            BEGIN
                pred := spec::double precision;
            EXCEPTION WHEN numeric_value_out_of_range THEN
                EXIT;
            END;
            bad := NULL;
        END LOOP;
        bad := left(bad, 64);
        RAISE EXCEPTION 'feature "%" is out of range', coalesce(bad, '?')
            USING ERRCODE = '22003', DETAIL = 'A feature value must fit a double precision number (about 1e-308 to 1e308 in magnitude, or 0).',
                  HINT = 'Scale the feature as the model was trained, or send null when it is missing.';
    END;
    spec := m.name || '@' || m.version;
    pred := ml.predict(spec, x);
    IF m.n_classes > 0 AND m.objective NOT IN ('binary:logitraw') THEN
        proba := ml.predict_proba(spec, x);
    END IF;
    IF m.log_sample_rate > 0 AND random() < m.log_sample_rate THEN
        INSERT INTO ml.prediction_log (model_id, actor, features, prediction, probabilities)
        VALUES (m.id, bv.actor(), features, pred, proba);
    END IF;
    RETURN jsonb_strip_nulls(jsonb_build_object('model', m.name, 'version', m.version,
                                                'prediction', pred, 'probabilities', to_jsonb(proba)));
END
$$;
COMMENT ON FUNCTION ml.api_predict(text, jsonb) IS
'Scores one row with a model enabled for the API: {"model": "name" or "name@version", "features": {"name": number, ...}}; missing features are missing values. Returns {"model", "version", "prediction", "probabilities"}.';
