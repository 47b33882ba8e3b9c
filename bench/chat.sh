#!/usr/bin/env bash
# bench/chat.sh: bv_chat sends with counters, audit and live delivery on,
# against plain INSERTs of the same rows; live delivery latency to a
# WebSocket client; history page and room list latencies.
#
# Data: ROOMS rooms of 2..MAXM members (uniform; users drawn from USERS),
# MSGS messages of history spread over the rooms (bulk-loaded, receipts at
# a random point of the last 50 messages, counters computed from them).
# Figures (all in the same run):
#   messages_per_s       chat.send() through pgbench, CLIENTS clients for
#                        SECS s in ROUNDS rounds alternating with the two
#                        baselines, random room and member: per-room numbering,
#                        the counters of every member, mentions,
#                        notifications, the bv_audit history row and
#                        bv_realtime.send() (the gateway decoding the WAL);
#   messages_per_s_bare  the baseline: pgbench INSERTs of the same rows into
#                        a copy of chat.messages with its indexes (primary
#                        key, full-text, trigram) and no trigger, counters
#                        or delivery, same clients;
#   ratio                messages_per_s / messages_per_s_bare (means over
#                        the rounds); ratio_min/max: of single rounds;
#   messages_per_s_pk_only, ratio_pk_only  the same against a copy with
#                        the primary key only (the raw INSERT ceiling);
#   delivery_p50/p99_ms  from the start of the chat.send() call (the
#                        clock_timestamp() the message carries in its
#                        text) to its arrival at a
#                        WebSocket client subscribed to a 100-member room,
#                        at RATE messages/s for DSECS s, one commit each,
#                        the sender with the shipped synchronous_commit
#                        (on); send_p99_ms: the send's own time in the
#                        server; gateway_latency_p99_ms: the gateway's
#                        commit-to-socket figure (bv_realtime.stats);
#                        delivery_from_txn_start_p99_ms: from the
#                        message's created_at (the transaction's start),
#                        as bv_chat 0.2.0 measured it: bench.steady is a
#                        procedure, each transaction starts at the
#                        previous COMMIT, so this counts the pause between
#                        sends (up to 1/RATE s) as latency;
#   delivery_async_commit_p50/p99_ms  the same with synchronous_commit
#                        off, as in (a) (the WAL writer's flush delay);
#   history_p99_ms       chat.history(room, page of 50) as a member, timed
#                        inside the server (no client round trip), READS
#                        reads of random (room, member);
#   room_list_p99_ms     chat.room_list() (rooms with unread and mention
#                        counts) of random users, timed the same way;
#   cpu_ms_per_send, cpu_ms_per_bare, cpu_ratio  CPU time per call of one
#                        backend running bench.send / bench.bare CPUN
#                        times (one commit each), CPUROUNDS alternations;
#                        cpu_ratio = bare / send (the share of a bare
#                        INSERT's cost a send costs, load-robust).
# Sizes: BENCH_SCALE=small (under 60 s); default: the issue's 1M messages
# in 1,000 rooms of up to 100 members.
source "$BV_TOP/tools/lib.sh"
bv_pgbin

case "${BENCH_SCALE:-default}" in
    small) ROOMS=100; MAXM=100; USERS=2000; MSGS=50000; CLIENTS=4; SECS=8; ROUNDS=2; RATE=50; DSECS=3; READS=300; CPUN=500; CPUROUNDS=2 ;;
    *) ROOMS=1000; MAXM=100; USERS=10000; MSGS=1000000; CLIENTS=4; SECS=30; ROUNDS=3; RATE=50; DSECS=20; READS=1000; CPUN=1000; CPUROUNDS=3 ;;
esac
OUT=$BV_BENCH_OUT
say() { echo "bench-chat: $*" >&2; }

