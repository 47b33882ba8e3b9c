#!/usr/bin/env bash
# bench/audit.sh: the cost of bv_audit's triggers on single-row writes.
#
# pgbench, -M prepared, synchronous_commit=off (so that commit flushes do not
# hide the triggers' own cost), 1 and 8 clients, on a table of 100k rows
# (BENCH_SCALE=small: 10k rows and short runs), two workloads:
#   update  UPDATE ... SET balance = balance + 1 WHERE id = <random id>
#   insert  INSERT of one new row
# seven variants side by side, on identical tables in the same cluster
# (none, floor, write_floor, bv_audit, capture, plpgsql, plpgsql_full; see
# bench/include/audit-setup.sh).
# Runs are short, interleaved (variant innermost) and repeated ROUNDS times.
# This VM's speed drifts by tens of percent over minutes, more than the
# effect measured, so each round compares the variants with the "none" run
# just before them: an overhead is the median over the rounds of
# (none - variant) / none within a round, and a rate is the median of the
# rounds.  Settings: synchronous_commit = off, shared_buffers = 1GB.
# Even so, 1-client rates move by a third between neighbouring runs on this
# VM, so the 1-client runs also measure what the triggers cost in CPU: the
# backend's own CPU time per transaction (/proc/<pid>/schedstat, which
# leaves out time spent waiting for a CPU), reported as *_cpu_us and
# *_cpu_overhead_pct (median over the rounds, within-round as above).
#
# The 1-client throughput overheads that the issue names come from a third
# measurement, which the VM's drift hits far less: in each round, one
# pgbench client runs every variant's script at once, picking one at random
# for each transaction (pgbench -f ... -f ..., equal weights), and logs
# every transaction's latency (pgbench -l).  The variants then share every
# moment of the run, and a variant's mean latency is what one transaction
# of it takes on this machine then.  With one client the rate is one over
# that latency, so the throughput overhead is 1 - mean(none) / mean(variant)
# (*_overhead_pct, median over the rounds; *_c1_*_mixed_ms the latencies).
# In a scratch check two identical tables measured this way differed by
# 0.2-1.6%, where separate runs differ by tens of percent; single rounds of
# the variants here still move by a few points, hence the medians.  The separate runs' overheads stay in the JSON
# as *_seq_overhead_pct.
# WAL mode (#19, variant wal) is measured in the same runs; then, alone,
# its lag at a steady LAG_RATE = 5,000 single-row UPDATEs per second
# (pgbench -R, 2 clients): a sampler takes the WAL insert position every
# 20 ms and times bv_audit.wait_for() on it, i.e. how long after a commit
# the history covers it (wal_lag_p50_ms, wal_lag_p99_ms).  wal_lost: the
# changes made to t_wal over the whole benchmark (every UPDATE adds 1 to a
# balance, every INSERT adds a row) minus the records the worker wrote
# (0: nothing lost; negative: duplicates).  wal_apply_per_s: how fast the
# worker records a backlog (BACKLOG UPDATEs made while it sleeps), the
# ceiling of the rate whose lag stays bounded.
# Progress on stderr, one JSON line on stdout.
source "$BV_TOP/tools/lib.sh"
bv_pgbin

case "${BENCH_SCALE:-default}" in
    small) ROWS=10000; DURATION=2; MIXED_DURATION=4; ROUNDS=3; LAG_DURATION=8; BACKLOG=5000 ;; # 3 rounds: a median
    *)     ROWS=100000; DURATION=5; MIXED_DURATION=20; ROUNDS=7; LAG_DURATION=60; BACKLOG=20000 ;;
esac
LAG_RATE=${BENCH_LAG_RATE:-5000} # the issue's rate; lower to see the latency apart from throughput
say() { printf 'audit: %s\n' "$*" >&2; }

# shellcheck source=include/audit-setup.sh
source "$BV_TOP/bench/include/audit-setup.sh"

