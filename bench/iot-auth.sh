#!/usr/bin/env bash
# bench/iot-auth.sh: how fast registry changes reach the broker (make
# bench-iot-auth): bv_iot's bridge rewrites mosquitto's password and ACL
# files and signals it (ADR 0081), against doing the same by hand.
#
# A throw-away cluster with the suite's configuration, a fleet of DEVICES
# provisioned devices (all in the password file) and a mosquitto configured
# as `make run` configures it (per-listener settings, pid file, the bridge
# keeps auth_dir).  ROUNDS times each:
#   revoke     a device is disabled; the clock runs from the commit until
#              a connection attempt with its secret is refused
#   provision  a new device is provisioned; from the commit until a
#              connection with the secret it got is accepted
# Connection attempts are mosquitto_pub runs back to back; a figure is the
# start of the first attempt that saw the new state (an accepted attempt
# takes ~30 ms here, a refused one ~250 ms: mosquitto_pub waits for the
# refusal, which bounds the resolution of provision_*).  signal_* is the
# bridge's part alone, from iot.broker_auth: the change's transaction to
# files written and SIGHUP sent.  Baseline, in the same
# run: the bridge's auth_dir off, and right after each commit this script
# writes the files from iot.mosquitto_passwd()/mosquitto_acl() and sends
# SIGHUP itself (what `tools/peers/iot.sh reload-auth` did before 0.3.0):
# the floor of any file-and-signal approach (written by us here).
# JSON: revoke_p50_ms, revoke_p99_ms, provision_p50_ms, provision_p99_ms,
# signal_p50_ms, signal_p99_ms, manual_revoke_p50_ms, manual_revoke_p99_ms,
# revoke_ratio (bridge p50 / manual p50), devices.  BENCH_SCALE=small: 300 devices, 5 rounds.
# shellcheck source=/dev/null
source "$BV_TOP/tools/lib.sh"
bv_pgbin
# shellcheck source=include/cdc-load.sh
source "$BV_TOP/bench/include/cdc-load.sh"
export BV_EXTENSIONS=${BV_EXTENSIONS:-bv_core bv_audit bv_iot}

if [ "${BENCH_SCALE:-default}" = small ]; then DEVICES=300; ROUNDS=5; else DEVICES=5000; ROUNDS=20; fi
OUT=$BV_BENCH_OUT
say() { printf 'bench-iot-auth: %s\n' "$*" >&2; }

