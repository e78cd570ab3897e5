#!/usr/bin/env bash
# Regenerates descriptors/temporal.binpb and descriptors/temporal.version: starts the pinned Temporal
# dev server (scripts/setup-test-env.sh), dumps WorkflowService, OperatorService, AdminService and all
# they import over gRPC server reflection with `strait descriptors dump`, and writes the result into
# descriptors/. The output is canonical (files in dependency order, ties by name), so rerunning it
# against the same server release changes nothing; tests/descriptors_drift.rs fails when it would.
#
# Usage: scripts/update-descriptors.sh           write descriptors/temporal.{binpb,version}
#        scripts/update-descriptors.sh --check   only compare; exit 1 if the committed files differ
#
# Uses 127.0.0.1 only, on free ports; every wait is bounded; the server is stopped on exit.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
venv="${STRAIT_VENV:-$repo_root/target/venv}"

check=false
case "${1:-}" in
    "") ;;
    --check) check=true ;;
    -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) printf 'usage: %s [--check]\n' "$0" >&2; exit 2 ;;
esac

log() { printf 'update-descriptors: %s\n' "$*"; }
die() { printf 'update-descriptors: error: %s\n' "$*" >&2; exit 1; }

workdir=""
server_pid=""
cleanup() {
    local status=$?
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [[ -n "$workdir" ]]; then
        if [[ $status -ne 0 && -f "$workdir/server.log" ]]; then
            printf -- '--- last lines of the dev server log\n' >&2
            tail -n 20 "$workdir/server.log" >&2
        fi
        rm -rf "$workdir"
    fi
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

STRAIT_VENV="$venv" scripts/setup-test-env.sh >/dev/null
temporal="$venv/bin/temporal"
python="$venv/bin/python"
log "server: $("$temporal" --version)"

command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs)"
log "building strait"
cargo build --quiet --bin strait
strait="$repo_root/target/debug/strait"

workdir="$(mktemp -d "${TMPDIR:-/tmp}/strait-descriptors.XXXXXX")"

# Three ports that were free a moment ago: gRPC, HTTP, metrics.
read -r grpc_port http_port metrics_port < <("$python" - <<'PY'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
PY
)
address="127.0.0.1:$grpc_port"

# Isolated from the user's CLI config and TEMPORAL_* environment, like the tests.
for var in $(compgen -e | grep '^TEMPORAL_' || true); do unset "$var"; done

log "starting the dev server on $address"
"$temporal" server start-dev --headless --ip 127.0.0.1 \
    --port "$grpc_port" --http-port "$http_port" --metrics-port "$metrics_port" \
    --log-level warn --disable-config-file --disable-config-env \
    >"$workdir/server.log" 2>&1 &
server_pid=$!

deadline=$((SECONDS + 60))
until "$temporal" operator cluster health --address "$address" \
    --disable-config-file --disable-config-env 2>/dev/null | grep -q SERVING; do
    kill -0 "$server_pid" 2>/dev/null || die "the dev server exited during start-up"
    ((SECONDS < deadline)) || die "the dev server was not healthy within 60 s"
    sleep 0.2
done

"$strait" descriptors dump --address "$address" --out "$workdir/temporal.binpb" --timeout 60
[[ -s "$workdir/temporal.version" ]] || die "the server did not report its version"

if $check; then
    for f in temporal.binpb temporal.version; do
        cmp -s "$workdir/$f" "descriptors/$f" \
            || die "descriptors/$f is out of date: run scripts/update-descriptors.sh"
    done
    log "descriptors/ is up to date"
else
    cp "$workdir/temporal.binpb" "$workdir/temporal.version" descriptors/
    log "wrote descriptors/temporal.binpb ($(wc -c <descriptors/temporal.binpb) bytes) and descriptors/temporal.version ($(cat descriptors/temporal.version))"
fi
