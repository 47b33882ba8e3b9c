#!/usr/bin/env bash
# bench/audit-instructions.sh: what bv_audit's triggers cost, counted in
# instructions (make bench-audit-instructions).
#
# bench-audit's pgbench rates and CPU times move by a third between
# neighbouring runs on this VM.  Instruction counts do not: valgrind's
# callgrind counts the instructions a backend executes, the same for the
# same binary and input whatever else the machine does.  This benchmark
# sets up the same tables and variants as bench-audit
# (bench/include/audit-setup.sh: none, floor, write_floor, bv_audit,
# capture, plpgsql, plpgsql_full, wal), stops the server and runs the backend in
# single-user mode under callgrind, feeding it the workloads as prepared
# statements (PREPARE once, then EXECUTE), each statement its own transaction,
# synchronous_commit = off:
#   update  UPDATE ... SET balance = balance + 1 WHERE id = <spread key>
#   insert  INSERT of one new row
# Each variant runs twice, with N1 and N2 statements; (I(N2) - I(N1)) /
# (N2 - N1) is the cost of one statement, free of start-up and shutdown.
# Reported: *_instructions per statement and *_instr_overhead_pct against
# "none".  Kernel work (the client's socket, WAL writes, the WAL writer's
# wake-ups) is outside what callgrind counts, so these percentages are
# higher than the same trigger costs measured as time in bench-audit.
# Also reported, from callgrind's inclusive costs: the stamp trigger
# (with the actor/trace context read once per statement) and the capture
# trigger per statement.  Needs valgrind (preinstalled on this kind of
# machine; Debian package valgrind).
# WAL mode (wal): only the writer's side is counted (the context message
# per statement); the worker is not running in single-user mode, and its
# work is off the writer's path.  wal_<workload>_instructions_ratio is its
# extra instructions over trigger mode's (capture).
# Progress on stderr, one JSON line on stdout.
source "$BV_TOP/tools/lib.sh"
bv_pgbin
command -v valgrind >/dev/null || bv_die "valgrind is missing; install the Debian package valgrind"
command -v callgrind_annotate >/dev/null || bv_die "callgrind_annotate is missing; install the Debian package valgrind"

case "${BENCH_SCALE:-default}" in
    small) ROWS=10000; N1=100; N2=500 ;;
    *)     ROWS=100000; N1=500; N2=2500 ;;
esac
say() { printf 'audit-instructions: %s\n' "$*" >&2; }

# shellcheck source=include/audit-setup.sh
source "$BV_TOP/bench/include/audit-setup.sh"

# Steady state, as in bench-audit's pgbench runs, which update every row
# several times: every row updated once through its variant's triggers (so
# the stamped tables' rows carry their four audit columns, and the audit
# tables have history), then VACUUM, which leaves the pages the free space
# that HOT updates use.  Without this, every profiled UPDATE would be the
# first of its row: widening stamped rows and rarely HOT, a cost that
# steady-state writes do not pay.
say "warm-up: every row updated once, then VACUUM"
for v in $VARIANTS; do
    psql -c "UPDATE public.t_$v SET balance = balance"
done
# The WAL worker records t_wal's warm-up in a transaction of its own; a
# VACUUM that ran beside it could not remove t_wal's dead row versions, and
# the profiled UPDATEs of t_wal would then pay for them (killed index
# entries, pruning): wait until it is done.
psql -At -c "SELECT bv_audit.wait_for(pg_current_wal_insert_lsn(), '300 seconds')" | grep -qx t ||
    bv_die "the WAL worker did not record the warm-up"
psql -c "VACUUM ANALYZE"
"$PGBIN/pg_ctl" stop -D "$OUT/cluster/data" -m fast -w >/dev/null

# The statements of one run: keys spread over the table, the same in every
# variant.
statements() { # workload variant count
    local i
    if [ "$1" = update ]; then
        printf 'PREPARE w(bigint) AS UPDATE public.t_%s SET balance = balance + 1 WHERE id = $1;\n' "$2"
        for ((i = 0; i < $3; i++)); do
            printf 'EXECUTE w(%d);\n' $(((i * 7919) % ROWS + 1))
        done
    else
        printf "PREPARE w AS INSERT INTO public.t_%s (id, name, balance, note) VALUES (nextval('public.t_%s_ins'), 'new row', 1, 'some note text');\n" "$2" "$2"
        for ((i = 0; i < $3; i++)); do
            echo 'EXECUTE w;'
        done
    fi
}

