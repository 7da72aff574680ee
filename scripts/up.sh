#!/usr/bin/env bash
# Quick start: run rawrxd (`rawrxd up`: `rawrxd serve` on 127.0.0.1:11434 with the proxy on
# 127.0.0.1:11435 in front of it) on the default model, SmolLM2 135M Instruct, served as
# smollm2:135m. Fetches and verifies the model first when it is missing
# (scripts/fetch-model.sh smollm2), then builds and starts rawrxd.
#
# Usage:
#   scripts/up.sh [FLAGS...]       # FLAGS go to `rawrxd up` (see `rawrxd up --help`)
#   scripts/up.sh --listen 127.0.0.1:8080 --model other:1b=/path/other.gguf
#
# Runs in the repository root, so the proxy reads rules/ and writes rawrxd.db and logs/ there
# (relative paths in FLAGS are taken from there too).
#
# Environment:
#   RAWRXD_UP_PROFILE   cargo profile to build and run (default release; `dev` for a debug
#                       build of rawrxd, whose llama.cpp is still built optimized)
#   RAWRXD_MODEL_CACHE  where models are cached (default ~/.cache/rawrxd/models)
set -euo pipefail
cd "$(dirname "$0")/.."

model="$(scripts/fetch-model.sh smollm2)"
printf '[up] model smollm2:135m = %s\n' "$model" >&2
exec cargo run --profile "${RAWRXD_UP_PROFILE:-release}" --bin rawrxd -- \
    up --model "smollm2:135m=$model" "$@"
