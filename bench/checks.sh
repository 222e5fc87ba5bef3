# bench/checks.sh - sourced by bench/gpu-dev.sh and bench/enc-ab.sh (OUT,
# LOG, CASES and SEED set; MAX_TOKENS optional).
# check_builds: the differential check on every build in .devbin but
# those named in NOCHECK; BUILDS gets the builds that may be timed (those
# that passed, and the unchecked ones).
check_builds() {
    BUILDS=""
    for b in $(ls .devbin | grep -v '^lib$'); do
        if echo " ${NOCHECK:-} " | grep -q " $b "; then
            BUILDS="$BUILDS $b"
            echo "== check $b: skipped (NOCHECK)" | tee -a "$LOG"
            continue
        fi
        echo "== check $b ($(cat .devbin/$b/flags))" | tee -a "$LOG"
        if .devbin/$b/mustafar-diff --cases "$CASES" --seed "$SEED" --jobs 8 \
            ${MAX_TOKENS:+--max-tokens $MAX_TOKENS} >"$OUT/diff.tmp" 2>&1; then
            BUILDS="$BUILDS $b"
        else
            echo "== $b FAILED the check: not timed" | tee -a "$LOG"
        fi
        cat "$OUT/diff.tmp" >>"$LOG"
        grep -m 12 -A 3 "VIOLATION\|ERROR" "$OUT/diff.tmp"
        tail -3 "$OUT/diff.tmp"
    done
    rm -f "$OUT/diff.tmp"
}
# memcheck BUILD: compute-sanitizer's memcheck on a few small cases.
memcheck() {
    echo "== memcheck $1" >>"$LOG"
    timeout 120 compute-sanitizer --tool memcheck --print-limit 5 .devbin/$1/mustafar-diff \
        --cases 4 --seed 5 --max-tokens 2000 2>&1 | tail -20 | tee -a "$LOG" | tail -1
}
