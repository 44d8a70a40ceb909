"""Errors of the FHIR → HL7 v2 outbound mappings.

    OutboundError (ValueError)
    ├── OutboundMappingError      the resources cannot be expressed as that message: a required
    │                             datum is missing or a status is not one the message carries
    └── OutboundValidationError   the message built does not re-parse (with hl7apy or with the
                                  hub's tokenizer): a defect of the mapping, never of the input

Messages name FHIR paths and codes, never patient data.
"""

from __future__ import annotations


class OutboundError(ValueError):
    """Base of the outbound mapping errors."""


class OutboundMappingError(OutboundError):
    """The FHIR resources cannot be expressed as the requested HL7 v2 message."""


class OutboundValidationError(OutboundError):
    """The HL7 v2 message built failed its own re-parse and validation."""
