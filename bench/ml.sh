#!/usr/bin/env bash
# bench/ml.sh: bv_ml scoring inside SQL and the point-in-time join.
#
# (a) Scoring N rows (1M; small: 100k) of 20 float8 features in one SELECT,
#     single process (no parallel workers):
#       select    SELECT sum(cardinality(x)) FROM t        (reads every array)
#       logistic  SELECT sum(ml.predict('lr', x)) FROM t   (scikit-learn
#                 LogisticRegression, 20 features)
#       gbt       SELECT sum(ml.predict('gbt', x)) FROM t  (XGBoost, 100 trees
#                 of depth 6, binary:logistic)
#     and, as the native reference, python3-xgboost's own Booster.predict with
#     nthread=1 on the same number of rows already in memory as a float32
#     matrix (tools/bv_ml_export.py time-predict).  Best of three each.
# (b) A training set of E entity rows (100k; small: 10k) x 10 features over F
#     feature rows (10M; small: 300k), one feature view with a TTL and a
#     created-timestamp: ml.training_set against the naive query (one
#     correlated ORDER BY ... LIMIT 1 subquery per feature per row, written
#     here as the reference a user would write first), both over the same
#     index (warmed by an untimed run), both materialized with CREATE TABLE
#     AS; the two results must be equal row for row (EXCEPT both ways).
# JSON: logistic_rows_per_s, select_rows_per_s, logistic_cost_ratio,
# gbt_rows_per_s, xgboost_rows_per_s, gbt_vs_xgboost, training_set_s,
# naive_training_set_s, pit_speedup, pit_equal.
source "$BV_TOP/tools/lib.sh"
bv_pgbin

case "${BENCH_SCALE:-default}" in
    small) ROWS=100000 ENTITY_ROWS=10000 FEATURE_ROWS=300000 KEYS=3000 ;;
    *) ROWS=1000000 ENTITY_ROWS=100000 FEATURE_ROWS=10000000 KEYS=100000 ;;
esac
OUT=$BV_BENCH_OUT
say() { echo "bench-ml: $*" >&2; }
PY=/usr/bin/python3
EXPORT=$BV_TOP/tools/bv_ml_export.py

