"""The FHIR R4 REST API under /fhir."""
