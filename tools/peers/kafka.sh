#!/usr/bin/env bash
# tools/peers/kafka.sh start|stop|status: the Kafka peer of `make run`.
#
# Starts librdkafka's mock Kafka cluster (tests/tools/bv_kafka_mock, an
# in-memory broker on 127.0.0.1) in the background under $BV_HOME/kafka,
# points bv_cdc's demo sink at it, routes the demo table public.cdc_demo to
# topic bv.public.cdc_demo, and prints a kcat command that shows the changes
# arriving.  Idempotent: a running mock is left running.  Called by
# tools/cluster.sh after the database started (env: BV_HOME, SOCK, BV_DB,
# PGBIN).  The mock keeps messages in memory only: a restart empties it.
set -euo pipefail

BV_TOP=$(cd "$(dirname "$0")/../.." && pwd)
BV_DB=${BV_DB:-bitvelocity}
SOCK=${SOCK:?SOCK (the socket directory) is not set}
DIR=${BV_HOME:?BV_HOME is not set}/kafka
PIDFILE=$DIR/mock.pid
ADDRFILE=$DIR/bootstrap
LOG=$DIR/mock.log
MOCK=$BV_TOP/tests/tools/bv_kafka_mock
TOPIC=bv.public.cdc_demo

PEER=kafka
STOP_FILES=$ADDRFILE
# shellcheck source=lib/peer.sh
source "$(dirname "$0")/lib/peer.sh"

configure_demo() {
    local boot=$1
    if [ "$(psql_bv -c "SELECT count(*) FROM pg_extension WHERE extname = 'bv_cdc'")" != 1 ]; then
        say "bv_cdc is not installed in $BV_DB; no demo route"
        return 0
    fi
    psql_bv -v boot="$boot" >/dev/null <<'SQL'
CREATE TABLE IF NOT EXISTS public.cdc_demo (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    note text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
COMMENT ON TABLE public.cdc_demo IS 'bv_cdc demo table (make run): its changes go to Kafka topic bv.public.cdc_demo.';
SELECT CASE WHEN EXISTS (SELECT 1 FROM bv_cdc.sinks WHERE name = 'demo')
            THEN format('SELECT bv_cdc.alter_sink(%L, %L)', 'demo', jsonb_build_object('bootstrap.servers', :'boot'))
            ELSE format('SELECT bv_cdc.add_sink(%L, %L, %L)', 'demo', 'kafka', jsonb_build_object('bootstrap.servers', :'boot'))
       END \gexec
SELECT format('SELECT bv_cdc.add_route(%L, %L)', 'public.cdc_demo', 'demo')
 WHERE NOT EXISTS (SELECT 1 FROM bv_cdc.routes WHERE table_pattern = 'public.cdc_demo' AND sink = 'demo') \gexec
-- Commerce: order and payment changes (topics bv.commerce.orders, bv.commerce.payments).
SELECT format('SELECT bv_cdc.add_route(%L, %L)', t, 'demo')
  FROM unnest(ARRAY['commerce.orders', 'commerce.payments']) t
 WHERE EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'bv_commerce')
   AND NOT EXISTS (SELECT 1 FROM bv_cdc.routes WHERE table_pattern = t AND sink = 'demo') \gexec
-- Social: domain events of the outbox (topic bv.social.events).
SELECT 'SELECT social.route_events(''demo'')'
 WHERE EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'bv_social')
   AND NOT EXISTS (SELECT 1 FROM bv_cdc.routes WHERE table_pattern = 'social.outbox' AND sink = 'demo') \gexec
SQL
    # The worker creates its replication slot a few seconds after it sees
    # the extension (before it starts any sink); changes made before that
    # are not streamed.  Report ready only once the slot exists, so that
    # the first demo change is caught even while another peer (mosquitto)
    # is still starting.
    local _
    for _ in $(seq 150); do
        [ "$(psql_bv -c "SELECT count(*) FROM pg_replication_slots WHERE slot_name = current_setting('bv_cdc.slot_name')")" = 1 ] && return 0
        sleep 0.2
    done
    warn "bv_cdc has no replication slot yet; see bv_cdc.worker() and the server log"
}

show() {
    local boot
    boot=$(cat "$ADDRFILE")
    say "mock Kafka running (pid $(cat "$PIDFILE")), bootstrap $boot, log $LOG"
    say "  watch changes:  kcat -b $boot -C -t $TOPIC -f 'key %k  headers %h\\n%s\\n\\n'"
    say "  make a change:  $PGBIN/psql -h $SOCK -p ${BV_PORT:-5440} -U postgres $BV_DB -c \"INSERT INTO public.cdc_demo (note) VALUES ('hello')\""
    say "  order events:   kcat -b $boot -C -t bv.commerce.orders -f '%k %s\\n'   (and bv.commerce.payments)"
    say "  social events:  kcat -b $boot -C -t bv.social.events -f '%s\\n'"
}

cmd_start() {
    if running; then
        say "already running (pid $(cat "$PIDFILE")), bootstrap $(cat "$ADDRFILE")"
    else
        if [ ! -x "$MOCK" ]; then
            printf 'kafka: warning: %s is missing (run make build); no mock Kafka\n' "$MOCK" >&2
            return 0
        fi
        mkdir -p "$DIR"
        rm -f "$ADDRFILE.new"
        nohup "$MOCK" >"$ADDRFILE.new" 2>"$LOG" </dev/null &
        echo $! >"$PIDFILE"
        for _ in $(seq 100); do
            [ -s "$ADDRFILE.new" ] && break
            sleep 0.1
        done
        [ -s "$ADDRFILE.new" ] || die "the mock did not start; see $LOG"
        head -1 "$ADDRFILE.new" >"$ADDRFILE"
        rm -f "$ADDRFILE.new"
        say "started"
    fi
    configure_demo "$(cat "$ADDRFILE")"
}

peer_main "$@"
