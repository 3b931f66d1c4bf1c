#!/usr/bin/env bash
# kubernetes-validate (PyPI) for the manifest test (tests/k8s_manifests.rs): installs it, with
# PyYAML, into a venv cached outside the clone and prints the venv's path.
#
#   bash scripts/install-k8s-validate.sh               # install when absent; fail otherwise
#   bash scripts/install-k8s-validate.sh --if-possible # the same, but exit 0 with nothing printed
#                                                      # when it cannot (offline, no venv module)
#   PYTHON=python3.12 bash scripts/install-k8s-validate.sh   # another interpreter (default python3)
#
# The venv is ${XDG_CACHE_HOME:-$HOME/.cache}/turnbench/k8s-validate-<hash>, the hash of the pins
# below and the interpreter's version: a change of either gets a fresh venv, and a venv whose
# marker matches is used as it is (no network). TURNBENCH_K8S_VALIDATE, when set, names the venv
# instead (scripts/empty-home-test.sh passes the real cache's). kubernetes-validate ships the
# Kubernetes JSON schemas (1.25 to 1.37 in 1.37.0), so validating needs no network either.
#
# Progress goes to stderr; stdout is only the path, so `TURNBENCH_K8S_VALIDATE=$(bash …)` works.
set -euo pipefail

# kubernetes-validate and PyYAML are what the test uses; the rest is their dependency closure as
# pip resolved it, pinned so that every machine validates with the same code.
PINS=(
    kubernetes-validate==1.37.0
    PyYAML==6.0.3
    attrs==26.1.0
    importlib_resources==7.1.0
    jsonschema==4.26.0
    jsonschema-specifications==2025.9.1
    packaging==26.4
    referencing==0.37.0
    rpds-py==2026.9.1
    typing_extensions==4.16.0
)
PYTHON="${PYTHON:-python3}"

if_possible=0
[[ "${1:-}" == "--if-possible" ]] && if_possible=1

log() { printf 'install-k8s-validate: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    if (( if_possible )); then exit 0; fi
    exit 1
}

command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (set PYTHON=/path/to/python3)"
PYVER="$("$PYTHON" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
KEY="$(printf '%s\n' "python=$PYVER" "${PINS[@]}" | sha256sum | cut -c1-16)"
VENV="${TURNBENCH_K8S_VALIDATE:-${XDG_CACHE_HOME:-$HOME/.cache}/turnbench/k8s-validate-$KEY}"
MARKER="$VENV/.turnbench-k8s-validate-installed"
WANT_MARKER="python=$PYVER ${PINS[*]}"

works() { "$VENV/bin/kubernetes-validate" --version >/dev/null 2>&1 && "$VENV/bin/python" -c 'import yaml' 2>/dev/null; }

if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$WANT_MARKER" ]] && works; then
    log "already installed in $VENV"
    echo "$VENV"
    exit 0
fi

rm -f "$MARKER"
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating venv $VENV with $PYTHON ($PYVER)"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV" >&2 || die "python -m venv failed (Debian: apt-get install python3-venv)"
fi
log "installing ${PINS[*]}"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --progress-bar off "${PINS[@]}" >&2 \
    || die "pip install failed"
"$VENV/bin/python" -m pip check >&2 || die "pip check failed"
works || die "kubernetes-validate or PyYAML does not run from $VENV"
log "$("$VENV/bin/kubernetes-validate" --version 2>&1 | tail -1); schemas: $(ls "$VENV"/lib/python*/site-packages/kubernetes_validate/kubernetes-json-schema | grep -c -- '-local-strict$') Kubernetes versions"

echo "$WANT_MARKER" > "$MARKER"
echo "$VENV"
