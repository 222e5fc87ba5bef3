#!/bin/sh
# The test command: build with warnings as errors, run the tests, run them
# again under Valgrind memcheck (zero errors required), and build the
# library and tests with AddressSanitizer + UndefinedBehaviorSanitizer and
# run them there too.
set -eu
cd "$(dirname "$0")/.."
JOBS=$(nproc)

echo "== build (-Werror)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$JOBS"

echo "== tests"
./build/mustafar-tests -j"$JOBS"

echo "== mf_div_h against IEEE division, every fp16 pair"
./build/tools/mustafar-check-div

echo "== 2-bit code thresholds against the codes, every fp16 scale and zero"
./build/tools/mustafar-check-thresholds

echo "== differential harness, CPU-only part (GPU rows: skipped: no GPU)"
./build/tools/mustafar-diff --cases 300 --seed 1 --jobs "$JOBS"

echo "== mustafar-diff: a bad option value exits 2, a run that checks nothing 1"
for args in "--cases abc" "--jobs 0" "--seed -1" "--case N" "--cases 5 --case 5"; do
  rc=0; ./build/tools/mustafar-diff $args >/dev/null 2>&1 || rc=$?
  [ "$rc" = 2 ] || { echo "mustafar-diff $args: exit $rc, want 2"; exit 1; }
done
# fixed case -11 holds a NaN or infinity: without a GPU it has no checks
rc=0; out=$(./build/tools/mustafar-diff --case -11) || rc=$?
if echo "$out" | grep -q '^GPU: no' && [ "$rc" != 1 ]; then
  echo "mustafar-diff --case -11 without a GPU: exit $rc, want 1"; exit 1
fi

echo "== portable build (no AVX2: the scalar paths) and tests"
# tests/test_golden.c pins encoder bytes and attention bits: both builds
# must produce the same, so the SIMD and scalar paths agree bit for bit.
cmake -S . -B build-portable -DCMAKE_BUILD_TYPE=Release -DMF_NATIVE=OFF -DMF_CUDA=OFF >/dev/null
cmake --build build-portable -j"$JOBS"
./build-portable/mustafar-tests -j"$JOBS"

echo "== the CPU library compiles for other x86-64 targets"
# -march=native takes only this machine's SIMD paths: each ISA guard
# (expand.h) must also hold where fewer extensions exist.
if [ "$(uname -m)" = x86_64 ]; then
  for a in haswell skylake-avx512 icelake-server sapphirerapids; do
    for f in core/*.c backends/cpu/*.c; do
      cc -std=c99 -O2 -fopenmp -Wall -Wextra -Wpedantic -Werror -ffp-contract=off -march=$a \
        -Iinclude -c "$f" -o /dev/null
    done
    echo "  $a: ok"
  done
fi

echo "== tests under valgrind memcheck"
# Valgrind 3.19 cannot decode AVX-512, which -march=native emits on CPUs
# that have it: this build keeps the native AVX2 paths (expand.h) without it.
cmake -S . -B build-valgrind -DCMAKE_BUILD_TYPE=Release -DMF_CUDA=OFF \
  -DMF_NATIVE_FLAGS="-march=native -mno-avx512f" >/dev/null
cmake --build build-valgrind -j"$JOBS"
rm -rf build/valgrind && mkdir -p build/valgrind
# Criterion runs each test in a child process: trace children, one log each.
# OpenMP's thread pool is never joined at exit: only definite leaks count.
valgrind --trace-children=yes --leak-check=full --errors-for-leak-kinds=definite \
  --show-possibly-lost=no --log-file=build/valgrind/%p.log \
  ./build-valgrind/mustafar-tests -j1 --filter '!(cli/*)'
bad=$(grep -L "ERROR SUMMARY: 0 errors" build/valgrind/*.log || true)
if [ -n "$bad" ]; then
  for f in $bad; do cat "$f"; done
  echo "valgrind reported errors"; exit 1
fi
echo "valgrind: $(ls build/valgrind | wc -l) processes, 0 errors"

echo "== ASan + UBSan build and tests"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DMF_SANITIZE=ON -DMF_CUDA=OFF >/dev/null
cmake --build build-asan -j"$JOBS"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ./build-asan/mustafar-tests -j"$JOBS"
echo "== all tests passed"
