"""The FHIR R4 search parameters the hub supports, per resource type, as a declarative table, and the
extraction of their values from a resource dict (a small path language, not FHIRPath).

A path is a ``.``-separated walk over the resource; ``name[x]`` matches every choice-type key
(``effective[x]`` → ``effectiveDateTime``, ``effectivePeriod``); ``telecom(system=phone)`` keeps only
the list items whose ``system`` is ``phone``. Several paths are joined with ``|``. Reference parameters
may name the target types they keep (R4 ``patient`` is ``subject.where(resolve() is Patient)``).
Composite parameters name their component parameters, which are matched on the same resource.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

TOKEN = "token"
STRING = "string"
DATE = "date"
REFERENCE = "reference"
QUANTITY = "quantity"
NUMBER = "number"
URI = "uri"
COMPOSITE = "composite"
SPECIAL = "special"  # _id, _lastUpdated: answered from the resource row itself


@dataclass(frozen=True, slots=True)
class SearchParam:
    name: str
    type: str
    path: str = ""
    targets: tuple[str, ...] = ()  # reference: the target types kept (empty: any)
    components: tuple[str, ...] = ()  # composite: the component parameters, in order

    @property
    def paths(self) -> list[str]:
        return [p.strip() for p in self.path.split("|") if p.strip()]


@dataclass(slots=True)
class ResourceParams:
    resource_type: str
    params: dict[str, SearchParam] = field(default_factory=dict)


def _p(name: str, type_: str, path: str = "", *targets: str) -> SearchParam:
    return SearchParam(name, type_, path, tuple(targets))


def _composite(name: str, *components: str) -> SearchParam:
    return SearchParam(name, COMPOSITE, components=components)


_PAT = "Patient"
_PRAC = ("Practitioner", "PractitionerRole", "Organization", "Patient", "RelatedPerson", "Device")

COMMON: tuple[SearchParam, ...] = (
    _p("_id", SPECIAL),
    _p("_lastUpdated", SPECIAL),
    _p("_tag", TOKEN, "meta.tag"),
    _p("_security", TOKEN, "meta.security"),
    _p("_profile", URI, "meta.profile"),
    _p("_source", URI, "meta.source"),
)

_PERSON = (
    _p("identifier", TOKEN, "identifier"),
    _p("name", STRING, "name"),
    _p("family", STRING, "name.family"),
    _p("given", STRING, "name.given"),
    _p("phonetic", STRING, "name"),
    _p("gender", TOKEN, "gender"),
    _p("birthdate", DATE, "birthDate"),
    _p("active", TOKEN, "active"),
    _p("address", STRING, "address"),
    _p("address-city", STRING, "address.city"),
    _p("address-district", STRING, "address.district"),
    _p("address-state", STRING, "address.state"),
    _p("address-postalcode", STRING, "address.postalCode"),
    _p("address-country", STRING, "address.country"),
    _p("address-use", TOKEN, "address.use"),
    _p("telecom", TOKEN, "telecom"),
    _p("phone", TOKEN, "telecom(system=phone)"),
    _p("email", TOKEN, "telecom(system=email)"),
)

_DEFINITIONS: dict[str, tuple[SearchParam, ...]] = {
    "Patient": (
        *_PERSON,
        _p("general-practitioner", REFERENCE, "generalPractitioner"),
        _p("organization", REFERENCE, "managingOrganization", "Organization"),
        _p("link", REFERENCE, "link.other"),
        _p("deceased", TOKEN, "deceased[x]"),
        _p("death-date", DATE, "deceasedDateTime"),
        _p("language", TOKEN, "communication.language"),
    ),
    "Encounter": (
        _p("identifier", TOKEN, "identifier"),
        _p("status", TOKEN, "status"),
        _p("class", TOKEN, "class"),
        _p("type", TOKEN, "type"),
        _p("service-type", TOKEN, "serviceType"),
        _p("subject", REFERENCE, "subject"),
        _p("patient", REFERENCE, "subject", _PAT),
        _p("date", DATE, "period"),
        _p("length", QUANTITY, "length"),
        _p("participant", REFERENCE, "participant.individual"),
        _p("practitioner", REFERENCE, "participant.individual", "Practitioner"),
        _p("participant-type", TOKEN, "participant.type"),
        _p("location", REFERENCE, "location.location", "Location"),
        _p("service-provider", REFERENCE, "serviceProvider", "Organization"),
        _p("reason-code", TOKEN, "reasonCode"),
        _p("reason-reference", REFERENCE, "reasonReference"),
        _p("diagnosis", REFERENCE, "diagnosis.condition"),
        _p("episode-of-care", REFERENCE, "episodeOfCare", "EpisodeOfCare"),
        _p("based-on", REFERENCE, "basedOn"),
        _p("part-of", REFERENCE, "partOf", "Encounter"),
        _p("appointment", REFERENCE, "appointment", "Appointment"),
        _p("account", REFERENCE, "account", "Account"),
        _p("special-arrangement", TOKEN, "hospitalization.specialArrangement"),
    ),
    "Observation": (
        _p("identifier", TOKEN, "identifier"),
        _p("status", TOKEN, "status"),
        _p("code", TOKEN, "code"),
        _p("category", TOKEN, "category"),
        _p("subject", REFERENCE, "subject"),
        _p("patient", REFERENCE, "subject", _PAT),
        _p("encounter", REFERENCE, "encounter", "Encounter"),
        _p("date", DATE, "effective[x]"),
        _p("value-quantity", QUANTITY, "valueQuantity"),
        _p("value-concept", TOKEN, "valueCodeableConcept"),
        _p("value-string", STRING, "valueString"),
        _p("value-date", DATE, "valueDateTime|valuePeriod"),
        _p("combo-code", TOKEN, "code|component.code"),
        _p("component-code", TOKEN, "component.code"),
        _p("component-value-quantity", QUANTITY, "component.valueQuantity"),
        _p("component-value-concept", TOKEN, "component.valueCodeableConcept"),
        _p("data-absent-reason", TOKEN, "dataAbsentReason"),
        _p("method", TOKEN, "method"),
        _p("performer", REFERENCE, "performer"),
        _p("based-on", REFERENCE, "basedOn"),
        _p("part-of", REFERENCE, "partOf"),
        _p("specimen", REFERENCE, "specimen", "Specimen"),
        _p("derived-from", REFERENCE, "derivedFrom"),
        _p("has-member", REFERENCE, "hasMember"),
        _p("device", REFERENCE, "device"),
        _p("focus", REFERENCE, "focus"),
        _composite("code-value-quantity", "code", "value-quantity"),
        _composite("code-value-concept", "code", "value-concept"),
        _composite("code-value-string", "code", "value-string"),
        _composite("code-value-date", "code", "value-date"),
    ),
    "Condition": (
        _p("identifier", TOKEN, "identifier"),
        _p("clinical-status", TOKEN, "clinicalStatus"),
        _p("verification-status", TOKEN, "verificationStatus"),
        _p("category", TOKEN, "category"),
        _p("severity", TOKEN, "severity"),
        _p("code", TOKEN, "code"),
        _p("body-site", TOKEN, "bodySite"),
        _p("subject", REFERENCE, "subject"),
        _p("patient", REFERENCE, "subject", _PAT),
        _p("encounter", REFERENCE, "encounter", "Encounter"),
        _p("onset-date", DATE, "onsetDateTime|onsetPeriod"),
        _p("abatement-date", DATE, "abatementDateTime|abatementPeriod"),
        _p("recorded-date", DATE, "recordedDate"),
        _p("onset-age", QUANTITY, "onsetAge"),
        _p("asserter", REFERENCE, "asserter"),
        _p("evidence", TOKEN, "evidence.code"),
        _p("stage", TOKEN, "stage.summary"),
    ),
    "AllergyIntolerance": (
        _p("identifier", TOKEN, "identifier"),
        _p("clinical-status", TOKEN, "clinicalStatus"),
        _p("verification-status", TOKEN, "verificationStatus"),
        _p("type", TOKEN, "type"),
        _p("category", TOKEN, "category"),
        _p("criticality", TOKEN, "criticality"),
        _p("code", TOKEN, "code|reaction.substance"),
        _p("patient", REFERENCE, "patient", _PAT),
        _p("date", DATE, "recordedDate"),
        _p("onset", DATE, "reaction.onset"),
        _p("last-date", DATE, "lastOccurrence"),
        _p("recorder", REFERENCE, "recorder"),
        _p("asserter", REFERENCE, "asserter"),
        _p("severity", TOKEN, "reaction.severity"),
        _p("manifestation", TOKEN, "reaction.manifestation"),
        _p("route", TOKEN, "reaction.exposureRoute"),
    ),
    "Immunization": (
        _p("identifier", TOKEN, "identifier"),
        _p("status", TOKEN, "status"),
        _p("status-reason", TOKEN, "statusReason"),
        _p("vaccine-code", TOKEN, "vaccineCode"),
        _p("patient", REFERENCE, "patient", _PAT),
        _p("date", DATE, "occurrence[x]"),
        _p("lot-number", STRING, "lotNumber"),
        _p("manufacturer", REFERENCE, "manufacturer", "Organization"),
        _p("performer", REFERENCE, "performer.actor"),
        _p("location", REFERENCE, "location", "Location"),
        _p("reason-code", TOKEN, "reasonCode"),
        _p("reason-reference", REFERENCE, "reasonReference"),
        _p("target-disease", TOKEN, "protocolApplied.targetDisease"),
        _p("series", STRING, "protocolApplied.series"),
        _p("reaction-date", DATE, "reaction.date"),
    ),
    "MedicationRequest": (
        _p("identifier", TOKEN, "identifier"),
        _p("status", TOKEN, "status"),
        _p("intent", TOKEN, "intent"),
        _p("priority", TOKEN, "priority"),
        _p("category", TOKEN, "category"),
        _p("code", TOKEN, "medicationCodeableConcept"),
        _p("medication", REFERENCE, "medicationReference", "Medication"),
        _p("subject", REFERENCE, "subject"),
        _p("patient", REFERENCE, "subject", _PAT),
        _p("encounter", REFERENCE, "encounter", "Encounter"),
        _p("authoredon", DATE, "authoredOn"),
        _p("date", DATE, "dosageInstruction.timing.event"),
        _p("requester", REFERENCE, "requester"),
        _p("intended-performer", REFERENCE, "performer"),
    ),
    "MedicationDispense": (
        _p("identifier", TOKEN, "identifier"),
        _p("status", TOKEN, "status"),
        _p("type", TOKEN, "type"),
        _p("code", TOKEN, "medicationCodeableConcept"),
        _p("medication", REFERENCE, "medicationReference", "Medication"),
        _p("subject", REFERENCE, "subject"),
        _p("patient", REFERENCE, "subject", _PAT),
        _p("context", REFERENCE, "context"),
        _p("performer", REFERENCE, "performer.actor"),
        _p("receiver", REFERENCE, "receiver"),
        _p("destination", REFERENCE, "destination", "Location"),
        _p("prescription", REFERENCE, "authorizingPrescription", "MedicationRequest"),
        _p("whenhandedover", DATE, "whenHandedOver"),
        _p("whenprepared", DATE, "whenPrepared"),
    ),
    "DiagnosticReport": (
        _p("identifier", TOKEN, "identifier"),
        _p("status", TOKEN, "status"),
        _p("code", TOKEN, "code"),
        _p("category", TOKEN, "category"),
        _p("subject", REFERENCE, "subject"),
        _p("patient", REFERENCE, "subject", _PAT),
        _p("encounter", REFERENCE, "encounter", "Encounter"),
        _p("date", DATE, "effective[x]"),
        _p("issued", DATE, "issued"),
        _p("performer", REFERENCE, "performer"),
        _p("results-interpreter", REFERENCE, "resultsInterpreter"),
        _p("result", REFERENCE, "result", "Observation"),
        _p("based-on", REFERENCE, "basedOn"),
        _p("specimen", REFERENCE, "specimen", "Specimen"),
        _p("conclusion", TOKEN, "conclusionCode"),
        _p("media", REFERENCE, "media.link", "Media"),
    ),
    "Procedure": (
        _p("identifier", TOKEN, "identifier"),
        _p("status", TOKEN, "status"),
        _p("code", TOKEN, "code"),
        _p("category", TOKEN, "category"),
        _p("subject", REFERENCE, "subject"),
        _p("patient", REFERENCE, "subject", _PAT),
        _p("encounter", REFERENCE, "encounter", "Encounter"),
        _p("date", DATE, "performed[x]"),
        _p("performer", REFERENCE, "performer.actor"),
        _p("location", REFERENCE, "location", "Location"),
        _p("reason-code", TOKEN, "reasonCode"),
        _p("reason-reference", REFERENCE, "reasonReference"),
        _p("based-on", REFERENCE, "basedOn"),
        _p("part-of", REFERENCE, "partOf"),
    ),
    "DocumentReference": (
        _p("identifier", TOKEN, "masterIdentifier|identifier"),
        _p("status", TOKEN, "status"),
        _p("doc-status", TOKEN, "docStatus"),
        _p("type", TOKEN, "type"),
        _p("category", TOKEN, "category"),
        _p("subject", REFERENCE, "subject"),
        _p("patient", REFERENCE, "subject", _PAT),
        _p("date", DATE, "date"),
        _p("period", DATE, "context.period"),
        _p("author", REFERENCE, "author"),
        _p("authenticator", REFERENCE, "authenticator"),
        _p("custodian", REFERENCE, "custodian", "Organization"),
        _p("encounter", REFERENCE, "context.encounter"),
        _p("description", STRING, "description"),
        _p("facility", TOKEN, "context.facilityType"),
        _p("setting", TOKEN, "context.practiceSetting"),
        _p("event", TOKEN, "context.event"),
        _p("related", REFERENCE, "context.related"),
        _p("relatesto", REFERENCE, "relatesTo.target", "DocumentReference"),
        _p("contenttype", TOKEN, "content.attachment.contentType"),
        _p("format", TOKEN, "content.format"),
        _p("language", TOKEN, "content.attachment.language"),
        _p("location", URI, "content.attachment.url"),
        _p("security-label", TOKEN, "securityLabel"),
    ),
    "ServiceRequest": (
        _p("identifier", TOKEN, "identifier"),
        _p("requisition", TOKEN, "requisition"),
        _p("status", TOKEN, "status"),
        _p("intent", TOKEN, "intent"),
        _p("priority", TOKEN, "priority"),
        _p("code", TOKEN, "code"),
        _p("category", TOKEN, "category"),
        _p("body-site", TOKEN, "bodySite"),
        _p("subject", REFERENCE, "subject"),
        _p("patient", REFERENCE, "subject", _PAT),
        _p("encounter", REFERENCE, "encounter", "Encounter"),
        _p("authored", DATE, "authoredOn"),
        _p("occurrence", DATE, "occurrence[x]"),
        _p("requester", REFERENCE, "requester"),
        _p("performer", REFERENCE, "performer"),
        _p("specimen", REFERENCE, "specimen", "Specimen"),
        _p("based-on", REFERENCE, "basedOn"),
        _p("replaces", REFERENCE, "replaces", "ServiceRequest"),
        _p("instantiates-canonical", URI, "instantiatesCanonical"),
    ),
    "Specimen": (
        _p("identifier", TOKEN, "identifier"),
        _p("accession", TOKEN, "accessionIdentifier"),
        _p("status", TOKEN, "status"),
        _p("type", TOKEN, "type"),
        _p("subject", REFERENCE, "subject"),
        _p("patient", REFERENCE, "subject", _PAT),
        _p("collected", DATE, "collection.collected[x]"),
        _p("collector", REFERENCE, "collection.collector"),
        _p("bodysite", TOKEN, "collection.bodySite"),
        _p("container-id", TOKEN, "container.identifier"),
        _p("parent", REFERENCE, "parent", "Specimen"),
    ),
    "Appointment": (
        _p("identifier", TOKEN, "identifier"),
        _p("status", TOKEN, "status"),
        _p("appointment-type", TOKEN, "appointmentType"),
        _p("service-type", TOKEN, "serviceType"),
        _p("service-category", TOKEN, "serviceCategory"),
        _p("specialty", TOKEN, "specialty"),
        _p("reason-code", TOKEN, "reasonCode"),
        _p("date", DATE, "start"),
        _p("actor", REFERENCE, "participant.actor"),
        _p("patient", REFERENCE, "participant.actor", _PAT),
        _p("practitioner", REFERENCE, "participant.actor", "Practitioner"),
        _p("location", REFERENCE, "participant.actor", "Location"),
        _p("part-status", TOKEN, "participant.status"),
        _p("based-on", REFERENCE, "basedOn", "ServiceRequest"),
        _p("slot", REFERENCE, "slot", "Slot"),
        _p("supporting-info", REFERENCE, "supportingInformation"),
    ),
    "Coverage": (
        _p("identifier", TOKEN, "identifier"),
        _p("status", TOKEN, "status"),
        _p("type", TOKEN, "type"),
        _p("beneficiary", REFERENCE, "beneficiary", _PAT),
        # R4's Patient compartment: beneficiary, subscriber or policy-holder.
        _p("patient", REFERENCE, "beneficiary|subscriber|policyHolder", _PAT),
        _p("subscriber", REFERENCE, "subscriber"),
        _p("policy-holder", REFERENCE, "policyHolder"),
        _p("payor", REFERENCE, "payor"),
        _p("dependent", STRING, "dependent"),
        _p("class-type", TOKEN, "class.type"),
        _p("class-value", STRING, "class.value"),
    ),
    "RelatedPerson": (
        *_PERSON,
        _p("patient", REFERENCE, "patient", _PAT),
        _p("relationship", TOKEN, "relationship"),
    ),
    "Practitioner": (
        *_PERSON,
        _p("communication", TOKEN, "communication"),
    ),
    # A PRT's or ROL's participant (Patient.generalPractitioner, Encounter.participant …): which roles a
    # practitioner plays where.
    "PractitionerRole": (
        _p("identifier", TOKEN, "identifier"),
        _p("active", TOKEN, "active"),
        _p("date", DATE, "period"),
        _p("practitioner", REFERENCE, "practitioner", "Practitioner"),
        _p("organization", REFERENCE, "organization", "Organization"),
        _p("location", REFERENCE, "location", "Location"),
        _p("role", TOKEN, "code"),
        _p("specialty", TOKEN, "specialty"),
        _p("telecom", TOKEN, "telecom"),
    ),
    # The software that sent a message (SFT) and the analysers a result names (PRT-10).
    "Device": (
        _p("identifier", TOKEN, "identifier"),
        _p("status", TOKEN, "status"),
        _p("type", TOKEN, "type"),
        _p("udi-di", STRING, "udiCarrier.deviceIdentifier"),
        _p("manufacturer", STRING, "manufacturer"),
        _p("model", STRING, "modelNumber"),
        _p("device-name", STRING, "deviceName.name"),
    ),
    "Organization": (
        _p("identifier", TOKEN, "identifier"),
        _p("name", STRING, "name|alias"),
        _p("phonetic", STRING, "name"),
        _p("active", TOKEN, "active"),
        _p("type", TOKEN, "type"),
        _p("address", STRING, "address"),
        _p("address-city", STRING, "address.city"),
        _p("address-state", STRING, "address.state"),
        _p("address-postalcode", STRING, "address.postalCode"),
        _p("address-country", STRING, "address.country"),
        _p("partof", REFERENCE, "partOf", "Organization"),
        _p("endpoint", REFERENCE, "endpoint", "Endpoint"),
    ),
    "Location": (
        _p("identifier", TOKEN, "identifier"),
        _p("name", STRING, "name|alias"),
        _p("status", TOKEN, "status"),
        _p("operational-status", TOKEN, "operationalStatus"),
        _p("type", TOKEN, "type"),
        _p("physical-type", TOKEN, "physicalType"),
        _p("address", STRING, "address"),
        _p("address-city", STRING, "address.city"),
        _p("address-state", STRING, "address.state"),
        _p("address-postalcode", STRING, "address.postalCode"),
        _p("address-country", STRING, "address.country"),
        _p("organization", REFERENCE, "managingOrganization", "Organization"),
        _p("partof", REFERENCE, "partOf", "Location"),
    ),
    "RiskAssessment": (
        _p("identifier", TOKEN, "identifier"),
        _p("status", TOKEN, "status"),
        _p("method", TOKEN, "method"),
        _p("subject", REFERENCE, "subject"),
        _p("patient", REFERENCE, "subject", _PAT),
        _p("encounter", REFERENCE, "encounter", "Encounter"),
        _p("date", DATE, "occurrence[x]"),
        _p("condition", REFERENCE, "condition"),
        _p("performer", REFERENCE, "performer"),
        _p("probability", NUMBER, "prediction.probability[x]"),
        _p("risk", TOKEN, "prediction.qualitativeRisk"),
    ),
    "Provenance": (
        _p("target", REFERENCE, "target"),
        _p("patient", REFERENCE, "target", _PAT),
        _p("agent", REFERENCE, "agent.who"),
        _p("agent-type", TOKEN, "agent.type"),
        _p("agent-role", TOKEN, "agent.role"),
        _p("entity", REFERENCE, "entity.what"),
        _p("location", REFERENCE, "location", "Location"),
        _p("recorded", DATE, "recorded"),
        _p("when", DATE, "occurred[x]"),
        _p("signature-type", TOKEN, "signature.type"),
    ),
    "Account": (
        _p("identifier", TOKEN, "identifier"),
        _p("status", TOKEN, "status"),
        _p("type", TOKEN, "type"),
        _p("name", STRING, "name"),
        _p("subject", REFERENCE, "subject"),
        _p("patient", REFERENCE, "subject", _PAT),
        _p("owner", REFERENCE, "owner", "Organization"),
        _p("period", DATE, "servicePeriod"),
    ),
    "ChargeItem": (
        _p("identifier", TOKEN, "identifier"),
        _p("code", TOKEN, "code"),
        _p("subject", REFERENCE, "subject"),
        _p("patient", REFERENCE, "subject", _PAT),
        _p("context", REFERENCE, "context"),
        _p("occurrence", DATE, "occurrence[x]"),
        _p("entered-date", DATE, "enteredDate"),
        _p("account", REFERENCE, "account", "Account"),
        _p("quantity", QUANTITY, "quantity"),
        _p("performer-actor", REFERENCE, "performer.actor"),
    ),
    "EpisodeOfCare": (
        _p("identifier", TOKEN, "identifier"),
        _p("status", TOKEN, "status"),
        _p("type", TOKEN, "type"),
        _p("patient", REFERENCE, "patient", _PAT),
        _p("organization", REFERENCE, "managingOrganization", "Organization"),
        _p("date", DATE, "period"),
        _p("condition", REFERENCE, "diagnosis.condition", "Condition"),
        _p("care-manager", REFERENCE, "careManager"),
    ),
    "MedicationAdministration": (
        _p("identifier", TOKEN, "identifier"),
        _p("status", TOKEN, "status"),
        _p("code", TOKEN, "medicationCodeableConcept"),
        _p("subject", REFERENCE, "subject"),
        _p("patient", REFERENCE, "subject", _PAT),
        _p("context", REFERENCE, "context"),
        _p("effective-time", DATE, "effective[x]"),
        _p("request", REFERENCE, "request", "MedicationRequest"),
        _p("performer", REFERENCE, "performer.actor"),
    ),
    "CareTeam": (
        _p("identifier", TOKEN, "identifier"),
        _p("status", TOKEN, "status"),
        _p("category", TOKEN, "category"),
        _p("subject", REFERENCE, "subject"),
        _p("patient", REFERENCE, "subject", _PAT),
        _p("participant", REFERENCE, "participant.member"),
        _p("date", DATE, "period"),
    ),
    "AuditEvent": (
        _p("date", DATE, "recorded"),
        _p("type", TOKEN, "type"),
        _p("subtype", TOKEN, "subtype"),
        _p("action", TOKEN, "action"),
        _p("outcome", TOKEN, "outcome"),
        _p("agent", REFERENCE, "agent.who"),
        _p("agent-name", STRING, "agent.name"),
        _p("agent-role", TOKEN, "agent.role"),
        _p("altid", TOKEN, "agent.altId"),
        _p("address", STRING, "agent.network.address"),
        _p("entity", REFERENCE, "entity.what"),
        _p("entity-type", TOKEN, "entity.type"),
        _p("entity-role", TOKEN, "entity.role"),
        _p("entity-name", STRING, "entity.name"),
        _p("patient", REFERENCE, "agent.who|entity.what", _PAT),
        _p("source", REFERENCE, "source.observer"),
        _p("site", TOKEN, "source.site"),
        _p("policy", URI, "agent.policy"),
    ),
}

REGISTRY: dict[str, ResourceParams] = {}
for _rtype, _defs in _DEFINITIONS.items():
    _entry = ResourceParams(_rtype)
    for _param in (*COMMON, *_defs):
        _entry.params[_param.name] = _param
    REGISTRY[_rtype] = _entry

SEARCHABLE_TYPES: tuple[str, ...] = tuple(sorted(REGISTRY))

# The date parameter that places a resource in time for $everything start/end (its "care date").
CLINICAL_DATE: dict[str, str] = {
    "Encounter": "date",
    "Observation": "date",
    "Condition": "onset-date",
    "AllergyIntolerance": "date",
    "Immunization": "date",
    "MedicationRequest": "authoredon",
    "MedicationDispense": "whenhandedover",
    "DiagnosticReport": "date",
    "Procedure": "date",
    "DocumentReference": "date",
    "ServiceRequest": "authored",
    "Specimen": "collected",
    "Appointment": "date",
    "Provenance": "recorded",
    "AuditEvent": "date",
    "RiskAssessment": "date",
    "ChargeItem": "entered-date",
    "EpisodeOfCare": "date",
    "MedicationAdministration": "effective-time",
    "CareTeam": "date",
}

# FHIR R4's Patient CompartmentDefinition (http://hl7.org/fhir/CompartmentDefinition/patient), for the
# types this hub keeps: the search parameters that put a resource in a patient's compartment, in the
# definition's order. A resource is in the compartment of the first Patient these parameters refer to.
PATIENT_COMPARTMENT: dict[str, tuple[str, ...]] = {
    "Account": ("subject",),
    "AllergyIntolerance": ("patient", "recorder", "asserter"),
    "Appointment": ("actor",),
    "AuditEvent": ("patient",),
    "CareTeam": ("patient", "participant"),
    "ChargeItem": ("subject",),
    "Condition": ("patient", "asserter"),
    "Coverage": ("policy-holder", "subscriber", "beneficiary", "payor"),
    "DiagnosticReport": ("subject",),
    "DocumentReference": ("subject", "author"),
    "Encounter": ("patient",),
    "EpisodeOfCare": ("patient",),
    "Immunization": ("patient",),
    "MedicationAdministration": ("patient", "performer", "subject"),
    "MedicationDispense": ("subject", "patient", "receiver"),
    "MedicationRequest": ("subject",),
    "Observation": ("subject", "performer"),
    "Procedure": ("patient", "performer"),
    "Provenance": ("patient",),
    "RelatedPerson": ("patient",),
    "RiskAssessment": ("subject",),
    "ServiceRequest": ("subject", "performer", "requester"),
    "Specimen": ("subject",),
}


def compartment_paths(resource_type: str) -> tuple[str, ...]:
    """The element paths of ``resource_type``'s Patient-compartment parameters (those it registers)."""
    found = _COMPARTMENT_PATHS.get(resource_type)
    if found is None:
        params = params_of(resource_type)
        paths: list[str] = []
        for name in PATIENT_COMPARTMENT.get(resource_type, ()):
            param = params.get(name)
            if param is not None and param.type == REFERENCE:
                paths.extend(p for p in param.paths if p not in paths)
        found = _COMPARTMENT_PATHS[resource_type] = tuple(paths)
    return found


