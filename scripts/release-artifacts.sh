#!/usr/bin/env bash
# Release artifacts: `bash scripts/release-artifacts.sh [OUT_DIR]` (default target/dist) builds the
# release binary and writes beside it the man pages and the shell completion scripts, all
# generated from the CLI definition by the binary itself.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/dist}"
cargo build --release --locked
mkdir -p "$out/completions"
cp target/release/turnbench "$out/"
"$out/turnbench" man --out-dir "$out/man"
"$out/turnbench" completions bash > "$out/completions/turnbench.bash"
"$out/turnbench" completions zsh > "$out/completions/_turnbench"
"$out/turnbench" completions fish > "$out/completions/turnbench.fish"
ls -l "$out" "$out/man" "$out/completions" >&2
