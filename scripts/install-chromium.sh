#!/usr/bin/env bash
# Headless Chromium for the browser test (tests/report_browser.rs): prints the path of a Chromium
# on PATH, installing the Debian package `chromium` first when there is none.
#
#   bash scripts/install-chromium.sh               # install when absent (root or sudo); fail otherwise
#   bash scripts/install-chromium.sh --if-possible # the same, but exit 0 with nothing printed when
#                                                  # it cannot install (no root, no apt, offline)
#
# Progress goes to stderr; stdout is only the path, so `TURNBENCH_CHROMIUM=$(bash …)` works.
set -euo pipefail

if_possible=0
[[ "${1:-}" == "--if-possible" ]] && if_possible=1

find_chromium() {
    local c
    for c in chromium chromium-browser google-chrome-stable google-chrome; do
        if command -v "$c" >/dev/null 2>&1; then
            command -v "$c"
            return 0
        fi
    done
    return 1
}

give_up() {
    echo "install-chromium: $*" >&2
    if (( if_possible )); then exit 0; fi
    exit 1
}

if find_chromium; then exit 0; fi

command -v apt-get >/dev/null 2>&1 || give_up "no Chromium on PATH and no apt-get to install it with"
sudo=()
if [[ "$(id -u)" != 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo=(sudo -n)
    else
        give_up "no Chromium on PATH; installing it needs root (apt-get install chromium)"
    fi
fi

# The package lists may be empty (fresh container) or stale: update only when apt has no candidate.
if ! apt-cache policy chromium 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    echo "install-chromium: apt-get update" >&2
    "${sudo[@]}" apt-get update >&2 || give_up "apt-get update failed"
fi
echo "install-chromium: apt-get install -y chromium" >&2
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y chromium >&2 || give_up "apt-get install chromium failed"
find_chromium || give_up "chromium installed but not on PATH"