export BV_EXTENSIONS="bv_core bv_ml"
bv_throwaway_cluster "$OUT/cluster" 55300 >&2
trap 'bv_throwaway_stop "$OUT/cluster"' EXIT
psql_b() { "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 "$@"; }

say "training the models (scikit-learn logistic regression, XGBoost 100 trees depth 6)"
"$PY" "$EXPORT" train sk_logistic "$OUT/lr" --rows 20000 --features 20 --seed 1 >&2
"$PY" "$EXPORT" train xgb_binary "$OUT/gbt" --rows 20000 --features 20 --seed 1 \
    --trees 100 --depth 6 --nan-rate 0.05 >&2

say "loading $ROWS rows of 20 features"
arr=$(for i in $(seq 20); do printf 'random() * 2 - 1'; if [ "$i" -lt 20 ]; then printf ', '; fi; done)
psql_b >/dev/null <<SQL
ALTER SYSTEM SET max_parallel_workers_per_gather = 0;
ALTER SYSTEM SET work_mem = '256MB';
ALTER SYSTEM SET maintenance_work_mem = '1GB';
ALTER SYSTEM SET synchronous_commit = off;
SELECT pg_reload_conf();
SELECT ml.register_model('lr', 'sklearn_logistic', pg_read_file('$OUT/lr/model.json')::jsonb);
SELECT ml.register_model('gbt', 'xgboost', pg_read_file('$OUT/gbt/model.json')::jsonb);
CREATE TABLE public.t AS SELECT g AS id, ARRAY[$arr]::float8[] AS x FROM generate_series(1, $ROWS) g;
VACUUM ANALYZE public.t;
-- seconds one query takes (round: only to order the calls)
CREATE FUNCTION public.bench_time(q text, round float8) RETURNS float8 LANGUAGE plpgsql VOLATILE AS \$\$
DECLARE t0 timestamptz := clock_timestamp();
BEGIN
    EXECUTE q;
    RETURN extract(epoch FROM clock_timestamp() - t0)::float8;
END \$\$;
SQL
psql_b -c "SELECT pg_reload_conf()" >/dev/null
psql_b -c "SELECT count(*) FROM public.t" >/dev/null   # warm the cache

say "(a) SELECT without scoring, with logistic regression, with the GBT"
# Three rounds of the three queries, interleaved (the machine's load moves
# between rounds, not within one); the best time of each counts.
read -r select_s logistic_s gbt_s < <(psql_b -F ' ' -c "
SELECT min(s), min(l), min(g) FROM generate_series(1, 3) r,
LATERAL (SELECT public.bench_time('SELECT sum(cardinality(x)) FROM public.t', r) AS s) a,
LATERAL (SELECT public.bench_time(\$q\$SELECT sum(ml.predict('lr', x)) FROM public.t\$q\$, r + a.s * 0) AS l) b,
LATERAL (SELECT public.bench_time(\$q\$SELECT sum(ml.predict('gbt', x)) FROM public.t\$q\$, r + b.l * 0) AS g) c")
say "python3-xgboost predict, nthread=1, $ROWS rows in memory"
xgboost_rps=$("$PY" "$EXPORT" time-predict "$OUT/gbt" --rows "$ROWS" --features 20)

say "(b) $FEATURE_ROWS feature rows over $KEYS entities, $ENTITY_ROWS entity rows"
psql_b >/dev/null <<SQL
CREATE TABLE public.fs AS
SELECT 1 + (random() * ($KEYS - 1))::bigint AS customer_id, ev, ev + random() * interval '2 hours' AS cr,
       random() AS f1, random() AS f2, random() AS f3, random() AS f4, random() AS f5,
       random() AS f6, random() AS f7, random() AS f8, random() AS f9, random() AS f10
  FROM (SELECT timestamptz '2026-01-01' + random() * interval '365 days' AS ev
          FROM generate_series(1, $FEATURE_ROWS)) g;
SELECT ml.define_entity('customer', ARRAY['customer_id']);
SELECT ml.define_feature_view('stats', 'customer', 'public.fs',
    ARRAY['f1','f2','f3','f4','f5','f6','f7','f8','f9','f10'], 'ev', 'cr', interval '30 days');
CREATE TABLE public.er AS
SELECT g AS id, 1 + (random() * ($KEYS - 1))::bigint AS customer_id,
       timestamptz '2026-01-01' + random() * interval '400 days' AS event_timestamp
  FROM generate_series(1, $ENTITY_ROWS) g;
VACUUM ANALYZE public.fs, public.er;
SQL
feats="ARRAY['stats:f1','stats:f2','stats:f3','stats:f4','stats:f5','stats:f6','stats:f7','stats:f8','stats:f9','stats:f10']"
naive_cols=$(for i in $(seq 10); do
    printf "(SELECT s.f$i FROM public.fs s WHERE s.customer_id = e.customer_id AND s.ev <= e.event_timestamp AND s.ev >= e.event_timestamp - interval '30 days' ORDER BY s.ev DESC, s.cr DESC NULLS LAST LIMIT 1) AS stats__f$i"
    if [ "$i" -lt 10 ]; then printf ', '; fi
done)
# elapsed seconds of one SQL script, measured by the server's clock
timed() {
    psql_b <<SQL
SELECT clock_timestamp() AS t0 \gset
$1;
SELECT extract(epoch FROM clock_timestamp() - :'t0'::timestamptz);
SQL
}
# Both read the same index; a first, untimed run warms it, so neither pays
# for reading it from disk.  The join is timed before and after the naive
# query (the best counts); the naive query once (it is ~10x longer).
timed "SELECT FROM ml.training_set('public.er', $feats, 'pit_warm')" >/dev/null
t1=$(timed "SELECT FROM ml.training_set('public.er', $feats, 'pit_out')")
naive_s=$(timed "CREATE TABLE public.naive_out AS SELECT e.*, $naive_cols FROM public.er e")
t2=$(timed "SELECT FROM ml.training_set('public.er', $feats, 'pit_out2')")
training_set_s=$(awk -v a="$t1" -v b="$t2" 'BEGIN { print (a < b ? a : b) }')
diff_rows=$(psql_b -c "SELECT (SELECT count(*) FROM (TABLE public.pit_out EXCEPT ALL TABLE public.naive_out) a)
                            + (SELECT count(*) FROM (TABLE public.naive_out EXCEPT ALL TABLE public.pit_out) b)")
matched=$(psql_b -c "SELECT count(*) FROM public.pit_out WHERE stats__f1 IS NOT NULL")
if [ "$diff_rows" = 0 ]; then pit_equal=true; else pit_equal=false; fi
say "training set: ${training_set_s}s, naive ${naive_s}s, $matched of $ENTITY_ROWS rows with values, rows differing: $diff_rows"

awk -v rows="$ROWS" -v sel="$select_s" -v lr="$logistic_s" -v gbt="$gbt_s" -v xgb="$xgboost_rps" \
    -v ts="$training_set_s" -v nv="$naive_s" -v eq="$pit_equal" -v scale="${BENCH_SCALE:-default}" \
    -v commit="${BV_COMMIT:-unknown}" -v er="$ENTITY_ROWS" -v fr="$FEATURE_ROWS" 'BEGIN {
    printf "{\"bench\":\"ml\",\"scale\":\"%s\",\"commit\":\"%s\",\"rows\":%d,\"entity_rows\":%d,\"feature_rows\":%d,", scale, commit, rows, er, fr
    printf "\"select_rows_per_s\":%.1f,\"logistic_rows_per_s\":%.1f,\"logistic_cost_ratio\":%.3f,", rows / sel, rows / lr, lr / sel
    printf "\"gbt_rows_per_s\":%.1f,\"xgboost_rows_per_s\":%.1f,\"gbt_vs_xgboost\":%.3f,", rows / gbt, xgb, (rows / gbt) / xgb
    printf "\"training_set_s\":%.3f,\"naive_training_set_s\":%.3f,\"pit_speedup\":%.2f,\"pit_equal\":%s}\n", ts, nv, nv / ts, eq
}'
