"""The API as an app developer meets it: a real FHIR client library (fhirpy) over real HTTP against the
hub served by uvicorn, reading a golden patient's record, searching with paging, and writing as a sender."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import uvicorn
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import ForbiddenError, ResourceNotFound

from hub.app import create_app
from hub.auth import issue_token
from hub.config import Settings
from hub.db import get_engine, get_read_engine
from tests.fhir_api import builders as b


@pytest.fixture
def base_url(settings: Settings, engine: object) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    yield f"http://127.0.0.1:{port}/fhir"
    server.should_exit = True
    thread.join(10)
    sock.close()
    get_engine(settings.sqlalchemy_url).dispose()
    get_read_engine(settings.sqlalchemy_url).dispose()


def test_fhirpy_reads_searches_and_writes(
    base_url: str, settings: Settings, put: Callable[..., None]
) -> None:
    put(
        b.patient("gold", family="Santoso", links=[("seealso", "srcA"), ("seealso", "srcB")]),
        b.patient("srcA", links=[("refer", "gold")]),
        b.patient("srcB", links=[("refer", "gold")]),
        *(
            b.observation(
                f"o{i:02d}", "srcA" if i % 2 else "srcB", value=100 + i, effective=f"2024-03-{i + 1:02d}"
            )
            for i in range(25)
        ),
    )
    clinician = SyncFHIRClient(base_url, authorization=f"Bearer {issue_token(settings, 'clinician')}")

    patient = clinician.reference("Patient", "gold").to_resource()
    assert patient["name"][0]["family"] == "Santoso"
    with pytest.raises(ResourceNotFound):
        clinician.reference("Patient", "nobody").to_resource()

    search = clinician.resources("Observation").search(patient="gold", date__ge="2024-03-05").sort("-date")
    first = search.limit(5).fetch()
    assert len(first) == 5 and first[0]["effectiveDateTime"] == "2024-03-25"
    everything = search.limit(7).fetch_all()  # follows our cursor links
    assert len(everything) == 21 and len({o["id"] for o in everything}) == 21
    assert clinician.resources("Observation").search(patient="gold").count() == 25
    with_patient = (
        clinician.resources("Observation").search(_id="o03").include("Observation", "subject").fetch_raw()
    )
    assert {e["resource"]["resourceType"] for e in with_patient["entry"]} == {"Observation", "Patient"}

    sender = SyncFHIRClient(
        base_url, authorization=f"Bearer {issue_token(settings, 'sender', facilities=['RS-FHIRPY'])}"
    )
    new = sender.resource("Patient", name=[{"family": "Lestari", "given": ["Dewi"]}], gender="female")
    new.save()
    assert new["id"] and new["meta"]["versionId"] == "1"
    new["birthDate"] = "1990-01-01"
    new.save()
    assert new["meta"]["versionId"] == "2"
    found = clinician.resources("Patient").search(family="lestari", birthdate="1990").fetch()
    # The MPI gave the new source Patient a golden record (tagged); both match the search.
    golden_tag = "https://hub.kemkes.go.id/fhir/CodeSystem/mpi|golden"
    (golden,) = [p for p in found if p["id"] != new["id"]]
    assert {p["id"] for p in found} == {new["id"], golden["id"]}
    assert [(link["type"], link["other"]["reference"]) for link in golden["link"]] == [
        ("seealso", f"Patient/{new['id']}")
    ]
    sources = clinician.resources("Patient").search(family="lestari", _tag__not=golden_tag).fetch()
    assert [p["id"] for p in sources] == [new["id"]]
    goldens = clinician.resources("Patient").search(family="lestari", _tag=golden_tag).fetch()
    assert [p["id"] for p in goldens] == [golden["id"]]
    with pytest.raises(ForbiddenError):
        clinician.resource("Patient", name=[{"family": "X"}]).save()  # a clinician may not write