_COMPARTMENT_PATHS: dict[str, tuple[str, ...]] = {}


def params_of(resource_type: str) -> dict[str, SearchParam]:
    entry = REGISTRY.get(resource_type)
    return entry.params if entry is not None else {p.name: p for p in COMMON}


# --- parameters whose rows other parameters already hold ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stored:
    """Where the index rows of a parameter are: under ``param`` (its own name, or the parameter whose
    rows are its rows), restricted to references whose ``target_type`` is one of ``target_types`` when
    that is not empty."""

    param: str
    target_types: tuple[str, ...] = ()


def _aliases(resource_type: str) -> dict[str, Stored]:
    """The parameters of a type that are not stored, each with the one other parameter whose rows are
    its own: same type and the same paths (of two, the first declared is stored), so the row makers
    find the same values. R4's ``patient`` is ``subject`` restricted to Patient targets (the alias's
    ``target_types``), ``phonetic`` is ``name`` (no phonetic matching here). Writing their rows too
    cost an ORU^R01 16 of its 140 index rows.

    Only one: ``combo-code`` is ``code`` plus ``component-code``, but reading two parameters' rows
    takes PostgreSQL off the id-ordered index range (``Observation?combo-code=X`` 0.2 → 8 ms at 100,000
    resources: it sorts every match before the first page), so such parameters keep rows of their own."""
    out: dict[str, Stored] = {}
    stored: list[SearchParam] = []
    # Fewer paths first (then in declaration order): a parameter is made of parameters with fewer paths.
    indexed = [p for p in params_of(resource_type).values() if p.type not in (SPECIAL, COMPOSITE)]
    for p in sorted(indexed, key=lambda p: len(p.paths)):
        chosen: list[SearchParam] = []
        for path in p.paths:
            for q in stored:
                if (
                    q.type == p.type
                    and path in q.paths
                    and set(q.paths) <= set(p.paths)
                    and (not q.targets or (p.targets and set(p.targets) <= set(q.targets)))
                ):
                    if q not in chosen:
                        chosen.append(q)
                    break
            else:
                chosen = []
                break
        if len(chosen) != 1:
            stored.append(p)
            continue
        # A restriction only where a chosen parameter keeps targets the alias does not.
        restrict = p.targets if any(not q.targets or set(q.targets) - set(p.targets) for q in chosen) else ()
        out[p.name] = Stored(chosen[0].name, restrict)
    return out


