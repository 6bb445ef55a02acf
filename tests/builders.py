"""Typed builders for synthetic HL7 v2 test messages (no real patient data anywhere)."""

from __future__ import annotations


def msh(
    control_id: str = "MSG0001",
    message_type: str = "ADT^A01^ADT_A01",
    facility: str = "RSUD_SEHAT",
    version: str = "2.5.1",
    accept_ack: str = "",
    app_ack: str = "",
) -> str:
    fields = [
        "MSH",
        "^~\\&",
        "SIMRS",
        facility,
        "HUB",
        "KEMKES",
        "20261101083000+0700",
        "",
        message_type,
        control_id,
        "P",
        version,
    ]
    if accept_ack or app_ack:
        fields += ["", "", accept_ack, app_ack]
    return "|".join(fields)


def adt(
    control_id: str = "MSG0001",
    trigger: str = "A01",
    mrn: str = "MRN0001",
    family: str = "Santoso",
    given: str = "Budi",
    visit: str = "V0001",
    facility: str = "RSUD_SEHAT",
    **kw: str,
) -> str:
    structure = {"A01": "ADT_A01", "A04": "ADT_A01", "A08": "ADT_A01", "A03": "ADT_A03"}.get(trigger, "")
    return (
        "\r".join(
            [
                msh(control_id, f"ADT^{trigger}^{structure}".rstrip("^"), facility, **kw),
                f"EVN|{trigger}|20261101083000+0700",
                f"PID|1||{mrn}^^^{facility}^MR||{family}^{given}||19800101|M",
                f"PV1|1|I|ICU^01^A||||||||||||||||{visit}^^^{facility}^VN",
            ]
        )
        + "\r"
    )


def oru(
    control_id: str = "LAB0001", mrn: str = "MRN0001", n_obx: int = 10, facility: str = "LAB_SEHAT"
) -> str:
    lines = [
        msh(control_id, "ORU^R01^ORU_R01", facility),
        f"PID|1||{mrn}^^^{facility}^MR||Wati^Sri||19900214|F",
        f"OBR|1|ORD{control_id}|FIL{control_id}|24323-8^Comprehensive metabolic panel^LN|||20261101070000+0700",
    ]
    for i in range(1, n_obx + 1):
        lines.append(f"OBX|{i}|NM|{2000 + i}-{i % 10}^Analyte {i}^LN||{i * 1.5:.1f}|mg/dL|1.0-99.0|N|||F")
    return "\r".join(lines) + "\r"
