#!/usr/bin/env bash
# bench/iot.sh: MQTT telemetry into iot.telemetry through bv_iot's bridge
# (make bench-iot), against COPY of the same rows into the same table.
#
# A throw-away cluster with the suite's configuration and a mosquitto that
# enforces device identity (password file + ACL from iot.devices, as `make
# run`).  PUBLISHERS C publishers (tests/tools/bv_iot_pub, libmosquitto,
# QoS 1, 1000 messages in flight each), each a provisioned device on its own
# topic, publish at full speed; the clock runs from the first publish until
# every reading is in iot.telemetry (the bridge acknowledges a message only
# after its batch committed).  Two workloads:
#   single_rows_per_s  ROWS messages of one reading each
#   batch_rows_per_s   ROWS/50 messages of 50 readings each
#   copy_rows_per_s    COPY of ROWS rows (the same shape) into iot.telemetry,
#                      the ceiling: the same table, partitions, unique index,
#                      BRIN, no MQTT, no validation (written by us here)
#   single_ratio, batch_ratio  each / copy_rows_per_s (targets 0.12, 0.40)
#   lost               readings acknowledged by the broker but not in the
#                      table (must be 0; nothing was quarantined either)
# Progress on stderr; one JSON line on stdout.  BENCH_SCALE=small: 20k rows.
# shellcheck source=/dev/null
source "$BV_TOP/tools/lib.sh"
bv_pgbin
# shellcheck source=include/cdc-load.sh
source "$BV_TOP/bench/include/cdc-load.sh"
export BV_EXTENSIONS=${BV_EXTENSIONS:-bv_core bv_audit bv_iot}

if [ "${BENCH_SCALE:-default}" = small ]; then ROWS=20000; else ROWS=200000; fi
PUBLISHERS=${BENCH_IOT_PUBLISHERS:-4}
OUT=$BV_BENCH_OUT
say() { printf 'bench-iot: %s\n' "$*" >&2; }

PUB=$OUT/bv_iot_pub
cc -O2 -o "$PUB" "$BV_TOP/tests/tools/bv_iot_pub.c" -lmosquitto || bv_die "cannot build bv_iot_pub"

