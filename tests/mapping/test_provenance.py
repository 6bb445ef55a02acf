"""The Provenance of a message: EVN-4 event reason and EVN-5 operators (V2-to-FHIR IG EVN[Provenance])."""

from __future__ import annotations

from hub.fhir.validate import validate_resource
from tests.mapping._support import by_type, map_text
from tests.mapping.test_fallback import PID, PV1, message


def test_the_event_reason_and_operator_join_the_provenance() -> None:
    """V2-to-FHIR IG EVN[Provenance]: EVN-4 → reason (table 0062, "U" as data absent), EVN-5 → agent."""
    evn = "EVN|A08|20261102091500|||D123^Halim^Ahmad^^^dr.~D456^Lestari^Dewi|20261102090000+0700"
    text = message("ADT^A08^ADT_A01", evn.replace("|||D123", "||01|D123"), PID, PV1)
    result = map_text(text)
    (provenance,) = by_type(result, "Provenance")
    assert provenance["reason"] == [
        {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0062", "code": "01"}]}
    ]
    operators = [a for a in provenance["agent"] if a["type"]["coding"][0]["code"] == "enterer"]  # type: ignore[attr-defined, index]
    practitioners = {r["id"]: r for r in by_type(result, "Practitioner")}
    assert len(operators) == 2
    for agent in operators:
        assert agent["who"]["reference"].split("/")[1] in practitioners  # made, not only pointed at
    assert not [u for u in result.unmapped if u["segment"] == "EVN"]
    assert [p for r in result.resources for p in validate_resource(r)] == []
    unknown = map_text(message("ADT^A08^ADT_A01", "EVN|A08|20261102091500||U", PID, PV1))
    (provenance,) = by_type(unknown, "Provenance")
    assert provenance["reason"] == [
        {
            "extension": [
                {"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}
            ]
        }
    ]


def test_msh22_the_responsible_organization_is_a_second_author() -> None:
    """V2-to-FHIR IG MSH[Provenance-Source]: MSH-22 (XON) → agent[2], an Organization of type author,
    made with its identifier; the sending facility stays the first author."""
    text = message("ADT^A08^ADT_A01", "EVN|A08|20261102091500", PID, PV1)
    fields = text.split("\r", 1)[0].split("|")
    fields += [""] * (23 - len(fields))
    fields[21] = "Dinas Kesehatan Kota^^^^^KEMKES&2.16.840.1.113883.9.11&ISO^XX^^^DKK-01"
    result = map_text("|".join(fields) + "\r" + text.split("\r", 1)[1])
    (provenance,) = by_type(result, "Provenance")
    authors = [a for a in provenance["agent"] if a["type"]["coding"][0]["code"] == "author"]  # type: ignore[index]
    assert len(authors) == 2
    organizations = {r["id"]: r for r in by_type(result, "Organization")}
    made = organizations[authors[1]["who"]["reference"].split("/")[1]]  # type: ignore[index]
    assert made["name"] == "Dinas Kesehatan Kota"
    assert made["identifier"][0]["value"] == "DKK-01"
    assert not [u for u in result.unmapped if u["segment"] == "MSH" and u["field"] == 22]
    assert [p for r in result.resources for p in validate_resource(r)] == []
