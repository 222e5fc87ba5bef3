#!/bin/sh
# scripts/fuzz-corpus.sh - regenerates the seed corpora fuzz/corpus/<target>/
# from real caches encoded through the API (fuzz/gen_corpus.c). Seeds are
# kept small (about 200 KB in all) because they are checked in.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
"$ROOT/fuzz/build.sh" gen
for t in container validate npy roundtrip attend; do
    rm -rf "$ROOT/fuzz/corpus/$t"
    mkdir -p "$ROOT/fuzz/corpus/$t"
done
"${FUZZ_BUILD:-$ROOT/build-fuzz}/gen/gen_corpus" "$ROOT/fuzz/corpus"
du -sh "$ROOT/fuzz/corpus"
