-- Red-team round 3 (bv_ml): finite features whose products overflow a
-- model's arithmetic.  Before 0.3.0's library a regression answered
-- Infinity or NaN, and a multi-class model NaN probabilities with class 0
-- as its prediction (REST clients got the strings "NaN"/"Infinity" in place
-- of numbers).  Now: SQLSTATE 22003 with a hint.
SELECT version FROM ml.register_model('red4_lin', 'sklearn_linear',
    '{"format": "bv_ml.sklearn", "estimator": "LinearRegression", "coef": [1e300, 1e300], "intercept": 0, "n_features_in": 2}',
    stage => 'production');
SELECT version FROM ml.register_model('red4_multi', 'sklearn_logistic',
    '{"format": "bv_ml.sklearn", "estimator": "LogisticRegression", "coef": [[1e300, 0], [-1e300, 0], [0, 1]],
      "intercept": [0, 0, 0], "n_features_in": 2, "classes": [0, 1, 2], "multi_class": "multinomial"}',
    stage => 'production');
SELECT version FROM ml.register_model('red4_bin', 'sklearn_logistic',
    '{"format": "bv_ml.sklearn", "estimator": "LogisticRegression", "coef": [[1e300, 0]],
      "intercept": [0], "n_features_in": 2, "classes": [0, 1]}',
    stage => 'production');

CREATE FUNCTION pg_temp.refusal(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; hint text;
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
    RETURN st || ': ' || msg || ' / ' || hint;
END $$;

-- overflow to infinity, and infinity minus infinity
SELECT pg_temp.refusal($$SELECT ml.predict('red4_lin', ARRAY[1e300, 1e300])$$);
SELECT pg_temp.refusal($$SELECT ml.predict('red4_lin', ARRAY[1e300, -1e300])$$);
SELECT pg_temp.refusal($$SELECT ml.predict('red4_multi', ARRAY[1e300, 1])$$);
SELECT pg_temp.refusal($$SELECT ml.predict_proba('red4_multi', ARRAY[1e300, 1])$$);
SELECT pg_temp.refusal($$SELECT * FROM ml.predict_batch('red4_multi', ARRAY[[0, 1], [1e300, 1]])$$);
-- the REST path answers 22003 (HTTP 400), not strings in place of numbers
UPDATE ml.models SET api_enabled = true WHERE name LIKE 'red4\_%';
SET ROLE bv_user;
SELECT pg_temp.refusal($$SELECT ml.api_predict('red4_lin', '{"f0": 1e300, "f1": 1e300}')$$);
SELECT pg_temp.refusal($$SELECT ml.api_predict('red4_multi', '{"f0": 1e300, "f1": 1}')$$);
RESET ROLE;

-- finite results are unchanged: ordinary values, and a sigmoid that
-- saturates (its margin is infinite, its probability is 1)
SELECT ml.predict('red4_lin', ARRAY[1, 2]) AS lin;
SELECT ml.predict('red4_multi', ARRAY[0, 1]) AS multi_class,
       (SELECT array_agg(round(p::numeric, 6)) FROM unnest(ml.predict_proba('red4_multi', ARRAY[0, 1])) p) AS multi_proba;
SELECT ml.predict('red4_bin', ARRAY[1e300, 1e300]) AS saturated;
SELECT ordinality, prediction FROM ml.predict_batch('red4_multi', ARRAY[[0, 1], [1e-300, 1]]);

-- trees: two leaves near the float32 limit sum to infinity (a regression)
SELECT version FROM ml.register_model('red4_xgb', 'xgboost', '{"learner": {"attributes": {}, "feature_names": [], "feature_types": [],
  "gradient_booster": {"name": "gbtree", "model": {
     "gbtree_model_param": {"num_parallel_tree": "1", "num_trees": "2"}, "tree_info": [0, 0],
     "trees": [{"id": 0, "default_left": [1, 0, 0], "left_children": [1, -1, -1], "right_children": [2, -1, -1],
                "split_conditions": [0.5, 1.0, 3e38], "split_indices": [0, 0, 0], "split_type": [0, 0, 0],
                "tree_param": {"num_feature": "2", "num_nodes": "3"}},
               {"id": 1, "default_left": [1, 0, 0], "left_children": [1, -1, -1], "right_children": [2, -1, -1],
                "split_conditions": [0.5, 1.0, 3e38], "split_indices": [0, 0, 0], "split_type": [0, 0, 0],
                "tree_param": {"num_feature": "2", "num_nodes": "3"}}]}},
  "learner_model_param": {"base_score": "0", "num_class": "0", "num_feature": "2", "num_target": "1"},
  "objective": {"name": "reg:squarederror"}}, "version": [1, 7, 4]}', stage => 'production');
SELECT ml.predict('red4_xgb', ARRAY[0, 0]) AS xgb_left;
SELECT pg_temp.refusal($$SELECT ml.predict('red4_xgb', ARRAY[1, 0])$$);

DELETE FROM ml.models WHERE name LIKE 'red4\_%';
