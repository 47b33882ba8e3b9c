/*
 * bv_ml 0.1.0: a feature store with point-in-time correctness, and model
 * scoring in C.
 *
 * Schema "ml":
 *  - models: a registry (ml.models) of models exported by real libraries
 *    (scikit-learn linear/logistic regression, XGBoost JSON gbtree), checked
 *    at registration by the same C parser that scores them; ml.predict,
 *    ml.predict_proba and ml.predict_batch score rows; a sampled prediction
 *    log for monitoring;
 *  - feature store (Feast's model): entities, versioned feature views over a
 *    source table or view, feature services; ml.training_set builds a
 *    point-in-time correct training set in one set-based query; the online
 *    store keeps the latest values per entity (ml.materialize, incremental,
 *    scheduled through pg_cron) for ml.online_features; statistics per
 *    feature.
 * Schema "api" gets predict() for PostgREST (/rpc/predict).
 *
 * Dynamic SQL is built with format('%I', '%L') only, from names checked
 * against the catalog when a feature view is defined.
 */

\echo Use "CREATE EXTENSION bv_ml" to load this file. \quit

COMMENT ON SCHEMA ml IS 'Machine learning: model registry and scoring, feature store (point-in-time training sets, online store).';

/* ====================================================================== */
/* models                                                                  */
/* ====================================================================== */

CREATE FUNCTION ml._model_check(kind text, document jsonb,
    OUT n_features integer, OUT n_outputs integer, OUT n_classes integer,
    OUT objective text, OUT feature_names text[])
RETURNS record
AS 'MODULE_PATHNAME', 'ml_model_check'
LANGUAGE C IMMUTABLE STRICT;
COMMENT ON FUNCTION ml._model_check(text, jsonb) IS
'Parses a model document as scoring will and describes it; refuses a bad model with SQLSTATE 22023 and a hint. Used by the ml.models trigger.';

CREATE TABLE ml.models (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL CHECK (name ~ '^[A-Za-z0-9_.-]{1,100}$'),
    version         integer NOT NULL CHECK (version >= 1),
    kind            text NOT NULL CHECK (kind IN ('sklearn_linear', 'sklearn_logistic', 'xgboost')),
    stage           text NOT NULL DEFAULT 'staging' CHECK (stage IN ('staging', 'production', 'archived')),
    metrics         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metrics) = 'object'),
    document        jsonb NOT NULL,
    feature_names   text[] NOT NULL,
    objective       text NOT NULL,
    n_features      integer NOT NULL,
    n_outputs       integer NOT NULL,
    n_classes       integer NOT NULL,
    api_enabled     boolean NOT NULL DEFAULT false,
    log_sample_rate double precision NOT NULL DEFAULT 0 CHECK (log_sample_rate BETWEEN 0 AND 1),
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      text NOT NULL DEFAULT current_user,
    UNIQUE (name, version)
);
CREATE UNIQUE INDEX models_one_production ON ml.models (name) WHERE stage = 'production';
COMMENT ON TABLE ml.models IS 'Model registry: one row per (name, version); the document is the model as its library exported it, checked at registration.';
COMMENT ON COLUMN ml.models.kind IS 'sklearn_linear, sklearn_logistic (documents written by tools/bv_ml_export.py) or xgboost (Booster.save_model JSON).';
COMMENT ON COLUMN ml.models.stage IS 'staging, production (at most one per name) or archived. A name without @version scores the production version, else the newest not archived.';
COMMENT ON COLUMN ml.models.metrics IS 'Evaluation metrics recorded at registration (free-form JSON object).';
COMMENT ON COLUMN ml.models.document IS 'The model document; changing it re-checks the model and invalidates every backend''s cached copy.';
COMMENT ON COLUMN ml.models.feature_names IS 'Input names, in the order of the features array; from the document, or given at registration, else f0, f1, ...';
COMMENT ON COLUMN ml.models.objective IS 'The library''s objective or estimator (filled by the registration check).';
COMMENT ON COLUMN ml.models.n_outputs IS 'Outputs per row: 1, or the number of classes of a multi-class model.';
COMMENT ON COLUMN ml.models.api_enabled IS 'Whether api.predict (PostgREST /rpc/predict) may score this model.';
COMMENT ON COLUMN ml.models.log_sample_rate IS 'Fraction of api.predict calls recorded in ml.prediction_log (0 to 1).';

CREATE FUNCTION ml._models_check_row()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d record;
BEGIN
    d := ml._model_check(NEW.kind, NEW.document);
    NEW.objective := d.objective;
    NEW.n_features := d.n_features;
    NEW.n_outputs := d.n_outputs;
    NEW.n_classes := d.n_classes;
    IF NEW.feature_names IS NULL THEN
        NEW.feature_names := coalesce(d.feature_names,
            ARRAY(SELECT 'f' || i FROM generate_series(0, d.n_features - 1) AS i));
    ELSIF cardinality(NEW.feature_names) <> d.n_features OR array_position(NEW.feature_names, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'feature count mismatch: % feature names for a model of % features',
                        cardinality(NEW.feature_names), d.n_features
            USING ERRCODE = '22023', HINT = 'Give one non-null name per model input, in the model''s order.';
    ELSIF d.feature_names IS NOT NULL AND NEW.feature_names IS DISTINCT FROM d.feature_names THEN
        RAISE EXCEPTION 'feature names differ from the names in the model document'
            USING ERRCODE = '22023', HINT = 'Omit feature_names to use the document''s, or export the model with the names you want.';
    ELSIF (SELECT count(DISTINCT n) FROM unnest(NEW.feature_names) AS n) <> d.n_features
          OR EXISTS (SELECT FROM unnest(NEW.feature_names) AS n WHERE n = '') THEN
        RAISE EXCEPTION 'feature names must be distinct and non-empty'
            USING ERRCODE = '22023', HINT = 'Give every model input its own name.';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER models_check BEFORE INSERT OR UPDATE OF kind, document, feature_names ON ml.models
    FOR EACH ROW EXECUTE FUNCTION ml._models_check_row();

CREATE FUNCTION ml.register_model(name text, kind text, document jsonb,
                                  feature_names text[] DEFAULT NULL,
                                  metrics jsonb DEFAULT '{}',
                                  stage text DEFAULT 'staging')
RETURNS ml.models
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r ml.models;
BEGIN
    IF name IS NULL OR name !~ '^[A-Za-z0-9_.-]{1,100}$' THEN
        RAISE EXCEPTION 'invalid model name "%"', left(coalesce(name, 'NULL'), 64)
            USING ERRCODE = '22023', HINT = 'Use 1 to 100 letters, digits, ".", "_" or "-".';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('bv_ml.register_model'), hashtext(name));
    IF stage = 'production' THEN
        UPDATE ml.models m SET stage = 'archived' WHERE m.name = register_model.name AND m.stage = 'production';
    END IF;
    INSERT INTO ml.models (name, version, kind, stage, metrics, document, feature_names)
    VALUES (name,
            coalesce((SELECT max(m.version) FROM ml.models m WHERE m.name = register_model.name), 0) + 1,
            kind, stage, coalesce(metrics, '{}'), document, feature_names)
    RETURNING * INTO r;
    RETURN r;
