#!/usr/bin/env bash
# tools/peers/mqtt.sh start|stop|status: the MQTT peer of `make run`.
#
# Starts mosquitto on 127.0.0.1:$BV_MQTT_PORT (default 18830) with its
# configuration, persistence and log under $BV_HOME/mqtt, adds bv_cdc's sink
# demo_mqtt pointing at it, routes the demo table public.cdc_demo (and, with
# bv_commerce, commerce.orders and commerce.payments) to it on the default
# topics bv/<schema>/<table>/<key>, and prints a mosquitto_sub command that
# shows the changes arriving.  Idempotent: a running broker is left running,
# an existing sink is re-pointed.  Called by tools/cluster.sh after the
# database started (env: BV_HOME, SOCK, BV_DB, BV_PORT, PGBIN).
set -euo pipefail

BV_DB=${BV_DB:-bitvelocity}
SOCK=${SOCK:?SOCK (the socket directory) is not set}
DIR=${BV_HOME:?BV_HOME is not set}/mqtt
PORT=${BV_MQTT_PORT:-18830}
PIDFILE=$DIR/mosquitto.pid
CONF=$DIR/mosquitto.conf
LOG=$DIR/mosquitto.log
SINK=demo_mqtt

PEER=mqtt
# shellcheck source=lib/peer.sh
source "$(dirname "$0")/lib/peer.sh"

write_conf() {
    mkdir -p "$DIR"
    cat >"$CONF" <<EOF
# written by tools/peers/mqtt.sh at each start
listener $PORT 127.0.0.1
allow_anonymous true
user $(id -un)
persistence true
persistence_location $DIR/
autosave_interval 60
max_queued_messages 100000
log_dest file $LOG
log_type error
log_type warning
log_type notice
log_type information
EOF
}

configure_demo() {
    local out
    if [ "$(psql_bv -c "SELECT count(*) FROM pg_extension WHERE extname = 'bv_cdc'")" != 1 ]; then
        say "bv_cdc is not installed in $BV_DB; no demo sink"
        return 0
    fi
    if [ "$(psql_bv -c "SELECT pg_get_constraintdef(oid) LIKE '%mqtt%' FROM pg_constraint WHERE conname = 'sinks_kind_check' AND conrelid = 'bv_cdc.sinks'::regclass")" != t ]; then
        warn "the installed bv_cdc ($(psql_bv -c "SELECT extversion FROM pg_extension WHERE extname = 'bv_cdc'")) has no MQTT sinks; no demo sink (make install, then make run)"
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
            ELSE format('SELECT bv_cdc.add_sink(%L, %L, %L)', :'sink', 'mqtt',
                        jsonb_build_object('host', '127.0.0.1', 'port', :port))
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
    say "sink $SINK routes public.cdc_demo$(psql_bv -c "SELECT CASE WHEN count(*) > 0 THEN ', commerce.orders, commerce.payments' ELSE '' END FROM pg_extension WHERE extname = 'bv_commerce'") to mosquitto"
}

show() {
    say "mosquitto running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT, log $LOG"
    say "  watch changes:  mosquitto_sub -h 127.0.0.1 -p $PORT -q 1 -v -t 'bv/#'"
    say "  make a change:  $PGBIN/psql -h $SOCK -p ${BV_PORT:-5440} -U postgres $BV_DB -c \"INSERT INTO public.cdc_demo (note) VALUES ('hello')\""
}

cmd_start() {
    if running; then
        say "already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"
    else
        if ! command -v mosquitto >/dev/null; then
            warn "mosquitto is not installed (make deps); no MQTT peer"
            return 0
        fi
        port_busy "$PORT" && die "port $PORT on 127.0.0.1 is in use; choose another: make run BV_MQTT_PORT=$((PORT + 1))"
        write_conf
        nohup mosquitto -c "$CONF" >>"$DIR/mosquitto.out" 2>&1 </dev/null &
        echo $! >"$PIDFILE"
        for _ in $(seq 100); do
            port_busy "$PORT" && break
            running || die "mosquitto exited; see $LOG and $DIR/mosquitto.out"
            sleep 0.1
        done
        port_busy "$PORT" || die "mosquitto does not listen on 127.0.0.1:$PORT; see $LOG"
        say "started on 127.0.0.1:$PORT"
    fi
    configure_demo
}

peer_main "$@"
