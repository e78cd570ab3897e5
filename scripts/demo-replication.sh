#!/usr/bin/env bash
# Demo 2: two real Temporal clusters replicating through two Strait processes over a mux link
# with mutual TLS. Starts two patched Temporal dev servers (clusters A "active" and B "standby",
# the test bed of tests/support/testbed.rs), Strait A (mux-client) and Strait B (mux-server) from
# config/s2s-mux-a.toml and config/s2s-mux-b.toml (busy shipped ports move to free ones), links
# the clusters through them, creates a global namespace on A, starts workflows on A and shows
# them on B, fails over to B, signals on B and shows the signal replicated back to A, prints what
# Strait's /metrics say (mux sessions, calls per link), then stops everything it started.
#
# Needs: Rust (cargo), Python 3.10+ with venv, and openssl only if the test certificates are
# missing. Everything else is installed into target/ by scripts/setup-test-env.sh. 127.0.0.1 only.
#
# Usage: scripts/demo-replication.sh [--workflows N] [--free-ports]
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
venv="${STRAIT_VENV:-$repo_root/target/venv}"
export STRAIT_VENV="$venv"
began=$SECONDS

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'demo-replication: error: %s\n' "$*" >&2; exit 1; }

demo_pid=""
cleanup() {
    local status=$?
    # The demo stops everything it started when it ends or gets SIGTERM (bounded wait, then force).
    if [[ -n "$demo_pid" ]] && kill -0 "$demo_pid" 2>/dev/null; then
        kill -TERM "$demo_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$demo_pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$demo_pid" 2>/dev/null || true
        wait "$demo_pid" 2>/dev/null || true
    fi
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "Installing the test environment (temporal CLI + dev server, Python SDK) into $venv"
"$repo_root/scripts/setup-test-env.sh"

certs="$repo_root/tests/fixtures/certs"
missing=0
for f in ca.pem client.pem client-key.pem server.pem server-key.pem; do
    [[ -f "$certs/$f" ]] || missing=1
done
if ((missing)); then
    step "Generating the test PKI into $certs"
    command -v openssl >/dev/null 2>&1 || die "openssl not found (needed to generate test certificates)"
    "$repo_root/scripts/gen-test-certs.sh" "$certs"
else
    echo "test certificates present in $certs"
fi

step "Building strait and the demo (release)"
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs)"
cargo build --release --quiet --bin strait --example replication_demo

STRAIT_BIN="$repo_root/target/release/strait" \
    "$repo_root/target/release/examples/replication_demo" "$@" &
demo_pid=$!
status=0
wait "$demo_pid" || status=$?
demo_pid=""
((status == 0)) || die "the demo failed (exit $status); see its output above"
printf '\ndemo-replication: finished in %ds (install and build included)\n' "$((SECONDS - began))"
