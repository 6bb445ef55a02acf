"""FHIR Bulk Data export: kick-off and status routes (``router``), the jobs and their runner (``jobs``),
the de-identification profile (``deid``) and the audit of every export (``audit``)."""
