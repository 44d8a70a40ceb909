"""The conversion report: what became of every segment and field of a message.

Each field present in the message ends in one of four states:

* ``mapped``: it landed in one or more FHIR elements (``paths``);
* ``used``: it steered the mapping without landing anywhere (MSH-10 seeds the fullUrls,
  OBX-2 chooses the value[x] type);
* ``defaulted``: a FHIR element was given a value the message did not hold (``value``,
  ``reason``), e.g. a missing OBX-11 or a time without a UTC offset;
* ``not-mapped``: nothing took it, and ``reason`` says why (a Z-segment, a field the tables
  do not know, a code outside a table).

The engine records cheaply while mapping; the entries are assembled only when asked for.
Reasons name positions and tables, never field values (no PHI).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from mappings.errors import Location

if TYPE_CHECKING:
    from mappings.hl7v2.tokenizer import Message
    from mappings.structure import SegmentNode
    from mappings.tables import RuleSet

__all__ = ["ConversionReport", "ReportEntry", "Status"]

Status = Literal["mapped", "used", "defaulted", "not-mapped"]


@dataclass(frozen=True, slots=True)
class ReportEntry:
    """One field (or component) of one segment, and what became of it."""

    location: Location
    status: Status
    group: str
    paths: tuple[str, ...] = ()
    reason: str | None = None
    value: Any = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"location": str(self.location), "status": self.status}
        if self.paths:
            data["paths"] = list(self.paths)
        if self.status == "defaulted":
            data["value"] = self.value
        if self.reason:
            data["reason"] = self.reason
        return data


class SegmentRecord:
    """What the engine noted about one segment while mapping it."""

    __slots__ = ("node", "mapped", "used", "ignored", "notes", "consumers", "rule_sets", "reason")

    def __init__(self, node: SegmentNode) -> None:
        self.node = node
        self.mapped: dict[int, list[str]] = {}
        self.used: dict[int, str] = {}
        self.ignored: dict[int, str] = {}
        # (Location, or (field, component, subcomponent, repetition) in this segment), ...
        self.notes: list[tuple[Any, Status, str | None, Any, str]] = []
        self.consumers: list[str] = []
        self.rule_sets: list[RuleSet] = []
        self.reason: str | None = None

    def used_reason(self, number: int) -> str | None:
        found = self.used.get(number)
        if found is None:
            for rule_set in self.rule_sets:
                found = rule_set.used.get(number)
                if found is not None:
                    break
        return found

    def ignored_reason(self, number: int) -> str | None:
        found = self.ignored.get(number)
        if found is None:
            for rule_set in self.rule_sets:
                found = rule_set.ignored.get(number)
                if found is not None:
                    break
        return found


class ConversionReport:
    """Per segment and per field: mapped, used, defaulted or not mapped, and why."""

    def __init__(self, message: Message, structure: str, records: list[SegmentRecord]) -> None:
        self.message_type = message.type_name
        self.control_id = message.control_id
        self.version = message.version
        self.structure = structure
        self._records = records
        self._entries: list[ReportEntry] | None = None

    # -- recording (engine side) -----------------------------------------------------------
    def record(self, index: int) -> SegmentRecord:
        return self._records[index]

    # -- reading ---------------------------------------------------------------------------
    @property
    def entries(self) -> list[ReportEntry]:
        """Every entry, in message order: segment by segment, field by field."""
        if self._entries is None:
            self._entries = [entry for record in self._records for entry in _entries(record)]
        return self._entries

    def __iter__(self) -> Iterator[ReportEntry]:
        return iter(self.entries)

    def not_mapped(self) -> list[ReportEntry]:
        return [e for e in self.entries if e.status == "not-mapped"]

    def defaulted(self) -> list[ReportEntry]:
        return [e for e in self.entries if e.status == "defaulted"]

    def find(self, location: str) -> list[ReportEntry]:
        """The entries at a location written as `str(Location)`, e.g. `OBX[2]-5` or `ZPI-1`."""
        return [e for e in self.entries if str(e.location) == location]

    def segment_status(self, name: str, sequence: int = 1) -> tuple[Status, str | None]:
        """Whether a segment was consumed by any resource table, and if not, why."""
        for record in self._records:
            node = record.node
            if node.name == name and node.sequence == sequence:
                if record.consumers:
                    return "mapped", None
                return "not-mapped", record.reason
        raise KeyError(f"{name}[{sequence}] is not in the message")

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict: the message, then each segment with its fields."""
        segments = []
        counts: dict[str, int] = {"mapped": 0, "used": 0, "defaulted": 0, "not-mapped": 0}
        for record in self._records:
            node = record.node
            fields = [entry.to_json() for entry in _entries(record)]
            for field in fields:
                counts[field["status"]] += 1
            segment: dict[str, Any] = {
                "segment": node.name,
                "sequence": node.sequence,
                "position": node.index + 1,
                "group": node.group_path(),
                "status": "mapped" if record.consumers else "not-mapped",
            }
            if record.consumers:
                segment["tables"] = list(dict.fromkeys(record.consumers))
            elif record.reason:
                segment["reason"] = record.reason
            segment["fields"] = fields
            segments.append(segment)
        return {
            "messageType": self.message_type,
            "structure": self.structure,
            "version": self.version,
            "controlId": self.control_id,
            "counts": counts,
            "segments": segments,
        }


def _entries(record: SegmentRecord) -> Iterator[ReportEntry]:
    node = record.node
    segment = node.segment
    group = node.group_path()
    name, sequence = node.name, node.sequence
    consumed = bool(record.consumers)
    for number in range(1, segment.field_count + 1):
        if not segment.field(number):
            continue
        location = Location(name, sequence, number)
        if number in record.mapped:
            paths = tuple(dict.fromkeys(record.mapped[number]))
            yield ReportEntry(location, "mapped", group, paths)
            continue
        used = record.used_reason(number)
        if used is not None:
            yield ReportEntry(location, "used", group, reason=used)
            continue
        ignored = record.ignored_reason(number)
        if ignored is not None:
            yield ReportEntry(location, "not-mapped", group, reason=ignored)
        elif consumed:
            tables = ", ".join(dict.fromkeys(record.consumers))
            reason = f"no rule for {name}-{number} in {tables}"
            yield ReportEntry(location, "not-mapped", group, reason=reason)
        else:
            yield ReportEntry(location, "not-mapped", group, reason=record.reason)
    seen: set[tuple[str, str, str | None]] = set()
    for where, status, path, value, reason in record.notes:
        location = where if isinstance(where, Location) else Location(name, sequence, *where)
        key = (str(location), status, path)
        if key in seen:
            continue
        seen.add(key)
        paths = (path,) if path else ()
        yield ReportEntry(location, status, group, paths, reason, value)
