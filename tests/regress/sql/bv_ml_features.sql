-- bv_ml feature store: entities, versioned feature views, services, the
-- point-in-time join's edge cases (TTL bounds inclusive, equal event times
-- broken by created_ts, NULL keys and times, unknown entities, duplicate
-- entity rows), the online store and statistics; hostile references.
SET client_min_messages = warning;

CREATE FUNCTION pg_temp.refusal(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE h text;
BEGIN
    EXECUTE q;
    RETURN 'accepted';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS h = PG_EXCEPTION_HINT;
    RETURN SQLSTATE || ': ' || SQLERRM || coalesce(' / ' || nullif(h, ''), '');
END $$;

CREATE TABLE public.cust_stats (customer_id bigint, ts timestamptz, created timestamptz,
                                spend float8, orders int, tier text);
INSERT INTO public.cust_stats VALUES
 (1, '2026-01-01 00:00+00', '2026-01-01 00:00+00', 10, 1, 'a'),
 (1, '2026-01-02 00:00+00', '2026-01-02 00:00+00', 20, 2, 'b'),
 (1, '2026-01-02 00:00+00', '2026-01-03 00:00+00', 25, 3, 'c'),   -- same event time, created later: wins
 (1, '2026-01-02 00:00+00', NULL, 99, 9, 'n'),                     -- NULL created_ts: loses ties
 (2, '2026-01-01 00:00+00', NULL, 5, 1, 'z'),
 (NULL, '2026-01-01 00:00+00', NULL, 7, 7, 'k'),                   -- NULL key: never joined
 (3, NULL, NULL, 8, 8, 'q');                                       -- NULL event time: never joined

SELECT name, join_keys FROM ml.define_entity('customer', ARRAY['customer_id']);
SELECT name, version, source_keys, ttl, feature_types
  FROM ml.define_feature_view('cust', 'customer', 'public.cust_stats', ARRAY['spend', 'orders', 'tier'],
                              'ts', 'created', interval '1 day');
-- unchanged definition: same version; changed: a new version
SELECT version FROM ml.define_feature_view('cust', 'customer', 'public.cust_stats', ARRAY['spend', 'orders', 'tier'],
                                           'ts', 'created', interval '1 day');
SELECT version FROM ml.define_feature_view('cust', 'customer', 'public.cust_stats', ARRAY['spend', 'orders', 'tier'],
                                           'ts', 'created', interval '2 days');
SELECT version FROM ml.define_feature_view('cust', 'customer', 'public.cust_stats', ARRAY['spend', 'orders', 'tier'],
                                           'ts', 'created', interval '1 day');
SELECT count(*) AS pit_indexes FROM pg_indexes WHERE tablename = 'cust_stats';
SELECT name, version FROM ml.define_feature_service('churn_inputs', ARRAY['cust:spend', 'cust@1:orders']);
SELECT ml.service_features('churn_inputs');

CREATE TABLE public.er (id int, customer_id bigint, event_timestamp timestamptz);
INSERT INTO public.er VALUES
 (1, 1, '2026-01-02 12:00+00'),      -- newest at 01-02: the later-created row
 (2, 1, '2026-01-01 00:00+00'),      -- exactly at an event time: included
 (3, 1, '2026-01-01 23:59:59+00'),   -- before the second day's rows
 (4, 1, '2026-01-03 00:00+00'),      -- TTL lower bound exactly: still included
 (5, 1, '2026-01-03 00:00:01+00'),   -- one second past the TTL: NULL
 (6, 2, '2026-01-02 00:00+00'),
 (7, 2, '2026-01-02 00:00+00'),      -- duplicate entity row: one output row each
 (8, 3, '2026-01-05+00'),            -- only a NULL event time row: NULL
 (9, 4, '2026-01-05+00'),            -- unknown entity: NULL
 (10, NULL, '2026-01-05+00'),        -- NULL key: NULL
 (11, 1, NULL),                      -- NULL timestamp: NULL
 (12, 1, '2025-12-31+00');           -- before any value: NULL

SELECT ml.training_set('public.er', ARRAY['cust:spend', 'cust:orders', 'cust:tier']);
SELECT id, customer_id, event_timestamp, cust__spend, cust__orders, cust__tier
  FROM pg_temp.ml_training_set ORDER BY id;
-- version 2 has a two-day TTL: row 5 finds the 01-02 value
SELECT id, cust__spend FROM ml.training_rows('public.er', ARRAY['cust@2:spend']) r,
       jsonb_to_record(r) AS x(id int, cust__spend float8) WHERE id IN (4, 5) ORDER BY id;
SELECT id, cust__spend, cust__orders FROM ml.training_rows('public.er', ml.service_features('churn_inputs')) r,
       jsonb_to_record(r) AS x(id int, cust__spend float8, cust__orders int) WHERE id <= 2 ORDER BY id;
SELECT ml.training_set('public.er', ARRAY['cust:spend'], 'my_training');
SELECT ml.training_set('public.er', ARRAY['cust:spend'], 'public."My Training"');
SELECT (SELECT count(*) FROM public.my_training) AS rows, (SELECT count(*) FROM public."My Training") AS quoted_rows;

-- online store: materialize up to a time, read at that time
SELECT ml.materialize('cust', '2026-01-02 12:00+00');
SELECT * FROM ml.online_features('[{"customer_id": 1}, {"customer_id": "2"}, {"customer_id": 4}, {}]',
                                 ARRAY['cust:spend', 'cust:tier'], '2026-01-02 12:00+00');
-- a late arrival for customer 2 (event time before the watermark, created later) is caught
INSERT INTO public.cust_stats VALUES (2, '2026-01-02 06:00+00', '2026-01-04 00:00+00', 6, 2, 'y');
SELECT ml.materialize('cust', '2026-01-02 12:00+00');
SELECT "values" FROM ml.online_features('[{"customer_id": 2}]', ARRAY['cust:spend'], '2026-01-02 12:00+00');
SELECT view_name, view_version, event_watermark, total_rows FROM ml.materializations;

-- statistics
SELECT feature, row_count, round(null_rate::numeric, 4) AS null_rate, min_value, max_value, round(mean::numeric, 4) AS mean
  FROM ml.compute_statistics('cust');
SELECT count(*) FROM ml.feature_statistics WHERE last_materialized_at IS NOT NULL;

-- refusals: hostile references and definitions
SELECT pg_temp.refusal($$SELECT ml.training_set_sql('public.er', ARRAY['cust:spend; DROP TABLE er'])$$);
SELECT pg_temp.refusal($$SELECT ml.training_set_sql('public.er', ARRAY['cust"; DROP TABLE er; --:spend'])$$);
SELECT pg_temp.refusal($$SELECT ml.training_set_sql('public.er', ARRAY['nope:spend'])$$);
SELECT pg_temp.refusal($$SELECT ml.training_set_sql('public.er', ARRAY['cust@9:spend'])$$);
SELECT pg_temp.refusal($$SELECT ml.training_set_sql('public.er', ARRAY['cust'])$$);
SELECT pg_temp.refusal($$SELECT ml.training_set_sql('public.er', ARRAY[NULL])$$);
SELECT pg_temp.refusal($$SELECT ml.training_set_sql('public.er', '{}')$$);
SELECT pg_temp.refusal($$SELECT ml.training_set_sql('public.er', ARRAY['cust:spend', 'cust:spend'])$$);
SELECT pg_temp.refusal($$SELECT ml.training_set_sql('public.er', ARRAY['cust:spend'], 'no_such_column')$$);
SELECT pg_temp.refusal($$SELECT ml.training_set('public.er', ARRAY['cust:spend'], 'x; drop table er')$$);
SELECT pg_temp.refusal($$SELECT ml.training_set('public.er', ARRAY['cust:spend'], 'a.b.c.d')$$);
SELECT pg_temp.refusal($$SELECT ml.define_entity('customer', ARRAY['other_id'])$$);
SELECT pg_temp.refusal($$SELECT ml.define_entity('Bad Name', ARRAY['k'])$$);
SELECT pg_temp.refusal($$SELECT ml.define_feature_view('v2', 'nobody', 'public.cust_stats', ARRAY['spend'], 'ts')$$);
SELECT pg_temp.refusal($$SELECT ml.define_feature_view('v2', 'customer', 'public.cust_stats', ARRAY['nope'], 'ts')$$);
SELECT pg_temp.refusal($$SELECT ml.define_feature_view('v2', 'customer', 'public.cust_stats', ARRAY['spend'], 'tier')$$);
SELECT pg_temp.refusal($$SELECT ml.define_feature_view('v2', 'customer', 'public.cust_stats', ARRAY['spend', 'spend'], 'ts')$$);
SELECT pg_temp.refusal($$SELECT ml.define_feature_view('v2', 'customer', 'public.cust_stats', ARRAY['spend'], 'ts', ttl => interval '-1 day')$$);
SELECT pg_temp.refusal($$SELECT ml.define_feature_service('svc', ARRAY['cust:nope'])$$);
SELECT pg_temp.refusal($$SELECT * FROM ml.online_features('{"customer_id": 1}', ARRAY['cust:spend'])$$);
SELECT pg_temp.refusal($$SELECT * FROM ml.online_features('[1, 2]', ARRAY['cust:spend'])$$);
SELECT pg_temp.refusal($$SELECT * FROM ml.online_features('[{"customer_id": "x"}]', ARRAY['cust:spend'])$$);
SELECT pg_temp.refusal($$SELECT ml.materialize('nope')$$);
SELECT count(*) AS er_rows_still_there FROM public.er;
