#!/usr/bin/env bash
# bench/cdc.sh: bv_cdc throughput and latency (make bench-cdc).
#
# 1. Throughput: ROWS single-row changes committed in TXNS transactions
#    while the sink is paused; then the time until bv_cdc has every one
#    acknowledged by the Kafka mock, against the ceiling measured in the same
#    run on the same WAL: pg_recvlogical with the same wal2json options
#    streaming it to /dev/null (our reference for "decoding alone").
# 2. Latency: single-row inserts at a steady 5,000 changes/s (pgbench -R);
#    a Kafka consumer (tests/tools/bv_kafka_latency) measures, per change,
#    the time from its commit (the envelope's source.ts_us) to receipt.
#
# Progress on stderr; one JSON line on stdout.  BENCH_SCALE=small: 50k rows
# in 100 transactions and 3 s of latency (under 60 s); default: 500k rows in
# 1,000 transactions and 15 s.
# shellcheck source=/dev/null
source "$BV_TOP/tools/lib.sh"
bv_pgbin
# shellcheck source=include/cdc-load.sh
source "$BV_TOP/bench/include/cdc-load.sh"
export BV_EXTENSIONS=${BV_EXTENSIONS:-bv_core bv_cdc}

if [ "${BENCH_SCALE:-default}" = small ]; then
    ROWS=50000 TXNS=100 LAT_SECONDS=3
else
    ROWS=500000 TXNS=1000 LAT_SECONDS=15
fi
RATE=5000
OUT=$BV_BENCH_OUT
say() { printf 'bench-cdc: %s\n' "$*" >&2; }

bv_throwaway_cluster "$OUT/cluster" 58000

MOCK_PID=
cleanup() {
    [ -n "$MOCK_PID" ] && kill "$MOCK_PID" 2>/dev/null
    bv_throwaway_stop "$OUT/cluster"
}
trap cleanup EXIT

"$BV_TOP/tests/tools/bv_kafka_mock" >"$OUT/mock.out" 2>"$OUT/mock.log" &
MOCK_PID=$!
for _ in $(seq 100); do [ -s "$OUT/mock.out" ] && break; sleep 0.1; done
BOOT=$(head -1 "$OUT/mock.out")
say "Kafka mock at $BOOT"

psql_q >/dev/null <<SQL
CREATE TABLE public.bench (id bigint PRIMARY KEY, payload text NOT NULL);
CREATE TABLE public.lat (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, payload text);
SELECT bv_cdc.add_sink('bench', 'kafka', '{"bootstrap.servers": "$BOOT"}');
SELECT bv_cdc.add_route('public.bench', 'bench', 'bench');
SELECT bv_cdc.add_route('public.lat', 'bench', 'lat');
SQL
wait_for "SELECT worker_state = 'streaming' FROM bv_cdc.stats WHERE sink = 'bench'"
# Warm-up: the topic exists and the producer has its id before timing.
psql_q -c "INSERT INTO public.bench VALUES (0, 'warm-up')"
wait_for "SELECT events >= 1 FROM bv_cdc.stats WHERE sink = 'bench'"

# ---- 1. throughput ----
pause_sink bench
psql_q -c "SELECT 1 FROM pg_create_logical_replication_slot('ceiling', 'wal2json')" >/dev/null
say "committing $ROWS changes in $TXNS transactions"
load_rows "$ROWS" "$TXNS"
END_LSN=$(psql_q -c "SELECT pg_current_wal_lsn()")

say "ceiling: pg_recvlogical to /dev/null up to $END_LSN"
t0=$(now)
"$PGBIN/pg_recvlogical" -d bitvelocity --slot ceiling --start --endpos="$END_LSN" -f /dev/null \
    -o format-version=2 -o include-xids=1 -o include-timestamp=1 -o include-lsn=1 \
    -o include-pk=1 -o include-types=0 -o include-typmod=0 -o include-transaction=1 \
    -o add-msg-prefixes=bv.traceparent,bv.watermark -o filter-tables=bv_cdc.\*
t1=$(now)
psql_q -c "SELECT pg_drop_replication_slot('ceiling')" >/dev/null

say "bv_cdc: resume and wait for $ROWS acknowledgements"
t2=$(now)
resume_and_drain bench "$ROWS"
t3=$(now)

# ---- 2. latency at a steady rate ----
say "latency: $RATE changes/s for $LAT_SECONDS s"
"$BV_TOP/tests/tools/bv_kafka_latency" "$BOOT" lat 100000000 5 >"$OUT/latency.txt" 2>"$OUT/latency.log" &
LAT_PID=$!
# Warm up until the consumer receives (joined its group, topic exists).
for _ in $(seq 300); do
    psql_q -c "INSERT INTO public.lat (payload) VALUES ('warm-up')" >/dev/null
    [ -s "$OUT/latency.txt" ] && break
    sleep 0.1
done
sleep 1
WARM=$(wc -l <"$OUT/latency.txt")
echo "INSERT INTO public.lat (payload) VALUES ('x');" >"$OUT/lat.sql"
"$PGBIN/pgbench" -n -c 4 -j 2 -R "$RATE" -T "$LAT_SECONDS" -f "$OUT/lat.sql" bitvelocity \
    >"$OUT/pgbench.log" 2>&1 || { cat "$OUT/pgbench.log" >&2; bv_die "pgbench failed"; }
wait "$LAT_PID" || true
TPS=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$OUT/pgbench.log" | head -1)

tail -n +"$((WARM + 1))" "$OUT/latency.txt" | sort -n >"$OUT/latency.sorted"
N=$(wc -l <"$OUT/latency.sorted")
pct() { sed -n "$(( (N * $1 + 99) / 100 ))p" "$OUT/latency.sorted"; }
P50=$(pct 50)
P99=$(pct 99)

python3 - "$ROWS" "$TXNS" "$t0" "$t1" "$t2" "$t3" "$P50" "$P99" "$N" "${TPS:-0}" <<'PY'
import json, os, sys
rows, txns = int(sys.argv[1]), int(sys.argv[2])
t0, t1, t2, t3 = map(float, sys.argv[3:7])
ceiling = rows / (t1 - t0)
ours = rows / (t3 - t2)
print(json.dumps({
    "bench": "cdc", "scale": os.environ.get("BENCH_SCALE", "default"),
    "commit": os.environ.get("BV_COMMIT", "unknown"),
    "rows": rows, "transactions": txns,
    "changes_per_s": round(ours), "ceiling_per_s": round(ceiling),
    "ratio": round(ours / ceiling, 3),
    "latency_rate_per_s": round(float(sys.argv[10])), "latency_samples": int(sys.argv[9]),
    "p50_ms": round(float(sys.argv[7]), 2), "p99_ms": round(float(sys.argv[8]), 2),
}))
PY
