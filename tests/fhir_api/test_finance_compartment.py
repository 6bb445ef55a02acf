"""End to end (intake, pipeline, store, FHIR API): what BAR and DFT messages make (Account, Coverage,
insured and guarantor RelatedPersons, CareTeam, ChargeItem) reaches the patient's compartment through
FHIR R4's CompartmentDefinition parameters: Coverage by beneficiary, subscriber and policy-holder,
Account by subject, RelatedPerson by patient, and Patient/{id}/$everything."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from hub import pipeline
from hub.config import Settings
from hub.db import session_scope
from hub.ingest.service import Intake
from tests.mapping._support import HL7_DIR, by_type, map_text, read

PID = "PID|1||RM009001^^^RSUD_SEHAT^MR||Lestari^Dewi||19900303|F||||||||||ACC-9001^^^RSUD_SEHAT^AN"
SELF_IN1 = (
    "IN1|1|JKN^Jaminan Kesehatan Nasional^L|BPJS001^^^BPJS|BPJS Kesehatan" + "|" * 13 + "SEL^Self^HL70063"
)


def _dft() -> str:
    return (
        "\r".join(
            [
                "MSH|^~\\&|SIMRS|RSUD_SEHAT|HUB|KEMKES|20261103100000+0700||DFT^P03^DFT_P03|DFT9001|P|2.5.1",
                "EVN|P03|20261103100000",
                PID,
                "PV1|1|O|||||||||||||||||V9001^^^RSUD_SEHAT^VN",
                "FT1|1|TRX-9001||20261103090000|20261103100000|CG|LAB-HB^Hemoglobin^L|||1|45000&IDR",
                SELF_IN1,
            ]
        )
        + "\r"
    )


def _ids(client: TestClient, auth: dict[str, str], url: str) -> set[str]:
    r = client.get(url, headers=auth)
    assert r.status_code == 200, r.text
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in r.json().get("entry", [])}


def _everything(client: TestClient, auth: dict[str, str], patient: str) -> set[str]:
    out: set[str] = set()
    url: str | None = f"/fhir/{patient}/$everything?_count=50"
    for _ in range(50):
        if url is None:
            break
        r = client.get(url, headers=auth)
        assert r.status_code == 200, r.text
        out |= {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in r.json().get("entry", [])}
        url = next((lk["url"] for lk in r.json().get("link", []) if lk["relation"] == "next"), None)
    return out


def _stored(engine: Engine, settings: Settings, *messages: str) -> None:
    intake = Intake(engine, settings)
    ids = [intake.accept(m.encode()).message_id for m in messages]
    with session_scope(engine) as session:
        outcomes = pipeline.process_batch(session, [i for i in ids if i is not None])
    assert [o.state for o in outcomes] == ["processed"] * len(messages), outcomes


def _source_patient(message: str) -> str:
    """The sender's source Patient the message makes (the MPI also makes a golden one)."""
    (patient,) = by_type(map_text(message), "Patient")
    return f"Patient/{patient['id']}"


def _of(client: TestClient, auth: dict[str, str], url: str) -> list[dict[str, Any]]:
    r = client.get(url, headers=auth)
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])]


def test_bar_resources_reach_the_patient_compartment(
    engine: Engine, client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    bar = read(HL7_DIR / "bar_p01.hl7")
    _stored(engine, settings, bar)
    pref = _source_patient(bar)
    (coverage,) = _of(client, auth, f"/fhir/Coverage?beneficiary={pref}")
    insured = coverage["subscriber"]["reference"]
    holder = coverage["policyHolder"]["reference"]
    assert insured.startswith("RelatedPerson/") and holder.startswith("Organization/")
    key = f"Coverage/{coverage['id']}"
    assert key in _ids(client, auth, f"/fhir/Coverage?subscriber={insured}")
    assert key in _ids(client, auth, f"/fhir/Coverage?policy-holder={holder}")
    assert key in _ids(client, auth, f"/fhir/Coverage?patient={pref}")
    (account,) = _of(client, auth, f"/fhir/Account?subject={pref}")
    assert f"Account/{account['id']}" in _ids(client, auth, f"/fhir/Account?patient={pref}")
    guarantor = account["guarantor"][0]["party"]["reference"]
    people = _ids(client, auth, f"/fhir/RelatedPerson?patient={pref}")
    assert {insured, guarantor} <= people
    everything = _everything(client, auth, pref)
    assert {key, f"Account/{account['id']}", insured, guarantor} <= everything
    assert {k.split("/")[0] for k in everything} >= {"CareTeam", "Condition", "Procedure"}


def test_self_coverage_and_charges_reach_the_patient_compartment(
    engine: Engine, client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    _stored(engine, settings, _dft())
    pref = _source_patient(_dft())
    (coverage,) = _of(client, auth, f"/fhir/Coverage?subscriber={pref}")
    assert coverage["beneficiary"] == {"reference": pref}
    (account,) = _of(client, auth, f"/fhir/Account?subject={pref}")
    (charge,) = _of(client, auth, f"/fhir/ChargeItem?subject={pref}")
    assert charge["account"] == [{"reference": f"Account/{account['id']}"}]
    assert {f"Coverage/{coverage['id']}", f"Account/{account['id']}", f"ChargeItem/{charge['id']}"} <= (
        _everything(client, auth, pref)
    )
