#!/bin/sh
# scripts/fuzz-ci.sh - the fuzzing gate (issue 4, fuzz/README.md).
#
# Builds the targets, replays every seed corpus and regression input under
# ASan+UBSan (and MSan), then runs each libFuzzer target for FUZZ_SECONDS
# (default 60) on one process. Any finding fails the script; its input is
# kept in $FUZZ_BUILD/findings/ and the log in $FUZZ_BUILD/logs/.
#   FUZZ_TARGETS  targets to fuzz (default: all five)
#   FUZZ_SECONDS  seconds per target; 0 skips fuzzing (replay only)
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${FUZZ_BUILD:-$ROOT/build-fuzz}
SECS=${FUZZ_SECONDS:-60}
TARGETS=${FUZZ_TARGETS:-"container validate npy roundtrip attend"}
# Spinning OpenMP workers would steal the core the fuzzer runs on.
export KMP_BLOCKTIME=0

"$ROOT/fuzz/build.sh" fuzz replay msan

# seeds TARGET: the checked-in inputs of a target.
seeds() {
    echo "$ROOT/fuzz/corpus/$1"
    [ ! -d "$ROOT/fuzz/regressions/$1" ] || echo "$ROOT/fuzz/regressions/$1"
}

rc=0
for t in container validate npy roundtrip attend; do
    # shellcheck disable=SC2046
    "$OUT/replay/fuzz_$t" $(seeds "$t") || rc=1
    # shellcheck disable=SC2046
    "$OUT/msan/fuzz_$t" -runs=0 $(seeds "$t") >"$OUT/msan-$t.log" 2>&1 ||
        { cat "$OUT/msan-$t.log"; rc=1; }
done
[ "$rc" -eq 0 ] || { echo "fuzz-ci: replay failed" >&2; exit 1; }
[ "$SECS" -gt 0 ] || exit 0

mkdir -p "$OUT/findings" "$OUT/logs"
for t in $TARGETS; do
    opts=
    case $t in
    container) opts="-dict=$ROOT/fuzz/mfkv.dict -max_len=32768" ;;
    npy) opts="-dict=$ROOT/fuzz/npy.dict -max_len=4096" ;;
    attend) opts="-max_len=32768" ;;
    *) opts="-max_len=16384" ;;
    esac
    work=$OUT/corpus/$t
    mkdir -p "$work"
    # New inputs go to $work (not checked in); seeds are read only.
    # shellcheck disable=SC2046,SC2086
    if ! "$OUT/fuzz/fuzz_$t" $opts -max_total_time="$SECS" -rss_limit_mb=2048 -timeout=30 \
        -print_final_stats=1 -artifact_prefix="$OUT/findings/$t-" "$work" $(seeds "$t") \
        >"$OUT/logs/$t.log" 2>&1; then
        tail -40 "$OUT/logs/$t.log"
        echo "fuzz-ci: $t: finding in $OUT/findings/" >&2
        rc=1
    fi
    grep -E "stat::number_of_executed_units|DONE" "$OUT/logs/$t.log" | sed "s/^/$t: /"
done
exit "$rc"
