#!/bin/sh
# scripts/fuzz-cov.sh - line coverage of the validator and the readers
# reached by the fuzz corpora: replays the checked-in seeds, regressions
# and any grown corpus ($FUZZ_BUILD/corpus/<target>) on the `cov` build.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${FUZZ_BUILD:-$ROOT/build-fuzz}
LLVM_COV=${LLVM_COV:-llvm-cov-14}
LLVM_PROFDATA=${LLVM_PROFDATA:-llvm-profdata-14}
"$ROOT/fuzz/build.sh" cov
rm -f "$OUT"/cov/*.profraw
objs=
for t in container validate npy roundtrip attend; do
    dirs=$ROOT/fuzz/corpus/$t
    for d in "$ROOT/fuzz/regressions/$t" "$OUT/corpus/$t"; do
        [ ! -d "$d" ] || dirs="$dirs $d"
    done
    # shellcheck disable=SC2086
    LLVM_PROFILE_FILE="$OUT/cov/$t.profraw" "$OUT/cov/fuzz_$t" $dirs
    objs="${objs:+$objs -object }$OUT/cov/fuzz_$t"
done
"$LLVM_PROFDATA" merge -o "$OUT/cov/all.profdata" "$OUT"/cov/*.profraw
# shellcheck disable=SC2086
"$LLVM_COV" report -instr-profile="$OUT/cov/all.profdata" $objs \
    "$ROOT/core/validate.c" "$ROOT/core/ctensor.c" "$ROOT/formats/container.c" \
    "$ROOT/formats/npy.c" "$ROOT/core/encode.c" "$ROOT/backends/cpu/codec.c" \
    "$ROOT/backends/cpu/attend.c"
