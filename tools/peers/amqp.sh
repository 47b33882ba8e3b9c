#!/usr/bin/env bash
# tools/peers/amqp.sh start|stop|status: the AMQP (RabbitMQ) peer of `make run`.
#
# Starts rabbitmq-server as node bvrun<port>@localhost on 127.0.0.1:$BV_AMQP_PORT
# (default 15672), everything it writes (Mnesia, logs, Erlang cookie, its own
# epmd on port+2) under $BV_HOME/amqp, binds the durable queue cdc_demo to
# amq.topic with "bv.#" (tests/tools/bv_amqp_tool, built by make build) once
# the broker is up, adds bv_cdc's sink demo_amqp and routes the demo table
# public.cdc_demo (and, with bv_commerce, commerce.orders and
# commerce.payments) to it on routing keys bv.<schema>.<table>, on_return =
# retry.  RabbitMQ takes 5-40 s to start; make run does not wait for it.
# Idempotent.  Called by tools/cluster.sh after the database started (env:
# BV_HOME, SOCK, BV_DB, BV_PORT, PGBIN).
set -euo pipefail

BV_DB=${BV_DB:-bitvelocity}
SOCK=${SOCK:?SOCK (the socket directory) is not set}
DIR=${BV_HOME:?BV_HOME is not set}/amqp
PORT=${BV_AMQP_PORT:-15672}
PIDFILE=$DIR/rabbit.pid
SINK=demo_amqp
TOOL=$(cd "$(dirname "$0")/../.." && pwd)/tests/tools/bv_amqp_tool

PEER=amqp
# shellcheck source=lib/peer.sh
source "$(dirname "$0")/lib/peer.sh"

rabbit_env() {
    export HOME=$DIR RABBITMQ_NODENAME=bvrun$PORT@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT=$PORT RABBITMQ_DIST_PORT=$((PORT + 1)) ERL_EPMD_PORT=$((PORT + 2)) \
        RABBITMQ_MNESIA_BASE=$DIR/mnesia RABBITMQ_LOG_BASE=$DIR/log RABBITMQ_LOGS=$DIR/log/rabbit.log \
        RABBITMQ_ENABLED_PLUGINS_FILE=$DIR/enabled_plugins RABBITMQ_CONFIG_FILE=$DIR/rabbitmq \
        RABBITMQ_ADVANCED_CONFIG_FILE=$DIR/advanced.config RABBITMQ_CONF_ENV_FILE=$DIR/rabbitmq-env.conf \
        RABBITMQ_PID_FILE=$PIDFILE
}

configure_demo() {
    local out
    if [ "$(psql_bv -c "SELECT pg_get_constraintdef(oid) LIKE '%amqp%' FROM pg_constraint WHERE conname = 'sinks_kind_check' AND conrelid = 'bv_cdc.sinks'::regclass" 2>/dev/null)" != t ]; then
        say "the installed bv_cdc has no AMQP sinks (make install, then make run); no demo sink"
        return 0
    fi
    if ! out=$(psql_bv -v port="$PORT" -v sink="$SINK" 2>&1 <<'SQL'
CREATE TABLE IF NOT EXISTS public.cdc_demo (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    note text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
SELECT CASE WHEN EXISTS (SELECT 1 FROM bv_cdc.sinks WHERE name = :'sink')
            THEN format('SELECT bv_cdc.alter_sink(%L, %L)', :'sink',
                        jsonb_build_object('host', '127.0.0.1', 'port', :port))
            ELSE format('SELECT bv_cdc.add_sink(%L, %L, %L)', :'sink', 'amqp',
                        jsonb_build_object('host', '127.0.0.1', 'port', :port))
       END \gexec
SELECT format('SELECT bv_cdc.add_route(%L, %L, options => %L)', t, :'sink', '{"on_return": "retry"}')
  FROM unnest(ARRAY['public.cdc_demo', 'commerce.orders', 'commerce.payments']) t
 WHERE (t = 'public.cdc_demo' OR EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'bv_commerce'))
   AND NOT EXISTS (SELECT 1 FROM bv_cdc.routes WHERE table_pattern = t AND sink = :'sink') \gexec
SQL
    ); then
        warn "could not add the demo sink $SINK: $out"
        return 0
    fi
    say "sink $SINK routes the demo tables to RabbitMQ (queue cdc_demo)"
}

