#!/usr/bin/env bash
# tools/cluster.sh: the local BitVelocity cluster under $BV_HOME (default .bv/).
#
#   cluster.sh start    initialise if needed, start, create database
#                       "bitvelocity" with every extension, print how to connect
#   cluster.sh stop     stop it
#   cluster.sh status   say whether it runs, where, and what is installed
#
# BV_PORT (default 5440) is the TCP port on 127.0.0.1; the unix socket lives
# in $BV_HOME/run.  Safe to run again: a running cluster is left running, and
# installed extensions are updated to the versions on disk.
source "$(dirname "$0")/lib.sh"

BV_PORT=${BV_PORT:-5440}
BV_DB=bitvelocity

bv_pgbin
bv_resolve_home
DATA=$BV_HOME/data
LOGDIR=$BV_HOME/log
LOG=$LOGDIR/postgresql.log
SOCK=$BV_HOME/run

running_pid() {
    [ -f "$DATA/postmaster.pid" ] || return 1
    bv_as_pg "$PGBIN/pg_ctl" status -D "$DATA" >/dev/null 2>&1 || return 1
    head -1 "$DATA/postmaster.pid"
}

running_port() { sed -n 4p "$DATA/postmaster.pid"; }

psql_bv() {
    PGOPTIONS='-c client_min_messages=warning' "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$(running_port)" -U postgres "$@"
}

# bv_core seals secrets with a 32-byte master key read from a file that only
# the server's OS user may read (mode 0600); create one on first start.
master_key() {
    BV_MASTER_KEY_FILE=$BV_HOME/master.key
    if [ ! -f "$BV_MASTER_KEY_FILE" ]; then
        (umask 077; head -c 32 /dev/urandom >"$BV_MASTER_KEY_FILE")
        [ "$(id -u)" -ne 0 ] || chown "$BV_PG_USER": "$BV_MASTER_KEY_FILE"
        bv_say "cluster: created the secrets master key $BV_MASTER_KEY_FILE (back it up: secrets cannot be read without it)"
    fi
    export BV_MASTER_KEY_FILE
}

cmd_start() {
    local pid stale
    if [ ! -f "$DATA/PG_VERSION" ]; then
        bv_say "cluster: creating a new cluster in $DATA"
        bv_initdb "$DATA"
    fi

    if pid=$(running_pid); then
        bv_say "cluster: already running (pid $pid, port $(running_port))"
    else
        if [ -f "$DATA/postmaster.pid" ]; then
            stale=$(head -1 "$DATA/postmaster.pid")
            bv_warn "removing stale $DATA/postmaster.pid: process $stale is not a running server (left by a crash or a killed machine)"
            rm -f "$DATA/postmaster.pid"
        fi
        if bv_port_busy "$BV_PORT"; then
            bv_die "port $BV_PORT on 127.0.0.1 is in use by another program; stop it, or choose another port: make run BV_PORT=$((BV_PORT + 1))"
        fi
        master_key
        bv_write_conf "$DATA" "$BV_PORT" "$SOCK"
        mkdir -p "$LOGDIR"; [ "$(id -u)" -ne 0 ] || chown "$BV_PG_USER": "$LOGDIR"
        if ! bv_as_pg "$PGBIN/pg_ctl" start -D "$DATA" -l "$LOG" -w -t 60 >/dev/null; then
            bv_warn "the server did not start; the end of $LOG says:"
            tail -n 15 "$LOG" >&2
            exit 1
        fi
        bv_say "cluster: started (pid $(running_pid), port $BV_PORT)"
    fi

    if [ -z "$(psql_bv -d postgres -Atc "SELECT 1 FROM pg_database WHERE datname = '$BV_DB'")" ]; then
        psql_bv -d postgres -c "CREATE DATABASE $BV_DB"
    fi
    psql_bv -d "$BV_DB" -c "CREATE EXTENSION IF NOT EXISTS pg_cron"
    for ext in $(bv_extensions_ordered); do
        psql_bv -d "$BV_DB" -v ext="$ext" <<'SQL'
SELECT format('CREATE EXTENSION IF NOT EXISTS %I CASCADE', :'ext') \gexec
SELECT format('ALTER EXTENSION %I UPDATE', :'ext')
  FROM pg_extension e JOIN pg_available_extensions a ON a.name = e.extname
 WHERE e.extname = :'ext' AND e.extversion <> a.default_version \gexec
SQL
    done
    psql_bv -d "$BV_DB" -q -f "$BV_TOP/tools/cron-reload.sql" >/dev/null
}

cmd_status() {
    local pid
    if ! pid=$(running_pid); then
        bv_say "PostgreSQL: stopped (data directory $DATA)"
        return 0
    fi
    bv_say "PostgreSQL 15: running, pid $pid, port $(running_port), data $DATA, log $LOG"
    bv_say "  connect:  psql -h $SOCK -p $(running_port) -U postgres $BV_DB"
    bv_say "  preloaded: $(psql_bv -d postgres -Atc 'SHOW shared_preload_libraries')"
    bv_say "  extensions in $BV_DB:"
    psql_bv -d "$BV_DB" -Atc "SELECT format('    %-12s %s', extname, extversion) FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY extname" 2>/dev/null \
        || bv_say "    (database $BV_DB does not exist yet)"
}

cmd_stop() {
    if running_pid >/dev/null; then
        bv_as_pg "$PGBIN/pg_ctl" stop -D "$DATA" -m fast -w >/dev/null
        bv_say "PostgreSQL: stopped"
    else
        bv_say "PostgreSQL: not running"
    fi
}

# Peers (Kafka mock, mosquitto, PostgREST, ...): each tools/peers/<name>.sh
# takes start|stop|status and runs with this script's environment (BV_HOME,
# BV_PORT, SOCK, PGBIN); peers start after the database, stop before it.
peers() {
    local p
    for p in "$BV_TOP"/tools/peers/*.sh; do
        [ -f "$p" ] || continue
        SOCK=$SOCK BV_DB=$BV_DB BV_PORT=$(running_port 2>/dev/null || echo "$BV_PORT") \
            bash "$p" "$1" || { [ "$1" != start ] || exit 1; }
    done
}

case "${1:-}" in
    start) cmd_start; peers start; cmd_status; peers status ;;
    stop) peers stop; cmd_stop ;;
    status) cmd_status; peers status ;;
    *) bv_die "usage: $0 start|stop|status" ;;
esac
