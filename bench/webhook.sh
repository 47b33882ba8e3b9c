#!/usr/bin/env bash
# bench/webhook.sh: bv_cdc webhook delivery (make bench-webhook).
#
# The receiver is tests/tools/bv_webhook_receiver on 127.0.0.1: HTTP/1.1
# keep-alive, and it verifies the BV-Signature (HMAC-SHA256) of every
# request; the sink uses its defaults (max_concurrency 16).
#
# 1. Throughput: ROWS single-row inserts committed in TXNS transactions
#    while the sink is paused; then the time from resume until the receiver
#    has answered 200 to ROWS distinct events (BV-Event-Id), every one with
#    a verified signature: deliveries_per_s.  Target: >= 5,000/s.
# 2. Latency: single-row inserts at a steady RATE changes/s (pgbench -R);
#    for each delivery the receiver records the time from the change's
#    commit (the envelope's source.ts_us) to the moment it received the
#    request (both clocks are this machine's): p50_ms, p99_ms.  This is
#    commit -> receipt, including decoding, the worker's batching and the
#    HTTP round trip, not including the receiver's answer.
#
# Progress on stderr; one JSON line on stdout.  BENCH_SCALE=small: 10k rows
# in 20 transactions and 3 s of latency (well under a minute); default: 50k
# rows in 100 transactions and 15 s.
# shellcheck source=/dev/null
source "$BV_TOP/tools/lib.sh"
bv_pgbin
# shellcheck source=include/cdc-load.sh
source "$BV_TOP/bench/include/cdc-load.sh"
export BV_EXTENSIONS=${BV_EXTENSIONS:-bv_core bv_cdc}

if [ "${BENCH_SCALE:-default}" = small ]; then
    ROWS=10000 TXNS=20 LAT_SECONDS=3
else
    ROWS=50000 TXNS=100 LAT_SECONDS=15
fi
RATE=1000
OUT=$BV_BENCH_OUT
say() { printf 'bench-webhook: %s\n' "$*" >&2; }

# The cluster needs the secrets master key before it starts.
(umask 077; head -c 32 /dev/urandom >"$OUT/master.key")
export BV_MASTER_KEY_FILE=$OUT/master.key
bv_throwaway_cluster "$OUT/cluster" 58100

RECEIVER_PID=
cleanup() {
    [ -n "$RECEIVER_PID" ] && kill "$RECEIVER_PID" 2>/dev/null
    bv_throwaway_stop "$OUT/cluster"
}
trap cleanup EXIT

(umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$OUT/secret")
"$BV_TOP/tests/tools/bv_webhook_receiver" --port 0 --secret-file "$OUT/secret" --quiet \
    --latency "$OUT/latency.txt" >"$OUT/receiver.out" 2>"$OUT/receiver.err" &
RECEIVER_PID=$!
for _ in $(seq 100); do [ -s "$OUT/receiver.out" ] && break; sleep 0.1; done
ADDR=$(head -1 "$OUT/receiver.out")
[ -n "$ADDR" ] || bv_die "the receiver did not start; see $OUT/receiver.err"
say "receiver at http://$ADDR/hook"

stat_of() {    # stat_of FIELD: a counter of the receiver
    curl -s "http://$ADDR/_stats" | sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p"
}

wait_acked() {    # wait_acked N [seconds]: the receiver answered 2xx to N distinct events
    for _ in $(seq $((${2:-120} * 20))); do
        [ "$(stat_of distinct_acked)" -ge "$1" ] && return 0
        sleep 0.05
    done
    bv_die "timed out waiting for $1 deliveries (receiver: $(curl -s "http://$ADDR/_stats"))"
}

BV_WEBHOOK_SECRET=$(cat "$OUT/secret") psql_q -v url="http://$ADDR/hook" >/dev/null <<'SQL'
\getenv secret BV_WEBHOOK_SECRET
SELECT bv.secret_set('cdc.bench', :'secret') \g /dev/null
CREATE TABLE public.bench (id bigint PRIMARY KEY, payload text NOT NULL);
CREATE TABLE public.lat (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, payload text);
SELECT bv_cdc.add_sink('bench', 'webhook', jsonb_build_object('url', :'url', 'secret', 'cdc.bench'));
SELECT bv_cdc.add_route('public.bench', 'bench');
SELECT bv_cdc.add_route('public.lat', 'bench');
SQL
wait_for "SELECT worker_state = 'streaming' FROM bv_cdc.stats WHERE sink = 'bench'"
# Warm-up: the connections exist before timing.
psql_q -c "INSERT INTO public.bench VALUES (0, 'warm-up')"
wait_acked 1

# ---- 1. throughput ----
pause_sink bench
say "committing $ROWS changes in $TXNS transactions"
load_rows "$ROWS" "$TXNS"
BASE=$(stat_of distinct_acked)
say "bv_cdc: resume and wait for $ROWS signed deliveries"
t2=$(now)
psql_q -c "SELECT bv_cdc.resume('bench')" >/dev/null
wait_acked $((BASE + ROWS)) 600
t3=$(now)
REQUESTS=$(stat_of requests)
BAD=$(stat_of bad_signature)
[ "$BAD" = 0 ] || bv_die "$BAD requests failed signature verification"

# ---- 2. latency at a steady rate ----
say "latency: $RATE changes/s for $LAT_SECONDS s"
for _ in $(seq 20); do psql_q -c "INSERT INTO public.lat (payload) VALUES ('warm-up')" >/dev/null; done
wait_acked $((BASE + ROWS + 20))
WARM=$(wc -l <"$OUT/latency.txt")
echo "INSERT INTO public.lat (payload) VALUES ('x');" >"$OUT/lat.sql"
"$PGBIN/pgbench" -n -c 4 -j 2 -R "$RATE" -T "$LAT_SECONDS" -f "$OUT/lat.sql" bitvelocity \
    >"$OUT/pgbench.log" 2>&1 || { cat "$OUT/pgbench.log" >&2; bv_die "pgbench failed"; }
TPS=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$OUT/pgbench.log" | head -1)
LAT_ROWS=$(psql_q -c "SELECT count(*) FROM public.lat")
wait_acked $((BASE + ROWS + LAT_ROWS))

tail -n +"$((WARM + 1))" "$OUT/latency.txt" | sort -n >"$OUT/latency.sorted"
N=$(wc -l <"$OUT/latency.sorted")
pct() { sed -n "$(( (N * $1 + 99) / 100 ))p" "$OUT/latency.sorted"; }
P50=$(pct 50)
P99=$(pct 99)

python3 - "$ROWS" "$TXNS" "$t2" "$t3" "$P50" "$P99" "$N" "${TPS:-0}" "$REQUESTS" <<'PY'
import json, os, sys
rows, txns = int(sys.argv[1]), int(sys.argv[2])
t2, t3 = float(sys.argv[3]), float(sys.argv[4])
print(json.dumps({
    "bench": "webhook", "scale": os.environ.get("BENCH_SCALE", "default"),
    "commit": os.environ.get("BV_COMMIT", "unknown"),
    "rows": rows, "transactions": txns,
    "deliveries_per_s": round(rows / (t3 - t2)), "target_per_s": 5000,
    "requests": int(sys.argv[9]), "signatures_verified": "all",
    "latency_rate_per_s": round(float(sys.argv[8])), "latency_samples": int(sys.argv[7]),
    "p50_ms": round(float(sys.argv[5]), 2), "p99_ms": round(float(sys.argv[6]), 2),
    "latency_measures": "commit (source.ts_us) to receipt at the receiver",
}))
PY
