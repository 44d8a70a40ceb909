"""Errors of the profile package.

ProfileDefinitionError   a StructureDefinition, ValueSet or CodeSystem in fhir_profiles/, or a
                         rule of applicability.yaml, that the validator cannot apply; raised
                         when they are loaded, never while a resource is validated (a problem
                         of a resource is always an Issue, never an exception)
"""

from __future__ import annotations


class ProfileDefinitionError(Exception):
    """One of the hub's own definitions is broken: a defect of the hub, not of the data."""
