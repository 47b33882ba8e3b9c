# bench/include/cdc-load.sh, sourced by the bv_cdc benchmarks (bench/cdc.sh,
# bench/webhook.sh, bench/mqtt-out.sh) after bv_throwaway_cluster: the steps
# they share.
#   psql_q ...               psql on the benchmark's database, quiet, unaligned
#   now                      seconds since the epoch, with nanoseconds
#   wait_for SQL [seconds]   until the query returns t (default 120 s)
#   pause_sink NAME          bv_cdc.pause, then wait until the worker is paused
#   load_rows ROWS TXNS [OFF] ROWS single-row inserts into public.bench(id,
#                            payload), ids from OFF+1, committed in TXNS
#                            transactions
#   resume_and_drain NAME N  bv_cdc.resume, then wait until the sink has N
#                            more events acknowledged; the timed part of the
#                            throughput benchmarks (polled every BENCH_POLL_S
#                            seconds, 0.002 unless the benchmark sets it)
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

# One session resumes and then polls every 2 ms in a loop: the ceiling it is
# compared with (pg_recvlogical) runs with no poller beside it, so the timed
# window must not pay for a psql process and a backend started every 50 ms
# (wait_for), which on this 2-core machine took a tenth of a core from the
# pipeline being measured, and for 25 ms of polling granularity on average.
resume_and_drain() {
    local poll=${BENCH_POLL_S:-0.002}
    psql_q -v sink="$1" -v n="$2" -v poll="$poll" >/dev/null <<'SQL' || bv_die "sink $1 did not drain"
SELECT events + :n AS target FROM bv_cdc.stats_raw() WHERE sink = :'sink' \gset
SELECT bv_cdc.resume(:'sink');
SELECT set_config('bench.sink', :'sink', false), set_config('bench.target', :'target', false),
       set_config('bench.poll', :'poll', false);
DO $$
DECLARE
    give_up timestamptz := clock_timestamp() + interval '600 s';
BEGIN
    WHILE (SELECT events FROM bv_cdc.stats_raw()
            WHERE sink = current_setting('bench.sink')) < current_setting('bench.target')::bigint
    LOOP
        IF clock_timestamp() > give_up THEN
            RAISE EXCEPTION 'sink % did not drain within 600 s', current_setting('bench.sink');
        END IF;
        PERFORM pg_sleep(current_setting('bench.poll')::float8);
    END LOOP;
END $$;
SQL
}

load_rows() {
    local per=$(($1 / $2)) off=${3:-0}
    psql_q >/dev/null <<SQL
CREATE PROCEDURE pg_temp.load() LANGUAGE plpgsql AS \$\$
BEGIN
    FOR t IN 0..$2 - 1 LOOP
        INSERT INTO public.bench
        SELECT g, 'payload-' || g FROM generate_series($off + t * $per + 1, $off + (t + 1) * $per) g;
        COMMIT;
    END LOOP;
END \$\$;
CALL pg_temp.load();
SQL
}
