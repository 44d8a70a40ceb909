"""HL7 batch files (FHS/BHS … BTS/FTS): each message through the intake on its own, with its
own result, and a report for the whole file (posted to the API or dropped in a folder)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

from connectors.base import Envelope
from hub.messages.intake import Hl7Intake
from mappings.hl7v2.batch import BatchError, split_batch
from mappings.hl7v2.tokenizer import parse_message

log = logging.getLogger("hub.messages")
CHUNK = 200


def process_batch(intake: Hl7Intake, raw: bytes, *, channel: str, peer: str = "") -> dict[str, Any]:
    """Take every message of a batch file; the report says what became of each one."""
    batch = split_batch(raw)
    batch_id = uuid.uuid4().hex
    report = batch.report()
    envelopes = [
        Envelope(m.raw, transport="batch", channel=channel, peer=peer) for m in batch.messages
    ]
    for start in range(0, len(envelopes), CHUNK):
        results = intake.receive_many(envelopes[start : start + CHUNK], batch_id=batch_id)
        for entry, result in zip(report.entries[start : start + CHUNK], results, strict=True):
            msa = parse_message(result.ack).first("MSA") if result.ack else None
            entry.outcome = msa.value(1) if msa else "none"
            entry.detail = f"message {result.message_id}" + (
                " (duplicate)" if result.duplicate else ""
            )
    return {
        "batchId": batch_id,
        "controlId": report.control_id,
        "declaredCount": sum(s.declared_count or 0 for s in batch.sections) or None,
        "messages": [
            {
                "index": e.index,
                "controlId": e.control_id,
                "type": e.message_type,
                "outcome": e.outcome,
                "detail": e.detail,
            }
            for e in report.entries
        ],
        "problems": [
            {
                "code": str(p.code.value),
                "line": p.line,
                "detail": p.detail,
                "messageIndex": p.message_index,
            }
            for p in report.problems
        ],
    }


def process_folder(intake: Hl7Intake, folder: Path, *, settle_seconds: float = 2.0) -> int:
    """Process each file dropped in `folder`: moved to done/ or failed/ with its report.

    A file changed in the last `settle_seconds` may still be being written: left for the
    next pass. Returns how many files were processed.
    """
    done, failed = folder / "done", folder / "failed"
    done.mkdir(parents=True, exist_ok=True)
    failed.mkdir(parents=True, exist_ok=True)
    processed = 0
    settled = time.time() - settle_seconds
    for path in sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.stat().st_mtime <= settled
    ):
        try:
            report = process_batch(
                intake, path.read_bytes(), channel=f"folder:{folder.name}", peer=path.name
            )
            target = done
        except BatchError as exc:
            report = {"error": str(exc)}
            target = failed
        (target / f"{path.name}.report.json").write_text(json.dumps(report, indent=2))
        path.replace(target / path.name)
        processed += 1
    return processed
