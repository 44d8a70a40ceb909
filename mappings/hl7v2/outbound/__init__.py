"""FHIR → HL7 v2.5.1 messages the hub sends, built and validated with hl7apy.

- `opinion_to_mdm_t02`: a second opinion (DiagnosticReport) as MDM^T02, the document.
- `opinion_to_oru_r01`: the same as ORU^R01, a result against the referral order.
- `referral_status_to_osu_o51`: the state of a case (its Task) as OSU^O51.

Code tables (document types, status codes, assigning authorities, vocabulary) are the YAML
files of this package; `tables()` reads them. Errors: see `errors`.
"""

from __future__ import annotations

from mappings.hl7v2.outbound.errors import (
    OutboundError,
    OutboundMappingError,
    OutboundValidationError,
)
from mappings.hl7v2.outbound.mdm import opinion_to_mdm_t02
from mappings.hl7v2.outbound.message import reparse
from mappings.hl7v2.outbound.oru import opinion_to_oru_r01
from mappings.hl7v2.outbound.osu import osu_o51_profile, referral_status_to_osu_o51
from mappings.hl7v2.outbound.tables import OutboundTables, tables

__all__ = [
    "OutboundError",
    "OutboundMappingError",
    "OutboundTables",
    "OutboundValidationError",
    "opinion_to_mdm_t02",
    "opinion_to_oru_r01",
    "osu_o51_profile",
    "referral_status_to_osu_o51",
    "reparse",
    "tables",
]
