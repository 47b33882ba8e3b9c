#!/usr/bin/env bash
# bench/realtime.sh: bv_realtime's gateway under load (make bench-realtime).
#
# A C load client (bench/realtime/loadclient.c, libwebsockets, one thread)
# on the same machine; as the ceiling a minimal libwebsockets broadcast
# server with no database (bench/realtime/ceiling.c), same client, same
# message size.
#   (a) IDLE authenticated, subscribed WebSocket connections held open:
#       rss_kb_per_conn = growth of the gateway worker's RSS / IDLE.
#   (b) fan-out: one topic with SUBS subscribers; MSGS messages sent by
#       bv_realtime.send() in transactions of 10 as fast as one session
#       can: deliveries_per_s (client receipts over the first-to-last span);
#       the ceiling's deliveries_per_s for the same SUBS x MSGS; ratio.
#   (c) latency: messages paced at half the measured rate (per message:
#       send, COMMIT, sleep); p50/p99 from the sender's clock_timestamp()
#       in the payload to the client's receipt (same machine clock), i.e.
#       commit + decoding + history insert + fan-out + socket.
#   (d) table changes with RLS: RLS_SUBS subscribers, each on a distinct
#       role (the visibility query runs once per role group and batch),
#       on an RLS table; MSGS rows inserted in transactions of 10:
#       rls_deliveries_per_s and rls_ratio (÷ deliveries_per_s).
# Targets (issue #21): 10,000 connections at <= 20 KB each; fan-out >= 50%
# of the ceiling with p99 <= 50 ms; RLS path >= 20% of the plain fan-out.
#
# The bench raises bv_realtime.client_queue (a burst of MSGS messages per
# subscriber must not count as a slow client), turns off
# bv_realtime.max_connections_per_ip (every load connection comes from
# 127.0.0.1) and max_connections_per_user (they share one token) and sets a free gateway port;
# everything else is tools/bitvelocity.conf.
#
# Progress on stderr; one JSON line on stdout.  BENCH_SCALE=small: 1,000
# idle connections, 200 subscribers x 200 messages, 20 RLS roles (under a
# minute); default: 10,000 idle, 1,000 x 1,000, 100 roles.
# shellcheck source=/dev/null
source "$BV_TOP/tools/lib.sh"
bv_pgbin
# shellcheck source=include/cdc-load.sh
source "$BV_TOP/bench/include/cdc-load.sh"
export BV_EXTENSIONS=${BV_EXTENSIONS:-bv_core bv_realtime}

if [ "${BENCH_SCALE:-default}" = small ]; then
    IDLE=1000 SUBS=200 MSGS=200 RLS_SUBS=20 PACED=100
else
    IDLE=10000 SUBS=1000 MSGS=1000 RLS_SUBS=100 PACED=300
fi
SIZE=100
# BENCH_ONLY=latency: only (c), at BENCH_RATE messages/s (default 30) to
# SUBS subscribers (BENCH_SUBS overrides): a quick loop for latency work.
[ -n "${BENCH_SUBS:-}" ] && SUBS=$BENCH_SUBS
OUT=$BV_BENCH_OUT
say() { printf 'bench-realtime: %s\n' "$*" >&2; }

say "building the load client and the ceiling server"
gcc -O2 -Wall -o "$OUT/loadclient" "$BV_TOP/bench/realtime/loadclient.c" -lwebsockets || bv_die "could not build loadclient"
gcc -O2 -Wall -o "$OUT/ceiling" "$BV_TOP/bench/realtime/ceiling.c" -lwebsockets || bv_die "could not build ceiling"

bv_throwaway_cluster "$OUT/cluster" 58300
CEIL_PID=
cleanup() {
    [ -n "$CEIL_PID" ] && kill "$CEIL_PID" 2>/dev/null
    bv_throwaway_stop "$OUT/cluster"
}
trap cleanup EXIT

GW_PORT=$(bv_free_port 18400)
psql_q -c "ALTER SYSTEM SET bv_realtime.port = $GW_PORT" \
    -c "ALTER SYSTEM SET bv_realtime.client_queue = 1000000" \
    -c "ALTER SYSTEM SET bv_realtime.client_queue_bytes = '1GB'" \
    -c "ALTER SYSTEM SET bv_realtime.max_connections_per_ip = 0" \
    -c "ALTER SYSTEM SET bv_realtime.max_connections_per_user = 0" >/dev/null
"$PGBIN/pg_ctl" restart -D "$OUT/cluster/data" -l "$OUT/cluster/server.log" -w -t 60 >/dev/null
for _ in $(seq 300); do
    [ "$(psql_q -c "SELECT state FROM bv_realtime.stats" 2>/dev/null)" = running ] && break
    sleep 0.2
done
[ "$(psql_q -c "SELECT state FROM bv_realtime.stats")" = running ] || bv_die "the gateway did not start; see $OUT/cluster/server.log"
say "gateway on 127.0.0.1:$GW_PORT"