ALIASES: dict[str, dict[str, Stored]] = {rtype: _aliases(rtype) for rtype in REGISTRY}
assert not any(name in ALIASES[rtype] for rtype, name in CLINICAL_DATE.items()), "$everything reads these"


def stored_as(resource_type: str, name: str) -> Stored:
    """Where the rows of ``resource_type``'s parameter ``name`` are (every reader of the index asks)."""
    alias = ALIASES.get(resource_type, {}).get(name)
    return alias if alias is not None else Stored(name)


# --- walking paths -------------------------------------------------------------------------------------

_FILTER = re.compile(r"^([A-Za-z]+)\((\w+)=([\w.-]+)\)$")


def walk(resource: dict[str, Any], path: str) -> Iterator[Any]:
    """Values found at ``path`` (one path, no ``|``), flattening lists."""
    current: list[Any] = [resource]
    for segment in path.split("."):
        wanted: tuple[str, str] | None = None
        m = _FILTER.match(segment)
        if m:
            segment, wanted = m.group(1), (m.group(2), m.group(3))
        nxt: list[Any] = []
        for node in current:
            if not isinstance(node, dict):
                continue
            if segment.endswith("[x]"):
                prefix = segment[:-3]
                values = [
                    v for k, v in node.items() if k.startswith(prefix) and k[len(prefix) :][:1].isupper()
                ]
            else:
                values = [node[segment]] if segment in node else []
            for value in values:
                items = value if isinstance(value, list) else [value]
                for item in items:
                    if wanted is not None and not (
                        isinstance(item, dict) and item.get(wanted[0]) == wanted[1]
                    ):
                        continue
                    nxt.append(item)
        current = nxt
    yield from current


