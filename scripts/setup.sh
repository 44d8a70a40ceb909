#!/usr/bin/env bash
# Creates (or reuses) the virtual environment under .venv and installs the hub into it.
# Idempotent: reinstalls only when pyproject.toml changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"Python 3.11 or newer is needed; {sys.version.split()[0]} found.")
PY

# The opinion PDF's Unicode font (hub/opinions/_fonts.py); without it the PDF falls back to
# Latin-1 text. Installed from Debian by name where missing and apt-get can (as root).
if ! dpkg-query -W -f='${db:Status-Status}' fonts-dejavu-core 2>/dev/null | grep -qx installed; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "Installing the PDF font: fonts-dejavu-core" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends fonts-dejavu-core
    else
        echo "fonts-dejavu-core is missing: opinion PDFs will use Latin-1 text only" >&2
    fi
fi

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[test]"
    rm -f .venv/.installed-*
    touch "$stamp"
fi
