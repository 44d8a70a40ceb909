"""HL7v2 ↔ FHIR mappings and terminology maps: declarative tables plus the engine.

    from mappings import map_message
    from mappings.hl7v2.tokenizer import parse_message

    result = map_message(parse_message(raw))   # MappingResult
    result.bundle                              # FHIR R4 transaction Bundle (dict)
    result.report.to_json()                    # what became of every segment and field

Errors are `MappingError`s located in the message (see `mappings.errors`). The tables are
YAML under `mappings/hl7v2/` and `mappings/terminology/`, plus the ConceptMaps of
`fhir_profiles/ConceptMap/`; `load_tables(overrides=[...])` layers a site's own over them.
"""

from mappings.engine import MappingResult, map_bytes, map_message
from mappings.errors import (
    Location,
    MalformedMessage,
    MappingError,
    MappingTableError,
    MissingRequiredField,
    MissingRequiredSegment,
    UnsupportedMessageType,
)
from mappings.loader import default_tables, load_tables
from mappings.report import ConversionReport, ReportEntry

__all__ = [
    "ConversionReport",
    "Location",
    "MalformedMessage",
    "MappingError",
    "MappingResult",
    "MappingTableError",
    "MissingRequiredField",
    "MissingRequiredSegment",
    "ReportEntry",
    "UnsupportedMessageType",
    "default_tables",
    "load_tables",
    "map_bytes",
    "map_message",
]
