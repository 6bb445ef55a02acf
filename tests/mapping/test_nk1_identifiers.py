"""NK1[RelatedPerson] identifiers (V2-to-FHIR IG): NK1-12 and NK1-33 as identifiers, NK1-37 typed SB."""

from __future__ import annotations

from tests.mapping._support import map_text

ADT = (
    "\r".join(
        [
            "MSH|^~\\&|SIMRS|RSUD_SEHAT|HUB|KEMKES|20261101083000+0700||ADT^A01^ADT_A01|NK1ID|P|2.5.1",
            "EVN|A01|20261101083000+0700",
            "PID|1||MRN0001^^^RSUD_SEHAT^MR||Santoso^Budi||19800101|M",
            "NK1|1|Santoso^Sari|SPO^Spouse^HL70063|||||||||EMP-77^^^RSUD_SEHAT"
            + "|" * 21
            + "KK-3171^^^DUKCAPIL"
            + "|" * 4
            + "S-9001",
            "PV1|1|I|ICU^01^A||||||||||||||||V0001^^^RSUD_SEHAT^VN",
        ]
    )
    + "\r"
)


def test_nk1_identifiers_reach_the_related_person() -> None:
    (person,) = [r for r in map_text(ADT).resources if r["resourceType"] == "RelatedPerson"]
    values = [i["value"] for i in person["identifier"]]
    assert values == ["EMP-77", "KK-3171", "S-9001"]
    assert person["identifier"][2]["type"]["coding"][0]["code"] == "SB"
