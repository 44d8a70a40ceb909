"""The CapabilityStatement, generated from the same tables the API runs on."""

from __future__ import annotations

from typing import Any

from hub import codes
from hub.fhir.search_parameters import search_parameters
from hub.security.access import AUDIT_TYPES

INTERACTIONS = [
    "read",
    "vread",
    "update",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
]
READ_ONLY = ["read", "vread", "history-instance", "history-type", "search-type"]
OPERATIONS = {
    "ServiceRequest": [("record-bundle", "record-bundle")],
    "DiagnosticReport": [("finalize", "opinion-finalize"), ("amend", "opinion-amend")],
    "Task": [
        ("transition", "case-transition"),
        ("completeness", "completeness"),
        ("transfer-care", "transfer-care"),
    ],
}
_COMMON_PARAMS = [
    {"name": "_id", "type": "token"},
    {"name": "_lastUpdated", "type": "date"},
]


def capability_statement(base: str) -> dict[str, Any]:
    """What the FHIR API at `base` supports, type by type."""
    resources = []
    for resource_type, params in sorted(search_parameters().items()):
        entry: dict[str, Any] = {
            "type": resource_type,
            "interaction": [
                {"code": code}
                for code in (READ_ONLY if resource_type in AUDIT_TYPES else INTERACTIONS)
            ],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": False,
            "conditionalCreate": True,
            "conditionalUpdate": True,
            "conditionalDelete": "not-supported",
            "searchInclude": sorted(
                f"{resource_type}:{name}" for name, p in params.items() if p.type == "reference"
            ),
            "searchParam": _COMMON_PARAMS
            + [{"name": name, "type": p.type} for name, p in sorted(params.items())],
        }
        if resource_type in OPERATIONS:
            entry["operation"] = [
                {"name": name, "definition": f"{codes.CANONICAL_BASE}/OperationDefinition/{defn}"}
                for name, defn in OPERATIONS[resource_type]
            ]
        resources.append(entry)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-23",
        "kind": "instance",
        "software": {"name": "second-opinion-hub", "version": "0.1.0"},
        "implementation": {"description": "Second-opinion integration hub", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                    "code": "SMART-on-FHIR",
                                }
                            ]
                        }
                    ],
                    "description": "OAuth2 bearer tokens (SMART Backend Services); discovery "
                    "at /.well-known/smart-configuration. Every call but this one needs a token.",
                },
                "resource": resources,
                "interaction": [
                    {"code": "transaction"},
                    {"code": "batch"},
                    {"code": "history-system"},
                ],
            }
        ],
    }