# Run one workload under callgrind; prints the profile's file name.
profile() { # workload variant count
    local f="$OUT/callgrind.$1.$2.$3"
    statements "$1" "$2" "$3" >"$OUT/statements.sql"
    valgrind --tool=callgrind --callgrind-out-file="$f" \
        "$PGBIN/postgres" --single -D "$OUT/cluster/data" -c synchronous_commit=off bitvelocity \
        <"$OUT/statements.sql" >"$OUT/single.out" 2>"$OUT/valgrind.log" ||
        { tail -20 "$OUT/valgrind.log" >&2; bv_die "the $1 $2 run failed"; }
    grep -q ERROR "$OUT/single.out" && { grep ERROR "$OUT/single.out" | head -3 >&2; bv_die "the $1 $2 run had errors"; }
    echo "$f"
}

# Inclusive instructions of a function in a profile (0 when absent).
inclusive() { # file function
    callgrind_annotate --inclusive=yes --threshold=100 "$1" 2>/dev/null |
        awk -v fn="$2" '{ n = $1; gsub(",", "", n)
                          for (i = 2; i <= NF; i++) { name = $i; sub(/.*:/, "", name)
                                                      if (name == fn && n + 0 > best) best = n + 0 } }
                        END { print best + 0 }'
}

declare -A per # "<workload>_<variant>" -> instructions per statement
declare -A fn  # "<workload>_<function>" -> inclusive instructions per statement
for w in update insert; do
    for v in $VARIANTS; do
        a=$(profile "$w" "$v" "$N1")
        b=$(profile "$w" "$v" "$N2")
        ia=$(sed -n 's/^summary: \([0-9]*\)/\1/p' "$a")
        ib=$(sed -n 's/^summary: \([0-9]*\)/\1/p' "$b")
        per[${w}_$v]=$(((ib - ia) / (N2 - N1)))
        say "$w $v: ${per[${w}_$v]} instructions per statement"
        if [ "$v" = bv_audit ]; then
            for f in bv_audit_stamp_trigger bv_audit_capture_trigger; do
                fn[${w}_$f]=$((($(inclusive "$b" $f) - $(inclusive "$a" $f)) / (N2 - N1)))
                say "$w $v: $f ${fn[${w}_$f]} instructions per statement"
            done
        fi
    done
done

pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / a * 100 }'; }
ratio() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.2f", (a - n) / (b - n) }'; } # none variant reference: (variant - none) / (reference - none)
json="{\"bench\":\"audit-instructions\",\"scale\":\"${BENCH_SCALE:-default}\",\"commit\":\"${BV_COMMIT:-unknown}\""
json+=",\"rows\":$ROWS,\"statements\":$((N2 - N1))"
for w in update insert; do
    for v in $VARIANTS; do
        json+=",\"${w}_${v}_instructions\":${per[${w}_$v]}"
    done
    for v in floor write_floor bv_audit capture plpgsql plpgsql_full wal; do
        json+=",\"${w}_${v}_instr_overhead_pct\":$(pct "${per[${w}_none]}" "${per[${w}_$v]}")"
    done
    # bv_audit's overhead as a share of each PL/pgSQL variant's (target: < 1/3
    # of plpgsql's), its history alone's (like for like with plpgsql), and
    # the write floor's: the least bv_audit's share can be
    for f in bv_audit capture write_floor; do
        for v in plpgsql plpgsql_full; do
            json+=",\"${w}_${f}_per_${v}_overhead\":$(ratio "${per[${w}_none]}" "${per[${w}_$f]}" "${per[${w}_$v]}")"
        done
    done
    # WAL mode (#19): the writer's extra instructions as a share of trigger
    # mode's (capture: the history alone, like for like; target <= 0.2).
    json+=",\"wal_${w}_instructions_ratio\":$(ratio "${per[${w}_none]}" "${per[${w}_wal]}" "${per[${w}_capture]}")"
    json+=",\"${w}_stamp_trigger_instructions\":${fn[${w}_bv_audit_stamp_trigger]}"
    json+=",\"${w}_capture_trigger_instructions\":${fn[${w}_bv_audit_capture_trigger]}"
done
json+="}"
echo "$json"
