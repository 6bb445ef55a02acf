"""Every message of ../shared/corpus is either mapped to valid FHIR R4 resources or rejected with a
reason (an unreadable MSH, or a message type without a map). The google-hdh expected outputs carry wrong
datetimes, so only identifiers, codes and counts are compared with them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hub import hl7
from hub.errors import MappingError
from hub.fhir.validate import validate_resource
from hub.mapping import SenderContext, map_message


def _messages(corpus: Path) -> list[Path]:
    return sorted(
        p
        for p in corpus.rglob("*")
        if p.is_file() and p.suffix in (".hl7", ".txt") and p.stem.upper() not in ("LICENSE", "SOURCE")
    )


def _map(path: Path) -> tuple[str, Any]:
    raw = path.read_bytes()
    try:
        header = hl7.peek_header(raw)
    except hl7.HeaderError as exc:
        return "rejected", exc.text
    message = hl7.parse(hl7.decode(raw, header))
    try:
        return "mapped", map_message(message, SenderContext(facility=header.sending_facility or "UNKNOWN"))
    except MappingError as exc:
        return "rejected", exc.message


def test_every_corpus_message_is_mapped_validly_or_rejected_with_a_reason(shared_corpus: Path) -> None:
    files = _messages(shared_corpus)
    assert len(files) >= 20
    outcomes: dict[str, str] = {}
    for path in files:
        state, value = _map(path)
        name = str(path.relative_to(shared_corpus))
        if state == "rejected":
            assert value, name
            outcomes[name] = "rejected: " + value
            continue
        assert value.resources, name
        problems = [p for resource in value.resources for p in validate_resource(resource)]
        assert problems == [], name
        assert all({"segment", "index", "field", "name", "value"} <= set(u) for u in value.unmapped)
        outcomes[name] = "mapped"
    # The linuxforhealth samples with a corrupted MSH-2 are rejected at the header, cleanly.
    rejected = {n for n, o in outcomes.items() if o.startswith("rejected")}
    assert rejected == {"linuxforhealth/sample_unix.hl7", "linuxforhealth/sample_win.hl7"}
    assert all("MSH-2" in outcomes[n] for n in rejected)


def _codes(resources: list[dict[str, Any]], rtype: str, key: str) -> set[str]:
    out = set()
    for r in resources:
        if r.get("resourceType") == rtype and isinstance(r.get(key), dict):
            out |= {c.get("code", "") for c in r[key].get("coding", [])}
    return out - {""}


def test_google_hdh_identifiers_and_codes_agree(shared_corpus: Path) -> None:
    expected_dir = shared_corpus / "google-hdh" / "expected"
    compared = 0
    for expected_file in sorted(expected_dir.glob("*.json")):
        source = shared_corpus / "google-hdh" / expected_file.name.replace(".fhir.output.json", "")
        state, result = _map(source)
        assert state == "mapped", source.name
        bundle = json.loads(expected_file.read_text())
        theirs = [e["resource"] for e in bundle.get("entry", []) if "resource" in e]
        ours = result.resources
        their_patient_ids = {
            i.get("value") for r in theirs if r["resourceType"] == "Patient" for i in r.get("identifier", [])
        }
        our_patient_ids = {
            i.get("value") for r in ours if r["resourceType"] == "Patient" for i in r.get("identifier", [])
        }
        assert their_patient_ids - {None} <= our_patient_ids, source.name
        # Some of their outputs carry resources from segments this copy of the message does not have:
        # only codes that occur in the message are compared.
        text = source.read_bytes().decode("utf-8", "replace")
        for rtype in ("Observation", "Condition", "AllergyIntolerance"):
            theirs_in_message = {c for c in _codes(theirs, rtype, "code") if f"|{c}^" in text}
            assert theirs_in_message <= _codes(ours, rtype, "code"), (source.name, rtype)
        n_theirs = sum(r["resourceType"] == "Patient" for r in theirs)
        assert sum(r["resourceType"] == "Patient" for r in ours) >= min(n_theirs, 1), source.name
        compared += 1
    assert compared >= 10


@pytest.mark.parametrize("name", ["oru_r01_ex1.hl7", "oru_r01_ex2.hl7"])
def test_google_oru_without_obr_code_still_maps_its_results(shared_corpus: Path, name: str) -> None:
    state, result = _map(shared_corpus / "google-hdh" / name)
    assert state == "mapped"
    assert sum(r["resourceType"] == "Observation" for r in result.resources) >= 8
    assert any("DiagnosticReport" in w and "code missing" in w for w in result.warnings)
