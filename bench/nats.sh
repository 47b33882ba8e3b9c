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
# in 20 transactions; default: 200k rows in 200 (in BENCH_ROUNDS rounds, see below).
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
# The drain's poller (a backend reading bv_cdc.stats_raw()) runs beside the
# pipeline it times, and the ceiling has none: every 2 ms it took 3-8% of
# the samples of a perf profile of the drain; every 10 ms it costs a fifth
# of that, for at most 10 ms more on a drain of seconds.
export BENCH_POLL_S=${BENCH_POLL_S:-0.01}
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

# Rounds (BENCH_ROUNDS; 3 by default, 1 with BENCH_SCALE=small, where a
# round's fixed cost, resume to first message, would weigh too much): each
# commits ROWS/ROUNDS changes while the sink is paused, times their drain,
# then times the ceiling publisher on round 1's envelopes right after, so
# that both see the machine's load of the same moment; the figures are the
# medians over the rounds, round_ratios each round's.
if [ "${BENCH_SCALE:-default}" = small ]; then ROUNDS=${BENCH_ROUNDS:-1}; else ROUNDS=${BENCH_ROUNDS:-3}; fi
TPER=$(((TXNS + ROUNDS - 1) / ROUNDS))
PER=$((ROWS / ROUNDS / TPER * TPER)) # whole transactions of equal size
TOTAL=$((PER * ROUNDS))
RESULTS=
for r in $(seq "$ROUNDS"); do
    pause_sink bench
    say "round $r: committing $PER changes in $TPER transactions"
    load_rows "$PER" "$TPER" $(((r - 1) * PER))
    say "round $r: bv_cdc: resume and wait for $PER acknowledgements"
    t2=$(now)
    resume_and_drain bench "$PER"
    t3=$(now)
    if [ "$r" = 1 ]; then
        "$TOOL" dump 127.0.0.1 "$PORT" BENCH >"$OUT/stream1.jsonl" || bv_die "could not read the stream"
        python3 - "$OUT/stream1.jsonl" "$PER" >"$OUT/ceiling.txt" <<'PY'
import json, sys
lines = [json.dumps(json.loads(l)["body"], separators=(",", ":"), ensure_ascii=False)
         for l in open(sys.argv[1])]
print("\n".join(lines[1:1 + int(sys.argv[2])]))
PY
    fi
    say "round $r: ceiling: bv_nats_tool publishes $PER envelopes (window $WINDOW)"
    CEIL=$("$TOOL" publish 127.0.0.1 "$PORT" bv.public.bench "$OUT/ceiling.txt" "$WINDOW") \
        || bv_die "the ceiling publisher failed: $CEIL"
    RESULTS="$RESULTS $t2,$t3,$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["per_s"])' "$CEIL")"
done

"$TOOL" dump 127.0.0.1 "$PORT" BENCH >"$OUT/stream.jsonl" || bv_die "could not read the stream"
DISTINCT=$(python3 - "$OUT/stream.jsonl" <<'PY'
import json, sys
print(len({json.loads(l)["body"]["key"]["id"] for l in open(sys.argv[1])}))
PY
)

# shellcheck disable=SC2086 # one argument per round
python3 - "$TOTAL" "$TXNS" "$PER" "$DISTINCT" "$WINDOW" $RESULTS <<'PY'
import json, os, statistics, sys
total, txns, per, distinct, window = map(int, sys.argv[1:6])
rounds = [tuple(map(float, x.split(","))) for x in sys.argv[6:]]
rates = [per / (t3 - t2) for t2, t3, _ in rounds]
ceils = [c for _, _, c in rounds]
ratios = [r / c for r, c in zip(rates, ceils) if c]
print(json.dumps({
    "bench": "nats", "scale": os.environ.get("BENCH_SCALE", "default"),
    "commit": os.environ.get("BV_COMMIT", "unknown"),
    "rows": total, "transactions": txns, "rounds": len(rounds), "ack_window": window,
    "messages_per_s": round(statistics.median(rates)),
    "ceiling_per_s": round(statistics.median(ceils)),
    "ratio": round(statistics.median(ratios), 2) if ratios else None,
    "round_ratios": [round(x, 2) for x in ratios],
    "target_ratio": 0.7, "target_per_s": 30000,
    "lost": total + 1 - distinct,
}))
PY