show() {
    say "rabbitmq-server running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT, logs $DIR/log"
    say "  watch changes:  $TOOL consume 127.0.0.1 $PORT cdc_demo"
}

cmd_start() {
    if running; then
        say "already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"
    elif [ -f "$DIR/wrapper.pid" ] && kill -0 "$(cat "$DIR/wrapper.pid")" 2>/dev/null; then
        say "already starting (pid $(cat "$DIR/wrapper.pid")) on 127.0.0.1:$PORT"
    elif port_busy "$PORT"; then
        die "port $PORT on 127.0.0.1 is in use; choose another: make run BV_AMQP_PORT=$((PORT + 3))"
    else
        if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
            warn "rabbitmq-server is not installed (make deps); no AMQP peer"
            return 0
        fi
        mkdir -p "$DIR"
        echo '[].' >"$DIR/enabled_plugins"
        echo 'loopback_users = none' >"$DIR/rabbitmq.conf"
        : >"$DIR/rabbitmq-env.conf"
        (rabbit_env; nohup /usr/lib/rabbitmq/bin/rabbitmq-server >>"$DIR/server.out" 2>&1 </dev/null &
            echo $! >"$DIR/wrapper.pid")
        # RabbitMQ takes 5-40 s to start: make run does not wait for it.  The
        # queue is bound in the background once the port opens; the demo
        # routes use on_return = retry, so changes made before wait (in the
        # slot) instead of being dead-lettered, and the sink retries its
        # start with back-off until the broker is up.
        if [ -x "$TOOL" ]; then
            (for _ in $(seq 1800); do
                port_busy "$PORT" && break
                sleep 0.1
            done
            "$TOOL" bind 127.0.0.1 "$PORT" cdc_demo amq.topic 'bv.#' >>"$DIR/server.out" 2>&1) </dev/null >/dev/null 2>&1 &
        else
            warn "$TOOL is not built (make build); no queue bound, the demo sink will retry"
        fi
        say "starting on 127.0.0.1:$PORT (RabbitMQ needs 5-40 s; logs $DIR/log)"
    fi
    if [ "$(psql_bv -c "SELECT count(*) FROM pg_extension WHERE extname = 'bv_cdc'")" = 1 ]; then
        configure_demo
    else
        say "bv_cdc is not installed in $BV_DB; no demo sink"
    fi
}

# The Erlang VM (its pid file) stops gracefully on SIGTERM; then its epmd.
cmd_stop() {
    local wrapper="" beam
    [ -f "$DIR/wrapper.pid" ] && wrapper=$(cat "$DIR/wrapper.pid")
    if running; then
        kill "$(cat "$PIDFILE")"
        say "stopped"
    elif [ -n "$wrapper" ] && kill -0 "$wrapper" 2>/dev/null; then
        # Still booting (no pid file yet): stop the VM under our wrapper.
        beam=$(pgrep -P "$wrapper" beam.smp || true)
        kill "${beam:-$wrapper}" 2>/dev/null || true
        say "stopped while starting"
    else
        say "not running"
    fi
    # The VM deregisters from epmd when it exits: wait for it (up to 60 s).
    for _ in $(seq 600); do
        { running || { [ -n "$wrapper" ] && kill -0 "$wrapper" 2>/dev/null; }; } || break
        sleep 0.1
    done
    rm -f "$DIR/wrapper.pid"
    # An immediate start refuses a busy port: wait until the VM let go of it
    # (up to 10 s).
    for _ in $(seq 100); do
        port_busy "$PORT" || break
        sleep 0.1
    done
    # epmd refuses to stop while the node is still registered: retry.
    for _ in $(seq 300); do
        ERL_EPMD_PORT=$((PORT + 2)) epmd -kill 2>/dev/null | grep -q Killed && break
        port_busy $((PORT + 2)) || break
        sleep 0.1
    done
    rm -f "$PIDFILE"
}

peer_main "$@"
