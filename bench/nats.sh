#!/usr/bin/env bash
# bench/nats.sh: bv_cdc publishing to NATS JetStream with acknowledgements
# (make bench-nats).
#
# nats-server -js on 127.0.0.1 with a file-stored stream BENCH on bv.>.
# ROWS single-row inserts are committed in TXNS transactions while the sink
# is paused; then, from resume:
#   messages_per_s  ROWS / time until bv_cdc.stats counts ROWS more events
#                   acknowledged by the stream (PubAck), Nats-Msg-Id set.
#   ceiling_per_s   the same envelopes (read back from the stream) published
#                   by a minimal C publisher (bv_nats_tool publish, libnats)
#                   to the same server and stream, with a reply inbox per
#                   message, the same headers and the same window (4096, the sink's default max_inflight;
#                   BENCH_WINDOW=n for another).
#   ratio           messages_per_s / ceiling_per_s.  Target: >= 0.7 and
#                   >= 30,000 messages/s.
#   lost            rows missing from the stream (distinct keys).
# Progress on stderr; one JSON line on stdout.  BENCH_SCALE=small: 20k rows
# in 20 transactions; default: 200k rows in 200.
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
WINDOW=${BENCH_WINDOW:-4096}
OUT=$BV_BENCH_OUT
TOOL=$BV_TOP/tests/tools/bv_nats_tool
say() { printf 'bench-nats: %s\n' "$*" >&2; }
[ -x "$TOOL" ] || make -s -C "$BV_TOP/tests/tools" bv_nats_tool >&2 || bv_die "cannot build $TOOL"

bv_throwaway_cluster "$OUT/cluster" 58300

PORT=$(bv_free_port 19050)
SERVER_PID=
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null
    bv_throwaway_stop "$OUT/cluster"
}
trap cleanup EXIT
nats-server -js -a 127.0.0.1 -p "$PORT" -sd "$OUT/js" -l "$OUT/nats-server.log" &
SERVER_PID=$!
for _ in $(seq 100); do bv_port_busy "$PORT" && break; sleep 0.1; done
bv_port_busy "$PORT" || bv_die "nats-server did not start; see $OUT/nats-server.log"
"$TOOL" stream 127.0.0.1 "$PORT" BENCH 'bv.>' || bv_die "could not create the stream"
say "nats-server -js at 127.0.0.1:$PORT, stream BENCH"

psql_q >/dev/null <<SQL
CREATE TABLE public.bench (id bigint PRIMARY KEY, payload text NOT NULL);
SELECT bv_cdc.add_sink('bench', 'nats', '{"host": "127.0.0.1", "port": $PORT, "stream": "BENCH", "max_inflight": $WINDOW}');
SELECT bv_cdc.add_route('public.bench', 'bench');
SQL
wait_for "SELECT worker_state = 'streaming' AND state = 'up' FROM bv_cdc.stats WHERE sink = 'bench'"
psql_q -c "INSERT INTO public.bench VALUES (0, 'warm-up')"
wait_for "SELECT events >= 1 FROM bv_cdc.stats WHERE sink = 'bench'"

pause_sink bench
say "committing $ROWS changes in $TXNS transactions"
load_rows "$ROWS" "$TXNS"

say "bv_cdc: resume and wait for $ROWS acknowledgements"
t2=$(now)
resume_and_drain bench "$ROWS"
t3=$(now)

"$TOOL" dump 127.0.0.1 "$PORT" BENCH >"$OUT/stream.jsonl" || bv_die "could not read the stream"
python3 - "$OUT/stream.jsonl" "$OUT/bodies.txt" >"$OUT/distinct.txt" <<'PY'
import json, sys
ids, out = set(), open(sys.argv[2], "w")
for line in open(sys.argv[1]):
    m = json.loads(line)
    ids.add(m["body"]["key"]["id"])
    out.write(json.dumps(m["body"], separators=(",", ":"), ensure_ascii=False) + "\n")
print(len(ids))
PY
DISTINCT=$(cat "$OUT/distinct.txt")
head -n "$((ROWS + 1))" "$OUT/bodies.txt" | tail -n "$ROWS" >"$OUT/ceiling.txt"

say "ceiling: bv_nats_tool publishes the same $ROWS envelopes (window $WINDOW)"
CEIL=$("$TOOL" publish 127.0.0.1 "$PORT" bv.public.bench "$OUT/ceiling.txt" "$WINDOW") \
    || bv_die "the ceiling publisher failed: $CEIL"

python3 - "$ROWS" "$TXNS" "$t2" "$t3" "$DISTINCT" "$CEIL" "$WINDOW" <<'PY'
import json, os, sys
rows, txns = int(sys.argv[1]), int(sys.argv[2])
t2, t3 = float(sys.argv[3]), float(sys.argv[4])
ceil = json.loads(sys.argv[6])["per_s"]
rate = rows / (t3 - t2)
print(json.dumps({
    "bench": "nats", "scale": os.environ.get("BENCH_SCALE", "default"),
    "commit": os.environ.get("BV_COMMIT", "unknown"),
    "rows": rows, "transactions": txns, "ack_window": int(sys.argv[7]),
    "messages_per_s": round(rate), "ceiling_per_s": round(ceil),
    "ratio": round(rate / ceil, 2) if ceil else None,
    "target_ratio": 0.7, "target_per_s": 30000,
    "lost": rows + 1 - int(sys.argv[5]),
}))
PY
