#!/usr/bin/env bash
# tools/fuzz.sh: build and run the libFuzzer harnesses with clang,
# AddressSanitizer and UndefinedBehaviorSanitizer:
#   jwt      bv_core's JWT parser (tests/fuzz/jwt_fuzz.c, corpus tests/fuzz/corpus)
#   graphql  bv_graphql's GraphQL lexer and parser (tests/fuzz/graphql_fuzz.c,
#            corpus tests/fuzz/graphql_corpus)
#
#   FUZZ_SECONDS   how long to fuzz each target (default 300: the 5-minute run of issue #6)
#   FUZZ_JOBS      parallel fuzzing processes (default 1)
#   FUZZ_TARGETS   which harnesses to run (default "jwt graphql")
#
# Each harness compiles the parser's own sources, which need neither the
# server nor OpenSSL.  The working corpus, the binary and any crash files go
# to $BV_HOME/fuzz/<target>.  Exits non-zero when libFuzzer finds a crash, a
# leak or a failed property in any target.
source "$(dirname "$0")/lib.sh"

CLANG=${CLANG:-$(command -v clang-14 || command -v clang || true)}
[ -n "$CLANG" ] || bv_die "clang is not installed; run 'make deps' (tools/packages.txt, section fuzzing)"
FUZZ_SECONDS=${FUZZ_SECONDS:-300}
FUZZ_JOBS=${FUZZ_JOBS:-1}

bv_resolve_home
FUZZ_TARGETS=${FUZZ_TARGETS:-jwt graphql}

# fuzz_one <target> <seed corpus dir> <max_len> <sources...>
fuzz_one() {
    local target=$1 seeds=$2 max_len=$3
    shift 3
    local out=$BV_HOME/fuzz/$target status=0
    mkdir -p "$out/corpus" "$out/crashes"
    cp -n "$seeds"/* "$out/corpus/" 2>/dev/null || true
    bv_say "fuzz: building $out/${target}_fuzz with $CLANG"
    "$CLANG" -g -O1 -fno-omit-frame-pointer \
        -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
        -Wall -Wextra -Werror -Wno-unused-parameter -Wno-sign-compare \
        -I "$BV_TOP/extensions/common" -I "$BV_TOP/extensions/bv_core" -I "$BV_TOP/extensions/bv_graphql" \
        "$@" -o "$out/${target}_fuzz" \
        || bv_die "could not build the fuzzer; is libclang-rt-14-dev installed? ('make deps')"
    bv_say "fuzz: running $target for $FUZZ_SECONDS s ($FUZZ_JOBS job(s)); log in $out/fuzz.log"
    (
        cd "$out"
        ./"${target}_fuzz" -max_total_time="$FUZZ_SECONDS" -max_len="$max_len" -timeout=10 -rss_limit_mb=1024 \
            -jobs="$FUZZ_JOBS" -workers="$FUZZ_JOBS" -print_final_stats=1 \
            -artifact_prefix="$out/crashes/" corpus >"$out/fuzz.log" 2>&1
    ) || status=$?
    [ "$FUZZ_JOBS" -gt 1 ] && cat "$out"/fuzz-*.log >>"$out/fuzz.log" 2>/dev/null
    grep -E '^stat::number_of_executed_units|^#[0-9]+.*DONE|cov:' "$out/fuzz.log" | tail -3
    if [ "$status" -ne 0 ] || ls "$out/crashes/" | grep -q .; then
        bv_warn "fuzzing $target found a problem (exit $status); see $out/fuzz.log and $out/crashes/"
        tail -40 "$out/fuzz.log" >&2
        return 1
    fi
    bv_say "fuzz: $target: no crash, leak or property failure in $FUZZ_SECONDS s"
}

failed=0
for t in $FUZZ_TARGETS; do
    case "$t" in
        jwt)
            fuzz_one jwt "$BV_TOP/tests/fuzz/corpus" 4096 \
                "$BV_TOP/tests/fuzz/jwt_fuzz.c" "$BV_TOP/extensions/bv_core/jwt_parse.c" \
                "$BV_TOP/extensions/common/bv_encode.c" || failed=1 ;;
        graphql)
            fuzz_one graphql "$BV_TOP/tests/fuzz/graphql_corpus" 8192 \
                "$BV_TOP/tests/fuzz/graphql_fuzz.c" "$BV_TOP/extensions/bv_graphql/gql_lex.c" \
                "$BV_TOP/extensions/bv_graphql/gql_parse.c" || failed=1 ;;
        *) bv_die "unknown fuzz target '$t' (jwt, graphql)" ;;
    esac
done
exit $failed
