#!/usr/bin/env bash
# Makes sure the browser tests of the hub's pages (tests/e2e) can run: Debian's Chromium,
# which Playwright for Python drives (its own browser downloads are never used), installed by
# name where /usr/bin/chromium is missing and apt-get can (as root); and axe-core, the
# accessibility engine the tests inject into each page, at the exact version pinned in
# tests/e2e/axe/package-lock.json, installed with `npm ci` whenever node_modules is
# missing or the lock file changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

axe=tests/e2e/axe
stamp="$axe/node_modules/.package-lock.sha256"

if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "Installing the browser of the page tests: chromium" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends chromium
    else
        echo "/usr/bin/chromium is missing: install Debian's chromium package for the page tests" >&2
        exit 1
    fi
fi

if ! command -v npm >/dev/null; then
    echo "Installing npm for the page tests' axe-core: nodejs npm" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends nodejs npm
fi

wanted=$(sha256sum "$axe/package-lock.json" | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
    echo "Installing the page tests' npm packages (npm ci)" >&2
    (cd "$axe" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$wanted" >"$stamp"
fi