# The bridge's broker password lives in bv.secrets: the cluster needs a
# master key.
mkdir -p "$OUT/key"
head -c 32 /dev/urandom >"$OUT/key/master.key"
chmod 600 "$OUT/key/master.key"
export BV_MASTER_KEY_FILE=$OUT/key/master.key
bv_throwaway_cluster "$OUT/cluster" 58300
BROKER_PID=
cleanup() {
    [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null
    bv_throwaway_stop "$OUT/cluster"
}
trap cleanup EXIT

PORT=$(bv_free_port 18950)
BRIDGE_PW=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')
declare -A SECRET
for i in $(seq "$PUBLISHERS"); do
    SECRET[$i]=$(psql_q -c "SELECT secret FROM iot.provision_device('bench-$i')")
done
psql_q -c "SELECT * FROM iot.mosquitto_passwd('bv_iot_bridge', '$BRIDGE_PW')" >"$OUT/passwd"
psql_q -c "SELECT * FROM iot.mosquitto_acl('bv_iot_bridge')" >"$OUT/acl"
cat >"$OUT/mosquitto.conf" <<CONF
listener $PORT 127.0.0.1
allow_anonymous false
password_file $OUT/passwd
acl_file $OUT/acl
persistence false
max_queued_messages 0
max_queued_bytes 0
max_inflight_messages 0
log_dest file $OUT/mosquitto.log
log_type error
log_type warning
CONF
mosquitto -c "$OUT/mosquitto.conf" >"$OUT/mosquitto.out" 2>&1 &
BROKER_PID=$!
for _ in $(seq 100); do bv_port_busy "$PORT" && break; sleep 0.1; done
bv_port_busy "$PORT" || bv_die "mosquitto did not start; see $OUT/mosquitto.log"
psql_q >/dev/null <<SQL
SELECT bv.secret_set('iot_bridge_password', '$BRIDGE_PW');
UPDATE iot.bridge_config SET enabled = true, port = $PORT, username = 'bv_iot_bridge',
       password_secret = 'iot_bridge_password', batch_size = 2000, batch_ms = 50;
SQL
wait_for "SELECT state = 'running' FROM iot.bridge_stats"
say "bridge subscribed to mosquitto at 127.0.0.1:$PORT"

START=$(($(date +%s) - 3600))
# run WORKLOAD READINGS_PER_MESSAGE METRIC: seconds until all ROWS landed.
run() {
    local per=$1 metric=$2 msgs t0 t1 i pids=()
    msgs=$((ROWS / per / PUBLISHERS))
    t0=$(now)
    for i in $(seq "$PUBLISHERS"); do
        "$PUB" -p "$PORT" -u "bench-$i" -P "${SECRET[$i]}" -t "devices/bench-$i/telemetry" \
            -n "$msgs" -b "$per" -s "$START" -m "$metric" >"$OUT/pub_${metric}_$i.out" 2>&1 &
        pids+=($!)
    done
    psql_q -v n="$ROWS" -v m="$metric" >/dev/null <<'SQL' || bv_die "readings of $metric did not all land"
SELECT set_config('bench.n', :'n', false), set_config('bench.m', :'m', false);
DO $$
DECLARE deadline timestamptz := clock_timestamp() + interval '600 seconds';
BEGIN
    WHILE (SELECT count(*) FROM iot.telemetry WHERE metric = current_setting('bench.m'))
          < current_setting('bench.n')::bigint LOOP
        IF clock_timestamp() > deadline THEN RAISE EXCEPTION 'timed out'; END IF;
        PERFORM pg_sleep(0.01);
    END LOOP;
END $$;
SQL
    t1=$(now)
    for p in "${pids[@]}"; do wait "$p" || bv_die "a publisher failed; see $OUT/pub_${metric}_*.out"; done
    python3 -c "print($t1 - $t0)"
}

say "single: $ROWS messages of 1 reading from $PUBLISHERS publishers"
T_SINGLE=$(run 1 single)
say "  ${T_SINGLE}s"
say "batch: $((ROWS / 50)) messages of 50 readings"
T_BATCH=$(run 50 batch)
say "  ${T_BATCH}s"

say "COPY of $ROWS rows into iot.telemetry"
psql_q -c "SELECT 'bench-' || (1 + g % $PUBLISHERS), to_timestamp($START + 100000 + g / 1000.0), 'copy', g FROM generate_series(1, $ROWS) g" \
    -F ',' >"$OUT/copy.csv"
T_COPY=$( { t0=$(now); psql_q -c "\\copy iot.telemetry (device_id, ts, metric, value) FROM '$OUT/copy.csv' WITH (FORMAT csv)"; t1=$(now); python3 -c "print($t1 - $t0)"; } )
say "  ${T_COPY}s"

LANDED=$(psql_q -c "SELECT count(*) FROM iot.telemetry WHERE metric IN ('single', 'batch')")
QUAR=$(psql_q -c "SELECT count(*) FROM iot.quarantine")
STATS=$(psql_q -c "SELECT row_to_json(s) FROM iot.bridge_stats s")
say "bridge: $STATS"

python3 - "$ROWS" "$T_SINGLE" "$T_BATCH" "$T_COPY" 0 "$LANDED" "$QUAR" "$PUBLISHERS" <<'PY'
import json, os, sys
rows = int(sys.argv[1]); ts, tb, tc = map(float, sys.argv[2:5])
landed, quar, pubs = int(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])
single, batch, copy = rows / ts, rows / tb, rows / tc
print(json.dumps({
    "bench": "iot", "scale": os.environ.get("BENCH_SCALE", "default"),
    "commit": os.environ.get("BV_COMMIT", "unknown"), "rows": rows, "publishers": pubs, "qos": 1,
    "single_rows_per_s": round(single), "batch_rows_per_s": round(batch), "copy_rows_per_s": round(copy),
    "single_ratio": round(single / copy, 3), "batch_ratio": round(batch / copy, 3),
    "target_single_ratio": 0.12, "target_batch_ratio": 0.40,
    "lost": 2 * rows - landed, "quarantined": quar,
}))
PY
