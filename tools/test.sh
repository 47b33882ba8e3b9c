#!/usr/bin/env bash
# tools/test.sh: every test suite, each on its own throw-away cluster.
#
#   1. pg_regress  tests/regress/sql/*.sql against expected/*.out
#   2. pgTAP       tests/pgtap/*.sql, run with pg_prove
#   3. TAP         tests/tap/*.pl, on PostgreSQL::Test::Cluster
#
# The suites run as the server's OS user (as root: $BV_PG_USER), from a copy
# of the tests under $BV_HOME/test that this user can read.  BV_TESTS=<glob>
# limits every suite to the tests whose name matches, e.g. BV_TESTS='*actor*';
# BV_EXTENSIONS limits the extensions installed in the test databases and
# BV_TEST_PORT_BASE moves the ports, so that two runs can go side by side
# (with different BV_HOME).
# Ends with one line "N passed, M failed"; exits 1 when anything failed.
source "$(dirname "$0")/lib.sh"

bv_pgbin
PGXS_DIR=$(cd "$(dirname "$("$PG_CONFIG" --pgxs)")/../.." && pwd)
export PGXS_DIR

if [ "${1:-}" != --runner ]; then
    bv_resolve_home
    OUT=$BV_HOME/test
    rm -rf "$OUT"
    mkdir -p "$OUT/src"
    cp -r "$BV_TOP/tests" "$BV_TOP/tools" "$BV_TOP/control" "$BV_TOP/postgrest-config" "$BV_TOP/sql" "$OUT/src/"
    [ "$(id -u)" -ne 0 ] || chown -R "$BV_PG_USER": "$OUT"
    # Peers that come from outside Debian are installed before the suites run.
    postgrest=$("$BV_TOP/tools/postgrest.sh" install "$BV_HOME/postgrest")
    bv_as_pg env BV_POSTGREST="$postgrest" BV_TOP="$OUT/src" BV_HOME="$BV_HOME" BV_OUT="$OUT" \
        BV_TESTS="${BV_TESTS:-*}" PG_CONFIG="$PG_CONFIG" \
        BV_EXTENSIONS="${BV_EXTENSIONS:-}" BV_TEST_PORT_BASE="${BV_TEST_PORT_BASE:-54320}" \
        bash "$OUT/src/tools/test.sh" --runner
    exit $?
fi

# ---- runner, as the server user, from the copy ----
OUT=$BV_OUT
SRC=$BV_TOP
cd "$OUT"
passed=0
failed=0
failures=()

record() {
    if [ "$2" = ok ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        failures+=("$1")
    fi
}

selected() {
    local f base
    for f in "$@"; do
        [ -e "$f" ] || continue
        base=$(basename "${f%.*}")
        # shellcheck disable=SC2053
        [[ $base == $BV_TESTS ]] && echo "$f"
    done
}

extensions_to_load() {
    echo pg_cron
    # pg_regress creates extensions without CASCADE: contrib extensions that
    # a suite extension requires come first (bv_chat: pg_trgm).
    echo pg_trgm
    bv_extensions_ordered
}

# ---- 1. pg_regress ----
mapfile -t regress < <(selected "$SRC"/tests/regress/sql/*.sql)
if [ ${#regress[@]} -gt 0 ]; then
    bv_say "== pg_regress: ${#regress[@]} test(s)"
    mkdir -p "$OUT/regress"
    load=()
    for e in $(extensions_to_load); do load+=("--load-extension=$e"); done
    names=()
    for f in "${regress[@]}"; do names+=("$(basename "$f" .sql)"); done
    "$PGXS_DIR/src/test/regress/pg_regress" \
        --temp-instance="$OUT/regress/instance" \
        --temp-config="$SRC/tools/bitvelocity.conf" \
        --inputdir="$SRC/tests/regress" --outputdir="$OUT/regress" \
        --bindir="$PGBIN" --port="$(bv_free_port "$BV_TEST_PORT_BASE")" \
        --dbname=bitvelocity "${load[@]}" "${names[@]}" \
        >"$OUT/regress/output.txt" 2>&1 || true
    sed -n '/\.\.\./p' "$OUT/regress/output.txt"
    for n in "${names[@]}"; do
        if grep -Eq "^(test| ) +$n +\.\.\. ok" "$OUT/regress/output.txt"; then
            record "regress/$n" ok
        else
            record "regress/$n" fail
        fi
    done
    if [ -s "$OUT/regress/regression.diffs" ]; then
        bv_say "---- $OUT/regress/regression.diffs ----"
        cat "$OUT/regress/regression.diffs"
    elif grep -q FAILED "$OUT/regress/output.txt" || ! grep -q '\.\.\.' "$OUT/regress/output.txt"; then
        cat "$OUT/regress/output.txt"
    fi
fi

# ---- 2. pgTAP ----
mapfile -t pgtap < <(selected "$SRC"/tests/pgtap/*.sql)
if [ ${#pgtap[@]} -gt 0 ]; then
    bv_say "== pgTAP: ${#pgtap[@]} file(s)"
    bv_throwaway_cluster "$OUT/pgtap" $((BV_TEST_PORT_BASE + 20)) pgtap
    for f in "${pgtap[@]}"; do
        name=$(basename "$f" .sql)
        if pg_prove --psql-bin "$PGBIN/psql" --failures "$f" >"$OUT/pgtap/$name.out" 2>&1; then
            bv_say "pgtap $name ... ok"
            record "pgtap/$name" ok
        else
            bv_say "pgtap $name ... FAILED"
            cat "$OUT/pgtap/$name.out"
            record "pgtap/$name" fail
        fi
    done
    bv_throwaway_stop "$OUT/pgtap"
    unset PGHOST PGPORT PGUSER PGDATABASE
fi

# ---- 3. TAP ----
mapfile -t tap < <(selected "$SRC"/tests/tap/*.pl)
if [ ${#tap[@]} -gt 0 ]; then
    bv_say "== TAP: ${#tap[@]} file(s)"
    for f in "${tap[@]}"; do
        name=$(basename "$f" .pl)
        mkdir -p "$OUT/tap/$name"
        if env PATH="$PGBIN:$PATH" PG_REGRESS="$PGXS_DIR/src/test/regress/pg_regress" \
            TESTDIR="$OUT/tap/$name" BV_SRC="$SRC" PG_CONFIG="$PG_CONFIG" \
            BV_EXTENSIONS="$BV_EXTENSIONS" BV_POSTGREST="$BV_POSTGREST" \
            PERL5LIB="$PGXS_DIR/src/test/perl:$SRC/tests/tap/lib" \
            prove --timer "$f" >"$OUT/tap/$name.out" 2>&1; then
            bv_say "tap $name ... ok"
            record "tap/$name" ok
        else
            bv_say "tap $name ... FAILED"
            cat "$OUT/tap/$name.out"
            for l in "$OUT/tap/$name"/tmp_check/log/*; do
                [ -f "$l" ] || continue
                bv_say "---- tail of $l ----"; tail -n 30 "$l"
            done
            record "tap/$name" fail
        fi
    done
fi

if [ "$failed" -gt 0 ]; then
    bv_say "failed: ${failures[*]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
