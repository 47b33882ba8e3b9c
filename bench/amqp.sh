#!/usr/bin/env bash
# bench/amqp.sh: bv_cdc publishing to RabbitMQ with publisher confirms
# (make bench-amqp).
#
# rabbitmq-server (Debian's) on 127.0.0.1, a durable queue bound to
# amq.topic with "bv.#", and one consumer (tests/tools/bv_amqp_tool) that
# acknowledges each message.  ROWS single-row inserts are committed in TXNS
# transactions while the sink is paused; then, from resume:
#   messages_per_s  ROWS / time until bv_cdc.stats counts ROWS more events
#                   confirmed by the broker (basic.ack; persistent, mandatory).
#   ceiling_per_s   the same envelopes (as the consumer received them) published
#                   by a minimal C publisher (bv_amqp_tool publish, librabbitmq)
#                   to the same broker, exchange and queue, persistent,
#                   mandatory, with the same confirm window (4096, the sink's default
#                   max_inflight; BENCH_WINDOW=n for another) and headers.
#   ratio           messages_per_s / ceiling_per_s.  Target: >= 0.7 and
#                   >= 30,000 messages/s.
#   lost            rows the consumer did not receive (distinct keys).
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
TOOL=$BV_TOP/tests/tools/bv_amqp_tool
say() { printf 'bench-amqp: %s\n' "$*" >&2; }
[ -x "$TOOL" ] || make -s -C "$BV_TOP/tests/tools" bv_amqp_tool >&2 || bv_die "cannot build $TOOL"

bv_throwaway_cluster "$OUT/cluster" 58250

PORT=$(bv_free_port 18950)
RDIR=$OUT/rabbit
mkdir -p "$RDIR"
echo '[].' >"$RDIR/enabled_plugins"
echo 'loopback_users = none' >"$RDIR/rabbitmq.conf"
: >"$RDIR/rabbitmq-env.conf"
RABBIT_PID= CONS_PID=
cleanup() {
    [ -n "$CONS_PID" ] && kill "$CONS_PID" 2>/dev/null
    [ -s "$RDIR/rabbit.pid" ] && kill "$(cat "$RDIR/rabbit.pid")" 2>/dev/null
    [ -n "$RABBIT_PID" ] && wait "$RABBIT_PID" 2>/dev/null
    ERL_EPMD_PORT=$((PORT + 2)) epmd -kill >/dev/null 2>&1
    bv_throwaway_stop "$OUT/cluster"
}
trap cleanup EXIT
(
    export HOME=$RDIR RABBITMQ_NODENAME=bvbench$PORT@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT=$PORT RABBITMQ_DIST_PORT=$((PORT + 1)) ERL_EPMD_PORT=$((PORT + 2)) \
        RABBITMQ_MNESIA_BASE=$RDIR/mnesia RABBITMQ_LOG_BASE=$RDIR/log RABBITMQ_LOGS=$RDIR/log/rabbit.log \
        RABBITMQ_ENABLED_PLUGINS_FILE=$RDIR/enabled_plugins RABBITMQ_CONFIG_FILE=$RDIR/rabbitmq \
        RABBITMQ_ADVANCED_CONFIG_FILE=$RDIR/advanced.config RABBITMQ_CONF_ENV_FILE=$RDIR/rabbitmq-env.conf \
        RABBITMQ_PID_FILE=$RDIR/rabbit.pid
    exec /usr/lib/rabbitmq/bin/rabbitmq-server >"$RDIR/server.out" 2>&1
) &
RABBIT_PID=$!
say "starting rabbitmq-server on 127.0.0.1:$PORT (slow)"
for _ in $(seq 1800); do bv_port_busy "$PORT" && break; sleep 0.1; done
bv_port_busy "$PORT" || bv_die "rabbitmq-server did not start; see $RDIR/log"

"$TOOL" bind 127.0.0.1 "$PORT" bench amq.topic 'bv.#' || bv_die "could not bind the queue"
"$TOOL" consume 127.0.0.1 "$PORT" bench >"$OUT/received.jsonl" 2>"$OUT/consumer.err" &
CONS_PID=$!

received() { grep -c '"rk":"bv.public.bench"' "$OUT/received.jsonl" || true; }

psql_q >/dev/null <<SQL
CREATE TABLE public.bench (id bigint PRIMARY KEY, payload text NOT NULL);
SELECT bv_cdc.add_sink('bench', 'amqp', '{"host": "127.0.0.1", "port": $PORT, "max_inflight": $WINDOW}');
SELECT bv_cdc.add_route('public.bench', 'bench');
SQL
wait_for "SELECT worker_state = 'streaming' AND state = 'up' FROM bv_cdc.stats WHERE sink = 'bench'"
psql_q -c "INSERT INTO public.bench VALUES (0, 'warm-up')"
wait_for "SELECT events >= 1 FROM bv_cdc.stats WHERE sink = 'bench'"

pause_sink bench
say "committing $ROWS changes in $TXNS transactions"
load_rows "$ROWS" "$TXNS"

say "bv_cdc: resume and wait for $ROWS confirms"
t2=$(now)
resume_and_drain bench "$ROWS"
t3=$(now)

say "waiting for the consumer"
for _ in $(seq 6000); do
    [ "$(received)" -ge $((ROWS + 1)) ] && break
    sleep 0.05
done
python3 - "$OUT/received.jsonl" "$OUT/bodies.txt" >"$OUT/distinct.txt" <<'PY'
import json, sys
ids, out = set(), open(sys.argv[2], "w")
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m["rk"] != "bv.public.bench":
        continue
    ids.add(m["body"]["key"]["id"])
    out.write(json.dumps(m["body"], separators=(",", ":"), ensure_ascii=False) + "\n")
print(len(ids))
PY
DISTINCT=$(cat "$OUT/distinct.txt")
head -n "$((ROWS + 1))" "$OUT/bodies.txt" | tail -n "$ROWS" >"$OUT/ceiling.txt"

say "ceiling: bv_amqp_tool publishes the same $ROWS envelopes (window $WINDOW)"
CEIL=$("$TOOL" publish 127.0.0.1 "$PORT" amq.topic bv.public.bench "$OUT/ceiling.txt" "$WINDOW") \
    || bv_die "the ceiling publisher failed"

python3 - "$ROWS" "$TXNS" "$t2" "$t3" "$DISTINCT" "$CEIL" "$WINDOW" <<'PY'
import json, os, sys
rows, txns = int(sys.argv[1]), int(sys.argv[2])
t2, t3 = float(sys.argv[3]), float(sys.argv[4])
ceil = json.loads(sys.argv[6])["per_s"]
rate = rows / (t3 - t2)
print(json.dumps({
    "bench": "amqp", "scale": os.environ.get("BENCH_SCALE", "default"),
    "commit": os.environ.get("BV_COMMIT", "unknown"),
    "rows": rows, "transactions": txns, "confirm_window": int(sys.argv[7]),
    "messages_per_s": round(rate), "ceiling_per_s": round(ceil),
    "ratio": round(rate / ceil, 2) if ceil else None,
    "target_ratio": 0.7, "target_per_s": 30000,
    "lost": rows + 1 - int(sys.argv[5]),
}))
PY
