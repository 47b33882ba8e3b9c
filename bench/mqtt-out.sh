#!/usr/bin/env bash
# bench/mqtt-out.sh: bv_cdc publishing to MQTT at QoS 1 (make bench-mqtt-out).
#
# mosquitto 2.0 on 127.0.0.1 (no persistence, no queue limits) and one
# QoS 1 subscriber (mosquitto_sub) on bv/#.  ROWS single-row inserts are
# committed in TXNS transactions while the sink is paused; then, from
# resume:
#   messages_per_s  ROWS / time until bv_cdc.stats counts ROWS more events
#                   acknowledged by the broker (PUBACK): the worker's rate.
#                   Target: >= 30,000/s.
#   received_per_s  ROWS / time until the subscriber has received them all
#                   (end to end through the broker, on the same 2 cores).
# The subscriber's distinct topics (one per row: bv/public/bench/<id>) are
# checked to be ROWS: nothing lost.
#
# BENCH_MQTT_SUBSCRIBER=0 leaves the subscriber out (the broker then drops
# the messages): the worker's rate without a consumer sharing the 2 cores.
#
# Progress on stderr; one JSON line on stdout.  BENCH_SCALE=small: 20k rows
# in 20 transactions (well under a minute); default: 200k rows in 200.
# shellcheck source=/dev/null
source "$BV_TOP/tools/lib.sh"
bv_pgbin
# shellcheck source=include/cdc-load.sh
source "$BV_TOP/bench/include/cdc-load.sh"
export BV_EXTENSIONS=${BV_EXTENSIONS:-bv_core bv_cdc}

if [ "${BENCH_SCALE:-default}" = small ]; then
    ROWS=20000 TXNS=20
else
    ROWS=200000 TXNS=200
fi
OUT=$BV_BENCH_OUT
say() { printf 'bench-mqtt-out: %s\n' "$*" >&2; }

bv_throwaway_cluster "$OUT/cluster" 58200

BROKER_PID= SUB_PID=
cleanup() {
    [ -n "$SUB_PID" ] && kill "$SUB_PID" 2>/dev/null
    [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null
    bv_throwaway_stop "$OUT/cluster"
}
trap cleanup EXIT

PORT=$(bv_free_port 18900)
cat >"$OUT/mosquitto.conf" <<EOF
listener $PORT 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
max_queued_bytes 0
max_inflight_messages 1000
log_dest file $OUT/mosquitto.log
log_type error
log_type warning
EOF
mosquitto -c "$OUT/mosquitto.conf" >"$OUT/mosquitto.out" 2>&1 &
BROKER_PID=$!
for _ in $(seq 100); do bv_port_busy "$PORT" && break; sleep 0.1; done
bv_port_busy "$PORT" || bv_die "mosquitto did not start; see $OUT/mosquitto.log"
say "mosquitto at 127.0.0.1:$PORT"

SUBSCRIBER=${BENCH_MQTT_SUBSCRIBER:-1}
if [ "$SUBSCRIBER" = 1 ]; then
    mosquitto_sub -h 127.0.0.1 -p "$PORT" -q 1 -t 'bv/#' -t 'bvbench/probe' -F '%t' \
        >"$OUT/received.txt" 2>"$OUT/sub.err" &
    SUB_PID=$!
    for _ in $(seq 100); do
        mosquitto_pub -h 127.0.0.1 -p "$PORT" -q 1 -t bvbench/probe -m probe
        [ -s "$OUT/received.txt" ] && break
        sleep 0.1
    done
    [ -s "$OUT/received.txt" ] || bv_die "the subscriber did not subscribe; see $OUT/sub.err"
fi

received() { grep -c '^bv/public/bench/' "$OUT/received.txt" || true; }

psql_q >/dev/null <<SQL
CREATE TABLE public.bench (id bigint PRIMARY KEY, payload text NOT NULL);
SELECT bv_cdc.add_sink('bench', 'mqtt', '{"host": "127.0.0.1", "port": $PORT}');
SELECT bv_cdc.add_route('public.bench', 'bench');
SQL
wait_for "SELECT worker_state = 'streaming' FROM bv_cdc.stats WHERE sink = 'bench'"
psql_q -c "INSERT INTO public.bench VALUES (0, 'warm-up')"
wait_for "SELECT events >= 1 FROM bv_cdc.stats WHERE sink = 'bench'"

pause_sink bench
say "committing $ROWS changes in $TXNS transactions"
load_rows "$ROWS" "$TXNS"

say "bv_cdc: resume and wait for $ROWS PUBACKs"
t2=$(now)
resume_and_drain bench "$ROWS"
t3=$(now)
t4=0 GOT=0 DISTINCT=0
if [ "$SUBSCRIBER" = 1 ]; then
    say "waiting for the subscriber"
    for _ in $(seq 6000); do
        [ "$(received)" -ge $((ROWS + 1)) ] && break
        sleep 0.05
    done
    t4=$(now)
    GOT=$(received)
    DISTINCT=$(grep '^bv/public/bench/' "$OUT/received.txt" | sort -u | wc -l)
    [ "$DISTINCT" -ge $((ROWS + 1)) ] || bv_die "the subscriber received $DISTINCT distinct rows of $((ROWS + 1))"
fi

python3 - "$ROWS" "$TXNS" "$t2" "$t3" "$t4" "$GOT" "$DISTINCT" <<'PY'
import json, os, sys
rows, txns = int(sys.argv[1]), int(sys.argv[2])
t2, t3, t4 = map(float, sys.argv[3:6])
sub = t4 > 0
print(json.dumps({
    "bench": "mqtt-out", "scale": os.environ.get("BENCH_SCALE", "default"),
    "commit": os.environ.get("BV_COMMIT", "unknown"),
    "rows": rows, "transactions": txns, "qos": 1,
    "messages_per_s": round(rows / (t3 - t2)), "target_per_s": 30000,
    "subscriber": sub,
    "received_per_s": round(rows / (t4 - t2)) if sub else None,
    "received": int(sys.argv[6]) - 1 if sub else None,
    "lost": rows + 1 - int(sys.argv[7]) if sub else None,
}))
PY