# --- normalising values --------------------------------------------------------------------------------


@lru_cache(maxsize=4096)  # names, code displays: the same few strings over and over
def normalize(text: str) -> str:
    """Case- and accent-insensitive form used by string search (R4: "ignoring case and accents")."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold().strip()[:255]


MIN_DATE = datetime(1, 1, 1, tzinfo=UTC)
MAX_DATE = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)

_DATE_RE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


@lru_cache(maxsize=4096)  # a message's timestamps recur in each of its resources
def date_range(value: str) -> tuple[datetime, datetime] | None:
    """The closed UTC range a FHIR date, dateTime or instant covers at its precision, or None."""
    m = _DATE_RE.match(value.strip())
    if m is None:
        return None
    y, mo, d = int(m["y"]), int(m["m"] or 1), int(m["d"] or 1)
    tz = UTC
    if m["tz"] and m["tz"] != "Z":
        sign = 1 if m["tz"][0] == "+" else -1
        hh, mm = m["tz"][1:].split(":")
        tz = UTC if (hh, mm) == ("00", "00") else _offset(sign * (int(hh) * 60 + int(mm)))
    try:
        if m["d"] is None:
            low = datetime(y, mo, 1, tzinfo=tz)
            high = datetime(y + 1, 1, 1, tzinfo=tz) if m["m"] is None else _next_month(low)
            if m["m"] is None:
                low = datetime(y, 1, 1, tzinfo=tz)
        elif m["H"] is None:
            low = datetime(y, mo, d, tzinfo=tz)
            high = low + timedelta(days=1)
        else:
            low = datetime(y, mo, d, int(m["H"]), int(m["M"]), int(m["S"] or 0), tzinfo=tz)
            if m["f"]:
                frac = m["f"][:6]
                low = low.replace(microsecond=int(frac.ljust(6, "0")))
                high = low + timedelta(microseconds=10 ** (6 - len(frac)))
            elif m["S"] is None:
                high = low + timedelta(minutes=1)
            else:
                high = low + timedelta(seconds=1)
    except (ValueError, OverflowError):
        return None
    return low.astimezone(UTC), (high - timedelta(microseconds=1)).astimezone(UTC)


def _offset(minutes: int) -> Any:
    from datetime import timezone

    return timezone(timedelta(minutes=minutes))


def _next_month(low: datetime) -> datetime:
    return low.replace(year=low.year + 1, month=1) if low.month == 12 else low.replace(month=low.month + 1)


# --- extracting index rows -----------------------------------------------------------------------------


# The value columns of each index table after ``param``, in the order ``extract_rows`` fills them.
KINDS: dict[str, tuple[str, ...]] = {
    TOKEN: ("param", "system", "code", "text"),
    STRING: ("param", "value", "exact"),
    DATE: ("param", "low", "high"),
    REFERENCE: ("param", "target_type", "target_id"),
    QUANTITY: ("param", "value", "system", "code", "unit"),
    NUMBER: ("param", "value"),
    URI: ("param", "value"),
}
Rows = dict[str, list[tuple[Any, ...]]]  # kind → (param, value columns…) per index row


def parse_reference(ref: str, declared_type: str | None = None) -> tuple[str, str]:
    """(target_type, target_id) of a reference string; absolute URLs keep their last two segments when
    they look like ``…/Type/id`` and are kept whole otherwise."""
    ttype, tid = _split_reference(ref)
    return (ttype, tid) if ttype is not None else (declared_type or "", tid)


@lru_cache(maxsize=4096)  # a message's resources reference its patient, encounter, order … over and over
def _split_reference(ref: str) -> tuple[str | None, str]:
    """(type, id) of a ``…/Type/id`` reference, or (None, the reference without its version)."""
    ref = ref.split("/_history/")[0]
    parts = ref.split("/")
    if len(parts) >= 2 and parts[-2][:1].isupper() and parts[-2].isalpha():
        return parts[-2], parts[-1]
    return None, ref


Segment = tuple[str, bool, tuple[str, str] | None]  # (name or choice prefix, is choice, list filter)


def _compile(path: str) -> tuple[Segment, ...]:
    out: list[Segment] = []
    for segment in path.split("."):
        wanted: tuple[str, str] | None = None
        m = _FILTER.match(segment)
        if m:
            segment, wanted = m.group(1), (m.group(2), m.group(3))
        choice = segment.endswith("[x]")
        out.append((segment[:-3] if choice else segment, choice, wanted))
    return tuple(out)


# What one value found at a parameter's path becomes: its rows (``param``, value columns…), repeats kept.
RowMaker = Callable[["SearchParam", Any], list[tuple[Any, ...]]]


@dataclass(frozen=True, slots=True)
class _Step:
    """One indexed parameter of a type, compiled: its paths, and what a value found there becomes."""

    kind: str
    paths: tuple[tuple[Segment, ...], ...]
    make_rows: RowMaker
    param: SearchParam
    # The key a value must have for a ``:of-type`` (token) or ``:identifier`` (reference) row, or None.
    modifier_key: str | None


# Where a parameter's values are in a resource of a known shape (its keys, in order): per path, the
# resource key its first segment names there (a choice type ``effective[x]``: each key it stands for, in
# the resource's order), the list filter of that segment, the segments after it, and the key of the
# one plain segment after it when that is all (``meta.tag``, ``name.family``: a look-up, no walk).
Entry = tuple[str, tuple[str, str] | None, tuple[Segment, ...], str | None]


# A parameter bound to a resource shape: the key when its values are that key's value, a list's items
# or the value itself (``status``, ``subject``, ``effectiveDateTime``: most parameters, a look-up, no
# walk) or None; the entries (what else is absent); the kind, row maker, parameter and modifier key.
Bound = tuple[str | None, tuple[Entry, ...], str, RowMaker, SearchParam, str | None]


_PLANS: dict[str, tuple[_Step, ...]] = {}
_MODIFIER_KEYS = {TOKEN: "type", REFERENCE: "identifier"}  # see _modifier_row


def _plan(resource_type: str) -> tuple[_Step, ...]:
    """The indexed parameters of a type with their paths parsed and their row makers chosen once."""
    plan = _PLANS.get(resource_type)
    if plan is None:
        steps = []
        aliases = ALIASES.get(resource_type, {})
        for p in params_of(resource_type).values():
            if p.type in (SPECIAL, COMPOSITE) or p.name in aliases:
                continue
            paths = tuple(_compile(path) for path in p.paths)
            steps.append(_Step(p.type, paths, _ROW_MAKERS[p.type], p, _MODIFIER_KEYS.get(p.type)))
        plan = _PLANS[resource_type] = tuple(steps)
    return plan


# The parameters of a type bound to the shapes of the resources seen: the resources of one mapping have
# the same few key tuples, and most of a type's parameters are absent from each (an ORU Observation has
# values for 7 of its 26), so a resource's extraction visits only the keys it has. The keys of ``meta``
# are part of the shape: every stored resource has one (versionId, lastUpdated), and the four common
# parameters under it (``_tag``, ``_security``, ``_profile``, ``_source``) rarely have values there.
Shape = tuple[str, tuple[str, ...], tuple[str, ...] | None]  # type, keys, keys of meta (a dict) or None
_SHAPES: dict[Shape, tuple[Bound, ...]] = {}
_MAX_SHAPES = 4096


def _bound(shape: Shape) -> tuple[Bound, ...]:
    bound = _SHAPES.get(shape)
    if bound is None:
        if len(_SHAPES) >= _MAX_SHAPES:  # resources sent by clients: any keys, in any order
            _SHAPES.clear()
        bound = tuple(_bind(step, shape[1], shape[2]) for step in _plan(shape[0]))
        bound = _SHAPES[shape] = tuple(b for b in bound if b[1])
    return bound


def _bind(step: _Step, keys: tuple[str, ...], meta_keys: tuple[str, ...] | None) -> Bound:
    entries: list[Entry] = []
    for (head, choice, wanted), *rest in step.paths:
        if not choice:
            found = [head] if head in keys else []
        else:
            found = [k for k in keys if k.startswith(head) and k[len(head) : len(head) + 1].isupper()]
        sub = rest[0][0] if len(rest) == 1 and not rest[0][1] and rest[0][2] is None else None
        if head == "meta" and sub is not None and meta_keys is not None and sub not in meta_keys:
            continue
        entries.extend((key, wanted, tuple(rest), sub) for key in found)
    simple = len(entries) == 1 and entries[0][1] is None and not entries[0][2]
    key = entries[0][0] if simple else None
    return key, tuple(entries), step.kind, step.make_rows, step.param, step.modifier_key


def _values(resource: dict[str, Any], entries: tuple[Entry, ...]) -> list[Any]:
    """The values at a parameter's paths, in path order, lists flattened."""
    found: list[Any] = []
    for key, wanted, rest, sub in entries:
        value = resource[key]
        items = value if isinstance(value, list) else [value]
        if wanted is not None:
            items = [i for i in items if isinstance(i, dict) and i.get(wanted[0]) == wanted[1]]
        if not rest:
            found.extend(items)
        elif sub is not None:
            for item in items:
                if isinstance(item, dict) and sub in item:
                    value = item[sub]
                    if isinstance(value, list):
                        found.extend(value)
                    else:
                        found.append(value)
        else:
            found.extend(_walk_from(items, rest))
    return found


