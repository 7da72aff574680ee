#!/usr/bin/env bash
# Run every test: prepares what the tests need, then `cargo test`.
#
#   1. A project-local Python virtual environment, .venv/ (gitignored), with the official
#      client packages of tests/clients/requirements.txt, which tests/clients.rs drives.
#      Created when missing or broken, re-installed when requirements.txt changed. Its
#      python3 goes first on PATH, which is the python3 the tests run.
#   2. The layer check of ARCHITECTURE.md (python3 scripts/layers.py).
#   3. The test model, Gemma 3 270M (scripts/fetch-model.sh, fetched and verified when
#      missing), exported as RAWRXD_TEST_MODEL. An RAWRXD_TEST_MODEL already set is used
#      as it is.
#
# Usage:
#   scripts/test.sh [CARGO TEST ARGS...]     # e.g. scripts/test.sh --test serve
#
# Needs python3 with the venv module (Debian/Ubuntu: apt-get install python3-venv) and
# access to PyPI the first time.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[test] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

VENV="$PWD/.venv"
REQS=tests/clients/requirements.txt
STAMP="$VENV/.requirements.sha256"

# A usable venv runs its python3 with pip; anything else is made again from scratch.
if ! "$VENV/bin/python3" -m pip --version >/dev/null 2>&1; then
    command -v python3 >/dev/null || die "python3 not found: install Python 3"
    log "creating the virtual environment $VENV"
    if ! python3 -m venv --clear "$VENV" >&2; then
        rm -rf "$VENV"
        die "python3 -m venv failed; on Debian/Ubuntu install python3-venv (apt-get install python3-venv)"
    fi
fi
want="$(sha256sum "$REQS" | awk '{print $1}')"
if [[ "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ]]; then
    log "installing $REQS into $VENV"
    "$VENV/bin/python3" -m pip install --quiet --disable-pip-version-check -r "$REQS" >&2 ||
        die "pip install -r $REQS failed"
    printf '%s\n' "$want" > "$STAMP"
fi
export VIRTUAL_ENV="$VENV"
export PATH="$VENV/bin:$PATH"
log "python3: $(command -v python3)"

# The layer rule of ARCHITECTURE.md: no import points up the layer list.
python3 scripts/layers.py >/dev/null || die "an import points up the layer list (see ARCHITECTURE.md, Layers)"

if [[ -n "${RAWRXD_TEST_MODEL:-}" ]]; then
    [[ -f "$RAWRXD_TEST_MODEL" ]] || die "RAWRXD_TEST_MODEL=$RAWRXD_TEST_MODEL is not a file"
else
    RAWRXD_TEST_MODEL="$(scripts/fetch-model.sh gemma)"
fi
export RAWRXD_TEST_MODEL
log "RAWRXD_TEST_MODEL=$RAWRXD_TEST_MODEL"

exec cargo test "$@"
