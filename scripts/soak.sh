#!/usr/bin/env bash
# Soak: mixed load (unary, bidi streams, Temporal unary calls, long polls, workflow starts) through
# one Strait process against a real Temporal dev server and the echo backend, for a set time.
# Fails when any call failed, Strait's RSS or live tasks kept growing, or Strait died. The report
# (calls per kind, RSS and tasks over time, the plateau check) is printed and written to
# target/soak.md. See benches/soak/main.rs for what runs and the plateau rule.
#
# Usage: scripts/soak.sh [--seconds N | --minutes M] [--dev] [--sample S] [--scale F] [--out PATH]
#   --seconds N / --minutes M   how long the load runs (default 60 s); e.g. --minutes 30
#   --dev                       build Strait and the soak with the dev profile (what CI runs: it
#                               reuses the test build); default: the release (bench) profile
#   other options go to the soak binary (`scripts/soak.sh --help` lists them)
# Needs the test venv (scripts/setup-test-env.sh) for the `temporal` dev server.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=()
args=()
while (($#)); do
    case "$1" in
        --dev) profile=(--profile dev) ;;
        --help | -h) args+=(--help) ;;
        *) args+=("$1") ;;
    esac
    shift
done

if [[ ! -x "${STRAIT_VENV:-target/venv}/bin/temporal" ]]; then
    echo "soak: no temporal CLI in ${STRAIT_VENV:-target/venv}; run scripts/setup-test-env.sh" >&2
    exit 1
fi
exec cargo bench --locked "${profile[@]}" --bench soak -- "${args[@]}"