def _walk_from(current: list[Any], path: tuple[Segment, ...]) -> list[Any]:
    for name, choice, wanted in path:
        nxt: list[Any] = []
        for node in current:
            if not isinstance(node, dict):
                continue
            if choice:
                values = [
                    v
                    for k, v in node.items()
                    if k.startswith(name) and k[len(name) : len(name) + 1].isupper()
                ]
            elif name in node:
                values = [node[name]]
            else:
                continue
            for value in values:
                for item in value if isinstance(value, list) else (value,):
                    if wanted is not None and not (
                        isinstance(item, dict) and item.get(wanted[0]) == wanted[1]
                    ):
                        continue
                    nxt.append(item)
        if not nxt:
            return nxt
        current = nxt
    return current


def extract_rows(resource: dict[str, Any]) -> Rows:
    """The index rows of ``resource`` per kind: ``(param, value columns…)`` tuples (``KINDS``), one per
    distinct value of a parameter, plus the ``:of-type`` / ``:identifier`` token rows."""
    tokens: list[tuple[Any, ...]] = []
    out: Rows = {TOKEN: tokens, STRING: [], DATE: [], REFERENCE: [], QUANTITY: [], NUMBER: [], URI: []}
    meta = resource.get("meta")
    shape = (
        resource.get("resourceType", ""),
        tuple(resource),
        tuple(meta) if isinstance(meta, dict) else None,
    )
    for key, entries, kind, make_rows, param, modifier_key in _bound(shape):
        if key is None:
            values = _values(resource, entries)
        else:
            value = resource[key]
            if isinstance(value, list):
                values = value
            elif value is None:  # None makes no row in any kind
                continue
            elif modifier_key is None or not isinstance(value, dict) or modifier_key not in value:
                made = make_rows(param, value)  # one value, no modifier row: its rows, repeats dropped
                if made:
                    out[kind].extend(made if len(made) == 1 else dict.fromkeys(made))
                continue
            else:
                values = [value]
        if not values:
            continue
        if modifier_key is None:
            made = [row for value in values for row in make_rows(param, value)]
            out[kind].extend(made if len(made) == 1 else dict.fromkeys(made))
            continue
        rows = out[kind]
        seen: set[tuple[Any, ...]] = set()
        for value in values:
            for row in make_rows(param, value):
                if row not in seen:
                    seen.add(row)
                    rows.append(row)
            if isinstance(value, dict) and modifier_key in value:
                extra = _modifier_row(param, value)
                if extra is not None:
                    tokens.append(extra)
    return out


