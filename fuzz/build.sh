#!/bin/sh
# fuzz/build.sh - builds the fuzz targets with clang (fuzz/README.md).
#
# usage: fuzz/build.sh [VARIANT...]   default: fuzz replay msan, and afl if
#                                     afl-clang-fast is installed
#   fuzz    libFuzzer + ASan + UBSan
#   replay  fuzz/replay.c driver + ASan + UBSan (CI replays corpora with it)
#   msan    libFuzzer + MSan, without OpenMP (libomp is not MSan-instrumented)
#   cov     replay driver + source-based coverage (llvm-cov)
#   afl     afl-clang-fast with its libFuzzer-compatible driver + ASan + UBSan
#   gen     fuzz/gen_corpus, the seed generator (scripts/fuzz-corpus.sh)
# Binaries go to $FUZZ_BUILD/VARIANT/ (default build-fuzz/).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${FUZZ_BUILD:-$ROOT/build-fuzz}
CC=${CC:-clang}
TARGETS="container validate npy roundtrip attend"

# The library's own flags (CMakeLists.txt, MF_NATIVE on).
BASE="-std=c99 -Wall -Wextra -Wpedantic -Werror -ffp-contract=off -fno-fast-math
      -march=native -g -O2 -fno-omit-frame-pointer -I$ROOT/include"
ASAN="-fsanitize=address,undefined -fno-sanitize-recover=all"
LIB=$(cd "$ROOT" && ls core/*.c backends/dispatch.c backends/cpu/*.c formats/*.c \
      backends/cuda/none.c)

# Inner loops (encode, decode, attention) and the harness itself get edge
# coverage without comparison tracing: tracing their compares costs 5x
# the speed and guides nothing. Readers and the validator get it all.
LIGHT="-fsanitize-coverage=inline-8bit-counters,pc-table"

# build VARIANT CC CFLAGS COVFLAGS LDFLAGS DRIVER: library + targets into
# $OUT/VARIANT; COVFLAGS instrument the readers and validator fully.
build() {
    v=$1 cc=$2 cflags=$3 cov=$4 ldflags=$5 driver=$6
    dir=$OUT/$v
    light=${cov:+$LIGHT}
    mkdir -p "$dir/obj"
    objs=
    for src in $LIB fuzz/fuzz_util.c fuzz/alloc_count.c $driver; do
        obj=$dir/obj/$(echo "$src" | tr / _).o
        flags=$cov
        case $src in fuzz/* | core/encode.c | core/decode.c | backends/cpu/*) flags=$light ;; esac
        # shellcheck disable=SC2086
        $cc $cflags $flags -c "$ROOT/$src" -o "$obj"
        objs="$objs $obj"
    done
    for t in $TARGETS; do
        # Compiled apart from the link: -fsanitize=fuzzer in $ldflags would
        # otherwise trace every compare of the harness.
        # shellcheck disable=SC2086
        $cc $cflags $light -c "$ROOT/fuzz/fuzz_$t.c" -o "$dir/obj/fuzz_$t.o"
        # shellcheck disable=SC2086
        $cc $cflags "$dir/obj/fuzz_$t.o" $objs $ldflags -Wl,--wrap=malloc -lm -o "$dir/fuzz_$t"
    done
    echo "fuzz/build.sh: $v -> $dir"
}

variants=${*:-"fuzz replay msan $(command -v afl-clang-fast >/dev/null && echo afl)"}
for v in $variants; do
    case $v in
    fuzz) build fuzz "$CC" "$BASE $ASAN -fopenmp" -fsanitize=fuzzer-no-link \
        "-fopenmp -fsanitize=fuzzer,address,undefined" "" ;;
    replay) build replay "$CC" "$BASE $ASAN -fopenmp" "" "-fopenmp $ASAN" fuzz/replay.c ;;
    msan) build msan "$CC" "$BASE -Wno-unknown-pragmas -fsanitize=memory
        -fsanitize-memory-track-origins" -fsanitize=fuzzer-no-link \
        "-fsanitize=fuzzer,memory" "" ;;
    cov) build cov "$CC" "$BASE -fopenmp -fprofile-instr-generate -fcoverage-mapping" "" \
        "-fopenmp -fprofile-instr-generate" fuzz/replay.c ;;
    afl) AFL_QUIET=1 build afl afl-clang-fast "$BASE $ASAN -fopenmp" "" \
        "-fopenmp -fsanitize=fuzzer,address,undefined" "" ;;
    gen) mkdir -p "$OUT/gen"
        # shellcheck disable=SC2046,SC2086
        $CC $BASE -O2 -fopenmp "$ROOT/fuzz/gen_corpus.c" "$ROOT/fuzz/fuzz_util.c" \
            $(for s in $LIB; do echo "$ROOT/$s"; done) -lm -o "$OUT/gen/gen_corpus"
        echo "fuzz/build.sh: gen -> $OUT/gen" ;;
    *) echo "fuzz/build.sh: unknown variant $v" >&2; exit 2 ;;
    esac
done
