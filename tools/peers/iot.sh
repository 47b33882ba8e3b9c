#!/usr/bin/env bash
# tools/peers/iot.sh start|stop|status: bv_iot's broker, bridge and a small
# simulated fleet for `make run`.
#
# Starts a mosquitto of its own on 127.0.0.1:$BV_IOT_MQTT_PORT (default
# 18831; bv_cdc's demo broker stays anonymous on 18830) that enforces device
# identity: anonymous access off, a password file from iot.mosquitto_passwd()
# (every active device, PBKDF2 hashes as stored in iot.devices, plus the
# bridge's user) and the ACL from iot.mosquitto_acl() (a device may only use
# devices/<its id>/...); a TLS listener on $BV_IOT_MQTTS_PORT (18832) takes
# client certificates of the demo CA, names each by its subject and lets it
# use only the topics of the device it is recorded for
# (iot.mosquitto_acl_certs()).  The bridge keeps those files up to date:
# iot.bridge_config.auth_dir and broker_pid_file point it at this broker,
# and after every registry change it rewrites them and sends mosquitto
# SIGHUP (docs/adr/0081).  This script writes them once, before mosquitto
# starts; as root, mosquitto runs as $BV_PG_USER so that the server's
# worker may signal it.  Points the bridge at it (its password in
# bv.secrets), provisions three demo devices sim-1..3 and starts one
# simulator process per device: it publishes a reading every 2 s and
# answers each command with an ack and a "succeeded" result; its command
# connection has a last will ("offline" on devices/<id>/status), so killing
# a simulator takes its device offline.
# Called by tools/cluster.sh after the database started (env: BV_HOME,
# SOCK, BV_DB, BV_PORT, PGBIN).
set -euo pipefail

BV_DB=${BV_DB:-bitvelocity}
SOCK=${SOCK:?SOCK (the socket directory) is not set}
DIR=${BV_HOME:?BV_HOME is not set}/iot
PORT=${BV_IOT_MQTT_PORT:-18831}
TLS_PORT=${BV_IOT_MQTTS_PORT:-18832}
PKI=$DIR/pki
TLS_ON=
PIDFILE=$DIR/mosquitto.pid
SIMPIDS=$DIR/simulators.pids
CONF=$DIR/mosquitto.conf
LOG=$DIR/mosquitto.log
STOP_FILES="$SIMPIDS"
BRIDGE_USER=bv_iot_bridge
FLEET="sim-1 sim-2 sim-3"
BROKER_PIDFILE=$DIR/broker.pid
# The user mosquitto runs as: the server's, so that the bridge may signal it.
if [ "$(id -u)" -eq 0 ]; then RUN_AS=${BV_PG_USER:-postgres}; else RUN_AS=$(id -un); fi

PEER=iot
# shellcheck source=lib/peer.sh
source "$(dirname "$0")/lib/peer.sh"

installed() { [ "$(psql_bv -c "SELECT count(*) FROM pg_extension WHERE extname = 'bv_iot'")" = 1 ]; }

write_auth() {
    local pw
    pw=$(psql_bv -c "SELECT bv.secret_get('iot_bridge_password')" 2>/dev/null || true)
    if [ -z "$pw" ]; then
        pw=$(head -c 24 /dev/urandom | base64 | tr '+/' '-_')
        psql_bv -c "SELECT bv.secret_set('iot_bridge_password', '$pw')" >/dev/null
    fi
    umask 077
    psql_bv -c "SELECT * FROM iot.mosquitto_passwd('$BRIDGE_USER', bv.secret_get('iot_bridge_password'))" >"$DIR/passwd.tmp"
    mv "$DIR/passwd.tmp" "$DIR/passwd"
    psql_bv -c "SELECT * FROM iot.mosquitto_acl('$BRIDGE_USER')" >"$DIR/acl"
    psql_bv -c "SELECT * FROM iot.mosquitto_acl_certs()" >"$DIR/acl_certs"
}

