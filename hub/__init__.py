"""The hub: HL7 v2 intake, mapping to FHIR R4, a master patient index and a FHIR REST API."""

__version__ = "0.1.0"
