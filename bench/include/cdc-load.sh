# bench/include/cdc-load.sh, sourced by the bv_cdc benchmarks (bench/cdc.sh,
# bench/webhook.sh, bench/mqtt-out.sh) after bv_throwaway_cluster: the steps
# they share.
#   psql_q ...               psql on the benchmark's database, quiet, unaligned
#   now                      seconds since the epoch, with nanoseconds
#   wait_for SQL [seconds]   until the query returns t (default 120 s)
#   pause_sink NAME          bv_cdc.pause, then wait until the worker is paused
#   load_rows ROWS TXNS      ROWS single-row inserts into public.bench(id,
#                            payload), committed in TXNS transactions
psql_q() { "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 "$@"; }
now() { date +%s.%N; }

wait_for() {
    for _ in $(seq $((${2:-120} * 20))); do
        [ "$(psql_q -c "$1")" = t ] && return 0
        sleep 0.05
    done
    bv_die "timed out waiting for: $1"
}

pause_sink() {
    psql_q -v sink="$1" >/dev/null <<<"SELECT bv_cdc.pause(:'sink')"
    wait_for "SELECT state = 'paused' FROM bv_cdc.worker()"
}

load_rows() {
    local per=$(($1 / $2))
    psql_q >/dev/null <<SQL
CREATE PROCEDURE pg_temp.load() LANGUAGE plpgsql AS \$\$
BEGIN
    FOR t IN 0..$2 - 1 LOOP
        INSERT INTO public.bench
        SELECT g, 'payload-' || g FROM generate_series(t * $per + 1, (t + 1) * $per) g;
        COMMIT;
    END LOOP;
END \$\$;
CALL pg_temp.load();
SQL
}
