"""Orders and results through the real intake, pipeline and API: a lab result is found by
``Observation?category=laboratory`` and a vital sign sent in an ADT by ``category=vital-signs``; the
order message and the result message of one order make one ServiceRequest, which the result's
DiagnosticReport is based on."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from hub import pipeline
from hub.config import Settings
from hub.db import session_scope
from hub.ingest.service import Intake

MSH = "MSH|^~\\&|LIS|RSUD_ORDER|HUB|KEMKES|20261101080000+0700||{t}|{c}|P|2.5.1"
PID = "PID|1||RM-7001^^^RSUD_ORDER^MR||Lestari^Dewi||19910304|F"


def _send(engine: Engine, settings: Settings, messages: list[str]) -> None:
    intake = Intake(engine, settings)
    ids = [intake.accept(("\r".join(m) + "\r").encode()).message_id for m in messages]
    with session_scope(engine) as session:
        outcomes = pipeline.process_batch(session, [i for i in ids if i is not None])
    assert [o.state for o in outcomes] == ["processed"] * len(messages), outcomes


def _search(client: TestClient, auth: dict[str, str], query: str) -> list[dict[str, Any]]:
    bundle = client.get(f"/fhir/{query}", headers=auth).json()
    return [e["resource"] for e in bundle.get("entry", [])]


def test_lab_results_and_vital_signs_are_found_by_category(
    engine: Engine, client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    adt = [
        MSH.format(t="ADT^A01^ADT_A01", c="CAT-ADT"),
        "EVN|A01|20261101080000+0700",
        PID,
        "PV1|1|O|POLI^01^A||||||||||||||||V-7001^^^RSUD_ORDER^VN",
        "OBX|1|NM|8867-4^Heart rate^LN||72|/min^per minute^UCUM|||||F",
    ]
    oru = [
        MSH.format(t="ORU^R01^ORU_R01", c="CAT-ORU"),
        PID,
        "OBR|1|PO-7001^SIMRS|LAB-7001^LIS|718-7^Hemoglobin^LN|||20261101090000+0700",
        "OBX|1|NM|718-7^Hemoglobin^LN||12.5|g/dL|12-16|N|||F",
        "OBR|2|PO-7002^SIMRS|LAB-7002^LIS|36643-5^Chest X-ray^LN|||20261101093000+0700" + "|" * 17 + "RAD|F",
        "OBX|1|TX|36643-5^Chest X-ray^LN||No infiltrate||||||F",
    ]
    _send(engine, settings, [adt, oru])
    lab = {o["code"]["coding"][0]["code"] for o in _search(client, auth, "Observation?category=laboratory")}
    vital = {
        o["code"]["coding"][0]["code"] for o in _search(client, auth, "Observation?category=vital-signs")
    }
    imaging = {o["code"]["coding"][0]["code"] for o in _search(client, auth, "Observation?category=imaging")}
    assert lab == {"718-7"}
    assert vital == {"8867-4"}
    assert imaging == {"36643-5"}  # OBR-24 RAD decides over the lab message's default
    reports = _search(client, auth, "DiagnosticReport?category=LAB")
    assert [r["code"]["coding"][0]["code"] for r in reports] == ["718-7"]  # no OBR-24: a lab result's LAB


def test_the_order_and_its_result_make_one_service_request(
    engine: Engine, client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    orm = [
        MSH.format(t="ORM^O01^ORM_O01", c="SR-ORM"),
        PID,
        "ORC|NW|PO-8001^SIMRS||GRP-8001^SIMRS|||||20261101080000+0700|||67890^Pratama^Andi^^^dr.",
        "OBR|1|PO-8001^SIMRS||24323-8^Comprehensive metabolic panel^LN|||20261101080000+0700",
    ]
    oru = [
        MSH.format(t="ORU^R01^ORU_R01", c="SR-ORU"),
        PID,
        "ORC|RE|PO-8001^SIMRS|LAB-8001^LIS|||||||||67890^Pratama^Andi^^^dr.",
        "OBR|1|PO-8001^SIMRS|LAB-8001^LIS|24323-8^Comprehensive metabolic panel^LN|||20261101090000+0700"
        "|||||||||67890^Pratama^Andi^^^dr.||||||20261101093000+0700||CH|F",
        "OBX|1|NM|2345-7^Glucose^LN||95|mg/dL|70-99|N|||F",
    ]
    _send(engine, settings, [orm, oru])
    requests = _search(client, auth, "ServiceRequest")
    assert len(requests) == 1, [r["id"] for r in requests]
    request = requests[0]
    kinds = {i["type"]["coding"][0]["code"]: i["value"] for i in request["identifier"]}
    # the ORM's ORC-4 placer group number is the requisition and an identifier of type PGN too
    assert kinds == {"PLAC": "PO-8001", "FILL": "LAB-8001", "PGN": "GRP-8001"}
    assert request["requisition"]["value"] == "GRP-8001"
    assert request["code"]["coding"][0]["code"] == "24323-8"
    assert request["requester"]["reference"].startswith("Practitioner/")
    reports = _search(client, auth, "DiagnosticReport")
    assert [r["basedOn"] for r in reports] == [[{"reference": f"ServiceRequest/{request['id']}"}]]


def test_a_reused_order_number_for_another_patient_is_another_service_request(
    engine: Engine, client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    def oru(mrn: str, name: str, control: str) -> list[str]:
        return [
            MSH.format(t="ORU^R01^ORU_R01", c=control),
            f"PID|1||{mrn}^^^RSUD_ORDER^MR||{name}||19800101|M",
            "ORC|RE|PO-9001^SIMRS|LAB-9001^LIS",
            "OBR|1|PO-9001^SIMRS|LAB-9001^LIS|718-7^Hemoglobin^LN|||20261101090000+0700",
            "OBX|1|NM|718-7^Hemoglobin^LN||13.1|g/dL|12-16|N|||F",
        ]

    _send(engine, settings, [oru("RM-A", "Santoso^Budi", "R-A"), oru("RM-B", "Wibowo^Agus", "R-B")])
    requests = _search(client, auth, "ServiceRequest")
    assert len({r["subject"]["reference"] for r in requests}) == 2
    assert len({r["id"] for r in requests}) == 2
    for rtype in ("DiagnosticReport", "Observation"):
        found = _search(client, auth, rtype)
        assert len(found) == 2 and len({r["subject"]["reference"] for r in found}) == 2
        assert all(r["meta"]["versionId"] == "1" for r in found)  # neither was ever another patient's
