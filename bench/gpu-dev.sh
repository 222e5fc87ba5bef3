#!/bin/sh
# bench/gpu-dev.sh - one device session of attention-kernel work (issue 5),
# for every build in .devbin (bench/devbin.sh: "new", this tree, and its
# VARIANTS), timed in the same session: the differential check (CASES
# cases, seed SEED, T up to MAX_TOKENS; a build that fails is reported and
# not timed), compute-sanitizer on a few small cases (new only),
# mustafar-diff's benchmark layer (for BENCH_BUILDS, default all) and (unless SWEEP=0; for the builds in
# SWEEP_BUILDS, default new) a quick sweep (SWEEP_ARGS, default batch 1
# and 8, T 4K and 32K; s 0.7, 2 bits) with PyTorch's dense attention on
# the same shapes; with NCU=1 also Nsight Compute's scheduler sections,
# pipe utilizations and stall reasons of rd_kernel on the benchmark layer
# and the kernels' durations at batch 1, T 4K, for the builds in
# NCU_BUILDS (default: all; NCU_BIG=0: the small layer only), with
# NCU_SRC=1 also the stall samples of each SASS instruction of that
# rd_kernel (src-<build>.csv). FULL=1: the whole sweep and dense
# baseline for FULL_BUILD (default new; if it failed, the first that
# passed): full-sweep.csv, full-sdpa.csv, which bench/gpu_report.py turns
# into the table and plot. Binaries come from .devbin/<build>/ (built on
# the development machine and carried, or here when they are missing).
# Output in $OUT (default ./out), few files (the device tool returns at
# most 8): run.log (every check and timing), sweep.csv, sdpa.csv, ncu.txt,
# src-<build>.csv, full-sweep.csv, full-sdpa.csv.
set -u
OUT=${OUT:-out}
CASES=${CASES:-300}
SEED=${SEED:-71}
mkdir -p "$OUT"
LOG=$OUT/run.log
nvidia-smi -L | tee "$LOG"
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:$PWD/.devbin/lib"
# the binaries, built here if none were carried (or they do not run here)
.devbin/new/mustafar-diff --help 2>&1 | grep -q usage || bench/devbin.sh >>"$LOG" 2>&1 ||
    { tail -20 "$LOG"; exit 1; }
. bench/checks.sh
check_builds
memcheck new
SWEEP_ARGS=${SWEEP_ARGS:---batch 1 8 --tokens 4096 32768}
for round in 1 2; do # alternating builds, twice
    for b in $BUILDS; do
        echo "== $b, round $round" | tee -a "$LOG"
        echo " ${BENCH_BUILDS:-$BUILDS} " | grep -q " $b " &&
            .devbin/$b/mustafar-diff --bench 2>&1 | tee -a "$LOG" | grep -i 'async\|median'
        [ "${SWEEP:-1}" = 1 ] && [ $round = 1 ] && echo " ${SWEEP_BUILDS:-new} " | grep -q " $b " &&
            { echo "# build $b"; .devbin/$b/mustafar-gpu-sweep $SWEEP_ARGS --quick; } |
            tee -a "$OUT/sweep.csv"
    done
done
[ "${SWEEP:-1}" = 1 ] && python3 bench/sdpa.py $SWEEP_ARGS | tee "$OUT/sdpa.csv"
if [ "${FULL:-0}" = 1 ]; then # the whole sweep, for the record
    b=${FULL_BUILD:-new}
    echo " $BUILDS " | grep -q " $b " || b=$(echo $BUILDS | cut -d' ' -f1)
    { echo "# build $b ($(cat .devbin/$b/flags)), $(date -u)"; nvidia-smi -L; .devbin/$b/mustafar-gpu-sweep; } |
        sed '2s/^/# /' | tee "$OUT/full-sweep.csv"
    python3 bench/sdpa.py | tee "$OUT/full-sdpa.csv"
fi
if [ "${NCU:-0}" = 1 ]; then # where each build's issue slots go: pipes, stall reasons per issue
    for b in ${NCU_BUILDS:-$BUILDS}; do
        [ "${NCU_BIG:-1}" = 1 ] && timeout 150 ncu --kernel-name regex:rd_kernel --launch-skip 2 --launch-count 1 \
            --section SpeedOfLight --section SchedulerStats --section WarpStateStats \
            --section ComputeWorkloadAnalysis --section Occupancy \
            --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,regex:sm__inst_executed_pipe_.*\.avg\.pct_of_peak_sustained_active,smsp__inst_executed.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum,smsp__inst_executed_op_shared_ld.sum,smsp__inst_executed_op_shared_st.sum" \
            ".devbin/$b/mustafar-diff" --bench >"$OUT/ncu.tmp" 2>&1
        if [ "${NCU_BIG:-1}" = 1 ]; then
            echo "== ncu $b" | tee -a "$OUT/ncu.txt"
            cat "$OUT/ncu.tmp" >>"$OUT/ncu.txt"
            grep -E "Issued|Eligible|Active Warps|Pipe|Throughput|Duration|stalled|inst_executed|bank" "$OUT/ncu.tmp" |
                awk '$NF+0 > 0.05 || !/stalled/' | head -60
        fi
        echo "== ncu $b, batch 1, T 4K: durations" | tee -a "$OUT/ncu.txt"
        timeout 120 ncu --kernel-name regex:"rd_kernel|tc_kernel|tc_merge" --launch-skip 20 --launch-count 4 \
            --section SpeedOfLight --section LaunchStats --section Occupancy \
            ".devbin/$b/mustafar-gpu-sweep" --batch 1 --tokens 4096 --quick >"$OUT/ncu.tmp" 2>&1
        cat "$OUT/ncu.tmp" >>"$OUT/ncu.txt"
        grep -E "^  [a-z_]+.*\(|Duration|Grid Size|Block Size|Registers|Achieved Occupancy" "$OUT/ncu.tmp" | head -40
        if [ "${NCU_SRC:-0}" = 1 ]; then # stall samples per SASS instruction of that layer's rd_kernel
            timeout 120 ncu --kernel-name regex:rd_kernel --launch-skip 10 --launch-count 1 \
                --section SourceCounters --section WarpStateStats -o "$OUT/src-$b" \
                ".devbin/$b/mustafar-gpu-sweep" --batch 1 --tokens 4096 --quick >/dev/null 2>&1 &&
                ncu -i "$OUT/src-$b.ncu-rep" --page source --csv --print-source sass >"$OUT/src-$b.csv" 2>&1
            rm -f "$OUT/src-$b.ncu-rep"
        fi
    done
    rm -f "$OUT/ncu.tmp"
fi
