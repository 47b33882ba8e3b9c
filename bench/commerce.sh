#!/usr/bin/env bash
# bench/commerce.sh: orders per second, bare vs with audit and CDC on.
#
# pgbench, 8 clients, each transaction places one order of one unit of a
# random SKU among 1,000, plus, one time in ten, one unit of a single hot SKU
# whose stock runs out during the run (so refusals are exercised and the
# no-oversell rule is checked under contention).  Two variants in the same
# run, on the same data reset between them:
#   bare   commerce with auditing switched off (stamp triggers disabled,
#          bv_audit.disable() on every table) and no CDC;
#   on     commerce as installed: audit columns and history on every table,
#          plus bv_cdc streaming the commerce tables to the Kafka mock when
#          bench/include/commerce-cdc.sh exists (the JSON's "on" says what was on).
# Then the same order through PostgREST with `hey` at 16 connections.
# JSON: orders_per_s, orders_per_s_bare, ratio, oversold, rest_orders_per_s.
source "$BV_TOP/tools/lib.sh"
bv_pgbin

case "${BENCH_SCALE:-default}" in
    small) SECONDS_PER_RUN=5 ;;
    *) SECONDS_PER_RUN=30 ;;
esac
OUT=$BV_BENCH_OUT
say() { echo "bench-commerce: $*" >&2; }