psql_q >/dev/null <<SQL
INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('bench', 'HS256', 'bench-secret-' || repeat('k', 40));
INSERT INTO bv_realtime.topic_grants (topic_pattern, action, grantee) VALUES ('bench', 'subscribe', 'bv_user');
SQL
TOKEN=$(psql_q -c "SELECT bv.jwt_sign(jsonb_build_object('role', 'bv_user', 'sub', 'bench', 'exp', extract(epoch from now())::int + 86400), 'bench')")
PATH_Q="/socket?access_token=$TOKEN&topics=bench"

field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" "$2" | tail -1; }

field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" "$2" | tail -1; }
fanout_run() { # name subs expect path sender-command...
    local name=$1 subs=$2 expect=$3 path=$4
    shift 4
    "$OUT/loadclient" 127.0.0.1 "$GW_PORT" "$path" "$subs" fanout 120 "$expect" >"$OUT/$name.out" 2>"$OUT/$name.err" &
    local lc=$!
    for _ in $(seq 1200); do grep -q '^ready' "$OUT/$name.out" && break; sleep 0.1; done
    "$@"
    wait "$lc"
}
send_paced() {
    psql_q >/dev/null <<SQL
DO \$\$
DECLARE
    gap double precision := 1.0 / $RATE;
    next timestamptz := clock_timestamp();
BEGIN
    FOR i IN 1..$PACED LOOP
        PERFORM bv_realtime.send('bench', 'e', jsonb_build_object(
            't', (extract(epoch FROM clock_timestamp()) * 1e6)::bigint, 'pad', repeat('x', $SIZE)));
        COMMIT;
        next := next + make_interval(secs => gap);
        PERFORM pg_sleep(GREATEST(0, extract(epoch FROM next - clock_timestamp())));
    END LOOP;
END
\$\$;
SQL
}
if [ "${BENCH_ONLY:-}" = latency ]; then
    RATE=${BENCH_RATE:-30}
    say "(c) latency only: $PACED messages at $RATE messages/s to $SUBS subscribers"
    fanout_run paced "$SUBS" $((SUBS * PACED)) "$PATH_Q" send_paced
    say "(c) $(tail -1 "$OUT/paced.out")"
    say "(c) gateway: $(psql_q -c "SELECT format('p50_ms=%s p99_ms=%s', latency_p50_ms, latency_p99_ms) FROM bv_realtime.stats" 2>&1)"
    printf '{"bench":"realtime","scale":"%s","only":"latency","subscribers":%s,"paced_messages_per_s":%s,"p50_ms":%s,"p99_ms":%s}\n' \
        "${BENCH_SCALE:-default}" "$SUBS" "$RATE" "$(field p50_ms "$OUT/paced.out")" "$(field p99_ms "$OUT/paced.out")"
    exit 0
fi

# ---- (a) idle connections ----
WPID=$(psql_q -c "SELECT worker_pid FROM bv_realtime.stats")
rss() { awk '/^VmRSS/ {print $2}' "/proc/$WPID/status"; }
RSS0=$(rss)
say "(a) holding $IDLE idle connections"
"$OUT/loadclient" 127.0.0.1 "$GW_PORT" "$PATH_Q" "$IDLE" idle "${IDLE_HOLD:-5}" >"$OUT/idle.out" 2>"$OUT/idle.err" &
LC=$!
for _ in $(seq 1200); do grep -q '^connected' "$OUT/idle.out" && break; sleep 0.1; done
RSS1=$(rss)
CONNS=$(sed -n 's/^connected \([0-9]*\)$/\1/p' "$OUT/idle.out")
CONNS=${CONNS:-0}
[ "$CONNS" = "$IDLE" ] || say "(a) only $CONNS of $IDLE connections were accepted; see $OUT/idle.err"
wait "$LC"
RSS_PER=$(awk -v a="$RSS0" -v b="$RSS1" -v n="$CONNS" 'BEGIN { printf "%.1f", (n > 0 ? (b - a) / n : 0) }')
say "(a) $CONNS connections: RSS $RSS0 kB -> $RSS1 kB, $RSS_PER kB per connection"
say "(a) gateway: $(psql_q -c "SELECT format('connections_total=%s auth_failures=%s drops=%s ip_refused=%s', connections_total, auth_failures, drops, ip_refused) FROM bv_realtime.stats")"
[ "${BENCH_ONLY:-}" = idle ] && { printf '{"bench":"realtime","connections":%s,"rss_kb_per_conn":%s}\n' "$CONNS" "$RSS_PER"; exit 0; }

# ---- (b) fan-out through the gateway ----
say "(b) fan-out: $SUBS subscribers x $MSGS messages"
send_burst() {
    psql_q >/dev/null <<SQL
DO \$\$
BEGIN
    FOR i IN 1..$MSGS LOOP
        PERFORM bv_realtime.send('bench', 'e', jsonb_build_object(
            't', (extract(epoch FROM clock_timestamp()) * 1e6)::bigint, 'pad', repeat('x', $SIZE)));
        IF i % 10 = 0 THEN COMMIT; END IF;
    END LOOP;
END
\$\$;
SQL
}
fanout_run fanout "$SUBS" $((SUBS * MSGS)) "$PATH_Q" send_burst
DELIV=$(field rate_per_s "$OUT/fanout.out")
say "(b) $(tail -1 "$OUT/fanout.out")"

