#!/usr/bin/env bash
# One-command demo: a real Temporal dev server, Strait in front of it, and a
# Python SDK worker + client completing a workflow (with an activity) through
# Strait. Prints the workflow's result and the calls Strait relayed, then
# stops everything it started.
#
# Needs: Rust (cargo) and Python 3.10+ with venv. Everything else is installed
# into target/venv by scripts/setup-test-env.sh. Uses 127.0.0.1 only, on free
# ports, with data in a temp dir removed on exit.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
venv="${STRAIT_VENV:-$repo_root/target/venv}"

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

workdir=""
server_pid=""
strait_pid=""
cleanup() {
    local status=$?
    # Stop Strait first so it does not log the upstream going away.
    for pid in "$strait_pid" "$server_pid"; do
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            # Bounded wait, then force.
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    if [[ -n "$workdir" ]]; then
        if [[ $status -ne 0 ]]; then
            for log in "$workdir"/*.log; do
                [[ -f "$log" ]] || continue
                printf '\n--- last lines of %s\n' "$(basename "$log")" >&2
                tail -n 20 "$log" >&2
            done
        fi
        rm -rf "$workdir"
    fi
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "Installing the test environment (temporal CLI + Python SDK) into $venv"
STRAIT_VENV="$venv" "$repo_root/scripts/setup-test-env.sh"
temporal="$venv/bin/temporal"
python="$venv/bin/python"

step "Building strait (release)"
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs)"
cargo build --release --quiet --bin strait
strait="$repo_root/target/release/strait"

workdir="$(mktemp -d "${TMPDIR:-/tmp}/strait-demo.XXXXXX")"

# Five ports that were free a moment ago: Temporal gRPC, HTTP, metrics; Strait listener, admin.
read -r temporal_port http_port metrics_port strait_port admin_port < <("$python" - <<'PY'
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
PY
)

# http_get URL: prints the body, fails unless the answer is 200.
http_get() {
    "$python" -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1"
}

# wait_for WHAT SECONDS CMD...: retries CMD every 0.2 s until it succeeds or time runs out.
wait_for() {
    local what=$1 seconds=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "$what not ready within ${seconds}s"
        sleep 0.2
    done
}

step "Starting a Temporal dev server on 127.0.0.1:$temporal_port (in memory, no UI)"
"$temporal" server start-dev --headless --ip 127.0.0.1 --port "$temporal_port" \
    --http-port "$http_port" --metrics-port "$metrics_port" --log-level warn \
    >"$workdir/temporal.log" 2>&1 &
server_pid=$!
wait_for "Temporal dev server" 60 "$temporal" operator cluster health --address "127.0.0.1:$temporal_port"
echo "Temporal is serving"

step "Starting Strait: clients on 127.0.0.1:$strait_port -> Temporal on 127.0.0.1:$temporal_port"
cat >"$workdir/strait.toml" <<TOML
[admin]
listen = "127.0.0.1:$admin_port"

[[upstream]]
name = "temporal"
address = "127.0.0.1:$temporal_port"

[[listener]]
name = "clients"
listen = "127.0.0.1:$strait_port"
upstream = "temporal"
TOML
cat "$workdir/strait.toml"
"$strait" check --config "$workdir/strait.toml"
"$strait" run --config "$workdir/strait.toml" >"$workdir/strait.log" 2>&1 &
strait_pid=$!
wait_for "Strait (/readyz)" 30 http_get "http://127.0.0.1:$admin_port/readyz"
echo "Strait is ready (admin: http://127.0.0.1:$admin_port/metrics)"

step "Running a workflow with an activity through Strait (Python SDK worker + client)"
# Prints {"workflow_id", "run_id", "result", "elapsed_s"}; the result comes from the activity.
result="$("$python" "$repo_root/tests/python/greeting.py" --address "127.0.0.1:$strait_port" \
    --task-queue strait-demo --name "Strait demo" --timeout 60)"
echo "$result"
read -r workflow_id run_id < <("$python" - "$result" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
print(r["workflow_id"], r["run_id"])
PY
)
echo "Workflow $workflow_id (run $run_id) completed through Strait"

step "Asking Temporal about it with the temporal CLI, also through Strait"
"$temporal" workflow describe --address "127.0.0.1:$strait_port" --workflow-id "$workflow_id"

step "Calls Strait relayed (from its /metrics)"
http_get "http://127.0.0.1:$admin_port/metrics" | grep '^strait_calls_total{' | grep 'listener="clients"' | sort | head -n 20
echo "(CANCELLED polls are the worker cancelling its own idle long polls when it shut down.)"

step "Done: stopping Strait and the dev server"
