#!/bin/sh
# bench/devbin.sh - builds, on the development machine (nvcc, no GPU), the
# binaries bench/gpu-dev.sh runs on the lent GPU machine, so that device
# time goes to checks and timings, not to builds: .devbin/new (this tree)
# and one build per entry of VARIANTS, "name=flags" with the CUDA flags
# separated by commas (default old=-DMF_TC_RD=0: the previous kernel; or
# compile-time switches of an experiment), each mustafar-diff and
# mustafar-gpu-sweep for sm_90, the CPU side for any AVX2 x86-64 (not
# -march=native: the device's CPU differs), plus libgomp. Keep .devbin out
# of git (echo /.devbin/ >> .git/info/exclude) and name it in the run's carry.
# BASE=<commit>: that commit's binaries too, as .devbin/base (an A/B
# against main from a branch).
set -eu
cd "$(dirname "$0")/.."
# build_one SRC BUILD NAME FLAGS: SRC's two binaries into .devbin/NAME
build_one() {
    cmake -S "$1" -B "$2" -DMF_TESTS=OFF -DMF_NATIVE=ON \
        -DMF_NATIVE_FLAGS="-mavx2 -mfma -mbmi2 -mf16c -mpopcnt" \
        -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_CUDA_FLAGS="$4" >/dev/null
    cmake --build "$2" -j"$(nproc)" --target mustafar-diff mustafar-gpu-sweep >/dev/null 2>&1
    mkdir -p ".devbin/$3" .devbin/lib
    cp "$2/tools/mustafar-diff" "$2/mustafar-gpu-sweep" ".devbin/$3/"
}
rm -rf .devbin
for v in new ${VARIANTS:-old=-DMF_TC_RD=0}; do
    name=${v%%=*}
    flags=""
    [ "$name" != "$v" ] && flags=$(echo "${v#*=}" | tr , ' ')
    build_one . "build-devbin-$name" "$name" "$flags"
    echo "$flags" >".devbin/$name/flags"
done
if [ -n "${BASE:-}" ]; then # commit BASE (say main) as .devbin/base, from a worktree
    wt=$(mktemp -d)
    git worktree add -q --detach "$wt" "$BASE"
    build_one "$wt" "$wt/build" base ""
    echo "# commit $(git rev-parse --short "$BASE")" >.devbin/base/flags
    git worktree remove --force "$wt"
fi
cp "$(gcc -print-file-name=libgomp.so.1)" .devbin/lib/
du -sh .devbin