def _modifier_row(param: SearchParam, value: dict[str, Any]) -> tuple[str, str, str, str] | None:
    """Token rows under ``name:of-type`` (an Identifier's type coding, for ``identifier:of-type``) and
    ``name:identifier`` (a Reference's logical identifier, for ``subject:identifier``)."""
    if param.type == TOKEN and isinstance(value.get("value"), str):
        codings = (value.get("type") or {}).get("coding") if isinstance(value.get("type"), dict) else None
        for coding in codings or []:
            if isinstance(coding, dict) and coding.get("code"):
                return (
                    f"{param.name}:of-type",
                    f"{coding.get('system', '')}|{coding['code']}"[:255],
                    value["value"][:255],
                    "",
                )
    if param.type == REFERENCE and isinstance(value.get("identifier"), dict):
        ident = value["identifier"]
        if isinstance(ident.get("value"), str):
            return (
                f"{param.name}:identifier",
                str(ident.get("system", ""))[:255],
                ident["value"][:255],
                "",
            )
    return None


def _string_rows(param: SearchParam, value: Any) -> list[tuple[Any, ...]]:
    return [(param.name, normalize(text), text[:255]) for text in _strings(value) if text.strip()]


def _date_rows(param: SearchParam, value: Any) -> list[tuple[Any, ...]]:
    rng = _date_value(value)
    return [] if rng is None else [(param.name, *rng)]