export BV_EXTENSIONS="bv_core bv_audit bv_cdc bv_realtime bv_chat"
bv_throwaway_cluster "$OUT/cluster" "${BV_BENCH_PORT:-23200}" >&2
[ -n "${BENCH_KEEP:-}" ] || trap 'bv_throwaway_stop "$OUT/cluster"' EXIT
psql_b() { "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 "$@"; }
# BENCH_CHAT_VERSION=0.2.0: measure an earlier version of bv_chat with the
# same benchmark (a before/after pair from one installation).
if [ -n "${BENCH_CHAT_VERSION:-}" ]; then
    # (versions before 0.3.0 do not remove the topic grants of the dropped
    # install themselves)
    psql_b -c "DROP EXTENSION bv_chat" -c "DELETE FROM bv_realtime.topic_grants WHERE comment LIKE 'bv\\_chat: %'" \
           -c "CREATE EXTENSION bv_chat VERSION '$BENCH_CHAT_VERSION'" >/dev/null
    "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -f "$BV_TOP/tools/cron-reload.sql" >/dev/null
fi

# The gateway on a free port of its own (not make run's 8090).
WSPORT=$(bv_free_port "$(( ${BV_BENCH_PORT:-23200} + 90 ))")
psql_b -c "ALTER SYSTEM SET bv_realtime.port = $WSPORT" -c "ALTER SYSTEM SET synchronous_commit = off" >/dev/null
"$PGBIN/pg_ctl" restart -D "$OUT/cluster/data" -l "$OUT/cluster/server.log" -w -t 60 >/dev/null

say "loading $ROOMS rooms of 2..$MAXM members ($USERS users), $MSGS messages"
psql_b -v rooms="$ROOMS" -v maxm="$MAXM" -v users="$USERS" -v msgs="$MSGS" >/dev/null <<'SQL'
SELECT cron.unschedule(jobname) FROM cron.job WHERE jobname LIKE 'chat-%';
UPDATE chat.settings SET value = 0 WHERE name = 'send_rate';
SELECT setseed(0.42);
-- Bulk load without triggers (the audit history starts empty); counters
-- are computed from the data afterwards.
SET session_replication_role = replica;
INSERT INTO chat.rooms (id, kind, name, created_by)
OVERRIDING SYSTEM VALUE
SELECT g, 'group', 'room ' || g, 'u1' FROM generate_series(1, :rooms) g;
SELECT setval(pg_get_serial_sequence('chat.rooms', 'id'), :rooms);
-- room 1 has exactly maxm members (the delivery test's room)
INSERT INTO chat.members (room_id, user_id, role)
SELECT DISTINCT ON (r, u) r, 'u' || u, 'member'
  FROM (SELECT r, CASE WHEN r = 1 THEN k ELSE 1 + floor(:users * random())::int END AS u
          FROM generate_series(1, :rooms) r,
               LATERAL generate_series(1, CASE WHEN r = 1 THEN :maxm ELSE 2 + floor(random() * (:maxm - 1))::int END) k) x;
UPDATE chat.rooms r SET member_count = c.n FROM (SELECT room_id, count(*) n FROM chat.members GROUP BY 1) c WHERE c.room_id = r.id;
INSERT INTO chat.users (user_id, last_active_at) SELECT DISTINCT user_id, now() FROM chat.members;
CREATE TEMP TABLE mem AS SELECT room_id, user_id, row_number() OVER (PARTITION BY room_id ORDER BY user_id) AS i FROM chat.members;
CREATE INDEX ON mem (room_id, i);
INSERT INTO chat.messages (room_id, seq, sender, body, created_at)
SELECT x.room_id, row_number() OVER (PARTITION BY x.room_id ORDER BY x.g), m.user_id,
       'message ' || x.g || ' about ' || (ARRAY['deploys', 'lunch', 'the release', '東京の会議', 'pipelines'])[1 + x.g % 5],
       now() - make_interval(secs => :msgs - x.g)
  FROM (SELECT g, 1 + floor(:rooms * random())::int AS room_id, random() AS pick FROM generate_series(1, :msgs) g) x
  JOIN chat.rooms r ON r.id = x.room_id
  JOIN mem m ON m.room_id = x.room_id AND m.i = 1 + floor(x.pick * r.member_count)::int;
UPDATE chat.rooms r SET last_seq = c.n, main_count = c.n, last_message_at = now() FROM (SELECT room_id, count(*) n FROM chat.messages GROUP BY 1) c WHERE c.room_id = r.id;
-- receipts: unread = main_count - unread_base (bv_chat 0.2.0)
INSERT INTO chat.read_state (user_id, room_id, thread, read_seq, unread_base)
SELECT m.user_id, m.room_id, 0, greatest(r.last_seq - floor(random() * 50)::int, 0), r.main_count
  FROM chat.members m JOIN chat.rooms r ON r.id = m.room_id;
UPDATE chat.read_state rs SET unread_base = rs.unread_base - c.n
  FROM (SELECT rs2.room_id, rs2.user_id, count(m.seq) n FROM chat.read_state rs2
          JOIN chat.messages m ON m.room_id = rs2.room_id AND m.seq > rs2.read_seq AND m.sender <> rs2.user_id
         GROUP BY 1, 2) c
 WHERE c.room_id = rs.room_id AND c.user_id = rs.user_id AND rs.thread = 0;
RESET session_replication_role;
VACUUM ANALYZE;
CREATE SCHEMA bench;
-- The baseline: the same rows, plain INSERTs into a copy of chat.messages
-- with its indexes (primary key, full-text and trigram search) and checks,
-- without triggers (audit), counters or delivery; and the ceiling: the same
-- with the primary key only.
CREATE TABLE bench.bare (LIKE chat.messages INCLUDING ALL);
CREATE TABLE bench.bare_pk (LIKE chat.messages INCLUDING DEFAULTS, PRIMARY KEY (room_id, seq));
CREATE SEQUENCE bench.bare_seq;
CREATE TABLE bench.members AS SELECT room_id, user_id, row_number() OVER (PARTITION BY room_id ORDER BY user_id) AS i,
                                     (SELECT member_count FROM chat.rooms r WHERE r.id = m.room_id) AS n
                                FROM chat.members m;
CREATE INDEX ON bench.members (room_id, i);
ANALYZE bench.members;
CREATE FUNCTION bench.send(p_room int, p_pick int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    u text;
BEGIN
    SELECT m.user_id INTO u FROM bench.members m WHERE m.room_id = p_room AND m.i = 1 + p_pick % m.n;
    PERFORM set_config('request.jwt.claims', json_build_object('role', 'bv_user', 'sub', u)::text, true);
    PERFORM chat.send(p_room, 'bench message ' || p_pick || CASE WHEN p_pick % 10 = 0 THEN ' @u' || (p_pick % 50) ELSE '' END);
END $$;
CREATE FUNCTION bench.send_text(p_room int, p_pick int, p_text text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    u text;
BEGIN
    SELECT m.user_id INTO u FROM bench.members m WHERE m.room_id = p_room AND m.i = 1 + p_pick % m.n;
    PERFORM set_config('request.jwt.claims', json_build_object('role', 'bv_user', 'sub', u)::text, true);
    PERFORM chat.send(p_room, p_text);
END $$;
CREATE FUNCTION bench.bare(p_room int, p_pick int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    u text;
BEGIN
    SELECT m.user_id INTO u FROM bench.members m WHERE m.room_id = p_room AND m.i = 1 + p_pick % m.n;
    INSERT INTO bench.bare (room_id, seq, sender, body)
    VALUES (p_room, nextval('bench.bare_seq'), u, 'bench message ' || p_pick || CASE WHEN p_pick % 10 = 0 THEN ' @u' || (p_pick % 50) ELSE '' END);
END $$;
CREATE FUNCTION bench.bare_pk(p_room int, p_pick int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    u text;
BEGIN
    SELECT m.user_id INTO u FROM bench.members m WHERE m.room_id = p_room AND m.i = 1 + p_pick % m.n;
    INSERT INTO bench.bare_pk (room_id, seq, sender, body)
    VALUES (p_room, nextval('bench.bare_seq'), u, 'bench message ' || p_pick || CASE WHEN p_pick % 10 = 0 THEN ' @u' || (p_pick % 50) ELSE '' END);
END $$;
-- CPU per call in one backend (its utime + stime from /proc/self/stat,
-- 10 ms ticks, over p_n calls of one commit each): a send's cost that the
-- load of a shared machine moves much less than a throughput does.
CREATE PROCEDURE bench.cpu_loop(p_fn text, p_n int, p_rooms int, INOUT cpu_ms numeric DEFAULT NULL) LANGUAGE plpgsql AS $$
DECLARE
    st text[];
    t0 bigint;
BEGIN
    st := string_to_array(split_part(pg_read_file('/proc/self/stat'), ') ', 2), ' ');
    t0 := st[12]::bigint + st[13]::bigint;
    FOR i IN 1..p_n LOOP
        IF p_fn = 'send' THEN
            PERFORM bench.send(1 + (i * 7919) % p_rooms, i * 104729 % 1000000);
        ELSE
            PERFORM bench.bare(1 + (i * 7919) % p_rooms, i * 104729 % 1000000);
        END IF;
        COMMIT;
    END LOOP;
    st := string_to_array(split_part(pg_read_file('/proc/self/stat'), ') ', 2), ' ');
    cpu_ms := round((st[12]::bigint + st[13]::bigint - t0) * 10.0 / p_n, 3);
END $$;
-- Read latencies, timed in the server: p50/p99 in ms over p_n reads, each
-- read 3 times; p99_min3 is the p99 of each read's fastest of 3 (filters
-- out the scheduler stalls of a shared, overloaded machine).
CREATE FUNCTION bench.read_latency(p_what text, p_n int, OUT p50 numeric, OUT p99 numeric, OUT p99_min3 numeric) LANGUAGE plpgsql AS $$
DECLARE
    r record;
    t timestamptz;
    one double precision;
    best double precision;
    lat double precision[] := '{}';
    mins double precision[] := '{}';
BEGIN
    FOR r IN SELECT m.room_id, m.user_id FROM chat.members m ORDER BY md5(m.room_id || m.user_id) LIMIT p_n LOOP
        PERFORM set_config('request.jwt.claims', json_build_object('role', 'bv_user', 'sub', r.user_id)::text, true);
        best := NULL;
        FOR k IN 1..3 LOOP
            t := clock_timestamp();
            IF p_what = 'history' THEN
                PERFORM count(*) FROM chat.history(r.room_id, NULL, NULL, NULL, 50);
            ELSE
                PERFORM count(*) FROM chat.room_list(NULL, 50);
            END IF;
            one := extract(epoch FROM clock_timestamp() - t) * 1000;
            lat := lat || one;
            best := least(best, one);
        END LOOP;
        mins := mins || best;
    END LOOP;
    SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY x)::numeric, 3),
           round(percentile_cont(0.99) WITHIN GROUP (ORDER BY x)::numeric, 3)
      INTO p50, p99 FROM unnest(lat) x;
    SELECT round(percentile_cont(0.99) WITHIN GROUP (ORDER BY x)::numeric, 3) INTO p99_min3 FROM unnest(mins) x;
END $$;
-- Steady sends into room 1 (100 members), one commit each; the time of
-- each send in the server goes to bench.steady_times; a last message marks
-- the end for the WebSocket client.
CREATE TABLE bench.steady_times (ms double precision);
CREATE PROCEDURE bench.steady(p_rate int, p_secs int) LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
    t timestamptz;
    i int := 0;
BEGIN
    WHILE clock_timestamp() < t0 + make_interval(secs => p_secs) LOOP
        -- The send's start goes into the text: the client measures from
        -- it.  The message's created_at (now()) is the transaction's
        -- start, which in a procedure is the previous COMMIT: it would
        -- count the pg_sleep between two sends (up to 1/rate) as latency.
        t := clock_timestamp();
        PERFORM bench.send_text(1, i, 'bench steady ' || i || ' t=' || extract(epoch FROM t)::text);
        INSERT INTO bench.steady_times VALUES (extract(epoch FROM clock_timestamp() - t) * 1000);
        COMMIT;
        i := i + 1;
        PERFORM pg_sleep(greatest(0, extract(epoch FROM t0 + make_interval(secs => i::double precision / p_rate) - clock_timestamp())));
    END LOOP;
    PERFORM set_config('request.jwt.claims', json_build_object('role', 'bv_user', 'sub',
                       (SELECT min(user_id) FROM chat.members WHERE room_id = 1))::text, true);
    PERFORM chat.send(1, 'bench steady end');
END $$;
SQL
read -r nmsg nmem <<<"$(psql_b -F ' ' -c "SELECT (SELECT count(*) FROM chat.messages), (SELECT count(*) FROM chat.members)")"
say "loaded: $nmsg messages, $nmem memberships"
[ "${BENCH_STOP_AFTER_LOAD:-}" = 1 ] && { say "PGHOST=$PGHOST PGPORT=$PGPORT"; exit 0; }

# Wait until the WAL decoders (bv_realtime's gateway, bv_cdc) have caught up
# with everything written so far: the bulk load must not be decoded while a
# phase is measured.
catch_up() {
    local target
    target=$(psql_b -c "SELECT pg_current_wal_lsn()")
    until [ "$(psql_b -c "SELECT coalesce(bool_and(confirmed_flush_lsn >= '$target'), true) FROM pg_replication_slots WHERE active")" = t ]; do
        sleep 0.5
    done
}
say "waiting for the WAL decoders to catch up with the load"
catch_up
psql_b -c "SELECT pg_stat_reset()" -c "ALTER SYSTEM SET track_functions = 'all'" -c "SELECT pg_reload_conf()" >/dev/null

pgb() {
    local fn=$1 secs=$2
    printf '\\set r random(1, %s)\n\\set p random(0, 1000000)\nSELECT bench.%s(:r, :p);\n' "$ROOMS" "$fn" >"$OUT/$fn.sql"
    "$PGBIN/pgbench" -n -c "$CLIENTS" -j "$CLIENTS" -T "$secs" -f "$OUT/$fn.sql" 2>>"$OUT/$fn.err" \
        | sed -n 's/^tps = \([0-9.]*\) .*/\1/p' | head -1
}
# The three phases alternate in ROUNDS rounds of SECS/ROUNDS s each
# (bare, ceiling, chat.send, bare, ...): the load of a shared machine
# drifts over a minute, and a ratio of phases run at different times
# measured that drift as much as chat (0.2.0's runs: 0.22 to 0.37).  Each
# figure is the mean over its rounds; each round's ratio is printed.
rsecs=$(( (SECS + ROUNDS - 1) / ROUNDS ))
bare=0; bare_pk=0; sent=0; rratios=""
for round in $(seq 1 "$ROUNDS"); do
    for fn in bare bare_pk send; do
        psql_b -c "CHECKPOINT" >/dev/null
        catch_up
        say "(a) round $round/$ROUNDS: bench.$fn, $CLIENTS clients, $rsecs s"
        declare "tps_$fn=$(pgb "$fn" "$rsecs")"
    done
    say "(a) round $round: bare $tps_bare rows/s, ceiling $tps_bare_pk rows/s, chat.send $tps_send messages/s, ratio $(awk -v a="$tps_send" -v b="$tps_bare" 'BEGIN { printf "%.3f", a / b }')"
    rratios="$rratios $(awk -v a="$tps_send" -v b="$tps_bare" 'BEGIN { printf "%.3f", a / b }')"
    bare=$(awk -v s="$bare" -v x="$tps_bare" -v n="$ROUNDS" 'BEGIN { printf "%.1f", s + x / n }')
    bare_pk=$(awk -v s="$bare_pk" -v x="$tps_bare_pk" -v n="$ROUNDS" 'BEGIN { printf "%.1f", s + x / n }')
    sent=$(awk -v s="$sent" -v x="$tps_send" -v n="$ROUNDS" 'BEGIN { printf "%.1f", s + x / n }')
done
say "bare: $bare rows/s; ceiling: $bare_pk rows/s; chat.send: $sent messages/s (means of $ROUNDS rounds)"
ratio=$(awk -v a="$sent" -v b="$bare" 'BEGIN { printf "%.3f", a / b }')
ratio_pk=$(awk -v a="$sent" -v b="$bare_pk" 'BEGIN { printf "%.3f", a / b }')
read -r ratio_min ratio_max <<<"$(echo $rratios | tr ' ' '\n' | sort -n | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo, hi }')"
errs=$(grep -c 'ERROR' "$OUT/send.err" || true)
[ "$errs" = 0 ] || say "WARNING: $errs errors in $OUT/send.err"
audit_rows=$(psql_b -c "SELECT (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %s', audit_relid), false, true, '')))[1]::text FROM bv_audit.tracked WHERE relid = 'chat.messages'::regclass")
say "audit rows written: $audit_rows; time per function (ms, self):"
psql_b -F ' ' -c "SELECT schemaname || '.' || funcname, calls, round(self_time::numeric / greatest(calls, 1), 3) FROM pg_stat_user_functions ORDER BY self_time DESC LIMIT 8" | sed 's/^/bench-chat:   /' >&2
catch_up
# CPU per call, one backend, alternating (send, bare) CPUROUNDS times; the
# first calls of a session (plan caching) are left out by a warm-up.
psql_b -c "CALL bench.cpu_loop('send', 50, $ROOMS)" -c "CALL bench.cpu_loop('bare', 50, $ROOMS)" >/dev/null
cpu_send=0; cpu_bare=0
for k in $(seq 1 "$CPUROUNDS"); do
    read -r cs <<<"$(psql_b -c "CALL bench.cpu_loop('send', $CPUN, $ROOMS)")"
    read -r cb <<<"$(psql_b -c "CALL bench.cpu_loop('bare', $CPUN, $ROOMS)")"
    cpu_send=$(awk -v s="$cpu_send" -v x="$cs" -v n="$CPUROUNDS" 'BEGIN { printf "%.3f", s + x / n }')
    cpu_bare=$(awk -v s="$cpu_bare" -v x="$cb" -v n="$CPUROUNDS" 'BEGIN { printf "%.3f", s + x / n }')
done
cpu_ratio=$(awk -v a="$cpu_send" -v b="$cpu_bare" 'BEGIN { printf "%.3f", b / a }')
say "CPU per call in one backend: chat.send $cpu_send ms, bare INSERT $cpu_bare ms (bare/send $cpu_ratio; means of $CPUROUNDS x $CPUN calls)"
catch_up

# ---- (b) delivery to a WebSocket client ----
psql_b -c "INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('bench', 'HS256', 'bench-' || repeat('k', 40))" >/dev/null
member=$(psql_b -c "SELECT user_id FROM chat.members WHERE room_id = 1 ORDER BY user_id LIMIT 1")
token=$(psql_b -c "SELECT bv.jwt_sign(jsonb_build_object('role', 'bv_user', 'sub', '$member', 'exp', extract(epoch FROM now())::bigint + 3600), 'bench')")
until [ "$(psql_b -c "SELECT state FROM bv_realtime.stats")" = running ]; do sleep 0.2; done
# Two runs: the sender with the shipped configuration (synchronous_commit
# on: the commit flushes the WAL and wakes the WAL senders at once), then
# with synchronous_commit off, as in (a): an asynchronous commit reaches the
# gateway's decoder only when the WAL writer flushes it (every
# wal_writer_delay, 200 ms, unless a WAL page fills), which is not chat's
# time.  Per run: the client's p50/p99 from the start of the chat.send()
# call (carried in the message's text) to its arrival, and the send's own
# time in the server (bench.steady's clock around the send).
deliver() {
    local label=$1 sync=$2 lat=$OUT/latency-$1.txt
    /usr/bin/python3 - "ws://127.0.0.1:$WSPORT/socket?access_token=$token&topics=chat:room:1" "$lat" "$((DSECS + 5))" <<'PY' &
import asyncio, datetime, json, sys, time
import websockets
url, out, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
async def main():
    lat, lat_txn = [], []
    async with websockets.connect(url, max_size=None) as ws:
        open(out + '.ready', 'w').close()
        end = time.time() + secs
        while time.time() < end:
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout=max(0.1, end - time.time()))
            except asyncio.TimeoutError:
                break
            now = time.time()
            m = json.loads(raw)
            if m.get('type') == 'message' and m.get('event') == 'message.created':
                if m['payload']['body'] == 'bench steady end':
                    break
                body = m['payload']['body']
                if ' t=' not in body:
                    continue
                # from the send's start (clock_timestamp() before chat.send)
                lat.append((now - float(body.rsplit(' t=', 1)[1])) * 1000)
                # from the sending transaction's start (created_at): the
                # figure of earlier runs, which includes the procedure's
                # sleep before the send (see bench.steady)
                sent = datetime.datetime.fromisoformat(m['payload']['created_at']).timestamp()
                lat_txn.append((now - sent) * 1000)
    with open(out, 'w') as f:
        f.write('\n'.join('%.3f' % x for x in lat) + '\n')
    with open(out + '.txn', 'w') as f:
        f.write('\n'.join('%.3f' % x for x in lat_txn) + '\n')
asyncio.run(main())
PY
    local wspid=$!
    # the whole cluster runs with the setting, the gateway included (its
    # history commit precedes delivery: with the shipped "on" it is one
    # more WAL flush per batch, which (a)'s cluster-wide "off" would hide)
    if [ "$sync" = on ]; then
        psql_b -c "ALTER SYSTEM RESET synchronous_commit" -c "SELECT pg_reload_conf()" >/dev/null
    else
        psql_b -c "ALTER SYSTEM SET synchronous_commit = off" -c "SELECT pg_reload_conf()" >/dev/null
    fi
    until [ -e "$lat.ready" ]; do sleep 0.1; done
    sleep 0.5
    PGOPTIONS="-c synchronous_commit=$sync" psql_b -c "CALL bench.steady($RATE, $DSECS)" >/dev/null
    wait "$wspid" || true
    pct "$lat.txn" >"$lat.txn.pct"
    pct "$lat"
}
pct() {
    sort -n "$1" | awk 'NF { a[n++] = $1 } END { if (n == 0) { print "-1 -1 0"; exit } i50 = int(0.5 * (n - 1) + 0.5); i99 = int(0.99 * (n - 1) + 0.5); printf "%.1f %.1f %d\n", a[i50], a[i99], n }'
}
say "(b) delivery: $RATE messages/s for $DSECS s into a $MAXM-member room, one WebSocket client, synchronous_commit on (shipped)"
read -r d50 d99 dn <<<"$(deliver sync on)"
read -r t50 t99 _ <"$OUT/latency-sync.txt.txn.pct"
read -r g50 g99 <<<"$(psql_b -F ' ' -c "SELECT round(latency_p50_ms::numeric, 1), round(latency_p99_ms::numeric, 1) FROM bv_realtime.stats")"
read -r s50 s99 <<<"$(psql_b -F ' ' -c "SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2), round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 2) FROM bench.steady_times")"
say "delivery: $dn messages, p50 $d50 ms, p99 $d99 ms; of which the send itself: p50 $s50 ms, p99 $s99 ms; gateway commit-to-socket: p50 $g50 ms, p99 $g99 ms; from the sending transaction's start (includes the sleep between sends): p50 $t50 ms, p99 $t99 ms"
psql_b -c "TRUNCATE bench.steady_times" >/dev/null
say "(b') the same with synchronous_commit off (WAL reaches the gateway at the WAL writer's flush)"
read -r a50 a99 an <<<"$(deliver async off)"
say "delivery (asynchronous commit): $an messages, p50 $a50 ms, p99 $a99 ms"

