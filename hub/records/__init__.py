"""Records pulled from outside systems for a case: the FHIR REST pull job, the
normalization of what it brings into the hub's id space, and their reports."""
