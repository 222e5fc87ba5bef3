#!/bin/sh
# bench/enc-ab.sh - encoder A/B on the lent GPU (issue 5): every build in
# .devbin (bench/devbin.sh) passes CASES differential cases (seed SEED)
# first, then ROUNDS rounds alternate the builds' mustafar-gpu-sweep over
# SHAPES (default batch 32, T 16K: 1 GiB of dense K and V, s 0.5 and 0.7,
# 2 and 4 bits). Output in $OUT: run.log and enc.csv ("# build b, round
# r" lines, then the sweep's CSV). NOCHECK: builds not checked (one
# already checked, say main); MEMCHECK: builds run under compute-sanitizer;
# NCU_BUILDS: builds whose first K encode (batch 32, T 4K, s 0.5, 2 bits)
# Nsight Compute times and counts.
set -u
OUT=${OUT:-out}
CASES=${CASES:-150}
SEED=${SEED:-211}
mkdir -p "$OUT"
LOG=$OUT/run.log
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:$PWD/.devbin/lib"
nvidia-smi -L | tee "$LOG"
. bench/checks.sh
check_builds
for b in ${MEMCHECK:-}; do
    memcheck "$b"
done
for b in ${NCU_BUILDS:-}; do # the first K encode of batch 32, T 4K, s 0.5, 2 bits
    echo "== ncu $b" >>"$LOG"
    ncu --kernel-name regex:encode_kernel --launch-count 1 --clock-control none \
        --metrics gpu__time_duration.sum,smsp__inst_executed.sum \
        .devbin/$b/mustafar-gpu-sweep --batch 32 --tokens 4096 --bits 2 2>&1 |
        grep -E "encode_kernel|duration|inst_executed" | tee -a "$LOG"
done
r=1
while [ $r -le "${ROUNDS:-3}" ]; do
    for b in $BUILDS; do
        echo "# build $b, round $r"
        .devbin/$b/mustafar-gpu-sweep ${SHAPES:---batch 32 --tokens 16384 --bits 2 4}
    done
    r=$((r + 1))
done | tee "$OUT/enc.csv"
