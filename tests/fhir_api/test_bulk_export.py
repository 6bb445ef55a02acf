"""FHIR Bulk Data export through the real intake, pipeline, store and API: kick-off, status, manifest,
download, cancel, expiry, a runner that dies during a job, the parameters, and the de-identified export
the ministry gets (no value that identifies a person anywhere in it, references resolving inside it)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, update

from hub import pipeline
from hub.auth import issue_token
from hub.config import Settings
from hub.db import session_scope
from hub.export import jobs
from hub.export.deid import references
from hub.ingest.service import Intake
from hub.store.models import ExportJob

ASYNC = {"Accept": "application/fhir+json", "Prefer": "respond-async"}
# Synthetic people: every identifying value below must be absent from a de-identified export.
SECRETS = [
    "Wulandari",
    "Sekar",
    "3171015507800004",
    "RM-8801",
    "RM-9902",
    "081298765432",
    "Jl. Melati No. 7",
    "10110",
    "Hartawan",
    "1931",  # the birth year of a person over 89 never appears as it is
]


def _msh(kind: str, control: str, facility: str) -> str:
    return f"MSH|^~\\&|SIMRS|{facility}|HUB|KEMKES|20261102080000+0700||{kind}|{control}|P|2.5.1"


PID_A = (
    "PID|1||RM-8801^^^RSUD_A^MR~3171015507800004^^^NIK^NNIDN||Wulandari^Sekar||19800715|F|||"
    "Jl. Melati No. 7^^Jakarta Pusat^DKI Jakarta^10110^ID||081298765432"
)
PID_B = "PID|1||RM-9902^^^RSUD_B^MR||Hartawan^Joko||19310101|M"


def _send(engine: Engine, settings: Settings) -> None:
    messages = [
        [
            _msh("ADT^A04^ADT_A01", "EXP-1", "RSUD_A"),
            "EVN|A04|20261102080000+0700",
            PID_A,
            "PV1|1|O|POLI^01^A||||1234^Hartawan^Dokter||||||||||||V-8801^^^RSUD_A^VN",
        ],
        [
            _msh("ORU^R01^ORU_R01", "EXP-2", "RSUD_A"),
            PID_A,
            "OBR|1|PO-8801^SIMRS|LAB-8801^LIS|718-7^Hemoglobin^LN|||20261102090000+0700",
            "OBX|1|NM|718-7^Hemoglobin^LN||12.5|g/dL|12-16|N|||F",
            "NTE|1||Sekar Wulandari called on 081298765432",
        ],
        [_msh("ADT^A04^ADT_A01", "EXP-3", "RSUD_B"), "EVN|A04|20261102080000+0700", PID_B],
    ]
    intake = Intake(engine, settings)
    ids = [intake.accept(("\r".join(m) + "\r").encode()).message_id for m in messages]
    with session_scope(engine) as session:
        outcomes = pipeline.process_batch(session, [i for i in ids if i is not None])
    assert [o.state for o in outcomes] == ["processed"] * 3, outcomes


@pytest.fixture
def export_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"export_min_poll_s": 0.0})


@pytest.fixture
def api(export_settings: Settings, engine: Engine) -> TestClient:
    from hub.app import create_app

    return TestClient(create_app(export_settings), base_url="http://hub.test")


def _auth(settings: Settings, role: str, **kw: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(settings, role, subject=f'{role}-1', **kw)}"}


def _run(engine: Engine, settings: Settings) -> int:
    return jobs.ExportRunner(engine, settings).run_pending()


def _export(
    api: TestClient, engine: Engine, settings: Settings, role: str, path: str = "/fhir/$export", **kw: Any
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    auth = _auth(settings, role, **kw)
    kick = api.get(path, headers={**ASYNC, **auth})
    assert kick.status_code == 202, kick.text
    status_url = kick.headers["Content-Location"]
    assert api.get(status_url, headers=auth).status_code == 202  # queued
    assert _run(engine, settings) == 1
    done = api.get(status_url, headers=auth)
    assert done.status_code == 200, done.text
    manifest = done.json()
    files: dict[str, list[dict[str, Any]]] = {}
    for out in manifest["output"]:
        got = api.get(out["url"], headers={**auth, "Accept": "application/fhir+ndjson"})
        assert got.status_code == 200
        assert got.headers["content-type"].startswith("application/fhir+ndjson")
        rows = [orjson.loads(line) for line in got.content.splitlines()]
        assert len(rows) == out["count"]
        files.setdefault(out["type"], []).extend(rows)
    return manifest, files


def test_an_admin_exports_everything_identified(
    api: TestClient, engine: Engine, export_settings: Settings
) -> None:
    _send(engine, export_settings)
    manifest, files = _export(api, engine, export_settings, "admin")
    assert manifest["requiresAccessToken"] is True
    assert manifest["request"].endswith("/fhir/$export")
    assert datetime.fromisoformat(manifest["transactionTime"]) <= datetime.now(UTC)
    assert manifest["error"] == []
    names = {n.get("family") for p in files["Patient"] for n in p.get("name", [])}
    assert {"Wulandari", "Hartawan"} <= names
    assert {"Observation", "Encounter", "DiagnosticReport"} <= files.keys()
    with session_scope(engine) as session:
        from sqlalchemy import func, select

        from hub.store.models import Resource

        stored = session.scalar(
            select(func.count())
            .select_from(Resource)
            .where(Resource.resource_type == "Observation", Resource.deleted.is_(False))
        )
    assert len(files["Observation"]) == stored
    # the export is audited: who, what, how many
    audit = api.get(
        "/fhir/AuditEvent", params={"_count": "200"}, headers=_auth(export_settings, "admin")
    ).json()
    described = [e["resource"].get("outcomeDesc", "") for e in audit.get("entry", [])]
    assert any("(identified)" in d and f"Observation {stored}" in d for d in described), described


def test_the_ministry_export_identifies_nobody_and_its_references_resolve(
    api: TestClient, engine: Engine, export_settings: Settings
) -> None:
    _send(engine, export_settings)
    manifest, files = _export(api, engine, export_settings, "ministry")
    assert manifest["extension"]["deidentified"] is True
    text = b"\n".join(orjson.dumps(r) for rows in files.values() for r in rows).decode()
    for secret in SECRETS:
        assert secret not in text, secret
    assert "AuditEvent" not in files
    exported = {f"{t}/{r['id']}" for t, rows in files.items() for r in rows}
    for rows in files.values():
        for r in rows:
            for ref in references(r):
                if ref.split("/")[0] in files:
                    assert ref in exported, ref
    # one person, one Patient: the golden records only, generalised
    patients = files["Patient"]
    assert {p.get("gender") for p in patients} == {"female", "male"}
    births = sorted(p.get("birthDate") for p in patients)
    assert births == [str(datetime.now(UTC).year - 90), "1980-07"]
    for p in patients:
        assert "name" not in p and "identifier" not in p and "telecom" not in p
        for a in p.get("address", []):
            assert set(a) <= {"use", "type", "district", "city", "state", "country", "extension"}
    obs = files["Observation"][0]
    assert obs["subject"]["reference"] in exported
    assert "T" not in obs.get("effectiveDateTime", "")
    # the same person has the same pseudonym in the next export
    _, again = _export(api, engine, export_settings, "ministry")
    assert {p["id"] for p in again["Patient"]} == {p["id"] for p in patients}


def test_a_ministry_export_is_the_same_in_batches_of_one(
    api: TestClient, engine: Engine, export_settings: Settings
) -> None:
    """Golden ids are looked up once per export and reused by later batches: one resource per batch
    gives the very same files (pseudonyms, source Patients left out) as the default batch size."""
    _send(engine, export_settings)
    _, whole = _export(api, engine, export_settings, "ministry")
    one = export_settings.model_copy(update={"export_batch": 1})
    _, batched = _export(api, engine, one, "ministry")

    def key(r: dict[str, Any]) -> bytes:
        return orjson.dumps(r, option=orjson.OPT_SORT_KEYS)

    assert {t: sorted(map(key, rows)) for t, rows in batched.items()} == {
        t: sorted(map(key, rows)) for t, rows in whole.items()
    }
    assert len(whole["Patient"]) == 2  # the golden records only
    subjects = {o["subject"]["reference"] for o in batched["Observation"]}
    assert subjects <= {f"Patient/{p['id']}" for p in batched["Patient"]}


def test_type_since_typefilter_and_elements(
    api: TestClient, engine: Engine, export_settings: Settings
) -> None:
    _send(engine, export_settings)
    _, only = _export(api, engine, export_settings, "admin", path="/fhir/$export?_type=Patient,Observation")
    assert set(only) == {"Patient", "Observation"}
    _, filtered = _export(
        api,
        engine,
        export_settings,
        "admin",
        path="/fhir/$export?_type=Patient&_typeFilter=Patient%3Fgender%3Dmale",
    )
    assert [n["family"] for p in filtered["Patient"] for n in p["name"]] == ["Hartawan"] or all(
        p["gender"] == "male" for p in filtered["Patient"]
    )
    assert filtered["Patient"] and all(p["gender"] == "male" for p in filtered["Patient"])
    _, subset = _export(
        api, engine, export_settings, "admin", path="/fhir/$export?_type=Patient&_elements=gender"
    )
    for p in subset["Patient"]:
        assert set(p) <= {"resourceType", "id", "meta", "gender"}
        assert any(t["code"] == "SUBSETTED" for t in p["meta"]["tag"])
    future = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    auth = _auth(export_settings, "admin")
    kick = api.get(f"/fhir/$export?_since={future}", headers={**ASYNC, **auth})
    _run(engine, export_settings)
    assert api.get(kick.headers["Content-Location"], headers=auth).json()["output"] == []


def test_patient_and_group_exports(
    api: TestClient, engine: Engine, export_settings: Settings, put: Callable[..., None]
) -> None:
    _send(engine, export_settings)
    _, everyone = _export(api, engine, export_settings, "admin", path="/fhir/Patient/$export")
    assert "Observation" in everyone and "Organization" not in everyone
    joko = next(p for p in everyone["Patient"] if p["name"][0]["family"] == "Hartawan")
    put(
        {
            "resourceType": "Group",
            "id": "g1",
            "type": "person",
            "actual": True,
            "member": [{"entity": {"reference": f"Patient/{joko['id']}"}}],
        }
    )
    _, group = _export(api, engine, export_settings, "admin", path="/fhir/Group/g1/$export")
    # Joko's records only: the golden Patient and its source (identified exports carry both)
    assert {p["name"][0]["family"] for p in group["Patient"]} == {"Hartawan"}
    assert "Observation" not in group  # Joko has no results
    put({"resourceType": "Group", "id": "empty", "type": "person", "actual": True})
    _, nobody = _export(api, engine, export_settings, "admin", path="/fhir/Group/empty/$export")
    assert nobody == {}  # a Group without members exports nothing
    missing = api.get("/fhir/Group/nope/$export", headers={**ASYNC, **_auth(export_settings, "admin")})
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"


def test_kick_off_errors_and_roles(api: TestClient, export_settings: Settings) -> None:
    admin = _auth(export_settings, "admin")
    no_prefer = api.get("/fhir/$export", headers={**admin, "Accept": "application/fhir+json"})
    assert no_prefer.status_code == 400 and no_prefer.json()["resourceType"] == "OperationOutcome"
    unknown = api.get("/fhir/$export?_until=2026", headers={**ASYNC, **admin})
    assert unknown.status_code == 400
    lenient = api.get(
        "/fhir/$export?_until=2026",
        headers={**admin, "Accept": "application/fhir+json", "Prefer": "respond-async, handling=lenient"},
    )
    assert lenient.status_code == 202
    assert "_until" in lenient.json()["issue"][0]["diagnostics"]
    bad_format = api.get("/fhir/$export?_outputFormat=text/csv", headers={**ASYNC, **admin})
    assert bad_format.status_code == 400
    for role in ("clinician", "sender", "steward"):
        refused = api.get("/fhir/$export", headers={**ASYNC, **_auth(export_settings, role)})
        assert refused.status_code == 403, role
        assert refused.json()["resourceType"] == "OperationOutcome"
    assert api.get("/fhir/$export", headers=ASYNC).status_code == 401


def test_status_is_the_owners_throttled_cancellable_and_expires(
    api: TestClient, engine: Engine, settings: Settings, export_settings: Settings
) -> None:
    _send(engine, settings)
    throttled = TestClient(api.app, base_url="http://hub.test")
    throttled.app.state.settings = settings.model_copy(update={"export_min_poll_s": 60.0})
    admin = _auth(settings, "admin")
    kick = throttled.get("/fhir/$export", headers={**ASYNC, **admin})
    url = kick.headers["Content-Location"]
    assert throttled.get(url, headers=admin).status_code == 202
    fast = throttled.get(url, headers=admin)
    assert fast.status_code == 429 and fast.headers["Retry-After"]
    other_admin = {"Authorization": f"Bearer {issue_token(settings, 'ministry', subject='someone-else')}"}
    assert throttled.get(url, headers=other_admin).status_code == 404
    # cancel while queued: nothing runs, the status is gone
    assert throttled.delete(url, headers=admin).status_code == 202
    assert throttled.get(url, headers=admin).status_code == 404
    assert _run(engine, settings) == 0
    # a finished job expires with its files
    throttled.app.state.settings = export_settings.model_copy(update={"export_ttl_s": 0.0})
    kick = throttled.get("/fhir/$export?_type=Patient", headers={**ASYNC, **admin})
    _run(engine, export_settings.model_copy(update={"export_ttl_s": 0.0}))
    job_id = kick.headers["Content-Location"].rsplit("/", 1)[1]
    assert (jobs.job_dir(export_settings, job_id)).is_dir()
    assert jobs.expire(engine, export_settings) >= 1
    assert not jobs.job_dir(export_settings, job_id).exists()
    assert throttled.get(kick.headers["Content-Location"], headers=admin).status_code == 404


def test_a_job_whose_runner_died_is_taken_over_and_one_that_keeps_dying_fails(
    api: TestClient, engine: Engine, export_settings: Settings
) -> None:
    _send(engine, export_settings)
    admin = _auth(export_settings, "admin")
    url = api.get("/fhir/$export?_type=Patient", headers={**ASYNC, **admin}).headers["Content-Location"]
    job_id = url.rsplit("/", 1)[1]
    assert jobs.claim(engine, export_settings) == job_id  # a runner takes it ... and dies
    (jobs.job_dir(export_settings, job_id)).mkdir(parents=True, exist_ok=True)
    (jobs.job_dir(export_settings, job_id) / "Patient-1.ndjson").write_bytes(b'{"partial":')
    assert jobs.claim(engine, export_settings) is None  # its heartbeat is fresh: nobody takes it over
    stale = datetime.now(UTC) - timedelta(seconds=export_settings.export_stale_s + 1)
    with session_scope(engine) as session:
        session.execute(update(ExportJob).where(ExportJob.id == job_id).values(heartbeat_at=stale))
    assert api.get(url, headers=admin).status_code == 202  # still in progress, never hung for good
    assert _run(engine, export_settings) == 1
    manifest = api.get(url, headers=admin).json()
    body = api.get(manifest["output"][0]["url"], headers=admin).content
    lines = body.splitlines()
    assert len(lines) == manifest["output"][0]["count"] == 4  # two people: golden + source each
    assert all(orjson.loads(line)["resourceType"] == "Patient" for line in lines)  # started over, whole
    # a job interrupted MAX_ATTEMPTS times fails cleanly with an OperationOutcome
    url = api.get("/fhir/$export?_type=Patient", headers={**ASYNC, **admin}).headers["Content-Location"]
    job_id = url.rsplit("/", 1)[1]
    with session_scope(engine) as session:
        session.execute(
            update(ExportJob)
            .where(ExportJob.id == job_id)
            .values(state="running", heartbeat_at=stale, attempts=jobs.MAX_ATTEMPTS)
        )
    assert jobs.claim(engine, export_settings) is None
    failed = api.get(url, headers=admin)
    assert failed.status_code == 500 and failed.json()["resourceType"] == "OperationOutcome"


def test_files_are_split_at_the_size_limit(
    api: TestClient, engine: Engine, export_settings: Settings
) -> None:
    _send(engine, export_settings)
    small = export_settings.model_copy(update={"export_file_max_bytes": 200, "export_batch": 1})
    admin = _auth(small, "admin")
    url = api.get("/fhir/$export?_type=Patient", headers={**ASYNC, **admin}).headers["Content-Location"]
    _run(engine, small)
    manifest = api.get(url, headers=admin).json()
    patients = [o for o in manifest["output"] if o["type"] == "Patient"]
    assert len(patients) >= 2 and sum(o["count"] for o in patients) >= 3
