#!/bin/sh
# Runs the CPU benchmark and writes bench/RESULTS.md: date, machine,
# command and the table. Usage: bench/run.sh [build dir] (default build).
set -eu
cd "$(dirname "$0")/.."
B=${1:-build}
cmake --build "$B" --target mustafar-bench -j"$(nproc)" >/dev/null
{
  echo "# CPU benchmark results"
  echo
  echo "- date: $(date -u +%Y-%m-%d)"
  echo "- machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores," \
       "$(grep -m1 MemTotal /proc/meminfo | awk '{printf "%.0f GiB", $2/1048576}')"
  echo "- command: \`bench/run.sh\` (\`$B/mustafar-bench\`; layer: 8 KV heads, 32 query heads," \
       "D=128, batch 1; best of three rounds' medians of repeated runs)"
  echo
  "$B/mustafar-bench" 2>/dev/null
} > bench/RESULTS.md.tmp
mv bench/RESULTS.md.tmp bench/RESULTS.md
cat bench/RESULTS.md
