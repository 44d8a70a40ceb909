"""Gathers the benchmarks' results of one `bash scripts/bench.sh` run into one dated
Markdown file and one JSON file: benchmarks/results/summary.md and summary.json.

Each benchmark writes its own table and JSON (benchmarks/results/<name>.md/.json); this
puts them together, in the order of SECTIONS, under the date and the machine."""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from typing import Any

from benchmarks.bench_hl7 import RESULTS

SECTIONS = (
    ("hl7", "HL7 v2: MLLP ingest and ORU^R01 mapping (hl7.parse as the anchor)"),
    ("api", "FHIR REST API under concurrent load (locust)"),
    ("fhir", "FHIR connector pull (Medplum FHIR server on loopback)"),
    ("dicom", "DICOM: C-STORE ingest beside Orthanc's, WADO-RS pull, a 2 GiB study"),
    ("record_bundle", "Record bundle: assembly + validation of a 5,000-resource case"),
    ("scale", "Scale-out on PostgreSQL: 1 and 2 workers"),
)


def main() -> int:
    today = datetime.date.today().isoformat()
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    parts = [f"# Benchmarks, measured {today} on {machine}\n"]
    gathered: dict[str, Any] = {"date": today, "machine": machine}
    missing = []
    for name, title in SECTIONS:
        table, figures = RESULTS / f"{name}.md", RESULTS / f"{name}.json"
        if not table.exists() or not figures.exists():
            missing.append(name)
            continue
        parts.append(f"## {title}\n\n{table.read_text().strip()}\n")
        gathered[name] = json.loads(figures.read_text())
    (RESULTS / "summary.md").write_text("\n".join(parts))
    (RESULTS / "summary.json").write_text(json.dumps(gathered, indent=2))
    print(f"wrote {RESULTS / 'summary.md'} and summary.json")
    for name in missing:
        print(f"no results from {name}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
