"""The hub's FHIR profiles (fhir_profiles/) and the validator that applies them.

- `profiles_for(resource)`: the URLs of the hub's profiles a resource is held to.
- `validate_resource_profiles(resource, path)`: its issues against them.
- `validate_bundle(bundle)`: base R4, profiles and reference resolution of a whole Bundle.
- `validate_content(resource)`: a Bundle or any other resource.
- `outcome(issues)`: the OperationOutcome to answer with.
"""

from __future__ import annotations

from hub.profiles.applicability import profiles_for
from hub.profiles.bundle import validate_bundle, validate_content
from hub.profiles.errors import ProfileDefinitionError
from hub.profiles.validator import is_valid, outcome, validate_resource_profiles

__all__ = [
    "ProfileDefinitionError",
    "is_valid",
    "outcome",
    "profiles_for",
    "validate_bundle",
    "validate_content",
    "validate_resource_profiles",
]
