#!/usr/bin/env bash
# The benchmark command: sets up, then measures on this machine and writes
# benchmarks/results/*.md and *.json. Not part of the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/ensure_fhir_peer.sh
.venv/bin/python -m benchmarks.bench_hl7
bash scripts/ensure_dicom_peers.sh && .venv/bin/python -m benchmarks.bench_dicom
.venv/bin/python -m benchmarks.bench_fhir
.venv/bin/python -m benchmarks.bench_record_bundle
