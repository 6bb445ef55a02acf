"""NTE after an OBX, a TXA and an SCH (V2-to-FHIR IG NTE[Observation], NTE[DocumentReference],
NTE[Appointment-Comment]): the note's author and time, the coded comment, the appointment's notes as
the R5 Appointment.note extension. Synthetic messages only."""

from __future__ import annotations

import base64
from typing import Any

from hub.fhir.validate import validate_resource
from tests.builders import msh
from tests.mapping._support import by_type, map_text

R5_NOTE = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment.note"
PID = "PID|1||MRN0501^^^RSUD_SEHAT^MR||Rahma^Nur||19880808|F"


def _get(result: Any, ref: dict[str, Any]) -> dict[str, Any]:
    rtype, rid = ref["reference"].split("/")
    (found,) = [r for r in result.resources if r["resourceType"] == rtype and r["id"] == rid]
    return found


def test_observation_note_has_its_author_and_time() -> None:
    oru = "\r".join(
        [
            msh("NTE-1", "ORU^R01^ORU_R01"),
            PID,
            "OBR|1|ORD-N1|FIL-N1|2345-7^Glucose^LN|||20261101070000+0700",
            "OBX|1|NM|2345-7^Glucose^LN||250|mg/dL|||||F",
            "NTE|1|L|Diulang setelah~kalibrasi|RE^Remark^HL70364|D12^Hartati^Sri|20261101090000+0700",
            "NTE|2|L|Tanpa penulis",
        ]
    )
    result = map_text(oru)
    (obs,) = by_type(result, "Observation")
    first, second = obs["note"]
    assert first["text"] == "Diulang setelah\nkalibrasi"
    assert first["time"] == "2026-11-01T09:00:00+07:00"
    assert _get(result, first["authorReference"])["name"][0]["family"] == "Hartati"
    assert second == {"text": "Tanpa penulis"}
    assert all(validate_resource(r) == [] for r in result.resources)


def test_document_note_coded_comment_is_an_attachment() -> None:
    mdm = "\r".join(
        [
            msh("NTE-2", "MDM^T02^MDM_T02"),
            "EVN|T02|20261101083000",
            PID,
            "TXA|1|DS^Discharge summary|TX|20261105110000|12345^Wijaya^Siti^^^dr.|||||||DOC-N2^SIMRS|||||AU",
            "OBX|1|TX|DS^Discharge summary||Ringkasan pulang||||||F",
            "NTE|1||Catatan dokumen||||||FU^Follow up^L^^^^^^Kontrol 1 minggu",
        ]
    )
    result = map_text(mdm)
    (doc,) = by_type(result, "DocumentReference")
    texts = [
        base64.b64decode(c["attachment"]["data"]).decode()
        for c in doc["content"]
        if "data" in c["attachment"]
    ]
    assert "Catatan dokumen" in texts
    assert "Kontrol 1 minggu\nFU-Follow up-L" in texts
    assert all(validate_resource(r) == [] for r in result.resources)


def test_appointment_notes_are_r5_note_extensions_and_the_r4_comment() -> None:
    siu = "\r".join(
        [
            msh("NTE-3", "SIU^S12^SIU_S12"),
            "SCH|APT-N3^SIMRS|APT-N3-F^SIMRS|||||KONTROL^Kontrol^L|ROUTINE^Routine^HL70276|20|MIN"
            "|^^20^20261115100000^20261115102000|||||55501^Lestari^Dewi||||55501^Lestari^Dewi|||||Booked",
            "NTE|1|L|Bawa buku KIA|PI^Patient Instructions^HL70364|D12^Hartati^Sri|20261110080000+0700"
            "|||PUASA^Puasa 8 jam^L",
            PID,
        ]
    )
    result = map_text(siu)
    (appt,) = by_type(result, "Appointment")
    assert appt["comment"] == "Bawa buku KIA"
    (note,) = [e["valueAnnotation"] for e in appt["extension"] if e["url"] == R5_NOTE]
    assert note["text"] == "Bawa buku KIA"
    assert note["time"] == "2026-11-10T08:00:00+07:00"
    assert _get(result, note["authorReference"])["name"][0]["given"] == ["Sri"]
    (kind,) = note["extension"]
    assert kind["url"] == "http://hl7.org/fhir/StructureDefinition/annotationType"
    assert kind["valueCodeableConcept"]["coding"][0]["code"] == "PI"
    (coded,) = [
        e for e in appt["extension"] if e["url"] == "http://hl7.org/fhir/StructureDefinition/alternate-codes"
    ]
    assert coded["valueCodeableConcept"]["coding"][0]["code"] == "PUASA"
    assert all(validate_resource(r) == [] for r in result.resources)


AUT = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"


def _mdm(txa8: str, extra: str = "") -> str:
    fields = {
        1: "1",
        2: "DS^Discharge summary",
        3: "TX",
        4: "20261105110000",
        9: "12345^Wijaya^Siti^^^dr.",
        12: "DOC-P1^SIMRS",
        17: "AU",
        8: txa8,
        21: "Koreksi diagnosis",
        23: "777^Putra^Eko",
    }
    txa = "|".join(["TXA", *(fields.get(n, "") for n in range(1, 26))])
    return "\r".join(
        [
            msh("TXA-P1", "MDM^T08^MDM_T02"),
            "EVN|T08|20261105120000",
            PID,
            txa,
            "OBX|1|TX|DS||Ringkasan||||||F",
            extra,
        ]
    )


def test_txa_edit_is_a_provenance_of_the_document() -> None:
    result = map_text(_mdm("20261105113000+0700"))
    (doc,) = by_type(result, "DocumentReference")
    edits = [
        p
        for p in by_type(result, "Provenance")
        if p["target"] == [{"reference": f"DocumentReference/{doc['id']}"}]
    ]
    (edit,) = edits
    assert edit["recorded"] == "2026-11-05T11:30:00+07:00"
    assert edit["reason"] == [{"text": "Koreksi diagnosis"}]
    roles = {a["role"][0]["coding"][0]["code"]: _get(result, a["who"]) for a in edit["agent"]}
    assert all(a["role"][0]["coding"][0]["system"] == AUT for a in edit["agent"])
    assert roles["AUT"]["name"][0]["family"] == "Wijaya"
    assert roles["IRCP"]["name"][0]["family"] == "Putra"
    assert all("type" not in a for a in edit["agent"])  # not a FHIR writer: ownership stays the sender's
    # the message's own Provenance is still last and names the document
    message_provenance = result.resources[-1]
    assert message_provenance["resourceType"] == "Provenance" and message_provenance["id"] != edit["id"]
    assert all(validate_resource(r) == [] for r in result.resources)
    # a replay of the same edit is the same Provenance
    again = map_text(_mdm("20261105113000+0700").replace("TXA-P1", "TXA-P2"))
    assert edit["id"] in {p["id"] for p in by_type(again, "Provenance")}


def test_no_edit_time_no_edit_provenance() -> None:
    result = map_text(_mdm(""))
    assert len(by_type(result, "Provenance")) == 1  # the message's own
