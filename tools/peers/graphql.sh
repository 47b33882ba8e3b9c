#!/usr/bin/env bash
# tools/peers/graphql.sh start|stop|status: GraphQL in `make run`.
#
# bv_graphql runs inside PostgreSQL and PostgREST serves it as
# POST /rpc/graphql (tools/peers/postgrest.sh), so there is no process to
# start or stop: "status" prints curl examples (anonymous catalog, a
# customer's orders with a demo token signed with $BV_HOME/jwt.secret, the
# introspection of the schema) once the extension and PostgREST are up.
# Called by tools/cluster.sh with BV_HOME, BV_PORT, SOCK, BV_DB, PGBIN set.
set -euo pipefail

BV_DB=${BV_DB:-bitvelocity}
SOCK=${SOCK:?SOCK (the socket directory) is not set}
BV_REST_PORT=${BV_REST_PORT:-3000}
URL=http://127.0.0.1:$BV_REST_PORT
SECRET_FILE=${BV_HOME:?BV_HOME is not set}/jwt.secret
PIDFILE=$BV_HOME/postgrest/postgrest.pid

PEER=graphql
# shellcheck source=lib/peer.sh
source "$(dirname "$0")/lib/peer.sh"

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

demo_token() {
    local head body exp
    exp=$(($(date +%s) + 86400))
    head=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
    body=$(printf '{"role":"%s","sub":"%s","exp":%s}' "$1" "$2" "$exp" | b64url)
    printf '%s.%s.%s' "$head" "$body" \
        "$(printf '%s.%s' "$head" "$body" | openssl dgst -sha256 -mac HMAC -macopt "key:$(cat "$SECRET_FILE")" -binary | b64url)"
}

installed() {
    [ "$(psql_bv -c "SELECT count(*) FROM pg_extension WHERE extname = 'bv_graphql'" 2>/dev/null)" = 1 ]
}

cmd_start() {
    installed || say "bv_graphql is not installed in $BV_DB (make install; CREATE EXTENSION bv_graphql)"
}

cmd_stop() { :; }

show() {
    local token
    token=$(demo_token bv_user demo-customer)
    say "GraphQL: POST $URL/rpc/graphql (bv_graphql, schemas: $(psql_bv -c 'SHOW bv_graphql.schemas' 2>/dev/null || echo 'commerce, api'))"
    say "  try:"
    say "    curl -s $URL/rpc/graphql -H 'Content-Type: application/json' \\"
    say "         -d '{\"query\":\"{ productsCollection(first: 5) { edges { node { name skusCollection { edges { node { code pricesCollection { edges { node { currency amountMinor } } } } } } } } } }\"}'"
    say "    TOKEN=$token"
    say "    curl -s $URL/rpc/graphql -H \"Authorization: Bearer \$TOKEN\" -H 'Content-Type: application/json' \\"
    say "         -d '{\"query\":\"{ ordersCollection(orderBy: [{id: DescNullsLast}]) { totalCount edges { node { id status totalMinor orderLinesCollection { edges { node { quantity sku { code } } } } } } } }\"}'"
    say "    curl -s $URL/rpc/graphql -H 'Content-Type: application/json' -d '{\"query\":\"{ __schema { types { name } } }\"}'"
}

cmd_status() {
    if installed && running && [ -f "$SECRET_FILE" ]; then show; else say "not available (needs bv_graphql and PostgREST)"; fi
}

peer_main "$@"