write_conf() {
    cat >"$CONF" <<CONF
# written by tools/peers/iot.sh at each start; the bv_iot bridge rewrites
# passwd, acl and acl_certs after each registry change and sends SIGHUP
per_listener_settings true
user $RUN_AS
pid_file $BROKER_PIDFILE
listener $PORT 127.0.0.1
allow_anonymous false
password_file $DIR/passwd
acl_file $DIR/acl
persistence true
persistence_location $DIR/
autosave_interval 10
max_inflight_messages 0
max_queued_messages 1000000
log_dest file $LOG
log_type error
log_type warning
log_type notice
log_type information
CONF
    if [ -n "$TLS_ON" ]; then
        cat >>"$CONF" <<CONF
# devices with a client certificate from $PKI/ca.crt, recorded in
# iot.device_certificates: the subject is the user name, acl_certs says
# which device's topics it may use
listener $TLS_PORT 127.0.0.1
allow_anonymous false
cafile $PKI/ca.crt
certfile $PKI/broker.crt
keyfile $PKI/broker.key
require_certificate true
use_subject_as_username true
acl_file $DIR/acl_certs
CONF
    fi
}

# The demo CA (kept across starts) and the broker's certificate.  The CA
# may sign leaf certificates only (pathlen:0): a certificate it signed by
# mistake with CA:TRUE (an intermediate nobody approved) cannot issue
# certificates the broker accepts, whatever subject they carry; every
# certificate it signs says CA:FALSE (red-team round 5).
make_pki() {
    mkdir -p "$PKI/devices"
    (
        umask 077
        if [ ! -s "$PKI/ca.crt" ]; then
            openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -days 3650 \
                -subj "/CN=BitVelocity demo device CA" \
                -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
                -addext "keyUsage=critical,keyCertSign,cRLSign" \
                -keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>>"$DIR/pki.err"
        elif ! openssl x509 -in "$PKI/ca.crt" -noout -ext basicConstraints 2>/dev/null | grep -q 'pathlen:0'; then
            warn "$PKI/ca.crt has no path length 0: certificates of intermediates it signed pass the broker's handshake; remove $PKI to make a new demo CA (then issue-cert again)"
        fi
        if [ ! -s "$PKI/broker.crt" ]; then
            printf 'basicConstraints=critical,CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$PKI/broker.ext"
            openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -subj /CN=127.0.0.1 \
                -keyout "$PKI/broker.key" -out "$PKI/broker.csr" 2>>"$DIR/pki.err"
            openssl x509 -req -in "$PKI/broker.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
                -days 825 -extfile "$PKI/broker.ext" -out "$PKI/broker.crt" 2>>"$DIR/pki.err"
        fi
    )
    chmod 644 "$PKI/ca.crt" "$PKI/broker.crt"
}

# A client certificate for a registered device (CN = its id, and a random
# serialNumber so that every certificate has a subject of its own), recorded
# in iot.device_certificates: from then on it is the device's only
# certificate that the broker accepts.
issue_cert() {
    local id=$1
    [[ "$id" =~ ^[A-Za-z0-9_-]{1,64}$ ]] || die "invalid device id (1-64 of A-Z a-z 0-9 _ -)"
    [ -s "$PKI/ca.key" ] || die "no demo CA yet: start the IoT peer first (make run)"
    [ "$(psql_bv -v id="$id" <<<"SELECT count(*) FROM iot.devices WHERE device_id = :'id'")" = 1 ] ||
        die "device $id is not registered: provision it first"
    (
        umask 077
        printf 'basicConstraints=critical,CA:FALSE\nextendedKeyUsage=clientAuth\n' >"$PKI/devices/$id.ext"
        openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
            -subj "/CN=$id/serialNumber=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" \
            -keyout "$PKI/devices/$id.key" -out "$PKI/devices/$id.csr" 2>>"$DIR/pki.err"
        openssl x509 -req -in "$PKI/devices/$id.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
            -days 825 -extfile "$PKI/devices/$id.ext" -out "$PKI/devices/$id.crt" 2>>"$DIR/pki.err"
    )
    psql_bv -v id="$id" -v cert="$(cat "$PKI/devices/$id.crt")" >/dev/null <<<"SELECT iot.set_device_certificate(:'id', :'cert')"
    say "certificate for $id: $PKI/devices/$id.crt (key $id.key), fingerprint recorded in iot.device_certificates"
}

