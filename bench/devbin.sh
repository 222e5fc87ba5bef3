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
set -eu
cd "$(dirname "$0")/.."
rm -rf .devbin
for v in new ${VARIANTS:-old=-DMF_TC_RD=0}; do
    name=${v%%=*}
    flags=""
    [ "$name" != "$v" ] && flags=$(echo "${v#*=}" | tr , ' ')
    cmake -S . -B "build-devbin-$name" -DMF_TESTS=OFF -DMF_NATIVE=ON \
        -DMF_NATIVE_FLAGS="-mavx2 -mfma -mbmi2 -mf16c -mpopcnt" \
        -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_CUDA_FLAGS="$flags" >/dev/null
    cmake --build "build-devbin-$name" -j"$(nproc)" --target mustafar-diff mustafar-gpu-sweep >/dev/null 2>&1
    mkdir -p ".devbin/$name" .devbin/lib
    cp "build-devbin-$name/tools/mustafar-diff" "build-devbin-$name/mustafar-gpu-sweep" ".devbin/$name/"
    echo "$flags" >".devbin/$name/flags"
done
cp "$(gcc -print-file-name=libgomp.so.1)" .devbin/lib/
du -sh .devbin
