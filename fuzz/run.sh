#!/usr/bin/env bash
# Runs fuzz targets: fuzz/run.sh [TARGET|all] [SECONDS per target].
# The corpus grows in fuzz/corpus/TARGET (seeded from fixtures/fuzz/TARGET);
# a crash, hang (a run over 10 s) or out-of-memory (over 2 GiB) stops the
# run and leaves its input in fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")"
targets=(dockerfile kdl unpack_layer load manifest)
want=${1:-all}
seconds=${2:-60}
[ "$want" = all ] || targets=("$want")
./build.sh --quiet
# Stores and layers unpack under a tmpfs: fsync is free there, so the loop measures strata, not the disk.
export TMPDIR=${FUZZ_TMPDIR:-/dev/shm}
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "artifacts/$target"
  echo "== $target for ${seconds}s"
  target/x86_64-unknown-linux-gnu/release/"$target" "corpus/$target" "../fixtures/fuzz/$target" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -artifact_prefix="artifacts/$target/" -print_final_stats=1 2>&1 | tee "artifacts/$target/last-run.log" | grep -E "^(#[0-9]+ +(INITED|DONE)|stat::number_of_executed_units|==|SUMMARY|.*panicked)" || true
  if ! grep -q "^Done " "artifacts/$target/last-run.log"; then
    echo "$target: stopped early, see fuzz/artifacts/$target/last-run.log"
    exit 1
  fi
done
