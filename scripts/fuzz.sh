#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time and checks that the fuzzer explores: coverage
# (libFuzzer's `cov:`) must grow past the seed corpus, or the target tests nothing.
#   scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 30; e.g. FUZZ_CORPUS=keep scripts/fuzz.sh 3600 for a
#                                           long local run that keeps growing fuzz/corpus/)
# Crashes land in fuzz/artifacts/<target>/; turn each into a regression test before fixing it.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-${FUZZ_SECONDS:-30}}
CARGO_FUZZ_VERSION=0.13.2

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
# cargo-fuzz needs nightly flags (-Zsanitizer); the stable toolchain accepts them with this.
export RUSTC_BOOTSTRAP=1

status=0
for target in $(cargo fuzz list); do
  # A fresh corpus from the committed seeds each run, so that "coverage grew" means the fuzzer found
  # edges the seeds do not reach (FUZZ_CORPUS=keep reuses fuzz/corpus/ across long local runs).
  if [ "${FUZZ_CORPUS:-fresh}" = keep ]; then corpus="fuzz/corpus/$target"; else corpus="target/fuzz-corpus/$target"; rm -rf "$corpus"; fi
  mkdir -p "$corpus"
  if [ -d "fuzz/seeds/$target" ]; then cp fuzz/seeds/"$target"/* "$corpus"/; fi
  log="target/fuzz-$target.log"
  mkdir -p target
  echo "== fuzzing $target for ${seconds}s"
  if ! cargo fuzz run "$target" "$corpus" -- -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    echo "fuzz target $target FAILED; last lines:"; tail -40 "$log"; status=1; continue
  fi
  # awk reads to the end (no `head`): under pipefail an early-closing reader kills the script.
  first=$(grep -oE 'cov: [0-9]+' "$log" | awk 'NR == 1 { print $2 }')
  last=$(grep -oE 'cov: [0-9]+' "$log" | awk 'END { print $2 }')
  runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | awk 'END { print $2 }')
  files=$(find "$corpus" -type f | wc -l)
  echo "   $target: cov ${first:-?} -> ${last:-?}, ${runs:-?} runs, corpus $files files"
  if [ -z "$last" ] || [ -z "$first" ] || [ "$last" -le "$first" ]; then
    echo "fuzz target $target found no new coverage: it tests nothing"; status=1
  fi
done
exit $status
