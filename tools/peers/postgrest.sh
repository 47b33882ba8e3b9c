#!/usr/bin/env bash
# tools/peers/postgrest.sh start|stop|status: PostgREST for `make run`.
#
# Serves schema "api" (created by bv_commerce) on 127.0.0.1:$BV_REST_PORT
# (default 3000), logging in as bv_authenticator over the cluster's socket.
# The JWT secret is generated once into $BV_HOME/jwt.secret (mode 0600) and
# registered in bv.jwt_keys as key "postgrest": bv.pre_request() verifies
# every bearer token again with bv.jwt_verify(), so bv_core must know the
# key PostgREST uses.  The payment webhook's signing secret is generated
# once into $BV_HOME/payment_webhook.secret and stored, sealed, as
# bv.secrets 'commerce.payment_webhook' (unless one is set already).
# Called by tools/cluster.sh with BV_HOME, BV_PORT, SOCK, BV_DB, PGBIN set.
source "$(dirname "$0")/../lib.sh"

BV_REST_PORT=${BV_REST_PORT:-3000}
DIR=$BV_HOME/postgrest
PIDFILE=$DIR/postgrest.pid
LOG=$BV_HOME/log/postgrest.log
SECRET_FILE=$BV_HOME/jwt.secret
WEBHOOK_SECRET_FILE=$BV_HOME/payment_webhook.secret
URL=http://127.0.0.1:$BV_REST_PORT

psql_bv() { "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$SOCK" -p "$BV_PORT" -U postgres -d "$BV_DB" "$@"; }

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

# An HS256 token for the demo, signed with the generated secret.
demo_token() {
    local role=$1 sub=$2 head body sig exp
    exp=$(($(date +%s) + 86400))
    head=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
    body=$(printf '{"role":"%s","sub":"%s","exp":%s}' "$role" "$sub" "$exp" | b64url)
    sig=$(printf '%s.%s' "$head" "$body" | openssl dgst -sha256 -mac HMAC -macopt "key:$(cat "$SECRET_FILE")" -binary | b64url)
    printf '%s.%s.%s' "$head" "$body" "$sig"
}

cmd_start() {
    if [ "$(psql_bv -c "SELECT count(*) FROM pg_namespace WHERE nspname = 'api'")" = 0 ]; then
        bv_say "PostgREST: not started (no schema api: bv_commerce is not installed)"
        return 0
    fi
    if running; then
        bv_say "PostgREST: already running (pid $(cat "$PIDFILE"))"
        return 0
    fi
    if bv_port_busy "$BV_REST_PORT"; then
        bv_die "port $BV_REST_PORT on 127.0.0.1 is in use by another program; stop it, or choose another port: make run BV_REST_PORT=$((BV_REST_PORT + 1))"
    fi
    local bin
    bin=$("$BV_TOP/tools/postgrest.sh" install "$DIR")
    if [ ! -s "$SECRET_FILE" ]; then
        (umask 077; openssl rand -base64 48 | tr -d '\n' >"$SECRET_FILE")
    fi
    if [ ! -s "$WEBHOOK_SECRET_FILE" ]; then
        (umask 077; printf 'whsec_%s' "$(openssl rand -hex 32)" >"$WEBHOOK_SECRET_FILE")
    fi
    "$BV_TOP/tools/postgrest.sh" render "$DIR/postgrest.conf" \
        "postgresql:///$BV_DB?host=$SOCK&port=$BV_PORT&user=bv_authenticator" \
        api "$(cat "$SECRET_FILE")" "$BV_REST_PORT"
    mkdir -p "$(dirname "$LOG")"
    if [ "$(id -u)" -eq 0 ]; then
        chown "$BV_PG_USER": "$DIR" "$DIR/postgrest.conf" "$SECRET_FILE" "$WEBHOOK_SECRET_FILE"
        touch "$LOG"; chown "$BV_PG_USER": "$LOG"
    fi
    # The server reads the secrets from their files (pg_read_file), so that
    # they appear in no command line and no statement text.
    psql_bv -v jwt_file="$SECRET_FILE" -v webhook_file="$WEBHOOK_SECRET_FILE" >/dev/null <<'SQL'
INSERT INTO bv.jwt_keys AS k (kid, alg, key) VALUES ('postgrest', 'HS256', pg_read_file(:'jwt_file'))
ON CONFLICT (kid) DO UPDATE SET alg = EXCLUDED.alg, key = EXCLUDED.key, active = true
 WHERE k.key IS DISTINCT FROM EXCLUDED.key OR k.alg IS DISTINCT FROM EXCLUDED.alg OR NOT k.active;
SELECT bv.secret_set('commerce.payment_webhook', pg_read_file(:'webhook_file'))
 WHERE NOT EXISTS (SELECT 1 FROM bv.secrets WHERE name = 'commerce.payment_webhook');
SQL
    # The demo catalog and social graph (idempotent).
    psql_bv -f "$BV_TOP/sql/bv_commerce/demo-data.sql" >/dev/null
    if [ "$(psql_bv -c "SELECT count(*) FROM pg_extension WHERE extname = 'bv_social'")" = 1 ]; then
        psql_bv -f "$BV_TOP/sql/bv_social/demo-data.sql" >/dev/null
    fi
    bv_as_pg bash -c 'nohup "$0" "$1" >>"$2" 2>&1 & echo $! >"$3"' \
        "$bin" "$DIR/postgrest.conf" "$LOG" "$DIR/postgrest.pid.tmp"
    mv "$DIR/postgrest.pid.tmp" "$PIDFILE"
    local i
    for i in $(seq 1 100); do
        curl -s -o /dev/null "$URL/" && break
        running || { tail -n 20 "$LOG" >&2; bv_die "PostgREST exited; see $LOG"; }
        sleep 0.2
    done
    curl -s -o /dev/null "$URL/" || bv_die "PostgREST did not answer on $URL within 20 s; see $LOG"
    bv_say "PostgREST: started (pid $(cat "$PIDFILE"), $URL)"
}

