#!/usr/bin/env bash
# tools/fuzz.sh: build and run the libFuzzer harness of bv_core's JWT parser
# (tests/fuzz/jwt_fuzz.c) with clang, AddressSanitizer and
# UndefinedBehaviorSanitizer.
#
#   FUZZ_SECONDS   how long to fuzz (default 300: the 5-minute run of issue #6)
#   FUZZ_JOBS      parallel fuzzing processes (default 1)
#
# The harness compiles the parser's own sources, which need neither the
# server nor OpenSSL.  The seed corpus is tests/fuzz/corpus; the working
# corpus, the binary and any crash files go to $BV_HOME/fuzz.  Exits non-zero
# when libFuzzer finds a crash, a leak or a failed property.
source "$(dirname "$0")/lib.sh"

CLANG=${CLANG:-$(command -v clang-14 || command -v clang || true)}
[ -n "$CLANG" ] || bv_die "clang is not installed; run 'make deps' (tools/packages.txt, section fuzzing)"
FUZZ_SECONDS=${FUZZ_SECONDS:-300}
FUZZ_JOBS=${FUZZ_JOBS:-1}

bv_resolve_home
OUT=$BV_HOME/fuzz
mkdir -p "$OUT/corpus" "$OUT/crashes"
cp -n "$BV_TOP"/tests/fuzz/corpus/* "$OUT/corpus/" 2>/dev/null || true

bv_say "fuzz: building $OUT/jwt_fuzz with $CLANG"
"$CLANG" -g -O1 -fno-omit-frame-pointer \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -Wall -Wextra -Werror \
    -I "$BV_TOP/extensions/common" -I "$BV_TOP/extensions/bv_core" \
    "$BV_TOP/tests/fuzz/jwt_fuzz.c" \
    "$BV_TOP/extensions/bv_core/jwt_parse.c" \
    "$BV_TOP/extensions/common/bv_encode.c" \
    -o "$OUT/jwt_fuzz" \
    || bv_die "could not build the fuzzer; is libclang-rt-14-dev installed? ('make deps')"

bv_say "fuzz: running for $FUZZ_SECONDS s ($FUZZ_JOBS job(s)); log in $OUT/fuzz.log"
cd "$OUT"
status=0
./jwt_fuzz -max_total_time="$FUZZ_SECONDS" -max_len=4096 -timeout=10 -rss_limit_mb=1024 \
    -jobs="$FUZZ_JOBS" -workers="$FUZZ_JOBS" -print_final_stats=1 \
    -artifact_prefix="$OUT/crashes/" corpus >"$OUT/fuzz.log" 2>&1 || status=$?
[ "$FUZZ_JOBS" -gt 1 ] && cat "$OUT"/fuzz-*.log >>"$OUT/fuzz.log" 2>/dev/null
grep -E '^stat::number_of_executed_units|^#[0-9]+.*DONE|cov:' "$OUT/fuzz.log" | tail -3
if [ "$status" -ne 0 ] || ls "$OUT/crashes/" | grep -q .; then
    bv_warn "fuzzing found a problem (exit $status); see $OUT/fuzz.log and $OUT/crashes/"
    tail -40 "$OUT/fuzz.log" >&2
    exit 1
fi
bv_say "fuzz: no crash, leak or property failure in $FUZZ_SECONDS s"
