#!/bin/sh
# One device session of the differential check (tools/diff/RESULTS.md):
# build (unless a carried build-gpu/ runs here), a quick pass, compute-
# sanitizer on a few cases, the benchmark layer, the full run, then kernel
# times of the benchmark's tensor-core attention under Nsight Compute.
# Logs go to $OUT (default ./out). Usage: tools/diff/gpu-run.sh [CASES] [SEED]
set -u
CASES=${1:-10000}
SEED=${2:-1}
OUT=${OUT:-out}
mkdir -p "$OUT"
nvidia-smi -L | tee "$OUT/gpu.txt"
BIN=build-gpu/tools/mustafar-diff
if ! "$BIN" --help 2>&1 | grep -q usage; then
  # -march=native: the CPU oracle's SIMD loops, what x86 machines run (the
  # portable build is held to them by the CPU tests, scripts/test.sh)
  BIN=build-dev/tools/mustafar-diff
  cmake -S . -B build-dev -DMF_TESTS=OFF -DMF_NATIVE=ON >"$OUT/build.log" 2>&1 &&
    cmake --build build-dev -j16 >>"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
fi
"$BIN" --cases 200 --seed 99 --jobs 4 >"$OUT/quick.log" 2>&1
rc=$?
tail -16 "$OUT/quick.log"
if [ $rc -ne 0 ]; then grep -m 20 -A 3 "VIOLATION\|ERROR" "$OUT/quick.log"; exit 1; fi
timeout 90 compute-sanitizer --tool memcheck --print-limit 5 "$BIN" --cases 12 --seed 5 \
  --max-tokens 2000 >"$OUT/sanitizer.log" 2>&1
tail -1 "$OUT/sanitizer.log"
"$BIN" --bench 2>&1 | tee "$OUT/bench.log"
echo "command: mustafar-diff --cases $CASES --seed $SEED --jobs 4" | tee "$OUT/full.log"
timeout 420 "$BIN" --cases "$CASES" --seed "$SEED" --jobs 4 >>"$OUT/full.log" 2>&1
rc=$?
grep -m 20 -A 3 "VIOLATION\|ERROR" "$OUT/full.log"
tail -16 "$OUT/full.log"
timeout 100 ncu --kernel-name regex:'tc_kernel|tc_merge' --launch-skip 4 --launch-count 2 \
  --metrics gpu__time_duration.sum,sm__warps_active.avg.pct_of_peak_sustained_active,dram__throughput.avg.pct_of_peak_sustained_elapsed \
  "$BIN" --bench >"$OUT/ncu.log" 2>&1
grep -E "tc_kernel|tc_merge|duration|warps_active|dram__" "$OUT/ncu.log" | head -12
exit $rc