def _reference_rows(param: SearchParam, value: Any) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        ref = value.get("reference")
        if isinstance(ref, str):
            ttype, tid = _split_reference(ref)
            if ttype is None:
                ttype = value.get("type") or ""
            if not param.targets or ttype in param.targets:
                return [(param.name, ttype, tid[:255])]
    return []


def _quantity_rows(param: SearchParam, value: Any) -> list[tuple[Any, ...]]:
    if isinstance(value, dict) and isinstance(value.get("value"), int | float):
        return [
            (
                param.name,
                float(value["value"]),
                str(value.get("system", ""))[:255],
                str(value.get("code", ""))[:64],
                str(value.get("unit", ""))[:64],
            )
        ]
    return []


def _number_rows(param: SearchParam, value: Any) -> list[tuple[Any, ...]]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [(param.name, float(value))]
    return []


def _uri_rows(param: SearchParam, value: Any) -> list[tuple[Any, ...]]:
    return [(param.name, value[:255])] if isinstance(value, str) else []


def _token_rows(param: SearchParam, value: Any) -> list[tuple[Any, ...]]:
    name = param.name
    if isinstance(value, bool):
        return [(name, "", "true" if value else "false", "")]
    if isinstance(value, str):
        return [(name, "", value[:255], "")]
    if not isinstance(value, dict):
        return []
    if "coding" in value or ("text" in value and "code" not in value and "value" not in value):
        text = normalize(value.get("text", "")) if isinstance(value.get("text"), str) else ""
        rows = []
        for coding in value.get("coding") or []:
            if isinstance(coding, dict) and coding.get("code"):
                display = coding.get("display")
                rows.append(
                    (
                        name,
                        str(coding.get("system", ""))[:255],
                        str(coding["code"])[:255],
                        text or (normalize(display) if isinstance(display, str) else ""),
                    )
                )
        if text and not value.get("coding"):
            rows.append((name, "", "", text))
        return rows
    if "code" in value:  # Coding
        display = value.get("display")
        return [
            (
                name,
                str(value.get("system", ""))[:255],
                str(value["code"])[:255],
                normalize(display) if isinstance(display, str) else "",
            )
        ]
    if "value" in value:  # Identifier or ContactPoint
        type_text = ""
        id_type = value.get("type")
        if isinstance(id_type, dict) and isinstance(id_type.get("text"), str):
            type_text = normalize(id_type["text"])
        system = value.get("system", "")
        return [(name, str(system)[:255], str(value["value"])[:255], type_text)]
    return []


_ROW_MAKERS: dict[str, RowMaker] = {
    TOKEN: _token_rows,
    STRING: _string_rows,
    DATE: _date_rows,
    REFERENCE: _reference_rows,
    QUANTITY: _quantity_rows,
    NUMBER: _number_rows,
    URI: _uri_rows,
}


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key in ("text", "family", "given", "prefix", "suffix", "line", "city", "district", "state"):
            item = value.get(key)
            if isinstance(item, str):
                yield item
            elif isinstance(item, list):
                yield from (s for s in item if isinstance(s, str))
        for key in ("postalCode", "country"):
            if isinstance(value.get(key), str):
                yield value[key]


def _date_value(value: Any) -> tuple[datetime, datetime] | None:
    if isinstance(value, str):
        return date_range(value)
    if isinstance(value, dict) and ("start" in value or "end" in value):
        start = date_range(value["start"]) if isinstance(value.get("start"), str) else None
        end = date_range(value["end"]) if isinstance(value.get("end"), str) else None
        if start is None and end is None:
            return None
        return (start[0] if start else MIN_DATE), (end[1] if end else MAX_DATE)
    return None