# One simulated device: readings every 2 s; ack + result for each command.
simulate() {
    local id=$1 secret=$2
    (
        mosquitto_sub -h 127.0.0.1 -p "$PORT" -u "$id" -P "$secret" -i "$id" -c -q 1 \
            --will-topic "devices/$id/status" --will-payload offline --will-qos 1 --will-retain \
            -t "devices/$id/commands" -F %p 2>>"$DIR/sim.err" |
            while read -r cmd; do
                cid=$(printf '%s' "$cmd" | sed -n 's/.*"id": *\([0-9][0-9]*\).*/\1/p')
                [ -n "$cid" ] || continue
                mosquitto_pub -h 127.0.0.1 -p "$PORT" -u "$id" -P "$secret" -q 1 -t "devices/$id/ack" -m "{\"id\":$cid}"
                mosquitto_pub -h 127.0.0.1 -p "$PORT" -u "$id" -P "$secret" -q 1 -t "devices/$id/result" \
                    -m "{\"id\":$cid,\"status\":\"succeeded\",\"result\":{\"handled_by\":\"$id\"}}"
            done
    ) </dev/null >>"$DIR/sim.out" 2>&1 &
    echo $! >>"$SIMPIDS"
    (
        # Its command connection carries the last will; say "online" (retained,
        # like the will) once it is up.
        sleep 1
        mosquitto_pub -h 127.0.0.1 -p "$PORT" -u "$id" -P "$secret" -q 1 -r -t "devices/$id/status" -m online \
            2>>"$DIR/sim.err" || true
        while sleep 2; do
            mosquitto_pub -h 127.0.0.1 -p "$PORT" -u "$id" -P "$secret" -q 1 -t "devices/$id/telemetry" \
                -m "[{\"metric\":\"temp\",\"value\":$((180 + RANDOM % 80))e-1},{\"metric\":\"humidity\",\"value\":$((30 + RANDOM % 40))}]" \
                2>>"$DIR/sim.err" || true
        done
    ) </dev/null >>"$DIR/sim.out" 2>&1 &
    echo $! >>"$SIMPIDS"
}

cmd_start() {
    mkdir -p "$DIR"
    command -v mosquitto >/dev/null || { warn "mosquitto is not installed (make deps); no IoT peer"; return 0; }
    installed || { say "bv_iot is not installed in $BV_DB; no IoT peer"; return 0; }
    if running; then
        say "already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"
        return 0
    fi
    if port_busy "$PORT"; then
        warn "port $PORT on 127.0.0.1 is in use; no IoT peer (choose another: make run BV_IOT_MQTT_PORT=$((PORT + 1)))"
        return 0
    fi
    psql_bv -c "SELECT bv.set_actor('demo-customer'); SELECT iot.provision_device(d, metadata => '{\"demo\": true}') FROM unnest(string_to_array('$FLEET', ' ')) d
                WHERE NOT EXISTS (SELECT 1 FROM iot.devices x WHERE x.device_id = d)" >/dev/null
    # The demo keeps no secrets on disk: new ones at each start.
    declare -A secret
    for d in $FLEET; do
        secret[$d]=$(psql_bv -c "SELECT iot.rotate_device_secret('$d')")
    done
    TLS_ON=
    if ! command -v openssl >/dev/null; then
        warn "openssl is not installed; no TLS listener"
    elif port_busy "$TLS_PORT"; then
        warn "port $TLS_PORT on 127.0.0.1 is in use; no TLS listener (choose another: make run BV_IOT_MQTTS_PORT=$((TLS_PORT + 1)))"
    else
        make_pki && TLS_ON=1
    fi
    write_auth
    write_conf
    # As root: mosquitto drops to $RUN_AS and then rewrites its log, database
    # and pid file and reads the bridge's files there (not the CA's key).
    if [ "$(id -u)" -eq 0 ]; then
        touch "$LOG"
        find "$DIR" -maxdepth 1 ! -name pki -exec chown "$RUN_AS" {} +
        # mosquitto reads its own key after dropping privileges
        [ ! -f "$PKI/broker.key" ] || chown "$RUN_AS" "$PKI/broker.key"
    fi
    rm -f "$BROKER_PIDFILE"
    nohup mosquitto -c "$CONF" >>"$DIR/mosquitto.out" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    for _ in $(seq 100); do
        port_busy "$PORT" && break
        running || die "mosquitto exited; see $LOG and $DIR/mosquitto.out"
        sleep 0.1
    done
    psql_bv -v dir="$DIR" -v pidfile="$BROKER_PIDFILE" >/dev/null <<SQL
UPDATE iot.bridge_config SET enabled = true, host = '127.0.0.1', port = $PORT,
       username = '$BRIDGE_USER', password_secret = 'iot_bridge_password',
       auth_dir = :'dir', broker_pid_file = :'pidfile'
SQL
    : >"$SIMPIDS"
    for d in $FLEET; do simulate "$d" "${secret[$d]}"; done
    if [ -n "$TLS_ON" ] && [ ! -s "$PKI/devices/sim-1.crt" ]; then
        issue_cert sim-1 >/dev/null
    elif [ -n "$TLS_ON" ]; then
        # Recorded again: a database upgraded from bv_iot 0.2.0 lacks its subject.
        psql_bv -v cert="$(cat "$PKI/devices/sim-1.crt")" >/dev/null <<<"SELECT iot.set_device_certificate('sim-1', :'cert')"
    fi
    say "started on 127.0.0.1:$PORT${TLS_ON:+ (TLS with client certificates: $TLS_PORT)} with simulated devices $FLEET"
}