END
$$;
COMMENT ON FUNCTION ml.register_model(text, text, jsonb, text[], jsonb, text) IS
'Registers the next version of a model after checking it (SQLSTATE 22023 with a hint for a bad model); stage production archives the previous production version.';

CREATE FUNCTION ml.set_stage(name text, version integer, stage text)
RETURNS ml.models
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r ml.models;
BEGIN
    IF stage = 'production' THEN
        UPDATE ml.models m SET stage = 'archived'
         WHERE m.name = set_stage.name AND m.stage = 'production' AND m.version <> set_stage.version;
    END IF;
    UPDATE ml.models m SET stage = set_stage.stage
     WHERE m.name = set_stage.name AND m.version = set_stage.version
    RETURNING * INTO r;
    IF r.id IS NULL THEN
        RAISE EXCEPTION 'model %@% does not exist', left(name, 64), version
            USING ERRCODE = '42704', HINT = 'List the registered models with SELECT name, version, stage FROM ml.models.';
    END IF;
    RETURN r;
END
$$;
COMMENT ON FUNCTION ml.set_stage(text, integer, text) IS 'Moves a model version to staging, production (archiving the previous production version) or archived.';

CREATE FUNCTION ml.predict(model text, features double precision[])
RETURNS double precision
AS 'MODULE_PATHNAME', 'ml_predict'
LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION ml.predict(text, double precision[]) IS
'Scores one row: the regression value, the probability of class 1 of a binary classifier, or the most likely class index (from 0) of a multi-class one. model is "name" or "name@version"; NULL or NaN features are missing values (trees follow their default direction; linear models refuse them).';

CREATE FUNCTION ml.predict_proba(model text, features double precision[])
RETURNS double precision[]
AS 'MODULE_PATHNAME', 'ml_predict_proba'
LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION ml.predict_proba(text, double precision[]) IS
'Class probabilities of one row, in class order (binary: [P(0), P(1)]), as the library''s predict_proba.';

CREATE FUNCTION ml.predict_batch(model text, rows double precision[],
    OUT ordinality bigint, OUT prediction double precision, OUT probabilities double precision[])
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'ml_predict_batch'
LANGUAGE C STABLE STRICT PARALLEL SAFE ROWS 100;
COMMENT ON FUNCTION ml.predict_batch(text, double precision[]) IS
'Scores each row of a two-dimensional array (one inner array per row): ordinality, prediction as ml.predict, probabilities as ml.predict_proba (NULL for regression).';

CREATE TABLE ml.prediction_log (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_id      bigint NOT NULL REFERENCES ml.models ON DELETE CASCADE,
    at            timestamptz NOT NULL DEFAULT now(),
    actor         text,
    features      jsonb NOT NULL,
    prediction    double precision,
    probabilities double precision[]
);
CREATE INDEX prediction_log_model_at ON ml.prediction_log (model_id, at);
COMMENT ON TABLE ml.prediction_log IS 'A sample (ml.models.log_sample_rate) of the predictions served through api.predict, for monitoring.';

/* ====================================================================== */
/* feature store: definitions                                              */
/* ====================================================================== */

CREATE TABLE ml.entities (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z_][a-z0-9_]{0,62}$'),
    join_keys   text[] NOT NULL CHECK (cardinality(join_keys) BETWEEN 1 AND 8
                                       AND array_position(join_keys, NULL) IS NULL),
    description text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE ml.entities IS 'Entities (Feast): a name and the key columns that identify one, as they are named in entity rows and online lookups.';

CREATE TABLE ml.feature_views (
    name              text NOT NULL CHECK (name ~ '^[a-z_][a-z0-9_]{0,62}$'),
    version           integer NOT NULL CHECK (version >= 1),
    entity            text NOT NULL REFERENCES ml.entities,
    source            regclass NOT NULL,
    source_keys       text[] NOT NULL,
    event_ts_column   text NOT NULL,
    created_ts_column text,
    ttl               interval CHECK (ttl > interval '0'),
    features          text[] NOT NULL CHECK (cardinality(features) >= 1),
    feature_types     text[] NOT NULL,
    online            boolean NOT NULL DEFAULT true,
    late_tolerance    interval NOT NULL DEFAULT interval '0' CHECK (late_tolerance >= interval '0'),
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);
COMMENT ON TABLE ml.feature_views IS 'Feature views (Feast), versioned: every change of a definition is a new version; references without @version use the newest.';
COMMENT ON COLUMN ml.feature_views.source_keys IS 'Source columns holding the entity''s join keys, in the entity''s order.';
COMMENT ON COLUMN ml.feature_views.ttl IS 'How old a value may be at the entity row''s timestamp (inclusive); NULL: no limit.';
COMMENT ON COLUMN ml.feature_views.late_tolerance IS 'Materialization re-reads rows whose event time is this far behind the watermark (late arrivals); rows with a created-timestamp column are also caught by its own watermark.';