mkdir -p "$OUT/key" "$OUT/broker"
head -c 32 /dev/urandom >"$OUT/key/master.key"
chmod 600 "$OUT/key/master.key"
export BV_MASTER_KEY_FILE=$OUT/key/master.key
bv_throwaway_cluster "$OUT/cluster" 58400
BROKER_PID=
cleanup() {
    [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null
    bv_throwaway_stop "$OUT/cluster"
}
trap cleanup EXIT

PORT=$(bv_free_port 18960)
BRIDGE_PW=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')
B=$OUT/broker
say "provisioning $DEVICES devices"
psql_q -c "SELECT count(*) FROM generate_series(1, $DEVICES) g, iot.provision_device('fleet-' || g)" >/dev/null
write_files() {
    psql_q -c "SELECT * FROM iot.mosquitto_passwd('bv_iot_bridge', '$BRIDGE_PW')" >"$B/passwd.manual" && mv "$B/passwd.manual" "$B/passwd"
    psql_q -c "SELECT * FROM iot.mosquitto_acl('bv_iot_bridge')" >"$B/acl.manual" && mv "$B/acl.manual" "$B/acl"
}
write_files
cat >"$B/mosquitto.conf" <<CONF
per_listener_settings true
pid_file $B/mosquitto.pid
listener $PORT 127.0.0.1
allow_anonymous false
password_file $B/passwd
acl_file $B/acl
persistence false
max_inflight_messages 0
log_dest file $B/mosquitto.log
log_type error
log_type warning
CONF
mosquitto -c "$B/mosquitto.conf" >"$B/mosquitto.out" 2>&1 &
BROKER_PID=$!
for _ in $(seq 100); do bv_port_busy "$PORT" && [ -s "$B/mosquitto.pid" ] && break; sleep 0.1; done
bv_port_busy "$PORT" || bv_die "mosquitto did not start; see $B/mosquitto.log"
psql_q >/dev/null <<SQL
SELECT bv.secret_set('iot_bridge_password', '$BRIDGE_PW');
UPDATE iot.bridge_config SET enabled = true, port = $PORT, username = 'bv_iot_bridge',
       password_secret = 'iot_bridge_password', auth_dir = '$B', broker_pid_file = '$B/mosquitto.pid';
SQL
wait_for "SELECT state = 'running' FROM iot.bridge_stats"
wait_for "SELECT in_sync AND error IS NULL FROM iot.broker_auth"
say "bridge connected; the broker's files follow the registry"

# attempt DEVICE SECRET: 0 when the broker accepts the connection.
attempt() {
    mosquitto_pub -h 127.0.0.1 -p "$PORT" -u "$1" -P "$2" -q 0 -t "devices/$1/telemetry" -m '{"metric":"m","value":1}' \
        >/dev/null 2>&1
}
# until_state accepted|refused DEVICE SECRET T0: ms from T0 to the start of
# the first attempt with that outcome.
until_state() {
    local want=$1 dev=$2 secret=$3 t0=$4 i ts
    for i in $(seq 20000); do
        ts=$(now)
        if attempt "$dev" "$secret"; then [ "$want" = accepted ] && break; else [ "$want" = refused ] && break; fi
    done
    [ "$i" -lt 20000 ] || bv_die "$dev never $want"
    python3 -c "print(round(max(0.0, $ts - $t0) * 1000, 1))"
}
signal_ms() {
    wait_for "SELECT in_sync FROM iot.broker_auth"
    psql_q -c "SELECT round((extract(epoch FROM applied_at - changed_at) * 1000)::numeric, 1) FROM iot.broker_auth"
}

REVOKE=()
SIGNAL=()
PROVISION=()
MANUAL=()
for r in $(seq "$ROUNDS"); do
    dev=fleet-$r
    secret=$(psql_q -c "SELECT iot.rotate_device_secret('$dev')")
    wait_for "SELECT in_sync FROM iot.broker_auth"
    until_state accepted "$dev" "$secret" "$(now)" >/dev/null
    psql_q -c "UPDATE iot.devices SET status = 'disabled' WHERE device_id = '$dev'"
    t0=$(now)
    REVOKE+=("$(until_state refused "$dev" "$secret" "$t0")")
    SIGNAL+=("$(signal_ms)")
    new=late-$r
    secret=$(psql_q -c "SELECT secret FROM iot.provision_device('$new')")
    t0=$(now)
    PROVISION+=("$(until_state accepted "$new" "$secret" "$t0")")
    SIGNAL+=("$(signal_ms)")
    say "round $r: revoke ${REVOKE[-1]} ms, provision ${PROVISION[-1]} ms (bridge: commit to signal ${SIGNAL[-2]}, ${SIGNAL[-1]} ms)"
done

say "baseline: the bridge's auth_dir off; files written and SIGHUP sent by hand"
psql_q -c "UPDATE iot.bridge_config SET auth_dir = NULL, broker_pid_file = NULL" >/dev/null
for r in $(seq "$ROUNDS"); do
    dev=fleet-$((ROUNDS + r))
    secret=$(psql_q -c "SELECT iot.rotate_device_secret('$dev')")
    write_files
    kill -HUP "$BROKER_PID"
    until_state accepted "$dev" "$secret" "$(now)" >/dev/null
    psql_q -c "UPDATE iot.devices SET status = 'disabled' WHERE device_id = '$dev'"
    t0=$(now)
    write_files
    kill -HUP "$BROKER_PID"
    MANUAL+=("$(until_state refused "$dev" "$secret" "$t0")")
    say "round $r: revoke by hand ${MANUAL[-1]} ms"
done

python3 - "$DEVICES" "${REVOKE[*]}" "${PROVISION[*]}" "${MANUAL[*]}" "${SIGNAL[*]}" <<'PY'
import json, os, sys
devices = int(sys.argv[1])
rev, prov, man, sig = ([float(x) for x in a.split()] for a in sys.argv[2:6])
def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]
print(json.dumps({
    "bench": "iot-auth", "scale": os.environ.get("BENCH_SCALE", "default"),
    "commit": os.environ.get("BV_COMMIT", "unknown"), "devices": devices, "rounds": len(rev),
    "revoke_p50_ms": pct(rev, 50), "revoke_p99_ms": pct(rev, 99),
    "provision_p50_ms": pct(prov, 50), "provision_p99_ms": pct(prov, 99),
    "manual_revoke_p50_ms": pct(man, 50), "manual_revoke_p99_ms": pct(man, 99),
    "signal_p50_ms": pct(sig, 50), "signal_p99_ms": pct(sig, 99),
    "revoke_ratio": round(pct(rev, 50) / pct(man, 50), 2),
}))
PY
