/*
 * bv_ml 0.2.0 -> 0.3.0: red-team round 3 (docs/bv_ml.md, "Point-in-time
 * training sets").
 *
 * A point-in-time join compared the entity rows' timestamp with a feature
 * view's event timestamp as PostgreSQL compares a timestamp (or date) with
 * a timestamptz: through the session's TimeZone.  Labels stored as UTC
 * timestamps, joined in a session whose TimeZone is America/New_York, took
 * feature values recorded up to five hours *after* the label: leakage of
 * the future into the training set, and a training set that depended on
 * who built it (tests/regress/sql/bv_redteam4_ml_time.sql).  Now a
 * timestamp or date column, on either side, is read as UTC: the entity
 * time is converted into the source column's type (so that the source's
 * index still serves the probe), and ml.materialize reads a source's
 * timestamp and date columns as UTC too, so that online = offline holds in
 * every session.  A timestamptz on both sides is unchanged.
 *
 * A non-timestamp entity time column is refused with 42804 (it failed
 * later with a raw operator error).
 *
 * ml.online_features: a key value that does not fit its column's type
 * ('"x"' for an integer key, 1e11 for an int4) failed with the cast's own
 * error, the whole client value quoted and no hint; now 22023 naming the
 * key columns and their types, with a hint, and no client data.
 */

\echo Use "ALTER EXTENSION bv_ml UPDATE TO '0.3.0'" to load this file. \quit

/* The expression expr (of type from_type) as a value of to_type, taking
 * timestamp and date values as UTC: independent of the session's TimeZone. */
CREATE FUNCTION ml._time_in(expr text, from_type text, to_type text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN (from_type = 'timestamp with time zone') = (to_type = 'timestamp with time zone') THEN expr
        WHEN to_type = 'timestamp with time zone' THEN format('((%s)::timestamp AT TIME ZONE %L)', expr, 'UTC')
        ELSE format('((%s) AT TIME ZONE %L)', expr, 'UTC')
    END
$$;
COMMENT ON FUNCTION ml._time_in(text, text, text) IS
'SQL text converting a timestamptz, timestamp or date expression to another of these types, reading timestamps and dates as UTC (internal).';
REVOKE ALL ON FUNCTION ml._time_in(text, text, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION ml.training_set_sql(entity_rows regclass, features text[],
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
    ets text;
    at_expr text;
BEGIN
    ets := ml._column_type(entity_rows, timestamp_column);
    IF ets NOT IN ('timestamp with time zone', 'timestamp without time zone', 'date') THEN
        RAISE EXCEPTION 'entity timestamp column "%" has type %', left(timestamp_column, 64), ets
            USING ERRCODE = '42804', HINT = 'Use a timestamptz column (or a timestamp or date in UTC) as the entity rows'' timestamp.';
    END IF;
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
        -- red-team 3: the entity time in the source column's type, the same
        -- whatever the session's TimeZone (timestamps and dates are UTC)
        at_expr := ml._time_in(format('e.%I', timestamp_column), ets,
                               ml._column_type((vw.def).source, (vw.def).event_ts_column));
        cond := cond || format('s.%I <= %s', (vw.def).event_ts_column, at_expr);
        IF (vw.def).ttl IS NOT NULL THEN
            cond := cond || format(' AND s.%I >= %s - %L::interval', (vw.def).event_ts_column,
                                   at_expr, (vw.def).ttl);
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

CREATE OR REPLACE FUNCTION ml.materialize(view_name text, up_to timestamptz DEFAULT now())
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
    evt text;
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
    -- red-team 3: a timestamp or date column is UTC, whatever the session's
    -- TimeZone (as in ml.training_set_sql): online = offline in every session
    created := CASE WHEN d.created_ts_column IS NULL THEN 'NULL::timestamptz'
                    ELSE ml._time_in(format('s.%I', d.created_ts_column),
                                     ml._column_type(d.source, d.created_ts_column), 'timestamp with time zone') END;
    evt := ml._time_in(format('s.%I', d.event_ts_column), ml._column_type(d.source, d.event_ts_column),
                       'timestamp with time zone');

    win := format('%s <= %L::timestamptz', evt, up_to);
    IF m.event_watermark IS NOT NULL THEN
        win := win || format(' AND (%s > %L::timestamptz', evt, m.event_watermark - d.late_tolerance);
        IF d.created_ts_column IS NOT NULL AND m.created_watermark IS NOT NULL THEN
            win := win || format(' OR %s > %L::timestamptz', created, m.created_watermark);
        END IF;
        win := win || ')';
    END IF;
    win := win || (SELECT string_agg(format(' AND s.%I IS NOT NULL', k), '') FROM unnest(d.source_keys) k);

    EXECUTE format(
        'INSERT INTO ml.online_store AS o (view_name, entity_key, event_ts, created_ts, "values", updated_at)
         SELECT DISTINCT ON (%1$s) %2$L, %1$s, %3$s, %4$s, %5$s, now()
           FROM %6$s s WHERE %7$s
          ORDER BY %1$s, %3$s DESC, %4$s DESC NULLS LAST
         ON CONFLICT (view_name, entity_key) DO UPDATE
            SET event_ts = excluded.event_ts, created_ts = excluded.created_ts,
                "values" = excluded."values", updated_at = excluded.updated_at
          WHERE (excluded.event_ts, coalesce(excluded.created_ts, ''-infinity''))
                >= (o.event_ts, coalesce(o.created_ts, ''-infinity''))',
        keyexpr, d.name, evt, created, vals, d.source, win);
    GET DIAGNOSTICS n = ROW_COUNT;

    IF d.created_ts_column IS NOT NULL THEN
        EXECUTE format('SELECT max(%s) FROM %s s WHERE %s <= %L::timestamptz',
                       created, d.source, evt, up_to) INTO new_cw;
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

CREATE OR REPLACE FUNCTION ml.online_features(keys jsonb, features text[], at timestamptz DEFAULT now())
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
    -- red-team 3: a key value that does not fit its column's type failed
    -- with the cast's own error (no hint, the whole client value quoted)
    BEGIN
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
    EXCEPTION WHEN invalid_text_representation OR numeric_value_out_of_range OR invalid_datetime_format
                   OR datetime_field_overflow THEN
        RAISE EXCEPTION 'a key value does not fit its column''s type'
            USING ERRCODE = '22023',
                  DETAIL = format('Key columns of entity %s: %s.', ent.name,
                                  (SELECT string_agg(format('%s %s', ent.join_keys[i],
                                                            ml._column_type((vw.def).source, (vw.def).source_keys[i])), ', ')
                                     FROM generate_series(1, cardinality(ent.join_keys)) i)),
                  HINT = 'Pass each key as a JSON number or string of the key column''s type, such as [{"customer_id": 7}].';
    END;
    RETURN QUERY SELECT k.n, k.obj, res[k.n] FROM jsonb_array_elements(keys) WITH ORDINALITY k(obj, n);
END
$$;
