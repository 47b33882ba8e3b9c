#!/usr/bin/env bash
# tools/bench.sh NAME: run benchmark bench/NAME.sh (see ../shared/BENCHMARKS.md
# for the contract: a fresh throw-away cluster, progress on stderr, one JSON
# line on stdout).  As root it runs as the server user, from a copy under
# $BV_HOME/bench/NAME.  BENCH_SCALE=small gives a quick run.
source "$(dirname "$0")/lib.sh"

name=${1:?usage: tools/bench.sh NAME}
[ -f "$BV_TOP/bench/$name.sh" ] || bv_die "no benchmark '$name'; 'make bench' lists them"
bv_pgbin
bv_resolve_home
OUT=$BV_HOME/bench/$name
rm -rf "$OUT"
mkdir -p "$OUT/src"
cp -r "$BV_TOP/bench" "$BV_TOP/tools" "$BV_TOP/control" "$BV_TOP/sql" "$BV_TOP/postgrest-config" "$OUT/src/"
[ -d "$BV_TOP/tests/tools" ] && mkdir -p "$OUT/src/tests" && cp -r "$BV_TOP/tests/tools" "$OUT/src/tests/"
[ "$(id -u)" -ne 0 ] || chown -R "$BV_PG_USER": "$OUT"
commit=$(git -C "$BV_TOP" rev-parse --short HEAD 2>/dev/null || echo unknown)
cd "$OUT"
bv_as_pg env BV_TOP="$OUT/src" BV_HOME="$BV_HOME" BV_BENCH_OUT="$OUT" PG_CONFIG="$PG_CONFIG" \
    BENCH_SCALE="${BENCH_SCALE:-default}" BV_COMMIT="$commit" \
    bash "$OUT/src/bench/$name.sh"