declare -A rates # "<workload>_c<clients>_<variant>" -> one tps per round
declare -A cpus  # "<workload>_c1_<variant>" -> backend CPU µs per transaction, per round
run_once() { # workload clients variant; 1: the backend ended before its CPU time was read
    local tps pid first last pgb
    psql -c CHECKPOINT
    # The previous run's backends may still be exiting; the backend whose CPU
    # is read below must be this run's only pgbench backend.
    psql -c "DO \$\$ BEGIN
               FOR i IN 1 .. 1000 LOOP
                   EXIT WHEN NOT EXISTS (SELECT FROM pg_stat_activity WHERE application_name = 'pgbench');
                   PERFORM pg_sleep(0.01);
               END LOOP;
             END \$\$"
    "$PGBIN/pgbench" -n -M prepared -c "$2" -j "$2" -T "$DURATION" -f "$OUT/$1_$3.sql" \
        >"$OUT/pgbench.out" 2>"$OUT/pgbench.err" &
    pgb=$!
    if [ "$2" = 1 ]; then
        # The backend's CPU time, read until pgbench ends (it runs while
        # pgbench does: the connection is pgbench's).
        for _ in $(seq 200); do
            pid=$(psql -At -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgbench' AND backend_type = 'client backend' ORDER BY backend_start DESC LIMIT 1")
            [ -n "$pid" ] && break
            sleep 0.01
        done
        [ -n "$pid" ] || bv_die "pgbench $1 $2 $3: its backend did not appear"
        first=$(cut -d' ' -f1 "/proc/$pid/schedstat" 2>/dev/null) || {
            # Under heavy load the whole run can end before this read.
            wait "$pgb"
            say "round $r: $1 clients=$2 $3: backend $pid ended before its CPU time was read; again"
            return 1
        }
        last=$first
        while kill -0 "$pgb" 2>/dev/null; do
            last=$(cut -d' ' -f1 "/proc/$pid/schedstat" 2>/dev/null || echo "$last")
            sleep 0.02
        done
    fi
    wait "$pgb" || { cat "$OUT/pgbench.err" >&2; bv_die "pgbench $1 $2 $3 failed"; }
    tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$OUT/pgbench.out")
    [ -n "$tps" ] || { cat "$OUT/pgbench.err" >&2; bv_die "pgbench $1 $2 $3 printed no rate"; }
    rates[$1_c$2_$3]+="$tps "
    if [ "$2" = 1 ]; then
        local n cpu
        n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$OUT/pgbench.out")
        cpu=$(awk -v a="$first" -v b="$last" -v n="$n" 'BEGIN { printf "%.2f", (b - a) / n / 1000 }')
        cpus[$1_c1_$3]+="$cpu "
        say "round $r: $1 clients=$2 $3: $tps tps, backend CPU $cpu µs per transaction"
    else
        say "round $r: $1 clients=$2 $3: $tps tps"
    fi
}

run() { # workload clients variant
    local attempt
    for attempt in 1 2 3; do
        run_once "$@" && return 0
    done
    bv_die "pgbench $1 $2 $3: three runs ended before their backend's CPU time could be read"
}

declare -A mixed # "<workload>_<variant>" -> mean latency in µs, one per round
run_mixed() { # workload
    local files=() v i means
    for v in $VARIANTS; do files+=(-f "$OUT/$1_$v.sql"); done
    psql -c CHECKPOINT
    rm -f "$OUT"/mixed_log.*
    "$PGBIN/pgbench" -n -M prepared -c 1 -j 1 -T "$MIXED_DURATION" -l --log-prefix="$OUT/mixed_log" "${files[@]}" \
        >"$OUT/pgbench.out" 2>"$OUT/pgbench.err" || { cat "$OUT/pgbench.err" >&2; bv_die "pgbench $1 mixed failed"; }
    # Log lines: client transaction latency_us script_no epoch epoch_us.
    # Every script must have run, and no transaction may have failed.
    means=$(awk '$3 !~ /^[0-9]+$/ { bad++ } { n[$4]++; s[$4] += $3 }
                 END { if (bad) exit 1; for (k = 0; k < nv; k++) { if (!n[k]) exit 1; printf "%.2f ", s[k] / n[k] } }' \
                nv="$(wc -w <<<"$VARIANTS")" "$OUT"/mixed_log.*) ||
        { cat "$OUT/pgbench.out" >&2; bv_die "pgbench $1 mixed: a variant failed or never ran"; }
    i=1
    for v in $VARIANTS; do
        mixed[$1_$v]+="$(cut -d' ' -f$i <<<"$means") "
        i=$((i + 1))
    done
    say "round $r: $1 mixed, mean µs per transaction ($VARIANTS): $means"
    rm -f "$OUT"/mixed_log.*
}

for r in $(seq 1 "$ROUNDS"); do
    for w in update insert; do
        run_mixed "$w"
        for c in 1 8; do
            for v in $VARIANTS; do run "$w" "$c" "$v"; done
        done
    done
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{ a[NR] = $1 } END { printf "%.1f", NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# Median over the rounds of the variant's overhead against "none" of the same round.
overhead() { # workload clients variant
    paste -d' ' <(tr ' ' '\n' <<<"${rates[$1_c$2_none]}" | grep .) <(tr ' ' '\n' <<<"${rates[$1_c$2_$3]}" | grep .) \
        | awk '{ printf "%f ", ($1 - $2) / $1 * 100 }' | median
}
# The mixed runs' throughput overhead, 1 - none / variant, median over the rounds.
mixed_overhead() { # workload variant
    paste -d' ' <(tr ' ' '\n' <<<"${mixed[$1_none]}" | grep .) <(tr ' ' '\n' <<<"${mixed[$1_$2]}" | grep .) \
        | awk '{ printf "%f ", ($2 - $1) / $2 * 100 }' | median
}
# The same for CPU per transaction (1 client): (variant - none) / none.
cpu_overhead() { # workload variant
    paste -d' ' <(tr ' ' '\n' <<<"${cpus[$1_c1_none]}" | grep .) <(tr ' ' '\n' <<<"${cpus[$1_c1_$2]}" | grep .) \
        | awk '{ printf "%f ", ($2 - $1) / $1 * 100 }' | median
}

# WAL mode's apply rate: BACKLOG single-row UPDATEs of t_wal made while
# the worker sleeps (bv_audit.wal_naptime_ms = 60 s, bv_audit.wal_wakeup off), then the records the
# worker writes per second of wall time until bv_audit.wait_for() says the
# history covers them (records written before the wake-up are left out).
say "WAL mode: apply rate of a backlog of $BACKLOG changes"
psql -At -c "SELECT bv_audit.wait_for(pg_current_wal_insert_lsn(), '300 seconds')" | grep -qx t ||
    bv_die "the WAL worker did not catch up before the backlog run"
psql -o /dev/null -c "ALTER SYSTEM SET bv_audit.wal_naptime_ms = 60000" \
    -c "ALTER SYSTEM SET bv_audit.wal_wakeup = off" -c "SELECT pg_reload_conf()"
psql -o /dev/null -c "SELECT pg_sleep(0.5)" # the worker takes the setting at its next pass
"$PGBIN/pgbench" -n -M prepared -c 1 -j 1 -t "$BACKLOG" -f "$OUT/update_wal.sql" \
    >"$OUT/backlog_pgbench.out" 2>"$OUT/backlog_pgbench.err" ||
    { cat "$OUT/backlog_pgbench.err" >&2; bv_die "pgbench for the backlog failed"; }
apply_rate=$(psql -At <<'SQL' | tail -1
ALTER SYSTEM RESET bv_audit.wal_naptime_ms;
ALTER SYSTEM RESET bv_audit.wal_wakeup;
CREATE TEMP TABLE drain AS
    SELECT clock_timestamp() AS t0, (SELECT s.records FROM bv_audit.wal_status() s) AS r0,
           pg_current_wal_insert_lsn() AS lsn;
SELECT pg_reload_conf();
SELECT bv_audit.wait_for((SELECT d.lsn FROM drain d), '600 seconds');
SELECT round(((SELECT s.records FROM bv_audit.wal_status() s) - d.r0)
             / extract(epoch FROM clock_timestamp() - d.t0)) FROM drain d;
SQL
)
say "WAL mode: the worker recorded a backlog at $apply_rate changes/s"

# WAL mode's lag at a steady rate.
say "WAL mode: lag at $LAG_RATE changes/s for $LAG_DURATION s"
psql -At -c "SELECT bv_audit.wait_for(pg_current_wal_insert_lsn(), '300 seconds')" | grep -qx t ||
    bv_die "the WAL worker did not catch up before the lag run"
"$PGBIN/pgbench" -n -M prepared -c 2 -j 2 -R "$LAG_RATE" -T "$LAG_DURATION" -f "$OUT/update_wal.sql" \
    >"$OUT/lag_pgbench.out" 2>"$OUT/lag_pgbench.err" &
lagpgb=$!
lag=$(psql -At <<SQL
CREATE TEMP TABLE lag (ms double precision);
DO \$\$
DECLARE
    stop timestamptz := clock_timestamp() + interval '$((LAG_DURATION - 1)) seconds';
    t0 timestamptz;
    l pg_lsn;
BEGIN
    PERFORM pg_sleep(0.5);  -- pgbench connects
    WHILE clock_timestamp() < stop LOOP
        l := pg_current_wal_insert_lsn();
        t0 := clock_timestamp();
        IF NOT bv_audit.wait_for(l, interval '30 seconds') THEN
            RAISE EXCEPTION 'the WAL worker fell 30 s behind';
        END IF;
        INSERT INTO lag VALUES (extract(epoch FROM clock_timestamp() - t0) * 1000);
        PERFORM pg_sleep(0.02);
    END LOOP;
END
\$\$;
SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1) || ' ' ||
       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1) || ' ' || count(*) FROM lag;
SQL
)
wait "$lagpgb" || { cat "$OUT/lag_pgbench.err" >&2; bv_die "pgbench at $LAG_RATE/s failed"; }
lag_rate=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$OUT/lag_pgbench.out")
read -r lag_p50 lag_p99 lag_n <<<"$lag"
say "WAL mode at $lag_rate changes/s: lag p50 $lag_p50 ms, p99 $lag_p99 ms ($lag_n samples)"
psql -At -c "SELECT bv_audit.wait_for(pg_current_wal_insert_lsn(), '300 seconds')" | grep -qx t ||
    bv_die "the WAL worker did not catch up after the lag run"
wal_lost=$(psql -At <<SQL
SELECT ((SELECT sum(balance) - sum(id * 10) FROM public.t_wal WHERE id <= $ROWS)
        - (SELECT count(*) FROM bv_audit.public__t_wal WHERE audit_op = 'U'))
     + ((SELECT count(*) FROM public.t_wal WHERE id > $ROWS)
        - (SELECT count(*) FROM bv_audit.public__t_wal WHERE audit_op = 'I'))
SQL
)
say "WAL mode: $wal_lost changes without a record"

# Sanity: the audited variant really wrote audit records.
audited=$(psql -At -c "SELECT count(*) FROM bv_audit.public__t_bv_audit WHERE audit_op IN ('I', 'U')")
[ "$audited" -gt 0 ] || bv_die "bv_audit wrote no audit records"
say "bv_audit wrote $audited audit records"
audited=$(psql -At -c "SELECT count(*) FROM bv_audit.public__t_capture WHERE audit_op IN ('I', 'U')")
[ "$audited" -gt 0 ] || bv_die "the capture variant wrote no audit records"
# And the PL/pgSQL comparison did its whole job (changed columns included).
full=$(psql -At -c "SELECT count(*) FROM public.ref_full_log WHERE op = 'U' AND 'balance' = ANY (changed)")
[ "$full" -gt 0 ] || bv_die "the plpgsql_full variant recorded no changed columns"
# And the write floor wrote its records.
floor=$(psql -At -c "SELECT count(*) FROM public.write_floor_log WHERE audit_op IN ('I', 'U')")
[ "$floor" -gt 0 ] || bv_die "the write_floor variant wrote no records"

json="{\"bench\":\"audit\",\"scale\":\"${BENCH_SCALE:-default}\",\"commit\":\"${BV_COMMIT:-unknown}\""
json+=",\"rows\":$ROWS,\"duration_s\":$DURATION,\"mixed_duration_s\":$MIXED_DURATION,\"rounds\":$ROUNDS"
for w in update insert; do
    for c in 1 8; do
        for v in $VARIANTS; do
            json+=",\"${w}_c${c}_${v}_per_s\":$(median <<<"${rates[${w}_c${c}_${v}]}")"
        done
    done
done
for w in update insert; do
    for v in $VARIANTS; do
        json+=",\"${w}_c1_${v}_mixed_ms\":$(median <<<"${mixed[${w}_${v}]}" | awk '{ printf "%.4f", $1 / 1000 }')"
    done
done
# Overheads against "none": bv_audit's unprefixed (the issue's names), the
# others prefixed with their variant; from the mixed runs, and from the
# separate runs (seq).
for v in bv_audit capture plpgsql plpgsql_full floor write_floor wal; do
    p=${v#bv_audit}
    for w in update insert; do
        json+=",\"${p:+${p}_}${w}_overhead_pct\":$(mixed_overhead "$w" "$v")"
        json+=",\"${p:+${p}_}${w}_seq_overhead_pct\":$(overhead "$w" 1 "$v")"
    done
done
for w in update insert; do
    for v in $VARIANTS; do
        json+=",\"${w}_c1_${v}_cpu_us\":$(median <<<"${cpus[${w}_c1_${v}]}")"
    done
done
for v in bv_audit capture plpgsql plpgsql_full floor write_floor wal; do
    p=${v#bv_audit}
    for w in update insert; do
        json+=",\"${p:+${p}_}${w}_cpu_overhead_pct\":$(cpu_overhead "$w" "$v")"
    done
done
json+=",\"update_overhead_c8_pct\":$(overhead update 8 bv_audit)"
json+=",\"insert_overhead_c8_pct\":$(overhead insert 8 bv_audit)"
json+=",\"wal_update_overhead_c8_pct\":$(overhead update 8 wal)"
json+=",\"wal_insert_overhead_c8_pct\":$(overhead insert 8 wal)"
json+=",\"wal_lag_rate_per_s\":${lag_rate:-0},\"wal_lag_p50_ms\":${lag_p50:-null},\"wal_lag_p99_ms\":${lag_p99:-null}"
json+=",\"wal_lag_samples\":${lag_n:-0},\"wal_lost\":${wal_lost:-null},\"wal_apply_per_s\":${apply_rate:-null}"
json+="}"
echo "$json"