CREATE TABLE ml.feature_services (
    name       text NOT NULL CHECK (name ~ '^[a-z_][a-z0-9_]{0,62}$'),
    version    integer NOT NULL CHECK (version >= 1),
    features   text[] NOT NULL CHECK (cardinality(features) >= 1),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);
COMMENT ON TABLE ml.feature_services IS 'Feature services (Feast): named, versioned lists of feature references "view:feature".';

CREATE FUNCTION ml.define_entity(name text, join_keys text[], description text DEFAULT NULL)
RETURNS ml.entities
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r ml.entities;
BEGIN
    IF name IS NULL OR name !~ '^[a-z_][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'invalid entity name "%"', left(coalesce(name, 'NULL'), 64)
            USING ERRCODE = '22023', HINT = 'Use a lower-case identifier: letters, digits and "_", starting with a letter.';
    END IF;
    IF join_keys IS NULL OR cardinality(join_keys) NOT BETWEEN 1 AND 8 OR array_ndims(join_keys) <> 1
       OR array_position(join_keys, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'entity % needs 1 to 8 join key columns', left(name, 64)
            USING ERRCODE = CASE WHEN join_keys IS NULL THEN '22004' ELSE '22023' END,
                  HINT = 'Pass 1 to 8 key column names as a one-dimensional text array without NULLs, e.g. ''{customer_id}''.';
    END IF;
    INSERT INTO ml.entities AS e (name, join_keys, description)
    VALUES (name, join_keys, description)
    ON CONFLICT ON CONSTRAINT entities_pkey DO UPDATE SET description = excluded.description
        WHERE e.join_keys = excluded.join_keys
    RETURNING * INTO r;
    IF r.name IS NULL THEN
        RAISE EXCEPTION 'entity % already exists with other join keys', left(name, 64)
            USING ERRCODE = '42710', HINT = 'Entities keep their keys; define a new entity name.';
    END IF;
    RETURN r;
END
$$;
COMMENT ON FUNCTION ml.define_entity(text, text[], text) IS 'Defines an entity (name and join key columns).';

/* The type of column "col" of relation "rel", or an error with a hint. */
CREATE FUNCTION ml._column_type(rel regclass, col text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t text;
BEGIN
    SELECT format_type(a.atttypid, a.atttypmod) INTO t
      FROM pg_attribute a
     WHERE a.attrelid = rel AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped;
    IF t IS NULL THEN
        RAISE EXCEPTION 'column "%" does not exist in %', left(col, 64), rel
            USING ERRCODE = '42703', HINT = 'Name columns of the source exactly as they are spelled there.';
    END IF;
    RETURN t;
END
$$;

CREATE FUNCTION ml.define_feature_view(name text, entity text, source regclass, features text[],
                                       event_ts_column text, created_ts_column text DEFAULT NULL,
                                       ttl interval DEFAULT NULL, source_keys text[] DEFAULT NULL,
                                       online boolean DEFAULT true,
                                       late_tolerance interval DEFAULT interval '0',
                                       create_index boolean DEFAULT true)
RETURNS ml.feature_views
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ent ml.entities;
    cur ml.feature_views;
    r ml.feature_views;
    keys text[];
    types text[] := '{}';
    f text;
    t text;
    cols text;
BEGIN
    IF name IS NULL OR name !~ '^[a-z_][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'invalid feature view name "%"', left(coalesce(name, 'NULL'), 64)
            USING ERRCODE = '22023', HINT = 'Use a lower-case identifier: letters, digits and "_", starting with a letter.';
    END IF;
    IF ttl <= interval '0' OR late_tolerance < interval '0' THEN
        RAISE EXCEPTION 'ttl must be positive and late_tolerance not negative'
            USING ERRCODE = '22023', HINT = 'Pass ttl => NULL for values that never expire.';
    END IF;
    SELECT * INTO ent FROM ml.entities e WHERE e.name = define_feature_view.entity;
    IF ent.name IS NULL THEN
        RAISE EXCEPTION 'entity % does not exist', left(entity, 64)
            USING ERRCODE = '42704', HINT = 'Define it first with ml.define_entity.';
    END IF;
    keys := coalesce(source_keys, ent.join_keys);
    IF cardinality(keys) <> cardinality(ent.join_keys) THEN
        RAISE EXCEPTION 'source_keys has % columns, entity % has % join keys',
                        cardinality(keys), ent.name, cardinality(ent.join_keys)
            USING ERRCODE = '22023', HINT = 'Name one source column per join key, in the entity''s order.';
    END IF;
    FOREACH f IN ARRAY keys LOOP PERFORM ml._column_type(source, f); END LOOP;
    t := ml._column_type(source, event_ts_column);
    IF t NOT IN ('timestamp with time zone', 'timestamp without time zone', 'date') THEN
        RAISE EXCEPTION 'event timestamp column "%" has type %', left(event_ts_column, 64), t
            USING ERRCODE = '42804', HINT = 'Use a timestamptz column as the event timestamp.';
    END IF;
    IF created_ts_column IS NOT NULL THEN
        t := ml._column_type(source, created_ts_column);
        IF t NOT IN ('timestamp with time zone', 'timestamp without time zone', 'date') THEN
            RAISE EXCEPTION 'created timestamp column "%" has type %', left(created_ts_column, 64), t
                USING ERRCODE = '42804', HINT = 'Use a timestamptz column as the created timestamp.';
        END IF;
    END IF;
    IF array_position(features, NULL) IS NOT NULL
       OR (SELECT count(DISTINCT x) FROM unnest(features) x) <> cardinality(features) THEN
        RAISE EXCEPTION 'features must be distinct, non-null column names'
            USING ERRCODE = '22023', HINT = 'List each feature column once.';
    END IF;
    FOREACH f IN ARRAY features LOOP
        types := types || ml._column_type(source, f);
    END LOOP;

    SELECT * INTO cur FROM ml.feature_views v WHERE v.name = define_feature_view.name
     ORDER BY v.version DESC LIMIT 1;
    IF cur.name IS NOT NULL AND cur.entity = entity AND cur.source = source AND cur.source_keys = keys
       AND cur.event_ts_column = event_ts_column
       AND cur.created_ts_column IS NOT DISTINCT FROM created_ts_column
       AND cur.ttl IS NOT DISTINCT FROM ttl AND cur.features = features AND cur.feature_types = types
       AND cur.online = online AND cur.late_tolerance = late_tolerance THEN
        r := cur;
    ELSE
        INSERT INTO ml.feature_views (name, version, entity, source, source_keys, event_ts_column,
                                      created_ts_column, ttl, features, feature_types, online, late_tolerance)
        VALUES (name, coalesce(cur.version, 0) + 1, entity, source, keys, event_ts_column,
                created_ts_column, ttl, features, types, online, late_tolerance)
        RETURNING * INTO r;
    END IF;

    -- The index the point-in-time lookups and materialization walk.  It
    -- carries the fixed-width features too (INCLUDE), so that a lookup is
    -- an index-only scan; variable-width ones (text, jsonb) are left out, as
    -- they could exceed an index row.
    IF create_index AND EXISTS (SELECT FROM pg_class c WHERE c.oid = source AND c.relkind IN ('r', 'p', 'm')) THEN
        SELECT string_agg(format('%I', k), ', ') INTO cols FROM unnest(keys) AS k;
        cols := cols || format(', %I DESC', event_ts_column);
        IF created_ts_column IS NOT NULL THEN
            cols := cols || format(', %I DESC NULLS LAST', created_ts_column);
        END IF;
        SELECT ') INCLUDE (' || string_agg(format('%I', a.attname), ', ' ORDER BY a.attnum) INTO t
          FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid
         WHERE a.attrelid = source AND a.attname = ANY (features) AND ty.typlen > 0
           AND a.attname <> ALL (keys) AND a.attname <> event_ts_column
           AND a.attname IS DISTINCT FROM created_ts_column;
        cols := cols || coalesce(t, '');
        IF NOT EXISTS (SELECT FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                        WHERE i.indrelid = source AND c.relname = left('ml_' || name || '_pit_' || md5(cols), 63)) THEN
            EXECUTE format('CREATE INDEX %I ON %s (%s)',
                           left('ml_' || name || '_pit_' || md5(cols), 63), source, cols);
        END IF;
    END IF;
    RETURN r;
END
$$;
COMMENT ON FUNCTION ml.define_feature_view(text, text, regclass, text[], text, text, interval, text[], boolean, interval, boolean) IS
'Defines (or re-defines, as a new version) a feature view over a table or view; an unchanged definition keeps its version. Creates the (keys, event_ts DESC, created_ts DESC) index the point-in-time join uses unless create_index is false.';

CREATE FUNCTION ml.define_feature_service(name text, features text[])
RETURNS ml.feature_services
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cur ml.feature_services;
    r ml.feature_services;
BEGIN
    PERFORM ml._resolve_features(features);   -- every reference must exist
    SELECT * INTO cur FROM ml.feature_services s WHERE s.name = define_feature_service.name
     ORDER BY s.version DESC LIMIT 1;
    IF cur.name IS NOT NULL AND cur.features = features THEN
        RETURN cur;
    END IF;
    INSERT INTO ml.feature_services (name, version, features)
    VALUES (name, coalesce(cur.version, 0) + 1, features)
    RETURNING * INTO r;
    RETURN r;
END
$$;

CREATE FUNCTION ml.service_features(service text)
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.features FROM ml.feature_services s
     WHERE s.name = split_part(service, '@', 1)
       AND (position('@' IN service) = 0 OR s.version = nullif(split_part(service, '@', 2), '')::int)
     ORDER BY s.version DESC LIMIT 1
$$;
COMMENT ON FUNCTION ml.service_features(text) IS 'The feature references of a feature service ("name" or "name@version").';

/*
 * Feature references "view:feature" or "view@version:feature", resolved to
 * the view definitions: one row per reference, in order, with the view's
 * definition.  Unknown views or features fail with a hint.
 */
CREATE FUNCTION ml._resolve_features(features text[])
RETURNS TABLE (ord integer, ref text, view_name text, view_version integer, feature text,
               feature_type text, def ml.feature_views)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f text;
    i integer := 0;
    v text;
    ver integer;
    d ml.feature_views;
    pos integer;
BEGIN
    IF features IS NULL OR cardinality(features) = 0 THEN
        RAISE EXCEPTION 'no features requested'
            USING ERRCODE = '22023', HINT = 'Pass references such as ARRAY[''view:feature''], or ml.service_features(''service'').';
    END IF;
    FOREACH f IN ARRAY features LOOP
        i := i + 1;
        IF f IS NULL OR f !~ '^[a-z_][a-z0-9_]{0,62}(@[0-9]{1,9})?:.+$' THEN
            RAISE EXCEPTION 'invalid feature reference "%"', left(coalesce(f, 'NULL'), 64)
                USING ERRCODE = '22023', HINT = 'Write references as view:feature or view@version:feature.';
        END IF;
        v := split_part(split_part(f, ':', 1), '@', 1);
        ver := nullif(split_part(split_part(f, ':', 1), '@', 2), '')::integer;
        SELECT * INTO d FROM ml.feature_views fv
         WHERE fv.name = v AND (ver IS NULL OR fv.version = ver)
         ORDER BY fv.version DESC LIMIT 1;
        IF d.name IS NULL THEN
            RAISE EXCEPTION 'feature view "%" does not exist', left(split_part(f, ':', 1), 64)
                USING ERRCODE = '42704', HINT = 'List the feature views with SELECT name, version FROM ml.feature_views.';
        END IF;
        feature := substr(f, position(':' IN f) + 1);
        pos := array_position(d.features, feature);
        IF pos IS NULL THEN
            RAISE EXCEPTION 'feature view % has no feature "%"', d.name, left(feature, 64)
                USING ERRCODE = '42703', HINT = 'List its features with SELECT features FROM ml.feature_views.';
        END IF;
        ord := i; ref := f; view_name := d.name; view_version := d.version;
        feature_type := d.feature_types[pos]; def := d;
        RETURN NEXT;
    END LOOP;
END
$$;

/* ====================================================================== */
/* feature store: point-in-time training sets                              */
/* ====================================================================== */

/*
 * The SQL of a point-in-time join.  For each entity row (keys, timestamp
 * t) and each feature view: the one source row with the entity's keys and
 * event_ts <= t and (with a TTL) event_ts >= t - ttl, the newest by
 * event_ts, ties broken by the newest created_ts (NULLs last).  One LEFT
 * JOIN LATERAL ... ORDER BY ... LIMIT 1 per view (not per feature), which
 * the (keys, event_ts DESC, created_ts DESC) index answers with one index
 * probe per entity row and view; every entity row appears exactly once.
 */
CREATE FUNCTION ml.training_set_sql(entity_rows regclass, features text[],
                                    timestamp_column text DEFAULT 'event_timestamp')
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sel text := '';
    joins text := '';
    vw record;
    f record;
    aliases jsonb := '{}';
    names text[] := '{}';
    n integer := 0;
    cond text;
    ent ml.entities;
    k integer;
BEGIN
    PERFORM ml._column_type(entity_rows, timestamp_column);
    -- one alias per view version, in order of first mention; one column per reference
    FOR f IN SELECT r.view_name || '@' || r.view_version AS vkey, r.view_name, r.feature
               FROM ml._resolve_features(features) r ORDER BY r.ord LOOP
        IF NOT aliases ? f.vkey THEN
            n := n + 1;
            aliases := aliases || jsonb_build_object(f.vkey, 'v' || n);
        END IF;
        IF (f.view_name || '__' || f.feature) = ANY (names) THEN
            RAISE EXCEPTION 'feature %:% is requested twice', f.view_name, left(f.feature, 64)
                USING ERRCODE = '22023', HINT = 'Request each feature once (one version of a view per training set).';
        END IF;
        names := names || (f.view_name || '__' || f.feature);
        sel := sel || format(', %I.%I AS %I', aliases ->> f.vkey, f.feature, f.view_name || '__' || f.feature);
    END LOOP;
    FOR vw IN
        SELECT r.view_name || '@' || r.view_version AS vkey, (array_agg(r.def))[1] AS def,
               array_agg(r.feature ORDER BY r.ord) AS feats
          FROM ml._resolve_features(features) r
         GROUP BY r.view_name, r.view_version ORDER BY min(r.ord)
    LOOP
        SELECT * INTO ent FROM ml.entities e WHERE e.name = (vw.def).entity;
        cond := '';
        FOR k IN 1 .. cardinality(ent.join_keys) LOOP
            PERFORM ml._column_type(entity_rows, ent.join_keys[k]);
            cond := cond || format('s.%I = e.%I AND ', (vw.def).source_keys[k], ent.join_keys[k]);
        END LOOP;
        cond := cond || format('s.%I <= e.%I', (vw.def).event_ts_column, timestamp_column);
        IF (vw.def).ttl IS NOT NULL THEN
            cond := cond || format(' AND s.%I >= e.%I - %L::interval', (vw.def).event_ts_column,
                                   timestamp_column, (vw.def).ttl);
        END IF;
        joins := joins || format(
            E'\nLEFT JOIN LATERAL (SELECT %s FROM %s s WHERE %s ORDER BY s.%I DESC%s LIMIT 1) %I ON true',
            (SELECT string_agg(format('s.%I', x), ', ') FROM unnest(vw.feats) x),
            (vw.def).source, cond, (vw.def).event_ts_column,
            CASE WHEN (vw.def).created_ts_column IS NULL THEN ''
                 ELSE format(', s.%I DESC NULLS LAST', (vw.def).created_ts_column) END,
            aliases ->> vw.vkey);
    END LOOP;
    -- Entity rows are probed in key and time order: neighbouring probes
    -- touch neighbouring index pages.
    SELECT * INTO ent FROM ml.entities en
     WHERE en.name = (SELECT (r.def).entity FROM ml._resolve_features(features) r ORDER BY r.ord LIMIT 1);
    RETURN format('SELECT e.*%s FROM (SELECT * FROM %s ORDER BY %s, %I) e%s', sel, entity_rows,
                  (SELECT string_agg(format('%I', jk), ', ') FROM unnest(ent.join_keys) jk),
                  timestamp_column, joins);
END
$$;
COMMENT ON FUNCTION ml.training_set_sql(regclass, text[], text) IS
'The point-in-time join ml.training_set runs, as SQL text (for EXPLAIN or to embed in a larger query).';

CREATE FUNCTION ml.training_set(entity_rows regclass, features text[], into_table text DEFAULT NULL,
                                timestamp_column text DEFAULT 'event_timestamp')
RETURNS regclass
LANGUAGE plpgsql
-- No SET search_path: not SECURITY DEFINER, and an unqualified into_table
-- is created where the caller's search_path puts new tables.  Everything
-- else here is schema-qualified.
AS $$
DECLARE
    q text := ml.training_set_sql(entity_rows, features, timestamp_column);
    parts text[];
BEGIN
    IF into_table IS NULL THEN
        DROP TABLE IF EXISTS pg_temp.ml_training_set;
        EXECUTE 'CREATE TEMP TABLE ml_training_set AS ' || q;
        RETURN 'pg_temp.ml_training_set'::pg_catalog.regclass;
    END IF;
    BEGIN
        parts := pg_catalog.parse_ident(into_table);
    EXCEPTION WHEN invalid_parameter_value OR syntax_error THEN
        parts := NULL;
    END;
    IF parts IS NULL OR pg_catalog.cardinality(parts) > 2 THEN
        RAISE EXCEPTION 'invalid table name "%"', pg_catalog.left(into_table, 64)
            USING ERRCODE = '42602', HINT = 'Pass a table name, optionally schema-qualified, such as ''train_2026''.';
    END IF;
    IF pg_catalog.cardinality(parts) = 2 THEN
        EXECUTE pg_catalog.format('CREATE TABLE %I.%I AS ', parts[1], parts[2]) || q;
        RETURN pg_catalog.format('%I.%I', parts[1], parts[2])::pg_catalog.regclass;
    END IF;
    EXECUTE pg_catalog.format('CREATE TABLE %I AS ', parts[1]) || q;
    RETURN pg_catalog.format('%I', parts[1])::pg_catalog.regclass;
END
$$;
COMMENT ON FUNCTION ml.training_set(regclass, text[], text, text) IS
'Builds a point-in-time correct training set (Feast''s join): every column of entity_rows plus one column "<view>__<feature>" per requested feature, into a new table (default: temporary table ml_training_set). Returns the table.';

CREATE FUNCTION ml.training_rows(entity_rows regclass, features text[],
                                 timestamp_column text DEFAULT 'event_timestamp')
RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY EXECUTE format('SELECT to_jsonb(t) FROM (%s) t', ml.training_set_sql(entity_rows, features, timestamp_column));
END
$$;
COMMENT ON FUNCTION ml.training_rows(regclass, text[], text) IS 'The point-in-time training set as one JSON object per entity row.';

/* ====================================================================== */
/* feature store: online store                                             */
/* ====================================================================== */

CREATE TABLE ml.online_store (
    view_name   text NOT NULL,
    entity_key  text[] NOT NULL,
    event_ts    timestamptz NOT NULL,
    created_ts  timestamptz,
    "values"    jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (view_name, entity_key)
);
COMMENT ON TABLE ml.online_store IS 'Latest feature values per (feature view, entity key), kept by ml.materialize; read by ml.online_features.';
COMMENT ON COLUMN ml.online_store.entity_key IS 'The join key values in the entity''s order, as text of the source columns'' types.';

CREATE TABLE ml.materializations (
    view_name         text PRIMARY KEY,
    view_version      integer NOT NULL,
    event_watermark   timestamptz,
    created_watermark timestamptz,
    last_run_at       timestamptz,
    last_rows         bigint NOT NULL DEFAULT 0,
    total_rows        bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE ml.materializations IS 'Watermarks of the incremental materialization of each feature view into the online store.';

CREATE FUNCTION ml.materialize(view_name text, up_to timestamptz DEFAULT now())
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d ml.feature_views;
    m ml.materializations;
    keyexpr text;
    win text;
    vals text;
    created text;
    n bigint;
    new_cw timestamptz;
BEGIN
    SELECT * INTO d FROM ml.feature_views v WHERE v.name = materialize.view_name ORDER BY v.version DESC LIMIT 1;
    IF d.name IS NULL THEN
        RAISE EXCEPTION 'feature view "%" does not exist', left(view_name, 64)
            USING ERRCODE = '42704', HINT = 'List the feature views with SELECT name, version FROM ml.feature_views.';
    END IF;
    IF NOT d.online THEN
        RAISE EXCEPTION 'feature view % is not online', d.name
            USING ERRCODE = '55000', HINT = 'Define the view with online => true to materialize it.';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('bv_ml.materialize'), hashtext(d.name));
    SELECT * INTO m FROM ml.materializations x WHERE x.view_name = d.name;
    IF m.view_name IS NOT NULL AND m.view_version <> d.version THEN
        -- a new definition: rebuild this view's online values from scratch
        DELETE FROM ml.online_store o WHERE o.view_name = d.name;
        m := NULL;
    END IF;

    SELECT 'ARRAY[' || string_agg(format('s.%I::text', k), ', ') || ']' INTO keyexpr FROM unnest(d.source_keys) k;
    SELECT 'jsonb_build_object(' || string_agg(format('%L, s.%I', f, f), ', ') || ')' INTO vals FROM unnest(d.features) f;
    created := CASE WHEN d.created_ts_column IS NULL THEN 'NULL::timestamptz' ELSE format('s.%I', d.created_ts_column) END;

    win := format('s.%I <= %L::timestamptz', d.event_ts_column, up_to);
    IF m.event_watermark IS NOT NULL THEN
        win := win || format(' AND (s.%I > %L::timestamptz', d.event_ts_column, m.event_watermark - d.late_tolerance);
        IF d.created_ts_column IS NOT NULL AND m.created_watermark IS NOT NULL THEN
            win := win || format(' OR s.%I > %L::timestamptz', d.created_ts_column, m.created_watermark);
        END IF;
        win := win || ')';
    END IF;
    win := win || (SELECT string_agg(format(' AND s.%I IS NOT NULL', k), '') FROM unnest(d.source_keys) k);

    EXECUTE format(
        'INSERT INTO ml.online_store AS o (view_name, entity_key, event_ts, created_ts, "values", updated_at)
         SELECT DISTINCT ON (%1$s) %2$L, %1$s, s.%3$I, %4$s, %5$s, now()
           FROM %6$s s WHERE %7$s
          ORDER BY %1$s, s.%3$I DESC, %4$s DESC NULLS LAST
         ON CONFLICT (view_name, entity_key) DO UPDATE
            SET event_ts = excluded.event_ts, created_ts = excluded.created_ts,
                "values" = excluded."values", updated_at = excluded.updated_at
          WHERE (excluded.event_ts, coalesce(excluded.created_ts, ''-infinity''))
                >= (o.event_ts, coalesce(o.created_ts, ''-infinity''))',
        keyexpr, d.name, d.event_ts_column, created, vals, d.source, win);
    GET DIAGNOSTICS n = ROW_COUNT;

    IF d.created_ts_column IS NOT NULL THEN
        EXECUTE format('SELECT max(s.%I) FROM %s s WHERE s.%I <= %L::timestamptz',
                       d.created_ts_column, d.source, d.event_ts_column, up_to) INTO new_cw;
    END IF;
    INSERT INTO ml.materializations AS x (view_name, view_version, event_watermark, created_watermark,
                                          last_run_at, last_rows, total_rows)
    VALUES (d.name, d.version, up_to, new_cw, now(), n, n)
    ON CONFLICT ON CONSTRAINT materializations_pkey DO UPDATE
        SET view_version = excluded.view_version,
            event_watermark = greatest(CASE WHEN x.view_version = excluded.view_version THEN x.event_watermark END,
                                       excluded.event_watermark),
            created_watermark = excluded.created_watermark,
            last_run_at = excluded.last_run_at, last_rows = excluded.last_rows,
            total_rows = x.total_rows + excluded.last_rows;
    RETURN n;
END
$$;
COMMENT ON FUNCTION ml.materialize(text, timestamptz) IS
'Incrementally copies the latest values per entity of a feature view into the online store: source rows with event_ts after the watermark (less late_tolerance), or created after the created watermark, up to up_to. Returns the number of online rows written.';

CREATE FUNCTION ml.schedule_materialization(view_name text, schedule text DEFAULT '*/5 * * * *')
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d ml.feature_views;
BEGIN
    SELECT * INTO d FROM ml.feature_views v WHERE v.name = schedule_materialization.view_name LIMIT 1;
    IF d.name IS NULL THEN
        RAISE EXCEPTION 'feature view "%" does not exist', left(view_name, 64)
            USING ERRCODE = '42704', HINT = 'Define it with ml.define_feature_view first.';
    END IF;
    IF to_regnamespace('cron') IS NULL THEN
        RAISE EXCEPTION 'pg_cron is not installed in this database'
            USING ERRCODE = '55000', HINT = 'CREATE EXTENSION pg_cron in the database named by cron.database_name, or call ml.materialize from another scheduler.';
    END IF;
    RETURN cron.schedule('bv_ml-materialize-' || d.name, schedule, format('SELECT ml.materialize(%L)', d.name));
END
$$;
COMMENT ON FUNCTION ml.schedule_materialization(text, text) IS 'Schedules ml.materialize of a feature view through pg_cron (job "bv_ml-materialize-<view>").';

/*
 * Online lookup: keys is a JSON array of objects holding the join keys
 * ({"customer_id": 7}); returns one row per key object, in order, with a
 * JSON object of "view:feature" -> value (null when the entity is unknown
 * or its value is older than the view's TTL at "at").
 */
CREATE FUNCTION ml.online_features(keys jsonb, features text[], at timestamptz DEFAULT now())
RETURNS TABLE (ordinality bigint, entity jsonb, "values" jsonb)
LANGUAGE plpgsql STABLE
-- Definer's rights: callers reach the internal resolvers only through it;
-- it reads nothing but the online store and the feature definitions.
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    vw record;
    ent ml.entities;
    keyexpr text;
    res jsonb[];
    part record;
    nkeys integer;
BEGIN
    IF jsonb_typeof(keys) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'keys must be a JSON array of objects'
            USING ERRCODE = '22023', HINT = 'Pass keys such as ''[{"customer_id": 7}]''.';
    END IF;
    nkeys := jsonb_array_length(keys);
    IF nkeys > 10000 OR EXISTS (SELECT FROM jsonb_array_elements(keys) k WHERE jsonb_typeof(k) <> 'object') THEN
        RAISE EXCEPTION 'keys must be a JSON array of at most 10000 objects'
            USING ERRCODE = '22023', HINT = 'Pass keys such as ''[{"customer_id": 7}]''; split larger lookups.';
    END IF;
    res := array_fill('{}'::jsonb, ARRAY[nkeys]);
    FOR vw IN
        SELECT r.view_name, (array_agg(r.def))[1] AS def, array_agg(r.feature ORDER BY r.ord) AS feats,
               array_agg(r.ref ORDER BY r.ord) AS refs
          FROM ml._resolve_features(features) r GROUP BY r.view_name
    LOOP
        SELECT * INTO ent FROM ml.entities e WHERE e.name = (vw.def).entity;
        SELECT 'ARRAY[' || string_agg(format('((k.obj ->> %L)::%s)::text', ent.join_keys[i],
                                             ml._column_type((vw.def).source, (vw.def).source_keys[i])), ', ')
               || ']' INTO keyexpr
          FROM generate_series(1, cardinality(ent.join_keys)) i;
        FOR part IN EXECUTE format(
            'SELECT k.n, o."values", o.event_ts FROM jsonb_array_elements($1) WITH ORDINALITY k(obj, n)
               LEFT JOIN ml.online_store o ON o.view_name = %L AND o.entity_key = %s
                    AND o.event_ts <= $2 %s',
            (vw.def).name, keyexpr,
            CASE WHEN (vw.def).ttl IS NULL THEN '' ELSE format('AND o.event_ts >= $2 - %L::interval', (vw.def).ttl) END)
            USING keys, at
        LOOP
            res[part.n] := res[part.n] || (SELECT jsonb_object_agg(vw.refs[i], part."values" -> vw.feats[i])
                                              FROM generate_series(1, cardinality(vw.feats)) i);
        END LOOP;
    END LOOP;
    RETURN QUERY SELECT k.n, k.obj, res[k.n] FROM jsonb_array_elements(keys) WITH ORDINALITY k(obj, n);
END
$$;
COMMENT ON FUNCTION ml.online_features(jsonb, text[], timestamptz) IS
'Online lookup of features for many entities in one call: keys is a JSON array of key objects; returns, per key in order, an object "view:feature" -> latest value (null when unknown or older than the view''s TTL at "at").';

/* ====================================================================== */
/* feature store: statistics                                               */
/* ====================================================================== */

CREATE TABLE ml.feature_stats (
    view_name    text NOT NULL,
    view_version integer NOT NULL,
    feature      text NOT NULL,
    computed_at  timestamptz NOT NULL DEFAULT now(),
    row_count    bigint NOT NULL,
    null_rate    double precision,
    min_value    text,
    max_value    text,
    mean         double precision,
    PRIMARY KEY (view_name, feature)
);
COMMENT ON TABLE ml.feature_stats IS 'Statistics per feature of each view''s source, as of computed_at (ml.compute_statistics).';

CREATE FUNCTION ml.compute_statistics(view_name text)
RETURNS SETOF ml.feature_stats
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d ml.feature_views;
    i integer;
    numeric_type boolean;
    r ml.feature_stats;
BEGIN
    SELECT * INTO d FROM ml.feature_views v WHERE v.name = compute_statistics.view_name ORDER BY v.version DESC LIMIT 1;
    IF d.name IS NULL THEN
        RAISE EXCEPTION 'feature view "%" does not exist', left(view_name, 64)
            USING ERRCODE = '42704', HINT = 'List the feature views with SELECT name, version FROM ml.feature_views.';
    END IF;
    FOR i IN 1 .. cardinality(d.features) LOOP
        numeric_type := d.feature_types[i] IN ('smallint', 'integer', 'bigint', 'real', 'double precision')
                        OR d.feature_types[i] LIKE 'numeric%';
        EXECUTE format(
            'SELECT %L, %s, %L, now(), count(*), CASE WHEN count(*) > 0 THEN 1 - count(s.%I)::float8 / count(*) END,
                    min(s.%I)::text, max(s.%I)::text, %s FROM %s s',
            d.name, d.version, d.features[i], d.features[i], d.features[i], d.features[i],
            CASE WHEN numeric_type THEN format('avg(s.%I)::float8', d.features[i]) ELSE 'NULL::float8' END,
            d.source) INTO r;
        INSERT INTO ml.feature_stats AS x VALUES (r.*)
        ON CONFLICT ON CONSTRAINT feature_stats_pkey DO UPDATE
            SET view_version = excluded.view_version, computed_at = excluded.computed_at,
                row_count = excluded.row_count, null_rate = excluded.null_rate,
                min_value = excluded.min_value, max_value = excluded.max_value, mean = excluded.mean;
        RETURN NEXT r;
    END LOOP;
END
$$;
COMMENT ON FUNCTION ml.compute_statistics(text) IS 'Computes and stores null rate, min, max and mean (numeric features) of every feature of a view.';

CREATE VIEW ml.feature_statistics AS
SELECT s.view_name, s.view_version, s.feature, s.row_count, s.null_rate, s.min_value, s.max_value,
       s.mean, s.computed_at, m.last_run_at AS last_materialized_at, m.event_watermark
  FROM ml.feature_stats s
  LEFT JOIN ml.materializations m ON m.view_name = s.view_name;
COMMENT ON VIEW ml.feature_statistics IS 'Per feature: null rate, min, max, mean and the view''s last materialization time.';

/* ====================================================================== */
/* REST: api.predict (PostgREST /rpc/predict)                              */
/* ====================================================================== */

/*
 * The REST function lives in schema ml (ml.api_predict) and is published
 * as api.predict, a one-line wrapper, in the suite's "api" schema.  That
 * schema belongs to another extension (bv_commerce creates it), so bv_ml
 * neither creates nor requires it: the wrapper is created here when "api"
 * exists, or later by ml.expose_api(), which adds it to this extension so
 * that DROP EXTENSION removes it.
 */
CREATE FUNCTION ml.api_predict(model text, features jsonb)
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
    SELECT * INTO m FROM ml.models r
     WHERE r.name = split_part(api_predict.model, '@', 1) AND r.api_enabled
       AND CASE WHEN position('@' IN api_predict.model) > 0
                THEN r.version::text = split_part(api_predict.model, '@', 2)
                ELSE r.stage <> 'archived' END
     ORDER BY (r.stage = 'production') DESC, r.version DESC LIMIT 1;
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
    x := ARRAY(SELECT (features ->> n)::double precision FROM unnest(m.feature_names) WITH ORDINALITY u(n, i) ORDER BY i);
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

CREATE FUNCTION ml.expose_api()
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF to_regnamespace('api') IS NULL THEN
        RAISE EXCEPTION 'schema api does not exist'
            USING ERRCODE = '3F000', HINT = 'Install the extension that owns the REST schema (bv_commerce) first, or CREATE SCHEMA api.';
    END IF;
    IF to_regprocedure('api.predict(text, jsonb)') IS NOT NULL THEN
        RETURN false;
    END IF;
    CREATE FUNCTION api.predict(model text, features jsonb)
    RETURNS jsonb LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS 'SELECT ml.api_predict(model, features)';
    COMMENT ON FUNCTION api.predict(text, jsonb) IS
    'Scores one row with a model enabled for the API: {"model": "name" or "name@version", "features": {"name": number, ...}}; missing features are missing values. Returns {"model", "version", "prediction", "probabilities"}; 404 for models not enabled for the API.';
    REVOKE ALL ON FUNCTION api.predict(text, jsonb) FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION api.predict(text, jsonb) TO bv_user;
    IF NOT EXISTS (SELECT FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
                    WHERE d.classid = 'pg_proc'::regclass AND d.objid = 'api.predict(text, jsonb)'::regprocedure
                      AND d.deptype = 'e') THEN
        ALTER EXTENSION bv_ml ADD FUNCTION api.predict(text, jsonb);
    END IF;
    RETURN true;
END
$$;
COMMENT ON FUNCTION ml.expose_api() IS
'Publishes ml.api_predict as api.predict (PostgREST /rpc/predict) when the suite''s api schema exists; true when it created it. Run once after installing bv_commerce if bv_ml was installed first.';

/* ====================================================================== */
/* privileges                                                              */
/* ====================================================================== */

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA ml FROM PUBLIC;
-- bv_user reaches ml.api_predict through api.predict only
GRANT USAGE ON SCHEMA ml TO bv_user;
GRANT EXECUTE ON FUNCTION ml.api_predict(text, jsonb) TO bv_user;
-- back-end services score and read features in SQL
GRANT SELECT ON ml.models, ml.entities, ml.feature_views, ml.feature_services, ml.feature_stats,
                ml.materializations, ml.online_store, ml.feature_statistics TO bv_service;
GRANT EXECUTE ON FUNCTION ml.predict(text, double precision[]), ml.predict_proba(text, double precision[]),
                          ml.predict_batch(text, double precision[]),
                          ml.online_features(jsonb, text[], timestamptz),
                          ml.service_features(text) TO bv_service;
-- operators register models and define features
GRANT INSERT, UPDATE, DELETE ON ml.models TO bv_admin;
GRANT SELECT ON ml.prediction_log TO bv_admin;
GRANT EXECUTE ON FUNCTION ml.register_model(text, text, jsonb, text[], jsonb, text),
                          ml.set_stage(text, integer, text), ml._model_check(text, jsonb),
                          ml._models_check_row() TO bv_admin;

-- publish api.predict now when the REST schema is already there
DO $expose$
BEGIN
    IF to_regnamespace('api') IS NOT NULL THEN
        PERFORM ml.expose_api();
    END IF;
END
$expose$;
