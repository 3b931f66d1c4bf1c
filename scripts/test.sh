#!/usr/bin/env bash
# The whole test suite, as the README gives it: installs nothing by hand, needs only cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --locked "$@"
