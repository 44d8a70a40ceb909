"""Benchmarks: run by `bash scripts/bench.sh`, never by the test suite."""
