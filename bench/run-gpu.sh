#!/bin/sh
# bench/run-gpu.sh - the GPU benchmark of issue 5 in one device session:
# build, a differential check of the kernels about to be timed, the host
# cost of the CUDA calls around them (bench/cuda_floor.cu), the sweep
# (bench/gpu_sweep.c), the dense baseline (bench/sdpa.py) and the report
# (bench/gpu_report.py: table + plot). Results go to $OUT (default ./out).
# usage: bench/run-gpu.sh [sweep options, e.g. --quick]
set -u
OUT=${OUT:-out}
mkdir -p "$OUT"
nvidia-smi -L | tee "$OUT/gpu.txt"
cmake -S . -B build-dev -DMF_TESTS=OFF -DMF_NATIVE=OFF >"$OUT/build.log" 2>&1 &&
    cmake --build build-dev -j16 >>"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
build-dev/tools/mustafar-diff --cases 400 --seed 21 --jobs 8 >"$OUT/diff.log" 2>&1 ||
    { tail -20 "$OUT/diff.log"; exit 1; }
tail -3 "$OUT/diff.log"
build-dev/mustafar-cuda-floor | tee "$OUT/floor.md"
build-dev/mustafar-gpu-sweep "$@" | tee "$OUT/sweep.csv"
python3 bench/sdpa.py $(echo "$@" | grep -q quick && echo --batch 1 8 32 --tokens 4096 32768) \
    | tee "$OUT/sdpa.csv"
python3 bench/gpu_report.py "$OUT/sweep.csv" "$OUT/sdpa.csv" "$OUT/speedup.png" >"$OUT/table.md"
cat "$OUT/table.md"
