#!/usr/bin/env bash
# The headless browser of the search page's tests: Debian's chromium + chromium-driver.
#
#   bash scripts/browser.sh install   install both from Debian packages if missing (root or sudo)
#   bash scripts/browser.sh status    exit 0 only if both are on PATH (prints their versions)
#   eval "$(bash scripts/browser.sh env)"   export XMR_CHROMIUM / XMR_CHROMEDRIVER
#
# The browser comes from apt only: nothing is downloaded at test time (no Selenium Manager, no
# `playwright install`); the tests point Selenium at these two binaries.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SERVICE=browser
# shellcheck source=scripts/_lib.sh
source "$REPO/scripts/_lib.sh"

find_chromium() { command -v chromium || command -v chromium-browser || true; }
find_driver() { command -v chromedriver || { [[ -x /usr/lib/chromium/chromedriver ]] && echo /usr/lib/chromium/chromedriver; } || true; }

cmd_install() {
    if [[ -n "$(find_chromium)" && -n "$(find_driver)" ]]; then
        return 0
    fi
    log "installing chromium and chromium-driver with apt-get"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver fonts-dejavu-core >/dev/null
    [[ -n "$(find_chromium)" && -n "$(find_driver)" ]] || die "chromium or chromedriver still missing after apt-get install"
    cmd_status
}

cmd_status() {
    local browser driver
    browser="$(find_chromium)"
    driver="$(find_driver)"
    [[ -n "$browser" && -n "$driver" ]] || {
        log "not installed (run: bash scripts/browser.sh install)"
        return 1
    }
    log "$("$browser" --version 2>/dev/null | head -n 1) at $browser; $("$driver" --version | head -n 1) at $driver"
}

case "${1:-}" in
    install) cmd_install ;;
    status) cmd_status ;;
    env)
        printf 'export XMR_CHROMIUM=%q\n' "$(find_chromium)"
        printf 'export XMR_CHROMEDRIVER=%q\n' "$(find_driver)"
        ;;
    *)
        echo "usage: $0 install|status|env" >&2
        exit 2
        ;;
esac
