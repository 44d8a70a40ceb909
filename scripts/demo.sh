#!/usr/bin/env bash
# The README's first command: set up, then run the hub on the embedded SQLite database,
# load a synthetic patient and refer it as an outside EHR would. Extra arguments go to
# `hub demo` (e.g. --exit to stop once the case is open).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/hub demo "$@"
