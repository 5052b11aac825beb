#!/usr/bin/env bash
# Runs every fuzz target for N seconds (default 60), seeded from fuzz/seeds/<target> and the
# example cohorts. Installs cargo-fuzz when missing; uses RUSTC_BOOTSTRAP=1 on a stable toolchain.
# A crash (or a failure to build) exits non-zero.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
for target in $(cargo fuzz list); do
  corpus="$(mktemp -d)"
  cp seeds/"$target"/* "$corpus"/ 2>/dev/null || true
  cp ../examples/data/cohorts.json "$corpus"/example-cohorts.json
  echo "fuzzing $target for ${seconds}s"
  cargo fuzz run --sanitizer none "$target" "$corpus" -- -max_total_time="$seconds" -max_len=8192 -rss_limit_mb=2048 -print_final_stats=1 2>&1 | tail -n 25
  rm -rf "$corpus"
done
