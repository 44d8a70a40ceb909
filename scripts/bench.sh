#!/usr/bin/env bash
# The benchmark command: sets up, starts the peers, then measures on this machine and writes
# benchmarks/results/*.md and *.json, gathered in benchmarks/results/summary.md and
# summary.json. Not part of the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/ensure_postgres.sh
bash scripts/ensure_fhir_peer.sh
bash scripts/ensure_dicom_peers.sh
.venv/bin/python -m benchmarks.bench_hl7
.venv/bin/python -m benchmarks.bench_api
.venv/bin/python -m benchmarks.bench_fhir
.venv/bin/python -m benchmarks.bench_dicom
.venv/bin/python -m benchmarks.bench_record_bundle
.venv/bin/python -m benchmarks.bench_scale
.venv/bin/python -m benchmarks.summary
