"""A varied corpus of synthetic resources for the golden test of ``search_params.extract_rows``: every
resource the mapping fixtures expect (ORU, ADT, VXU, OML, RDE, MDM, SIU …), the API tests' builders,
and hand-made resources reaching the corners of the path language and the row makers (choice types,
list filters, periods, booleans, identifiers with a type, logical references, absolute and versioned
URLs, values of the wrong shape, over-long strings, repeated values).

    .venv/bin/python -m tests.store.extract_corpus --write    # rewrite the golden file (review the diff!)
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from hub.store.search_params import extract_rows
from tests.fhir_api import builders as b

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_name("extract_rows_golden.json")
LONG = "x" * 300
CC = "http://terminology.hl7.org/CodeSystem/v2-0203"


def _ref(ref: str, **extra: Any) -> dict[str, Any]:
    return {"reference": ref, **extra}


def _cc(
    code: str, system: str = b.LOINC, display: str | None = None, text: str | None = None
) -> dict[str, Any]:
    coding: dict[str, Any] = {"system": system, "code": code}
    if display is not None:
        coding["display"] = display
    out: dict[str, Any] = {"coding": [coding]}
    if text is not None:
        out["text"] = text
    return out


def _hand_made() -> list[dict[str, Any]]:
    meta = {
        "tag": [{"system": "urn:tag", "code": "t1", "display": "Tág Óne"}, {"code": "t2"}],
        "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}],
        "profile": ["http://example.org/StructureDefinition/p", LONG, 7],
        "source": "urn:hub:source#1",
    }
    patient = {
        "resourceType": "Patient",
        "id": "edge-p1",
        "meta": meta,
        "identifier": [
            {"type": _cc("MR", CC), "system": b.MRN, "value": "MRN-1"},
            {"type": {"coding": [{"system": CC}, {"code": "NI"}], "text": "Nat ÍD"}, "value": "NI-1"},
            {"type": {"text": "Only text"}, "system": b.NIK, "value": 12345},
            {"system": b.NIK},
            "not-an-identifier",
            None,
            {"value": LONG},
        ],
        "active": False,
        "name": [
            {"text": "Dr. Ána Pérez", "family": "Pérez", "given": ["Ána", "María", 3], "prefix": ["Dr."]},
            {"family": "  ", "given": ["Ána"], "suffix": ["Jr."]},
            "plain name",
            {"family": LONG},
        ],
        "telecom": [
            {"system": "phone", "value": "0812"},
            {"system": "email", "value": "a@example.org"},
            {"system": "phone", "value": "0812"},
            {"system": "fax", "value": "0813", "use": "work"},
            "0814",
        ],
        "gender": "female",
        "birthDate": "1980",
        "address": [
            {
                "line": ["Jl. Merdeka 1", "RT 02"],
                "city": "Bandung",
                "district": "Coblong",
                "state": "Jawa Barat",
            },
            {"postalCode": "40132", "country": "ID", "use": "home", "city": 5},
        ],
        "deceasedDateTime": "2024-02",
        "generalPractitioner": [
            _ref("Practitioner/pr1"),
            _ref("https://other.example.org/fhir/Organization/o9/_history/3"),
            _ref("urn:uuid:5c3f0b7e-1111-4222-8333-944445555666", type="Practitioner"),
            _ref("#contained"),
            {"identifier": {"system": "urn:npi", "value": "NPI-7"}, "display": "no reference"},
            {"reference": 5},
        ],
        "managingOrganization": _ref("Practitioner/pr2", identifier={"system": "urn:org", "value": "O-1"}),
        "link": [
            {"other": _ref("Patient/edge-p2")},
            {"other": _ref("RelatedPerson/rp1")},
            {"type": "seealso"},
        ],
        "communication": [
            {"language": _cc("id", "urn:ietf:bcp:47", display="Indonesian")},
            {"language": {"text": "Jawa"}},
        ],
    }
    deceased = {
        "resourceType": "Patient",
        "id": "edge-p2",
        "deceasedBoolean": True,
        "birthDate": "1980-02",
        "name": [{"given": ["Ünïcödé", "ÉLODIE  "]}],
        "address": [{"text": "somewhere"}],
    }
    observation = {
        "resourceType": "Observation",
        "id": "edge-o1",
        "meta": {"tag": [{"code": "t1"}]},
        "identifier": [{"system": "urn:lab", "value": "L-1"}, {"system": "urn:lab", "value": "L-1"}],
        "status": "amended",
        "category": [
            _cc("laboratory", "http://terminology.hl7.org/CodeSystem/observation-category"),
            {"text": "Lab"},
        ],
        "code": {
            "coding": [
                {"system": b.LOINC, "code": "85354-9", "display": "Blood pressure panel"},
                {"system": "urn:local", "code": "BP"},
                {"system": "urn:local", "display": "no code"},
                {"system": b.LOINC, "code": "85354-9", "display": "again"},
            ]
        },
        "subject": _ref("Patient/edge-p1/_history/2"),
        "encounter": _ref("Encounter/e1"),
        "effectivePeriod": {"start": "2024-03-05T10:00:00.123+07:00", "end": "2024-03-05T11:00"},
        "effectiveDateTime": "2024-13-40",
        "valuePeriod": {"end": "2024-03-06"},
        "dataAbsentReason": {"text": "Not ásked"},
        "method": {"coding": [], "text": "Manual"},
        "performer": [_ref("Practitioner/pr1"), _ref("Organization/o1"), _ref("Practitioner/pr1")],
        "basedOn": [_ref("ServiceRequest/sr1")],
        "partOf": [_ref("Procedure/pc1")],
        "specimen": _ref("Patient/not-a-specimen"),
        "derivedFrom": [_ref("Observation/o0")],
        "hasMember": [_ref("Observation/o2"), _ref("Observation/o3")],
        "device": _ref("Device/d1"),
        "focus": [_ref("Condition/c1")],
        "component": [
            {"code": _cc("8480-6", display="Systolic"), "valueQuantity": {"value": 120, "unit": "mm[Hg]"}},
            {
                "code": _cc("8462-4", text="Diastolic"),
                "valueQuantity": {"value": 80.5, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
            },
            {"code": _cc("85354-9"), "valueCodeableConcept": _cc("N", "urn:flags", display="Normal")},
            {"code": {"text": "free text component"}, "valueQuantity": {"value": True}},
            {"code": _cc("x"), "valueQuantity": {"value": "12"}},
        ],
    }
    observation_values = [
        {
            "resourceType": "Observation",
            "id": f"edge-o{i}",
            "status": "final",
            "code": {"text": "Text only code"} if i == 2 else _cc("2345-7", display="Glucose"),
            "subject": {"reference": "Group/g1"} if i == 2 else _ref("Patient/p1"),
            **extra,
        }
        for i, extra in enumerate(
            (
                {"valueString": "Positif  Kuat", "effectiveInstant": "2024-03-05T10:00:00Z"},
                {"valueCodeableConcept": _cc("260373001", "http://snomed.info/sct", text="Detected")},
                {"valueDateTime": "2024-03-05", "effectiveTiming": {"event": ["2024-03-05"]}},
                {"valueBoolean": True, "effective": "2024", "effectivedate": "2024"},
                {
                    "valueQuantity": {"value": 7, "unit": "mmol/L"},
                    "effectiveDateTime": "2024-03-05T10:00:00-03:30",
                },
                {
                    "valueString": LONG,
                    "valuePeriod": {"start": "bad"},
                    "effectiveDateTime": "2024-02-29T23:59:59.9999999Z",
                },
            ),
            start=2,
        )
    ]
    return [
        patient,
        deceased,
        observation,
        *observation_values,
        {
            "resourceType": "Encounter",
            "id": "edge-e1",
            "status": "in-progress",
            "class": {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": "IMP",
                "display": "inpatient encounter",
            },
            "type": [_cc("ADMS", "urn:types"), _cc("ADMS", "urn:types")],
            "serviceType": {"text": "Internal medicine"},
            "subject": _ref("Patient/p1"),
            "period": {"start": "2024-03-05T08:00:00Z"},
            "length": {"value": 3, "unit": "d", "system": "http://unitsofmeasure.org", "code": "d"},
            "participant": [
                {
                    "individual": _ref("Practitioner/pr1"),
                    "type": [_cc("ATND", "http://terminology.hl7.org/CodeSystem/v3-ParticipationType")],
                },
                {"individual": _ref("PractitionerRole/prr1")},
                {"type": [{"text": "consultant"}]},
            ],
            "location": [{"location": _ref("Location/l1")}, {"location": _ref("Organization/o1")}],
            "serviceProvider": _ref("Organization/o1"),
            "reasonCode": [_cc("R50.9", "http://hl7.org/fhir/sid/icd-10")],
            "reasonReference": [_ref("Condition/c1")],
            "diagnosis": [{"condition": _ref("Condition/c1")}, {"condition": _ref("Procedure/pc1")}],
            "episodeOfCare": [_ref("EpisodeOfCare/eoc1")],
            "basedOn": [_ref("ServiceRequest/sr1")],
            "partOf": _ref("Encounter/e0"),
            "appointment": [_ref("Appointment/a1")],
            "account": [_ref("Account/acc1")],
            "hospitalization": {"specialArrangement": [_cc("wheel", "urn:arr")]},
        },
        {
            "resourceType": "Condition",
            "id": "edge-c1",
            "clinicalStatus": _cc("active", "http://terminology.hl7.org/CodeSystem/condition-clinical"),
            "verificationStatus": _cc(
                "confirmed", "http://terminology.hl7.org/CodeSystem/condition-ver-status"
            ),
            "category": [
                _cc("problem-list-item", "http://terminology.hl7.org/CodeSystem/condition-category")
            ],
            "severity": _cc("24484000", "http://snomed.info/sct"),
            "code": _cc("A90", "http://hl7.org/fhir/sid/icd-10", text="Demam berdarah"),
            "bodySite": [{"text": "Left arm"}],
            "subject": _ref("Patient/p1"),
            "encounter": _ref("Encounter/e1"),
            "onsetPeriod": {"start": "2024-02-01"},
            "abatementDateTime": "2024-02-10T10:00:00+00:00",
            "recordedDate": "2024-02-02",
            "onsetAge": {"value": 44, "unit": "a"},
            "asserter": _ref("Practitioner/pr1"),
            "evidence": [
                {"code": [_cc("386661006", "http://snomed.info/sct")]},
                {"detail": [_ref("Observation/o1")]},
            ],
            "stage": [{"summary": _cc("stage-2", "urn:stage")}],
        },
        {
            "resourceType": "AllergyIntolerance",
            "id": "edge-ai1",
            "clinicalStatus": _cc(
                "active", "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
            ),
            "type": "allergy",
            "category": ["food", "medication"],
            "criticality": "high",
            "code": _cc("227493005", "http://snomed.info/sct"),
            "patient": _ref("Patient/p1"),
            "recordedDate": "2024-01-01",
            "lastOccurrence": "2024-01-05T10:00:00Z",
            "recorder": _ref("Practitioner/pr1"),
            "reaction": [
                {
                    "substance": _cc("256349002", "http://snomed.info/sct"),
                    "manifestation": [_cc("39579001", "http://snomed.info/sct", display="Anaphylaxis")],
                    "severity": "severe",
                    "onset": "2024-01-05",
                    "exposureRoute": _cc("26643006", "http://snomed.info/sct"),
                },
                {"substance": _cc("227493005", "http://snomed.info/sct"), "severity": "mild"},
            ],
        },
        {
            "resourceType": "Immunization",
            "id": "edge-i1",
            "status": "completed",
            "statusReason": {"text": "ok"},
            "vaccineCode": _cc("08", "http://hl7.org/fhir/sid/cvx"),
            "patient": _ref("Patient/p1"),
            "occurrenceString": "last spring",
            "lotNumber": "LOT-A1",
            "manufacturer": _ref("Organization/m1"),
            "performer": [{"actor": _ref("Practitioner/pr1")}, {"actor": _ref("Organization/o1")}],
            "location": _ref("Location/l1"),
            "reasonCode": [_cc("429060002", "http://snomed.info/sct")],
            "protocolApplied": [
                {"series": "Primary", "targetDisease": [_cc("40468003", "http://snomed.info/sct")]}
            ],
            "reaction": [{"date": "2024-03-06"}, {"date": "2024-03-07T01:02:03Z"}],
        },
        {
            "resourceType": "MedicationRequest",
            "id": "edge-mr1",
            "status": "active",
            "intent": "order",
            "priority": "stat",
            "category": [
                _cc("inpatient", "http://terminology.hl7.org/CodeSystem/medicationrequest-category")
            ],
            "medicationCodeableConcept": _cc("197361", "http://www.nlm.nih.gov/research/umls/rxnorm"),
            "medicationReference": _ref("Medication/m1"),
            "subject": _ref("Patient/p1"),
            "authoredOn": "2024-03-05T10:00:00Z",
            "dosageInstruction": [
                {"timing": {"event": ["2024-03-05T12:00:00Z", "2024-03-06T12:00:00Z"]}},
                {"text": "x"},
            ],
            "requester": _ref("Practitioner/pr1"),
            "performer": _ref("Practitioner/pr2"),
        },
        {
            "resourceType": "MedicationDispense",
            "id": "edge-md1",
            "status": "completed",
            "medicationReference": _ref("Medication/m1"),
            "subject": _ref("Patient/p1"),
            "context": _ref("Encounter/e1"),
            "performer": [{"actor": _ref("Practitioner/pr1")}],
            "receiver": [_ref("Patient/p1")],
            "destination": _ref("Location/l1"),
            "authorizingPrescription": [_ref("MedicationRequest/edge-mr1"), _ref("Medication/m1")],
            "whenHandedOver": "2024-03-05T13:00:00Z",
            "whenPrepared": "2024-03-05T12:30:00Z",
        },
        {
            "resourceType": "DiagnosticReport",
            "id": "edge-dr1",
            "status": "final",
            "code": _cc("24323-8", display="Comprehensive metabolic panel"),
            "subject": _ref("Patient/p1"),
            "effectiveDateTime": "2024-03-05T10:00:00+07:00",
            "issued": "2024-03-05T12:00:00.5+07:00",
            "performer": [_ref("Organization/lab")],
            "resultsInterpreter": [_ref("Practitioner/pr1")],
            "result": [_ref("Observation/o1"), _ref("Observation/o2"), _ref("Patient/p1")],
            "conclusionCode": [_cc("N", "urn:flags")],
            "media": [{"link": _ref("Media/m1")}],
        },
        {
            "resourceType": "DocumentReference",
            "id": "edge-doc1",
            "masterIdentifier": {"system": "urn:doc", "value": "D-1"},
            "identifier": [{"system": "urn:doc", "value": "D-1"}, {"system": "urn:doc", "value": "D-2"}],
            "status": "current",
            "docStatus": "final",
            "type": _cc("11506-3"),
            "subject": _ref("Patient/p1"),
            "date": "2024-03-05T10:00:00Z",
            "author": [_ref("Practitioner/pr1")],
            "custodian": _ref("Organization/o1"),
            "description": "Catatan perkembangan",
            "securityLabel": [_cc("N", "http://terminology.hl7.org/CodeSystem/v3-Confidentiality")],
            "relatesTo": [{"code": "replaces", "target": _ref("DocumentReference/doc0")}],
            "content": [
                {
                    "attachment": {"contentType": "text/plain", "language": "id", "url": "Binary/b1"},
                    "format": {"system": "urn:ihe", "code": "urn:ihe:text"},
                }
            ],
            "context": {
                "encounter": [_ref("Encounter/e1")],
                "event": [_cc("event", "urn:ev")],
                "period": {"start": "2024-03-05", "end": "2024-03-06"},
                "facilityType": _cc("fac", "urn:fac"),
                "practiceSetting": _cc("set", "urn:set"),
                "related": [_ref("Observation/o1")],
            },
        },
        {
            "resourceType": "ServiceRequest",
            "id": "edge-sr1",
            "identifier": [{"type": _cc("PLAC", CC), "system": "urn:placer", "value": "ORD1"}],
            "requisition": {"system": "urn:req", "value": "REQ1"},
            "status": "active",
            "intent": "order",
            "code": _cc("24323-8"),
            "subject": _ref("Patient/p1"),
            "occurrencePeriod": {"start": "2024-03-05T07:00:00+07:00"},
            "authoredOn": "2024-03-04",
            "requester": _ref("Practitioner/pr1"),
            "specimen": [_ref("Specimen/s1")],
            "replaces": [_ref("ServiceRequest/sr0")],
            "instantiatesCanonical": ["http://example.org/PlanDefinition/p1"],
        },
        {
            "resourceType": "Specimen",
            "id": "edge-s1",
            "accessionIdentifier": {"system": "urn:acc", "value": "ACC1"},
            "status": "available",
            "type": _cc("119297000", "http://snomed.info/sct"),
            "subject": _ref("Patient/p1"),
            "collection": {
                "collectedPeriod": {"start": "2024-03-05T06:00:00Z"},
                "collector": _ref("Practitioner/pr1"),
                "bodySite": {"text": "arm"},
            },
            "container": [{"identifier": [{"value": "TUBE-1"}]}],
            "parent": [_ref("Specimen/s0")],
        },
        {
            "resourceType": "Appointment",
            "id": "edge-a1",
            "status": "booked",
            "start": "2024-03-10T09:00:00+07:00",
            "participant": [
                {"actor": _ref("Patient/p1"), "status": "accepted"},
                {"actor": _ref("Practitioner/pr1"), "status": "tentative"},
                {"actor": _ref("Location/l1"), "status": "accepted"},
            ],
            "basedOn": [_ref("ServiceRequest/sr1")],
            "slot": [_ref("Slot/sl1")],
        },
        {
            "resourceType": "Coverage",
            "id": "edge-cov1",
            "status": "active",
            "beneficiary": _ref("Patient/p1"),
            "subscriber": _ref("RelatedPerson/rp1"),
            "payor": [_ref("Organization/bpjs")],
            "dependent": "01",
            "class": [{"type": _cc("group", "urn:cls"), "value": "Kelas 1"}],
        },
        {
            "resourceType": "Organization",
            "id": "edge-org1",
            "name": "RSUD Séhat",
            "alias": ["RS Sehat", "RSUD Séhat"],
            "active": True,
            "partOf": _ref("Organization/o0"),
            "address": [{"city": "Bandung"}],
            "endpoint": [_ref("Endpoint/ep1")],
        },
        {
            "resourceType": "Location",
            "id": "edge-l1",
            "name": "Poli Umum",
            "alias": ["Poli"],
            "partOf": _ref("Location/l0"),
        },
        {
            "resourceType": "RiskAssessment",
            "id": "edge-ra1",
            "status": "final",
            "subject": _ref("Patient/p1"),
            "occurrenceDateTime": "2024-03-05",
            "prediction": [
                {"probabilityDecimal": 0.25, "qualitativeRisk": _cc("high", "urn:risk")},
                {"probabilityDecimal": True},
                {"probabilityRange": {"low": {"value": 0.1}}},
                {"probabilityDecimal": 3},
            ],
        },
        {
            "resourceType": "Provenance",
            "id": "edge-pv1",
            "target": [_ref("Observation/o1"), _ref("Patient/p1")],
            "recorded": "2024-03-05T10:05:00Z",
            "occurredPeriod": {"start": "2024-03-05T10:00:00Z", "end": "2024-03-05T10:04:00Z"},
            "agent": [
                {"who": {"display": "lab system"}, "type": _cc("author", "urn:prov")},
                {"who": _ref("Device/d1"), "role": [_cc("enterer", "urn:role")]},
            ],
            "entity": [{"role": "source", "what": {"identifier": {"system": "urn:hl7", "value": "MSG-1"}}}],
            "signature": [
                {"type": [{"system": "urn:iso-astm:E1762-95:2013", "code": "1.2.840.10065.1.12.1.1"}]}
            ],
        },
        {
            "resourceType": "AuditEvent",
            "id": "edge-ae1",
            "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110"},
            "subtype": [{"code": "read"}],
            "action": "R",
            "recorded": "2024-03-05T10:05:00Z",
            "outcome": "0",
            "agent": [
                {
                    "who": _ref("Patient/p1"),
                    "name": "Budi",
                    "altId": "alt-1",
                    "role": [{"text": "patient"}],
                    "network": {"address": "10.0.0.1"},
                    "policy": ["http://example.org/policy/1"],
                }
            ],
            "source": {"observer": _ref("Device/d1"), "site": "ward-1"},
            "entity": [
                {
                    "what": _ref("Patient/p2"),
                    "type": {"code": "1"},
                    "role": {"code": "1"},
                    "name": "Patient p2",
                }
            ],
        },
        {
            "resourceType": "RelatedPerson",
            "id": "edge-rp1",
            "patient": _ref("Patient/p1"),
            "relationship": [_cc("MTH", "urn:rel")],
            "name": [{"family": "Ibu"}],
        },
        {
            "resourceType": "Practitioner",
            "id": "edge-pr1",
            "name": [{"family": "Wijaya"}],
            "communication": [_cc("id", "urn:ietf:bcp:47")],
        },
        {"resourceType": "Basic", "id": "edge-basic", "meta": meta, "code": _cc("x")},
        {"id": "edge-no-type", "status": "final"},
        {
            "resourceType": "Basic",
            "id": "edge-meta-list",
            "meta": [{"tag": [{"code": "t3"}]}, {"source": "urn:s"}],
        },
        {
            "resourceType": "Basic",
            "id": "edge-meta-bare",
            "meta": {"versionId": "2", "lastUpdated": "2024-03-05"},
        },
        {"resourceType": "Observation", "id": "edge-empty"},
        {
            "resourceType": "Observation",
            "id": "edge-shapes",
            "status": ["final"],
            "code": "8480-6",
            "subject": "Patient/p1",
            "category": [[_cc("nested")], None, 3],
            "identifier": {"system": "urn:one", "value": "single, not a list"},
            "effectiveDateTime": 20240305,
            "valueQuantity": [{"value": 1}, {"value": 2.5}],
            "component": [{"code": None}, "text", {"valueQuantity": {"value": 1.5}}],
        },
    ]


def _fixture_resources() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted((ROOT / "fixtures" / "expected").rglob("*.json")):
        name = path.relative_to(ROOT / "fixtures" / "expected").as_posix()
        for i, resource in enumerate(json.loads(path.read_text())["resources"]):
            out.append((f"{name}#{i}", resource))
    return out


def _builders() -> list[dict[str, Any]]:
    return [
        b.patient("bp1", nik="3171234567890001", mrn="MRN-9", links=[("seealso", "bp2")], phone="0812"),
        b.observation("bo1", "bp1", encounter="be1", performer="bpr1"),
        b.observation("bo2", "bp1", value=None, effective="2024-03-05"),
        b.encounter("be1", "bp1", end="2024-03-05T09:00:00Z", location="bl1"),
        b.condition("bc1", "bp1"),
        b.practitioner("bpr1"),
        b.location("bl1"),
        b.provenance("bpv1", "Observation/bo1"),
    ]


def corpus() -> list[tuple[str, dict[str, Any]]]:
    """(name, resource) for every resource of the corpus, in a fixed order."""
    made = [(f"hand-made#{i}:{r.get('id')}", r) for i, r in enumerate(_hand_made())]
    built = [(f"builders#{i}:{r['id']}", r) for i, r in enumerate(_builders())]
    return [*_fixture_resources(), *built, *made]


def plain(rows: dict[str, list[tuple[Any, ...]]]) -> dict[str, list[list[Any]]]:
    """``extract_rows``'s answer as JSON values (datetimes as tagged ISO strings), every kind kept, in
    row order: the golden file compares the order too."""
    return {
        kind: [
            [f"datetime:{v.isoformat()}" if isinstance(v, datetime) else v for v in row] for row in kind_rows
        ]
        for kind, kind_rows in rows.items()
    }


def extract_all() -> dict[str, dict[str, list[list[Any]]]]:
    return {name: plain(extract_rows(resource)) for name, resource in corpus()}


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit("usage: python -m tests.store.extract_corpus --write")
    lines = [f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in extract_all().items()]
    GOLDEN.write_text("{\n" + ",\n".join(lines) + "\n}\n")  # a resource a line: readable diffs
    print(f"wrote {GOLDEN}")