cmd_stop_all() {
    if [ -f "$SIMPIDS" ]; then
        while read -r p; do
            pkill -P "$p" 2>/dev/null || true
            kill "$p" 2>/dev/null || true
        done <"$SIMPIDS"
    fi
    cmd_stop
}

show() {
    local psql="$PGBIN/psql -h $SOCK -p ${BV_PORT:-5440} -U postgres $BV_DB"
    say "mosquitto running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT, log $LOG; bridge: SELECT * FROM iot.bridge_stats"
    say "  watch data arrive:  $psql -c \"SELECT device_id, metric, value, ts FROM iot.telemetry ORDER BY received_at DESC LIMIT 10\""
    say "  send a command:     $psql -c \"SELECT iot.send_command('sim-1', 'reboot', '{\\\"delay\\\": 1}')\""
    say "  and see it answered: $psql -c \"SELECT id, state, result FROM iot.commands ORDER BY id DESC LIMIT 5\""
    say "  online status (MQTT last will): $psql -c \"SELECT device_id, online, last_seen, offline_at FROM iot.device_status\""
    say "  over REST (docs/bv_iot.md): GET /iot_devices, POST /rpc/iot_send_command, GET /rpc/iot_rollups?device_id=sim-1&metric=temp&since=<ISO time>"
    say "  (sim-1..3 belong to demo-customer, the sub of the TOKEN PostgREST prints below)"
    say "  devices provisioned, disabled or rotated later reach this broker within a second (SELECT * FROM iot.broker_auth)"
    if grep -q "^listener $TLS_PORT " "$CONF" 2>/dev/null; then
        say "  TLS with a client certificate (the one recorded for the device; no password): 127.0.0.1:$TLS_PORT, e.g. as sim-1:"
        say "    mosquitto_pub -h 127.0.0.1 -p $TLS_PORT --cafile $PKI/ca.crt --cert $PKI/devices/sim-1.crt --key $PKI/devices/sim-1.key -q 1 -t devices/sim-1/telemetry -m '{\"metric\":\"temp\",\"value\":21.5}'"
        say "  a certificate for another device: BV_HOME=$BV_HOME SOCK=$SOCK PGBIN=$PGBIN BV_PORT=${BV_PORT:-5440} $0 issue-cert <device>"
    fi
}

case "${1:-}" in
    stop) cmd_stop_all ;;
    # The bridge does this by itself after each change; by hand, e.g. while it is stopped:
    reload-auth) write_auth; running && kill -HUP "$(cat "$PIDFILE")"; say "password and ACL files regenerated" ;;
    issue-cert) issue_cert "${2:?usage: $0 issue-cert DEVICE}" ;;
    # The demo CA and broker certificate only (tests make the PKI make run ships).
    make-pki) make_pki ;;
    *) peer_main "$@" ;;
esac