cmd_status() {
    if ! running; then
        bv_say "PostgREST: stopped"
        return 0
    fi
    local token
    token=$(demo_token bv_user demo-customer)
    bv_say "PostgREST 12: running, pid $(cat "$PIDFILE"), $URL (schema api; OpenAPI at $URL/), log $LOG"
    bv_say "  try:"
    bv_say "    curl -s '$URL/catalog?select=sku,name,currency,amount_minor,available'"
    bv_say "    TOKEN=$token"
    bv_say "    curl -s -X POST $URL/rpc/place_order -H \"Authorization: Bearer \$TOKEN\" \\"
    bv_say "         -H 'Content-Type: application/json' -H 'Idempotency-Key: demo-1' \\"
    bv_say "         -d '{\"lines\":[{\"sku\":\"TSHIRT-M\",\"quantity\":1}]}'"
    bv_say "    curl -s $URL/orders -H \"Authorization: Bearer \$TOKEN\""
    if [ "$(psql_bv -c "SELECT count(*) FROM pg_extension WHERE extname = 'bv_social'")" = 1 ]; then
        bv_say "  social (docs/bv_social.md), as bob of the demo graph:"
        bv_say "    BOB=$(demo_token bv_user demo-user-42)"
        bv_say "    curl -s \"$URL/rpc/home_timeline?page_size=5\" -H \"Authorization: Bearer \$BOB\""
        bv_say "    curl -s -X POST $URL/rpc/create_post -H \"Authorization: Bearer \$BOB\" -H 'Content-Type: application/json' \\"
        bv_say "         -d '{\"body\":\"hello #postgres\",\"visibility\":\"public\"}'"
        bv_say "    curl -s '$URL/rpc/hashtag_feed?tag=postgres'   curl -s '$URL/rpc/trending_hashtags'"
        bv_say "    curl -s '$URL/social_posts?select=id,body,author:social_profiles(handle)&order=id.desc&limit=5'"
    fi
    bv_say "  payment webhooks are signed with the secret in $WEBHOOK_SECRET_FILE"
    bv_say "  (bv-signature: t=<unix time>,v1=<hex HMAC-SHA256 of \"<t>.<body>\">)"
}

cmd_stop() {
    local pid
    if running; then
        pid=$(cat "$PIDFILE")
        kill "$pid"
        # Wait until it has exited (and let go of its port), so that an
        # immediate start finds the port free: up to 10 s.
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        rm -f "$PIDFILE"
        bv_say "PostgREST: stopped"
    fi
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) bv_die "usage: $0 start|stop|status" ;;
esac
