# bench/include/commerce-cdc.sh, sourced by bench/commerce.sh for its "on" run:
# bv_cdc streams every commerce table to the mock Kafka cluster
# (tests/tools/bv_kafka_mock), as `make run` routes orders and payments.
psql_b -c 'CREATE EXTENSION IF NOT EXISTS bv_cdc' >/dev/null
"$BV_TOP/tests/tools/bv_kafka_mock" >"$OUT/kafka.addr" 2>"$OUT/kafka.log" &
MOCK_PID=$!
for _ in $(seq 100); do [ -s "$OUT/kafka.addr" ] && break; sleep 0.1; done
[ -s "$OUT/kafka.addr" ] || bv_die "the Kafka mock did not start; see $OUT/kafka.log"
psql_b -v boot="$(head -1 "$OUT/kafka.addr")" >/dev/null <<'SQL'
SELECT bv_cdc.add_sink('bench', 'kafka', jsonb_build_object('bootstrap.servers', :'boot'));
SELECT bv_cdc.add_route('commerce.*', 'bench');
SQL
for _ in $(seq 300); do
    [ "$(psql_b -c "SELECT coalesce(bool_and(worker_state = 'streaming' AND state = 'up'), false) FROM bv_cdc.stats WHERE sink = 'bench'")" = t ] && break
    sleep 0.2
done
