#!/usr/bin/env bash
# tools/peers/nats.sh start|stop|status: the NATS peer of `make run`.
#
# Starts nats-server with JetStream on 127.0.0.1:$BV_NATS_PORT (default
# 14222), its store and log under $BV_HOME/nats, creates the JetStream
# stream BV for subjects bv.> (tests/tools/bv_nats_tool, built by make
# build), adds bv_cdc's sink demo_nats (JetStream, stream BV) and routes the
# demo table public.cdc_demo (and, with bv_commerce, commerce.orders and
# commerce.payments) to it on the default subjects bv.<schema>.<table>.
# Idempotent.  Called by tools/cluster.sh after the database started (env:
# BV_HOME, SOCK, BV_DB, BV_PORT, PGBIN).
set -euo pipefail

BV_DB=${BV_DB:-bitvelocity}
SOCK=${SOCK:?SOCK (the socket directory) is not set}
DIR=${BV_HOME:?BV_HOME is not set}/nats
PORT=${BV_NATS_PORT:-14222}
PIDFILE=$DIR/nats-server.pid
LOG=$DIR/nats-server.log
SINK=demo_nats
TOOL=$(cd "$(dirname "$0")/../.." && pwd)/tests/tools/bv_nats_tool

PEER=nats
# shellcheck source=lib/peer.sh
source "$(dirname "$0")/lib/peer.sh"

configure_demo() {
    local out
    if [ "$(psql_bv -c "SELECT pg_get_constraintdef(oid) LIKE '%nats%' FROM pg_constraint WHERE conname = 'sinks_kind_check' AND conrelid = 'bv_cdc.sinks'::regclass" 2>/dev/null)" != t ]; then
        say "the installed bv_cdc has no NATS sinks (make install, then make run); no demo sink"
        return 0
    fi
    if [ -x "$TOOL" ]; then
        "$TOOL" stream 127.0.0.1 "$PORT" BV 'bv.>' >/dev/null 2>&1 || true   # exists already: fine
    else
        warn "$TOOL is not built (make build); no JetStream stream, the demo sink will be failed"
    fi
    if ! out=$(psql_bv -v port="$PORT" -v sink="$SINK" 2>&1 <<'SQL'
CREATE TABLE IF NOT EXISTS public.cdc_demo (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    note text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
SELECT CASE WHEN EXISTS (SELECT 1 FROM bv_cdc.sinks WHERE name = :'sink')
            THEN format('SELECT bv_cdc.alter_sink(%L, %L)', :'sink',
                        jsonb_build_object('host', '127.0.0.1', 'port', :port, 'stream', 'BV'))
            ELSE format('SELECT bv_cdc.add_sink(%L, %L, %L)', :'sink', 'nats',
                        jsonb_build_object('host', '127.0.0.1', 'port', :port, 'stream', 'BV'))
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
    say "sink $SINK routes the demo tables to JetStream stream BV"
}

show() {
    say "nats-server running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT (JetStream), log $LOG"
    say "  read the stream:  $TOOL dump 127.0.0.1 $PORT BV"
}

cmd_start() {
    if running; then
        say "already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"
    else
        if ! command -v nats-server >/dev/null; then
            warn "nats-server is not installed (make deps); no NATS peer"
            return 0
        fi
        port_busy "$PORT" && die "port $PORT on 127.0.0.1 is in use; choose another: make run BV_NATS_PORT=$((PORT + 1))"
        mkdir -p "$DIR"
        nohup nats-server -js -a 127.0.0.1 -p "$PORT" -sd "$DIR/js" -l "$LOG" -P "$PIDFILE" \
            >>"$DIR/nats-server.out" 2>&1 </dev/null &
        for _ in $(seq 100); do
            port_busy "$PORT" && break
            sleep 0.1
        done
        port_busy "$PORT" || die "nats-server does not listen on 127.0.0.1:$PORT; see $LOG"
        say "started on 127.0.0.1:$PORT"
    fi
    if [ "$(psql_bv -c "SELECT count(*) FROM pg_extension WHERE extname = 'bv_cdc'")" = 1 ]; then
        configure_demo
    else
        say "bv_cdc is not installed in $BV_DB; no demo sink"
    fi
}

peer_main "$@"
