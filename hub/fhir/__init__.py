"""FHIR R4: the only package that imports fhir.resources (pinned to its R4B models); validation."""
