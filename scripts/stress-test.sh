#!/usr/bin/env bash
# Checks that the test suite does not depend on how fast this machine is:
# runs the whole suite — scripts/test.sh, the README's test command, with any arguments passed
# through (e.g. --with-vllm, or cargo test filters) — STRESS_RUNS times in a row (default 3) while
# STRESS_LOOPS busy loops (default 2, one per core here) keep the CPUs saturated.
#
#   bash scripts/stress-test.sh                      # 3 runs of `bash scripts/test.sh`
#   STRESS_RUNS=5 bash scripts/stress-test.sh --with-vllm
#
# Stops at the first failing run and says which one; otherwise prints one summary line with each
# run's duration. The busy loops are killed by a trap on any exit (success, failure, Ctrl-C,
# SIGTERM, SIGHUP), and each also ends by itself once this script is gone (even after kill -9).
# A signal to this script is passed on to the test run in flight (its own process group).
# The first run includes any compilation, under the same load.
set -euo pipefail
cd "$(dirname "$0")/.."

runs="${STRESS_RUNS:-3}"
loops="${STRESS_LOOPS:-2}"
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || { echo "stress-test: STRESS_RUNS must be a positive integer, got '$runs'" >&2; exit 2; }
[[ "$loops" =~ ^[0-9]+$ ]] || { echo "stress-test: STRESS_LOOPS must be a non-negative integer, got '$loops'" >&2; exit 2; }

busy_pids=()
test_pgid=""
stop_loops() {
    local pid
    for pid in ${busy_pids[@]+"${busy_pids[@]}"}; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in ${busy_pids[@]+"${busy_pids[@]}"}; do
        wait "$pid" 2>/dev/null || true
    done
    busy_pids=()
}
on_signal() {
    if [[ -n "$test_pgid" ]]; then
        echo "stress-test: $1: stopping the test run in flight" >&2
        kill -"$1" -- -"$test_pgid" 2>/dev/null || true
        wait "$test_pgid" 2>/dev/null || true
    fi
    exit "$2"
}
trap stop_loops EXIT
trap 'on_signal INT 130' INT
trap 'on_signal TERM 143' TERM
trap 'on_signal HUP 129' HUP

# Each loop spins on `kill -0 <this script>` (a shell builtin): full CPU, and it stops by itself
# when this script is gone, trap or no trap.
for ((i = 0; i < loops; i++)); do
    sh -c 'while kill -0 "$1" 2>/dev/null; do :; done' busy-loop "$$" &
    busy_pids+=("$!")
done
echo "stress-test: $loops busy loop(s) running (pids ${busy_pids[*]:-none}); $runs run(s) of: bash scripts/test.sh $*" >&2

# Job control: the test run gets its own process group, so a signal can reach all of it (cargo,
# the test binaries, what they spawned). Its stdin is /dev/null, as a background job's must be.
set -m

now_ms() { date +%s%3N; }
fmt_s() { printf '%d.%01ds' "$(($1 / 1000))" "$((($1 % 1000) / 100))"; }

durations=()
for ((run = 1; run <= runs; run++)); do
    # A busy loop that died would make this a run on an idle machine: refuse to count it.
    for pid in ${busy_pids[@]+"${busy_pids[@]}"}; do
        kill -0 "$pid" 2>/dev/null || { echo "stress-test: busy loop $pid is gone; the load is not what it claims" >&2; exit 1; }
    done
    echo "stress-test: === run $run of $runs ===" >&2
    start="$(now_ms)"
    bash scripts/test.sh "$@" </dev/null &
    test_pgid=$!
    if wait "$test_pgid"; then rc=0; else rc=$?; fi
    test_pgid=""
    took=$(($(now_ms) - start))
    durations+=("run $run $(fmt_s "$took")")
    if ((rc != 0)); then
        earlier=""
        ((run > 1)) && earlier="; passed before it: $(IFS=,; echo "${durations[*]:0:run-1}")"
        echo "stress-test: FAILED on run $run of $runs (exit $rc, after $(fmt_s "$took"), $loops busy loop(s))$earlier" >&2
        exit "$rc"
    fi
done

summary="$(printf '%s, ' "${durations[@]}")"
echo "stress-test: PASSED $runs/$runs runs under $loops busy loop(s): ${summary%, }"
