# tools/peers/lib/peer.sh, sourced by the peers of `make run`
# (tools/peers/<name>.sh): what they share.  The peer sets PEER (its name in
# messages) and PIDFILE, defines cmd_start and show, may set STOP_FILES
# (removed with the pid file on stop), then calls peer_main "$@".
say() { printf '%s: %s\n' "$PEER" "$*"; }
warn() { printf '%s: warning: %s\n' "$PEER" "$*" >&2; }
die() { printf '%s: error: %s\n' "$PEER" "$*" >&2; exit 1; }

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# psql on the suite's database as the bootstrap superuser, over the socket.
psql_bv() {
    PGOPTIONS='-c client_min_messages=warning' "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 \
        -h "$SOCK" -p "${BV_PORT:-5440}" -U postgres -d "$BV_DB" "$@"
}

cmd_stop() {
    if running; then
        kill "$(cat "$PIDFILE")"
        say "stopped"
    else
        say "not running"
    fi
    # shellcheck disable=SC2086
    rm -f "$PIDFILE" ${STOP_FILES:-}
}

cmd_status() {
    if running; then show; else say "stopped"; fi
}

peer_main() {
    case "${1:-}" in
        start) cmd_start ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        *) die "usage: $0 start|stop|status" ;;
    esac
}
