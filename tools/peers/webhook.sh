#!/usr/bin/env bash
# tools/peers/webhook.sh start|stop|status: the webhook peer of `make run`.
#
# Starts tests/tools/bv_webhook_receiver on 127.0.0.1:$BV_WEBHOOK_PORT
# (default 8787): it checks the BV-Signature of every delivery and prints
# one line per event (id, op, table, verified) to $BV_HOME/webhook/receiver.out,
# and logs each request in full (JSON lines) to $BV_HOME/webhook/events.jsonl.
# The signing secret is generated once into $BV_HOME/webhook.secret
# (mode 0600) and stored in bv_core's secret store as cdc.demo_webhook; the
# bv_cdc sink demo_webhook posts to the receiver, and the demo table
# public.cdc_demo (and, with bv_commerce, commerce.orders and
# commerce.payments) is routed to it.  Idempotent.  Called by
# tools/cluster.sh after the database started (env: BV_HOME, SOCK, BV_DB,
# BV_PORT, PGBIN).
set -euo pipefail

BV_TOP=$(cd "$(dirname "$0")/../.." && pwd)
BV_DB=${BV_DB:-bitvelocity}
SOCK=${SOCK:?SOCK (the socket directory) is not set}
BV_HOME=${BV_HOME:?BV_HOME is not set}
DIR=$BV_HOME/webhook
PORT=${BV_WEBHOOK_PORT:-8787}
PIDFILE=$DIR/receiver.pid
OUT=$DIR/receiver.out
LOG=$DIR/events.jsonl
SECRET_FILE=$BV_HOME/webhook.secret
RECEIVER=$BV_TOP/tests/tools/bv_webhook_receiver
SINK=demo_webhook
SECRET_NAME=cdc.demo_webhook

PEER=webhook
# shellcheck source=lib/peer.sh
source "$(dirname "$0")/lib/peer.sh"

secret() {
    if [ ! -f "$SECRET_FILE" ]; then
        (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$SECRET_FILE")
        say "created the signing secret $SECRET_FILE"
    fi
    chmod 0600 "$SECRET_FILE"
}

configure_demo() {
    local out
    if [ "$(psql_bv -c "SELECT count(*) FROM pg_extension WHERE extname = 'bv_cdc'")" != 1 ]; then
        say "bv_cdc is not installed in $BV_DB; no demo sink"
        return 0
    fi
    if [ "$(psql_bv -c "SELECT pg_get_constraintdef(oid) LIKE '%webhook%' FROM pg_constraint WHERE conname = 'sinks_kind_check' AND conrelid = 'bv_cdc.sinks'::regclass")" != t ]; then
        warn "the installed bv_cdc ($(psql_bv -c "SELECT extversion FROM pg_extension WHERE extname = 'bv_cdc'")) has no webhook sinks; no demo sink (make install, then make run)"
        return 0
    fi
    # The secret reaches psql through its environment (\getenv), never its
    # command line.
    if ! out=$(BV_WEBHOOK_SECRET=$(cat "$SECRET_FILE") psql_bv -v sink="$SINK" -v secret_name="$SECRET_NAME" \
        -v url="http://127.0.0.1:$PORT/hook" 2>&1 <<'SQL'
\getenv secret BV_WEBHOOK_SECRET
SELECT bv.secret_set(:'secret_name', :'secret') \g /dev/null
CREATE TABLE IF NOT EXISTS public.cdc_demo (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    note text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
SELECT CASE WHEN EXISTS (SELECT 1 FROM bv_cdc.sinks WHERE name = :'sink')
            THEN format('SELECT bv_cdc.alter_sink(%L, %L)', :'sink',
                        jsonb_build_object('url', :'url', 'secret', :'secret_name'))
            ELSE format('SELECT bv_cdc.add_sink(%L, %L, %L)', :'sink', 'webhook',
                        jsonb_build_object('url', :'url', 'secret', :'secret_name'))
       END \gexec
SELECT format('SELECT bv_cdc.add_route(%L, %L)', t, :'sink')
  FROM unnest(ARRAY['public.cdc_demo', 'commerce.orders', 'commerce.payments']) t
 WHERE (t = 'public.cdc_demo' OR EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'bv_commerce'))
   AND NOT EXISTS (SELECT 1 FROM bv_cdc.routes WHERE table_pattern = t AND sink = :'sink') \gexec
SQL
    ); then
        warn "could not add the demo sink $SINK: $out"
        return 0
    fi
    say "sink $SINK (secret $SECRET_NAME) routes public.cdc_demo$(psql_bv -c "SELECT CASE WHEN count(*) > 0 THEN ', commerce.orders, commerce.payments' ELSE '' END FROM pg_extension WHERE extname = 'bv_commerce'") to the receiver"
}

show() {
    say "receiver running (pid $(cat "$PIDFILE")) on http://127.0.0.1:$PORT/hook, verifying with $SECRET_FILE"
    say "  one line per event:  tail -f $OUT"
    say "  full requests:       tail -f $LOG   (JSON lines)"
    say "  counters:            curl -s http://127.0.0.1:$PORT/_stats"
    say "  misbehave:           curl -X POST 'http://127.0.0.1:$PORT/_control?status=500&count=3'   (then bv_cdc.stats, bv_cdc.webhook_spool)"
}

cmd_start() {
    if running; then
        say "already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"
    else
        if [ ! -x "$RECEIVER" ]; then
            warn "$RECEIVER is missing (run make build); no webhook receiver"
            return 0
        fi
        port_busy "$PORT" && die "port $PORT on 127.0.0.1 is in use; choose another: make run BV_WEBHOOK_PORT=$((PORT + 1))"
        mkdir -p "$DIR"
        secret
        : >"$OUT"
        nohup "$RECEIVER" --port "$PORT" --secret-file "$SECRET_FILE" --log "$LOG" \
            >>"$OUT" 2>"$DIR/receiver.err" </dev/null &
        echo $! >"$PIDFILE"
        for _ in $(seq 100); do
            [ -s "$OUT" ] && break
            running || die "the receiver exited; see $DIR/receiver.err"
            sleep 0.1
        done
        [ -s "$OUT" ] || die "the receiver did not start; see $DIR/receiver.err"
        say "started on 127.0.0.1:$PORT"
    fi
    secret
    configure_demo
}

peer_main "$@"