# ---- the ceiling: same client, same size, no database ----
CEIL_PORT=$(bv_free_port $((GW_PORT + 1)))
"$OUT/ceiling" "$CEIL_PORT" "$SUBS" "$MSGS" "$SIZE" 2>"$OUT/ceiling.err" &
CEIL_PID=$!
for _ in $(seq 100); do bv_port_busy "$CEIL_PORT" && break; sleep 0.1; done
"$OUT/loadclient" 127.0.0.1 "$CEIL_PORT" /socket "$SUBS" fanout 120 $((SUBS * MSGS)) >"$OUT/ceiling.out" 2>"$OUT/ceiling-client.err"
wait "$CEIL_PID" 2>/dev/null
CEIL_PID=
CEIL=$(field rate_per_s "$OUT/ceiling.out")
say "(b) ceiling: $(tail -1 "$OUT/ceiling.out")"

# ---- (c) latency at half the measured rate ----
RATE=$(awk -v d="$DELIV" -v s="$SUBS" 'BEGIN { r = d / 2 / s; printf "%.1f", (r < 1 ? 1 : r) }')
say "(c) latency: $PACED messages at $RATE messages/s (half of $DELIV deliveries/s over $SUBS subscribers)"
fanout_run paced "$SUBS" $((SUBS * PACED)) "$PATH_Q" send_paced
P50=$(field p50_ms "$OUT/paced.out")
P99=$(field p99_ms "$OUT/paced.out")
say "(c) $(tail -1 "$OUT/paced.out")"

# ---- (d) table changes with RLS, one role per subscriber ----
say "(d) RLS: $RLS_SUBS subscribers on distinct roles x $MSGS rows"
psql_q >/dev/null <<SQL
CREATE TABLE public.bench_rls (id bigserial PRIMARY KEY, owner int NOT NULL, body text);
ALTER TABLE public.bench_rls ENABLE ROW LEVEL SECURITY;
DO \$\$
BEGIN
    FOR i IN 1..$RLS_SUBS LOOP
        EXECUTE format('CREATE ROLE %I NOLOGIN', 'bench_r' || i);
        EXECUTE format('GRANT %I TO bv_authenticator', 'bench_r' || i);
        EXECUTE format('GRANT SELECT ON public.bench_rls TO %I', 'bench_r' || i);
    END LOOP;
END
\$\$;
-- every role sees every row: the deliveries are comparable with (b)
CREATE POLICY see_all ON public.bench_rls FOR SELECT USING (owner >= 0);
SELECT bv_realtime.enable_table('public.bench_rls');
SQL
psql_q -c "SELECT '/socket?access_token=' || bv.jwt_sign(jsonb_build_object('role', 'bench_r' || i, 'sub', 's' || i,
           'exp', extract(epoch from now())::int + 86400), 'bench') || '&topics=table:public.bench_rls'
           FROM generate_series(1, $RLS_SUBS) i" >"$OUT/rls-paths.txt"
RQ0=$(psql_q -c "SELECT rls_queries FROM bv_realtime.stats")
insert_rows() {
    psql_q >/dev/null <<SQL
DO \$\$
BEGIN
    FOR i IN 1..$MSGS LOOP
        INSERT INTO public.bench_rls (owner, body) VALUES (i, repeat('x', $SIZE));
        IF i % 10 = 0 THEN COMMIT; END IF;
    END LOOP;
END
\$\$;
SQL
}
fanout_run rls "$RLS_SUBS" $((RLS_SUBS * MSGS)) "@$OUT/rls-paths.txt" insert_rows
RLS=$(field rate_per_s "$OUT/rls.out")
RQ=$(( $(psql_q -c "SELECT rls_queries FROM bv_realtime.stats") - RQ0 ))
say "(d) $(tail -1 "$OUT/rls.out"); $RQ visibility queries for $((RLS_SUBS * MSGS)) deliveries"

RATIO=$(awk -v a="$DELIV" -v b="$CEIL" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }')
RLS_RATIO=$(awk -v a="$RLS" -v b="$DELIV" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }')
printf '{"bench":"realtime","scale":"%s","commit":"%s","connections":%s,"rss_kb_per_conn":%s,"subscribers":%s,"messages":%s,"deliveries_per_s":%s,"ceiling_deliveries_per_s":%s,"ratio":%s,"paced_messages_per_s":%s,"p50_ms":%s,"p99_ms":%s,"rls_subscribers":%s,"rls_deliveries_per_s":%s,"rls_ratio":%s,"rls_queries":%s}\n' \
    "${BENCH_SCALE:-default}" "${BV_COMMIT:-unknown}" "$CONNS" "$RSS_PER" "$SUBS" "$MSGS" "${DELIV:-0}" "${CEIL:-0}" "$RATIO" \
    "$RATE" "${P50:-null}" "${P99:-null}" "$RLS_SUBS" "${RLS:-0}" "$RLS_RATIO" "$RQ"
