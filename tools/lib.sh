# tools/lib.sh: shell functions shared by BitVelocity's tools (sourced).
#
# Paths:  BV_TOP   the checkout
#         BV_HOME  state: the local cluster, test clusters, logs (default
#                  $BV_TOP/.bv; see bv_resolve_home for the root case)
#         PGBIN    PostgreSQL's programs, from PG_CONFIG

set -euo pipefail

BV_TOP=${BV_TOP:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
BV_PG_USER=${BV_PG_USER:-postgres}

bv_say()  { printf '%s\n' "$*"; }
bv_warn() { printf 'bitvelocity: %s\n' "$*" >&2; }
bv_die()  { printf 'bitvelocity: error: %s\n' "$*" >&2; exit 1; }

bv_pgbin() {
    [ -x "$PG_CONFIG" ] || bv_die "pg_config not found at $PG_CONFIG; run 'make deps' or set PG_CONFIG"
    PGBIN=$("$PG_CONFIG" --bindir)
    export PGBIN
}

# PostgreSQL refuses to run as root: as root, run server-side commands as the
# unprivileged $BV_PG_USER; otherwise as ourselves.
bv_as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u "$BV_PG_USER" -- "$@"
    else
        "$@"
    fi
}

# BV_HOME must be writable by whoever runs the server.  As root, that is
# $BV_PG_USER, which cannot enter a checkout under a private directory such as
# /root; then the state moves to /var/tmp/bitvelocity-<uid of checkout path>.
bv_resolve_home() {
    if [ -n "${BV_HOME:-}" ]; then
        :
    elif [ "$(id -u)" -eq 0 ] && ! runuser -u "$BV_PG_USER" -- test -x "$BV_TOP" 2>/dev/null; then
        BV_HOME=/var/tmp/bitvelocity-$(printf '%s' "$BV_TOP" | cksum | cut -d' ' -f1)
    else
        BV_HOME=$BV_TOP/.bv
    fi
    mkdir -p "$BV_HOME"
    if [ "$(id -u)" -eq 0 ]; then
        id "$BV_PG_USER" >/dev/null 2>&1 || bv_die "user $BV_PG_USER does not exist; run 'make deps' (the postgresql-15 package creates it)"
        chown "$BV_PG_USER": "$BV_HOME"
    fi
    export BV_HOME
}

# The suite's extensions in an order that satisfies their "requires".
# BV_EXTENSIONS="bv_core bv_x" limits the list (to test one part alone).
bv_extensions_ordered() {
    local done=" " left ext req ok progress
    left=$(for f in "$BV_TOP"/control/*.control; do basename "$f" .control; done)
    if [ -n "${BV_EXTENSIONS:-}" ]; then
        left=$(for ext in $left; do [[ " $BV_EXTENSIONS " == *" $ext "* ]] && echo "$ext"; done || true)
    fi
    while [ -n "$left" ]; do
        progress=
        for ext in $left; do
            ok=1
            for req in $(sed -n "s/^requires *= *'\(.*\)'/\1/p" "$BV_TOP/control/$ext.control" | tr ',' ' '); do
                case "$req" in bv_*) [[ "$done" == *" $req "* ]] || ok= ;; esac
            done
            if [ -n "$ok" ]; then
                echo "$ext"; done="$done$ext "; progress=1
                left=$(printf '%s\n' $left | grep -vx "$ext" || true)
            fi
        done
        [ -n "$progress" ] || bv_die "circular 'requires' among: $left"
    done
}

# Is something listening on TCP port $1 of the loopback interface?
bv_port_busy() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# A free TCP port at or above $1.
bv_free_port() {
    local p=$1
    while bv_port_busy "$p"; do p=$((p + 1)); done
    echo "$p"
}

# A new cluster in $1, owned by the server user, whose postgresql.conf
# includes the suite's settings and the instance's own (see bv_write_conf).
bv_initdb() {
    local data=$1
    mkdir -p "$(dirname "$data")"
    [ "$(id -u)" -ne 0 ] || chown "$BV_PG_USER": "$(dirname "$data")"
    bv_as_pg "$PGBIN/initdb" -D "$data" -U postgres -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >"$data.initdb.log" 2>&1 \
        || { cat "$data.initdb.log" >&2; bv_die "initdb failed for $data"; }
    printf "\n# BitVelocity\ninclude = 'bitvelocity.conf'\ninclude = 'instance.conf'\n" \
        | bv_as_pg tee -a "$data/postgresql.conf" >/dev/null
}

# (Re)write a cluster's BitVelocity settings: tools/bitvelocity.conf, and the
# instance's port and socket directory.  Done at every start, so edits to
# tools/bitvelocity.conf reach existing clusters.
#   bv_write_conf DATADIR PORT SOCKETDIR
bv_write_conf() {
    local data=$1 port=$2 sockdir=$3
    bv_as_pg tee "$data/bitvelocity.conf" <"$BV_TOP/tools/bitvelocity.conf" >/dev/null
    printf "# written by tools/lib.sh at each start\nport = %s\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\n" \
        "$port" "$sockdir" | bv_as_pg tee "$data/instance.conf" >/dev/null
    # bv_core secrets: the master key file, when the caller has one
    # (tools/cluster.sh creates $BV_HOME/master.key).
    if [ -n "${BV_MASTER_KEY_FILE:-}" ]; then
        printf "bv.master_key_file = '%s'\n" "$BV_MASTER_KEY_FILE" | bv_as_pg tee -a "$data/instance.conf" >/dev/null
    fi
    bv_as_pg mkdir -p -m 0700 "$sockdir"
}

# Start a throw-away cluster in directory $1 on a free port at or above $2,
# with database "bitvelocity" holding pg_cron, the suite's extensions and any
# extra extensions named after them.  Exports PGHOST, PGPORT, PGUSER,
# PGDATABASE for the commands that follow.  Run as the server user.
#   bv_throwaway_cluster DIR PORTBASE [EXTRA_EXTENSION...]
bv_throwaway_cluster() {
    local dir=$1 port ext
    port=$(bv_free_port "$2")
    shift 2
    rm -rf "$dir"
    mkdir -p "$dir"
    bv_initdb "$dir/data"
    bv_write_conf "$dir/data" "$port" "$dir/run"
    "$PGBIN/pg_ctl" start -D "$dir/data" -l "$dir/server.log" -w -t 60 >/dev/null \
        || { tail -20 "$dir/server.log" >&2; bv_die "the throw-away cluster in $dir did not start"; }
    export PGHOST=$dir/run PGPORT=$port PGUSER=postgres PGDATABASE=bitvelocity
    "$PGBIN/psql" -X -q -d postgres -c 'CREATE DATABASE bitvelocity'
    for ext in pg_cron $(bv_extensions_ordered) "$@"; do
        "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -c "CREATE EXTENSION \"$ext\" CASCADE"
    done
    "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -f "$BV_TOP/tools/cron-reload.sql" >/dev/null
}

bv_throwaway_stop() {
    "$PGBIN/pg_ctl" stop -D "$1/data" -m fast -w >/dev/null 2>&1 || true
}
