#!/usr/bin/env bash
# The README's second command (and CI's): set up, start the real peers the tests need on
# loopback, then lint, type-check and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/ensure_postgres.sh
bash scripts/ensure_redis.sh
bash scripts/ensure_dicom_peers.sh
bash scripts/ensure_fhir_peer.sh
bash scripts/ensure_browser.sh
.venv/bin/ruff check hub connectors mappings dicom tests benchmarks
.venv/bin/ruff format --check --quiet hub connectors mappings dicom tests benchmarks
.venv/bin/mypy
.venv/bin/python -m pytest tests "$@"