# ---- (c) history page and room list ----
psql_b -c "VACUUM ANALYZE chat.messages, chat.read_state, chat.members" >/dev/null
psql_b -c "SELECT * FROM bench.read_latency('history', $READS)" >/dev/null   # warm-up
read -r h50 h99 h99m <<<"$(psql_b -F ' ' -c "SELECT * FROM bench.read_latency('history', $READS)")"
say "history (50 messages): p50 $h50 ms, p99 $h99 ms (best-of-3 p99 $h99m ms)"
psql_b -c "SELECT * FROM bench.read_latency('rooms', $READS)" >/dev/null
read -r l50 l99 l99m <<<"$(psql_b -F ' ' -c "SELECT * FROM bench.read_latency('rooms', $READS)")"
say "room list with unread counts: p50 $l50 ms, p99 $l99 ms (best-of-3 p99 $l99m ms)"

# The counters are still exact after the run.
wrong=$(psql_b -c "SELECT count(*) FROM chat.counters rs
  CROSS JOIN LATERAL (SELECT count(*) AS u FROM chat.messages m
                       WHERE m.room_id = rs.room_id AND coalesce(m.thread_root, 0) = rs.thread
                         AND m.seq > rs.read_seq AND m.deleted_at IS NULL AND m.sender <> rs.user_id) x
 WHERE rs.unread <> x.u")
say "counters differing from the recount: $wrong"
load=$(cut -d' ' -f1 /proc/loadavg)
printf '{"bench":"chat","scale":"%s","commit":"%s","bv_chat":"%s","rooms":%s,"messages":%s,"memberships":%s,"clients":%s,"messages_per_s":%s,"messages_per_s_bare":%s,"ratio":%s,"ratio_min":%s,"ratio_max":%s,"rounds":%s,"messages_per_s_pk_only":%s,"ratio_pk_only":%s,"delivery_p50_ms":%s,"delivery_p99_ms":%s,"delivered":%s,"delivery_from_txn_start_p99_ms":%s,"send_p99_ms":%s,"gateway_latency_p99_ms":%s,"delivery_async_commit_p50_ms":%s,"delivery_async_commit_p99_ms":%s,"history_p50_ms":%s,"history_p99_ms":%s,"history_p99_min3_ms":%s,"room_list_p50_ms":%s,"room_list_p99_ms":%s,"room_list_p99_min3_ms":%s,"cpu_ms_per_send":%s,"cpu_ms_per_bare":%s,"cpu_ratio":%s,"counter_errors":%s,"load_avg":%s}\n' \
    "${BENCH_SCALE:-default}" "${BV_COMMIT:-unknown}" "$(psql_b -c "SELECT extversion FROM pg_extension WHERE extname = 'bv_chat'")" "$ROOMS" "$nmsg" "$nmem" "$CLIENTS" "$sent" "$bare" "$ratio" "$ratio_min" "$ratio_max" "$ROUNDS" "$bare_pk" "$ratio_pk" \
    "$d50" "$d99" "$dn" "${t99:-null}" "${s99:-null}" "${g99:-null}" "$a50" "$a99" "$h50" "$h99" "$h99m" "$l50" "$l99" "$l99m" "$cpu_send" "$cpu_bare" "$cpu_ratio" "$wrong" "$load"
