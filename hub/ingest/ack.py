"""ACK messages per HL7 v2.5.1 (2.9, 2.14.1 MSA, 2.14.5 ERR).

The ACK swaps sender and receiver, answers with ``ACK^<trigger>^ACK`` in the sender's version and a new
control id, and carries MSA-1/MSA-2. When the code is not AA/CA it adds ERR with ERR-2 (location),
ERR-3 (HL7 table 0357) and ERR-4 (severity). MSH-15/16 (enhanced mode) turn AA/AE/AR into CA/CE/CR.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from hub.hl7 import DEFAULT_ENCODING, Encoding, Header, escape

# HL7 table 0357, message error condition codes.
ERROR_TEXT = {
    "0": "Message accepted",
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "206": "Application record locked",
    "207": "Application internal error",
}

_counter = itertools.count(1)
_prefix = f"{os.getpid() % 100000:05d}"


_stamp: tuple[int, str] = (-1, "")  # the last whole second and its MSH-7 text, shared by every ACK in it


def _timestamp(now: datetime | None) -> str:
    """MSH-7 of an ACK: ``now`` (or the present second) as YYYYMMDDHHMMSS+ZZZZ. ``strftime`` costs as
    much as the rest of the ACK, so the present second's text is made once."""
    global _stamp
    if now is not None:
        return now.strftime("%Y%m%d%H%M%S%z")
    second = int(time.time())
    cached = _stamp  # one read: another thread may replace it meanwhile, with a tuple as good
    if cached[0] != second:
        cached = _stamp = (second, datetime.fromtimestamp(second, UTC).strftime("%Y%m%d%H%M%S%z"))
    return cached[1]


def new_control_id() -> str:
    """A control id unique to this process and instant (MSH-10 is ST, 20 characters in v2.5.1)."""
    return f"{int(time.time() * 1000) % 10**10:010d}{_prefix}{next(_counter) % 100000:05d}"


@dataclass(frozen=True, slots=True)
class AckError:
    code: str  # HL7 table 0357
    text: str
    location: str = ""  # ERR-2, e.g. "MSH^1^10"
    severity: str = "E"  # ERR-4: E error, W warning, I information


def ack_code(base: str, header: Header | None) -> str:
    """Original mode AA/AE/AR, or enhanced-mode commit codes CA/CE/CR when MSH-15/16 are valued."""
    if header is not None and header.enhanced_mode:
        return {"AA": "CA", "AE": "CE", "AR": "CR"}[base]
    return base


def should_send(code: str, header: Header | None) -> bool:
    """MSH-15 accept acknowledgment type (table 0155): AL always, NE never, ER only on error, SU only
    on success. Original mode (MSH-15 empty) always answers."""
    if header is None or not header.accept_ack_type:
        return True
    kind = header.accept_ack_type
    ok = code in ("AA", "CA")
    if kind == "NE":
        return False
    if kind == "ER":
        return not ok
    if kind == "SU":
        return ok
    return True


def build_ack(
    header: Header | None,
    code: str,
    *,
    error: AckError | None = None,
    control_id: str = "",
    now: datetime | None = None,
) -> str:
    """The ER7 ACK (segments ended by CR). ``header`` is None when MSH could not be read; then the ACK
    uses the default delimiters and version 2.5.1, and MSA-2 echoes ``control_id`` if one was found."""
    enc = header.encoding if header is not None else DEFAULT_ENCODING
    fs, cs = enc.field, enc.component
    stamp = _timestamp(now)
    if header is not None:
        raw = header.msh_fields
        sending_app = raw[5] if len(raw) > 5 else ""
        sending_fac = raw[6] if len(raw) > 6 else ""
        receiving_app = raw[3] if len(raw) > 3 else ""
        receiving_fac = raw[4] if len(raw) > 4 else ""
        trigger = header.trigger_event
        processing = raw[11] if len(raw) > 11 else "P"
        version = raw[12] if len(raw) > 12 else "2.5.1"
        echoed = header.control_id
    else:
        sending_app, sending_fac, receiving_app, receiving_fac = "HUB", "", "", ""
        trigger, processing, version, echoed = "", "P", "2.5.1", control_id
    msg_type = f"ACK{cs}{trigger}{cs}ACK" if trigger else "ACK"
    encoding_chars = _encoding_chars(enc)
    msh = fs.join(
        [
            "MSH",
            encoding_chars,
            sending_app or "HUB",
            sending_fac,
            receiving_app,
            receiving_fac,
            stamp,
            "",
            msg_type,
            new_control_id(),
            processing or "P",
            version or "2.5.1",
        ]
    )
    text = error.text if error else ""
    msa = fs.join(["MSA", code, escape(echoed, enc)] + ([escape(text[:80], enc)] if text else []))
    segments = [msh, msa]
    if error is not None and code not in ("AA", "CA"):
        name = ERROR_TEXT.get(error.code, "")
        err3 = cs.join([error.code, escape(name, enc), "HL70357"])
        location = error.location.replace("^", cs)
        err = fs.join(["ERR", "", location, err3, error.severity, "", "", "", escape(text, enc)])
        segments.append(err)
    return "\r".join(segments) + "\r"


def _encoding_chars(enc: Encoding) -> str:
    return enc.component + enc.repetition + enc.escape + enc.subcomponent + enc.truncation
