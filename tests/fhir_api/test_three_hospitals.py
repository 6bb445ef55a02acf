"""End to end, no part faked: three hospitals send HL7 v2 for one person under three MRNs (the same NIK);
after intake and the pipeline (real maps, real MPI, real store), the golden Patient's ``$everything`` and
``Observation?patient=<golden>`` hold what all three sent."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from hub import pipeline
from hub.config import Settings
from hub.db import session_scope
from hub.ingest.service import Intake

NIK = "3171015505900003"  # synthetic: DKI Jakarta region code, born 15-05-1990, female (+40 on the day)
GOLDEN_TAG = "https://hub.kemkes.go.id/fhir/CodeSystem/mpi|golden"


def _messages(facility: str, mrn: str, n: int) -> list[str]:
    msh = "MSH|^~\\&|SIMRS|{f}|HUB|KEMKES|2026110108{n:02d}00+0700||{t}|{f}-{c}|P|2.5.1"
    pid = f"PID|1||{mrn}^^^{facility}^MR~{NIK}^^^^NNIDN||Aminah^Siti||19900515|F"
    adt = "\r".join(
        [
            msh.format(f=facility, n=n, t="ADT^A01^ADT_A01", c="ADT"),
            f"EVN|A01|2026110108{n:02d}00+0700",
            pid,
            f"PV1|1|I|W1^01^A||||||||||||||||V{mrn}^^^{facility}^VN",
        ]
    )
    oru = "\r".join(
        [
            msh.format(f=facility, n=n, t="ORU^R01^ORU_R01", c="ORU"),
            pid,
            f"OBR|1|ORD{mrn}|FIL{mrn}|718-7^Hemoglobin^LN|||2026110109{n:02d}00+0700",
            f"OBX|1|NM|718-7^Hemoglobin^LN||{12 + n}.5|g/dL|12-16|N|||F",
        ]
    )
    return [adt + "\r", oru + "\r"]


def _pages(client: TestClient, auth: dict[str, str], url: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while url:
        bundle = client.get(url, headers=auth).json()
        out += [e["resource"] for e in bundle.get("entry", [])]
        url = next((lk["url"] for lk in bundle.get("link", []) if lk["relation"] == "next"), "")
    return out


def test_golden_everything_holds_three_hospitals(
    engine: Engine, client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    intake = Intake(engine, settings)
    ids = []
    for n, (facility, mrn) in enumerate([("RSUD_A", "A-001"), ("RS_B", "B-777"), ("PKM_C", "C-42")], start=1):
        ids += [intake.accept(m.encode()).message_id for m in _messages(facility, mrn, n)]
    with session_scope(engine) as session:
        outcomes = pipeline.process_batch(session, [i for i in ids if i is not None])
    assert [o.state for o in outcomes] == ["processed"] * 6, outcomes

    goldens = client.get(f"/fhir/Patient?_tag={GOLDEN_TAG}", headers=auth).json()
    assert goldens.get("total", len(goldens.get("entry", []))) == 1
    golden = goldens["entry"][0]["resource"]
    assert len([lk for lk in golden["link"] if lk["type"] == "seealso"]) == 3

    everything = _pages(client, auth, f"/fhir/Patient/{golden['id']}/$everything?_count=5")
    observations = [r for r in everything if r["resourceType"] == "Observation"]
    assert sorted(o["valueQuantity"]["value"] for o in observations) == [13.5, 14.5, 15.5]
    mrns = {i["value"] for r in everything if r["resourceType"] == "Patient" for i in r.get("identifier", [])}
    assert {"A-001", "B-777", "C-42"} <= mrns
    assert {r["resourceType"] for r in everything} >= {
        "Patient",
        "Encounter",
        "Observation",
        "DiagnosticReport",
    }

    found = client.get(f"/fhir/Observation?patient={golden['id']}&code=http://loinc.org|718-7", headers=auth)
    assert len(found.json().get("entry", [])) == 3
