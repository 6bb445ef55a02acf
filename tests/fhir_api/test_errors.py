"""One error format per audience and no 500 for any input: OperationOutcome on /fhir, RFC 9457 problem
details on the operator and MPI APIs; huge ids, unknown types, _format and _count out of range."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from tests.fhir_api import builders as b

HUGE = "99999999999999999999"  # above 2^63 - 1


def _outcome(r: object, status: int) -> dict[str, object]:
    assert r.status_code == status, (r.status_code, r.text)  # type: ignore[attr-defined]
    assert r.headers["content-type"].startswith("application/fhir+json")  # type: ignore[attr-defined]
    body = r.json()  # type: ignore[attr-defined]
    assert body["resourceType"] == "OperationOutcome"
    return body


def _problem(r: object, status: int) -> dict[str, object]:
    assert r.status_code == status, (r.status_code, r.text)  # type: ignore[attr-defined]
    assert r.headers["content-type"].startswith("application/problem+json")  # type: ignore[attr-defined]
    body = r.json()  # type: ignore[attr-defined]
    assert body["status"] == status and body["title"] and body["detail"] and "code" in body
    assert set(body) >= {"type", "title", "status", "detail"}
    return body


@pytest.mark.parametrize(
    "url",
    [
        f"/hl7/messages/{HUGE}",
        f"/mpi/review/{HUGE}",
    ],
)
def test_huge_path_ids_are_404_never_500(
    client: TestClient, token: Callable[[str], dict[str, str]], url: str
) -> None:
    _problem(client.get(url, headers=token("admin")), 404)


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("post", f"/mpi/review/{HUGE}/link"),
        ("post", f"/mpi/review/{HUGE}/not-duplicate"),
        ("post", f"/mpi/review/decisions/{HUGE}/undo"),
    ],
)
def test_huge_ids_in_mpi_actions_are_not_500(
    client: TestClient, token: Callable[[str], dict[str, str]], method: str, url: str
) -> None:
    r = getattr(client, method)(url, headers=token("admin"), json={})
    assert r.status_code in (400, 404), r.text
    _problem(r, r.status_code)


@pytest.mark.parametrize(
    "url",
    [
        f"/hl7/messages?before_id={HUGE}",
        f"/mpi/review?offset={HUGE}",
    ],
)
def test_huge_query_numbers_are_answered_not_500(
    client: TestClient, token: Callable[[str], dict[str, str]], url: str
) -> None:
    r = client.get(url, headers=token("admin"))
    assert r.status_code in (200, 400), r.text
    if r.status_code == 400:
        _problem(r, 400)


def test_huge_history_version_is_404(
    client: TestClient, auth: dict[str, str], put: Callable[..., None]
) -> None:
    put(b.patient("p1"))
    _outcome(client.get(f"/fhir/Patient/p1/_history/{HUGE}", headers=auth), 404)


def test_validation_errors_are_problem_details_not_fastapi_detail(
    client: TestClient, token: Callable[[str], dict[str, str]]
) -> None:
    for url in (
        "/hl7/messages?limit=0",
        "/hl7/messages/abc",
        "/hl7/messages?before_id=x",
        "/mpi/review?offset=-1",
    ):
        body = _problem(client.get(url, headers=token("admin")), 400)
        assert "detail" in body and not isinstance(body["detail"], list), url


def test_operator_errors_are_problem_details(
    client: TestClient, token: Callable[[str], dict[str, str]]
) -> None:
    _problem(client.get("/hl7/messages?state=nonsense", headers=token("admin")), 400)
    _problem(client.get("/hl7/messages/424242", headers=token("admin")), 404)
    _problem(client.get("/hl7/messages"), 401)
    _problem(client.get("/hl7/messages", headers=token("clinician")), 403)
    _problem(client.get("/no/such/route"), 404)


def test_unknown_fhir_types_are_404(client: TestClient, auth: dict[str, str]) -> None:
    for url in ("/fhir/Foo", "/fhir/Nonexistent", "/fhir/Foo/1", "/fhir/Foo/_history", "/fhir/Resource"):
        body = _outcome(client.get(url, headers=auth), 404)
        assert body["issue"][0]["code"] == "not-found", url  # type: ignore[index]
    assert client.get("/fhir/Patient", headers=auth).status_code == 200


def test_unknown_fhir_route_is_outcome(client: TestClient, auth: dict[str, str]) -> None:
    _outcome(client.get("/fhir/Patient/p1/_history/1/extra/more", headers=auth), 404)


def test_format_xml_is_406(client: TestClient, auth: dict[str, str], put: Callable[..., None]) -> None:
    put(b.patient("p1"))
    for url in (
        "/fhir/Patient?_format=xml",
        "/fhir/Patient/p1?_format=application/fhir%2Bxml",
        "/fhir/metadata?_format=xml",
    ):
        body = _outcome(client.get(url, headers=auth), 406)
        assert body["issue"][0]["code"] == "not-supported"  # type: ignore[index]
    _outcome(client.get("/fhir/Patient/p1", headers={**auth, "Accept": "application/fhir+xml"}), 406)
    assert client.get("/fhir/Patient?_format=json", headers=auth).status_code == 200
    assert client.get("/fhir/Patient/p1?_format=application/fhir%2Bjson", headers=auth).status_code == 200


def test_count_out_of_range_is_400(
    client: TestClient, auth: dict[str, str], put: Callable[..., None]
) -> None:
    put(b.patient("p1"))
    for url in (
        "/fhir/Patient?_count=-1",
        "/fhir/Patient/p1/_history?_count=-1",
        "/fhir/Patient/p1/$everything?_count=-5",
        "/fhir/Patient?_count=x",
    ):
        _outcome(client.get(url, headers=auth), 400)
    assert client.get("/fhir/Patient?_count=0", headers=auth).status_code == 200


def test_fhir_write_body_limit_is_413(client: TestClient, token: Callable[[str], dict[str, str]]) -> None:
    limit = client.app.state.settings.mllp_max_frame_bytes  # type: ignore[attr-defined]
    big = b'{"resourceType": "Patient", "id": "p", "x": "' + b"a" * (limit + 10) + b'"}'
    headers = {**token("sender"), "Content-Type": "application/fhir+json"}
    _outcome(client.post("/fhir/Patient", content=big, headers=headers), 413)
    _outcome(client.post("/fhir", content=big, headers=headers), 413)


def test_unknown_includes_are_400_strict_and_a_warning_lenient(
    client: TestClient, auth: dict[str, str]
) -> None:
    strict = {**auth, "Prefer": "handling=strict"}
    for url in (
        "/fhir/Patient?_include=Patient:nonsense",
        "/fhir/Patient?_include=garbage",
        "/fhir/Patient?_revinclude=Foo:bar",
        "/fhir/Observation?_include=Observation:subject:Nothing",
    ):
        _outcome(client.get(url, headers=strict), 400)
        lenient = client.get(url, headers=auth)
        assert lenient.status_code == 200, url
        issues = [
            e["resource"]
            for e in lenient.json().get("entry", [])
            if e["resource"]["resourceType"] == "OperationOutcome"
        ]
        assert issues and "ignored" in issues[0]["issue"][0]["diagnostics"], url
    assert client.get("/fhir/Observation?_include=Observation:subject", headers=strict).status_code == 200
    assert client.get("/fhir/Patient?_revinclude=Observation:subject", headers=strict).status_code == 200