# bv_cdc is created only for the "on" run (bench/include/commerce-cdc.sh).
export BV_EXTENSIONS="bv_core bv_audit bv_commerce"
bv_throwaway_cluster "$OUT/cluster" 55100 >&2
psql_b() { "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 "$@"; }

say "loading 1,000 SKUs and one hot SKU"
psql_b >/dev/null <<'SQL'
ALTER SYSTEM SET synchronous_commit = off;
-- One token drives the REST load: lift bv.pre_request()'s per-actor limit.
ALTER SYSTEM SET bv.request_rate = 1000000000;
ALTER SYSTEM SET bv.request_burst = 1000000000;
SELECT pg_reload_conf();
-- One buyer places thousands of unpaid orders: lift the per-customer cap.
UPDATE commerce.limits SET value = 1000000000 WHERE name = 'max_unpaid_units';
INSERT INTO commerce.products (slug, name) SELECT 'p' || g, 'Product ' || g FROM generate_series(0, 1000) g;
INSERT INTO commerce.skus (product_id, code) SELECT id, 'S' || substr(slug, 2) FROM commerce.products;
INSERT INTO commerce.prices SELECT id, 'USD', 1000 + id FROM commerce.skus;
-- The bench driver: one order as buyer N; a refusal for short stock is a
-- normal outcome of the hot SKU, counted, not an error.
CREATE TABLE public.bench_refusals (n bigint);
CREATE FUNCTION public.bench_order(p_client int, p_sku int, p_hot int) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('request.jwt.claims', json_build_object('sub', 'buyer-' || p_client)::text, true);
    PERFORM commerce.place_order(NULL,
        CASE WHEN p_hot = 1 THEN jsonb_build_array(jsonb_build_object('sku', 'S' || p_sku, 'quantity', 1),
                                                   jsonb_build_object('sku', 'S0', 'quantity', 1))
             ELSE jsonb_build_array(jsonb_build_object('sku', 'S' || p_sku, 'quantity', 1)) END);
EXCEPTION WHEN SQLSTATE 'PT409' THEN
    INSERT INTO public.bench_refusals VALUES (1);
END $$;
SQL

# The order tables are emptied with TRUNCATE, which leaves them as a new
# shop's are: never analyzed, so the planner sizes them from their current
# pages.  (Analyzing them while empty would not be: plans cached in that
# state, such as the foreign key checks' lookups of the order, stay
# sequential scans while the run fills the table, until autovacuum's next
# ANALYZE.)  The catalog and the stock are analyzed.
reset_data() {
    psql_b <<'SQL'
TRUNCATE commerce.order_events, commerce.order_lines, commerce.payments, commerce.refunds,
         commerce.orders, commerce.idempotency_keys, public.bench_refusals;
DELETE FROM commerce.inventory;
INSERT INTO commerce.inventory (sku_id, total)
SELECT id, CASE WHEN code = 'S0' THEN 500 ELSE 1000000 END FROM commerce.skus;
VACUUM ANALYZE commerce.inventory, commerce.skus, commerce.prices, commerce.products;
SQL
}

cat >"$OUT/order.sql" <<'PGB'
\set sku random(1, 1000)
\set hot random(1, 10)
SELECT public.bench_order(:client_id, :sku, :hot);
PGB

# One pgbench run; prints "<orders per second> <units oversold>" (orders =
# transactions - refusals).
run_pgbench() {
    local label=$1 refused total oversold lsn
    reset_data
    # With CDC on, let the worker stream the reset's deletes before timing.
    if [ -n "$(psql_b -c "SELECT 1 FROM pg_extension WHERE extname = 'bv_cdc'")" ]; then
        lsn=$(psql_b -c 'SELECT pg_current_wal_lsn()')
        for _ in $(seq 600); do
            [ "$(psql_b -c "SELECT coalesce(bool_and(confirmed_flush_lsn >= '$lsn'), false) FROM pg_replication_slots WHERE slot_name = 'bv_cdc'")" = t ] && break
            sleep 0.2
        done
    fi
    say "$label: pgbench -c 8 -T $SECONDS_PER_RUN"
    "$PGBIN/pgbench" -n -c 8 -j 2 -T "$SECONDS_PER_RUN" -f "$OUT/order.sql" >"$OUT/pgbench-$label.txt" 2>&1 \
        || { cat "$OUT/pgbench-$label.txt" >&2; bv_die "pgbench failed ($label)"; }
    total=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$OUT/pgbench-$label.txt")
    refused=$(psql_b -c 'SELECT count(*) FROM public.bench_refusals')
    # Units ordered beyond a SKU's stock, over orders still holding stock.
    oversold=$(psql_b -c "SELECT coalesce(sum(greatest(o.units - i.total, 0)), 0)
        FROM (SELECT l.sku_id, sum(l.quantity) AS units FROM commerce.order_lines l
              JOIN commerce.orders x ON x.id = l.order_id WHERE x.status <> 'cancelled' GROUP BY l.sku_id) o
        JOIN commerce.inventory i ON i.sku_id = o.sku_id")
    awk -v t="$total" -v r="$refused" -v s="$SECONDS_PER_RUN" -v o="$oversold" 'BEGIN { printf "%.1f %d\n", (t - r) / s, o }'
}

# Audit off for the bare run, then back on (a fresh snapshot is recorded).
audit() {
    psql_b -v on="$1" >/dev/null <<'SQL'
SELECT count(CASE WHEN :'on' = 'on'
                  THEN bv_audit.enable(c.oid::regclass, CASE WHEN c.relname = 'idempotency_keys'
                                                             THEN ARRAY['response'] ELSE '{}'::text[] END)::text
                  ELSE bv_audit.disable(c.oid::regclass)::text END)
  FROM pg_class c WHERE c.relnamespace = 'commerce'::regnamespace AND c.relkind = 'r';
SELECT format('ALTER TABLE %s %s TRIGGER bv_audit_stamp', c.oid::regclass,
              CASE WHEN :'on' = 'on' THEN 'ENABLE' ELSE 'DISABLE' END)
  FROM pg_class c WHERE c.relnamespace = 'commerce'::regnamespace AND c.relkind = 'r' \gexec
SQL
}

audit off
read -r bare oversold_bare < <(run_pgbench bare)

# ---- audit and CDC on ----
audit on
on_parts=(audit)
if [ -f "$BV_TOP/bench/include/commerce-cdc.sh" ]; then
    source "$BV_TOP/bench/include/commerce-cdc.sh"
    on_parts+=(cdc)
fi
read -r on oversold_on < <(run_pgbench on)
oversold=$((oversold_bare + oversold_on))

# ---- REST through PostgREST ----
secret=$(openssl rand -hex 32)
bin=$("$BV_TOP/tools/postgrest.sh" install "$OUT/postgrest")
rest_port=$(bv_free_port 55180)
"$BV_TOP/tools/postgrest.sh" render "$OUT/postgrest.conf" \
    "postgresql:///bitvelocity?host=$PGHOST&port=$PGPORT&user=bv_authenticator" api "$secret" "$rest_port"
sed -i 's/^db-pool = .*/db-pool = 16/' "$OUT/postgrest.conf"
# bv.pre_request() re-verifies every bearer token with bv_core: the secret
# PostgREST uses is registered as its key (read by the server from a file).
printf '%s' "$secret" >"$OUT/jwt.secret"
psql_b -v jwt_file="$OUT/jwt.secret" >/dev/null <<'SQL'
INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('postgrest', 'HS256', pg_read_file(:'jwt_file'));
SQL
"$bin" "$OUT/postgrest.conf" >"$OUT/postgrest.log" 2>&1 &
pgrst=$!
trap 'kill $pgrst ${MOCK_PID:-} 2>/dev/null; bv_throwaway_stop "$OUT/cluster"' EXIT
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$rest_port/" && break; sleep 0.1; done
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
head=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
body=$(printf '{"role":"bv_user","sub":"rest-buyer","exp":%s}' $(($(date +%s) + 3600)) | b64url)
sig=$(printf '%s.%s' "$head" "$body" | openssl dgst -sha256 -mac HMAC -macopt "key:$secret" -binary | b64url)
reset_data
say "REST: hey -c 16 -z ${SECONDS_PER_RUN}s POST /rpc/place_order"
hey -c 16 -z "${SECONDS_PER_RUN}s" -m POST -T application/json \
    -H "Authorization: Bearer $head.$body.$sig" \
    -d '{"lines":[{"sku":"S1","quantity":1}]}' \
    "http://127.0.0.1:$rest_port/rpc/place_order" >"$OUT/hey.txt" 2>&1
rest_ok=$(grep -E '^\s+\[200\]' "$OUT/hey.txt" | awk '{print $2}')
rest=$(awk -v n="${rest_ok:-0}" -v s="$SECONDS_PER_RUN" 'BEGIN { printf "%.1f", n / s }')

ratio=$(awk -v a="$on" -v b="$bare" 'BEGIN { printf "%.3f", a / b }')
printf '{"bench":"commerce","scale":"%s","commit":"%s","seconds_per_run":%s,"orders_per_s":%s,"orders_per_s_bare":%s,"ratio":%s,"oversold":%s,"rest_orders_per_s":%s,"on":"%s"}\n' \
    "${BENCH_SCALE:-default}" "${BV_COMMIT:-unknown}" "$SECONDS_PER_RUN" "$on" "$bare" "$ratio" "$oversold" "$rest" "${on_parts[*]:-none}"
