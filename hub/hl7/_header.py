"""Reading just enough of a message to store and acknowledge it: MSH, the charset and the patient key.

Intake calls :func:`peek_header` on the raw bytes before anything is stored; it raises
:class:`HeaderError` (with an HL7 table 0357 code and an ERR-2 location) when MSH cannot be read, and the
caller answers AR while still keeping the bytes.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from hub.hl7._escape import Encoding
from hub.hl7._message import encoding_from_msh, value_at

BOM = b"\xef\xbb\xbf"

# MSH-18 names (HL7 table 0211) to Python codecs. Unknown names fall back to UTF-8 with replacement.
_CHARSETS = {
    "": "utf-8",
    "ASCII": "ascii",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "UNICODE": "utf-8",
    "8859/1": "latin-1",
    "8859/2": "iso8859-2",
    "8859/5": "iso8859-5",
    "8859/7": "iso8859-7",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "ISO IR6": "ascii",
    "ISO IR100": "latin-1",
    "WINDOWS-1252": "cp1252",
}


class HeaderError(ValueError):
    """MSH cannot be read. ``code`` is from HL7 table 0357; ``location`` is ERR-2 (``MSH^1^10``)."""

    def __init__(self, text: str, code: str = "102", location: str = "MSH^1") -> None:
        super().__init__(text)
        self.text = text
        self.code = code
        self.location = location


@dataclass(frozen=True, slots=True)
class Header:
    encoding: Encoding
    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    timestamp: str
    message_code: str  # MSH-9.1
    trigger_event: str  # MSH-9.2
    message_structure: str  # MSH-9.3 as sent ("" when absent; see hub.hl7.structure_for)
    control_id: str
    processing_id: str
    version: str
    accept_ack_type: str  # MSH-15: AL NE ER SU, "" = original mode
    application_ack_type: str  # MSH-16
    charset: str  # MSH-18, first repetition
    codec: str
    msh_fields: tuple[str, ...]  # raw MSH fields, index = HL7 field number

    @property
    def message_type(self) -> str:
        return f"{self.message_code}^{self.trigger_event}" if self.trigger_event else self.message_code

    @property
    def enhanced_mode(self) -> bool:
        return bool(self.accept_ack_type or self.application_ack_type)


def strip_bom(raw: bytes) -> bytes:
    return raw[3:] if raw.startswith(BOM) else raw


def _first_line(raw: bytes) -> bytes:
    ends = [i for i in (raw.find(b"\r"), raw.find(b"\n")) if i >= 0]
    return raw[: min(ends)] if ends else raw


def peek_header(raw: bytes) -> Header:
    """Read MSH from raw message bytes (BOM, leading blank lines and any line ending allowed)."""
    data = strip_bom(raw).lstrip(b"\r\n\t ")
    if not data:
        raise HeaderError("empty message", code="100", location="MSH")
    line_b = _first_line(data)
    # The header itself is ASCII in every charset HL7 allows for MSH; latin-1 never fails to decode.
    line = line_b.decode("latin-1")
    if not line.startswith("MSH"):
        raise HeaderError("message does not start with an MSH segment", code="100", location="MSH")
    if len(line) < 8:
        raise HeaderError("MSH segment is truncated", code="102", location="MSH^1^2")
    sep = line[3]
    if sep.isalnum() or sep in " \r\n":
        raise HeaderError(f"MSH-1 field separator {sep!r} is not allowed", code="102", location="MSH^1^1")
    end = line.find(sep, 4)
    chars = line[4:end] if end >= 0 else ""
    if not 3 <= len(chars) <= 5:
        raise HeaderError(
            "MSH-2 encoding characters must be 4 (or 5) characters", code="102", location="MSH^1^2"
        )
    if len(set(chars + sep)) != len(chars) + 1 or any(c.isalnum() or c.isspace() for c in chars):
        raise HeaderError(
            "MSH-2 encoding characters repeat or are not delimiters", code="102", location="MSH^1^2"
        )
    if _CONTROL.search(line):
        raise HeaderError("MSH holds control characters (NUL or the like)", code="102", location="MSH^1")
    enc = encoding_from_msh(line)
    parts = line.split(sep)
    fields = ("MSH", sep, *parts[1:])  # index = HL7 field number

    def f(n: int, comp: int = 1) -> str:
        return value_at(fields[n], enc, comp) if n < len(fields) and n > 2 else ""

    control_id = f(10).strip()
    if not control_id:
        raise HeaderError("MSH-10 message control id is missing", code="101", location="MSH^1^10")
    code, trigger, structure = f(9, 1).strip(), f(9, 2).strip(), f(9, 3).strip()
    if not code:
        raise HeaderError("MSH-9 message type is missing", code="101", location="MSH^1^9")
    version = f(12).strip()
    if not version:
        raise HeaderError("MSH-12 version id is missing", code="101", location="MSH^1^12")
    charset_field = fields[18] if len(fields) > 18 else ""
    charset = charset_field.split(enc.repetition)[0].strip() if charset_field else ""
    codec = _CHARSETS.get(charset.upper(), "")
    if not codec:
        raise HeaderError(
            f"MSH-18 character set {charset!r} is not supported", code="103", location="MSH^1^18"
        )
    return Header(
        encoding=enc,
        sending_application=_hd(fields, 3, enc),
        sending_facility=_hd(fields, 4, enc),
        receiving_application=_hd(fields, 5, enc),
        receiving_facility=_hd(fields, 6, enc),
        timestamp=f(7),
        message_code=code,
        trigger_event=trigger,
        message_structure=structure,
        control_id=control_id,
        processing_id=f(11),
        version=version,
        accept_ack_type=f(15).strip().upper(),
        application_ack_type=f(16).strip().upper(),
        charset=charset,
        codec=codec,
        msh_fields=tuple(fields),
    )


def check_message(raw: bytes, header: Header, *, max_segments: int, max_delimiters: int) -> None:
    """What intake checks beyond MSH, without tokenizing: one message only (a second MSH inside the bytes
    would otherwise vanish into the first one's unmapped report: batches come as FHS/BHS files through
    ``hub import``), and at most ``max_segments`` segments and ``max_delimiters`` field, component,
    repetition and subcomponent separators, so no message can expand into millions of strings."""
    data = strip_bom(raw)
    marker = b"MSH" + header.encoding.field.encode("latin-1")
    position = 0
    while True:
        i = data.find(marker, position + 1)
        if i < 0:
            break
        if data[i - 1 : i] in (b"\r", b"\n"):
            before = data[:i]
            segment = (before.count(b"\r") or before.count(b"\n")) + 1
            raise HeaderError(
                f"a second message (MSH, segment {segment}) in one frame or body: send one message per frame"
                " or body, or the messages as an HL7 batch file (FHS/BHS)",
                code="100",
                location="MSH^2",
            )
        position = i
    if len(data) <= min(max_segments, max_delimiters):
        return  # each segment and each separator takes a byte at least: nothing to count
    segments = data.count(b"\r") or data.count(b"\n")
    if segments > max_segments:
        raise HeaderError(
            f"message of more than {max_segments} segments (the limit per message)",
            code="207",
            location="MSH",
        )
    enc = header.encoding
    delimiters = sum(
        data.count(c.encode("latin-1"))
        for c in (enc.field, enc.component, enc.repetition, enc.subcomponent)
        if c
    )
    if delimiters > max_delimiters:
        raise HeaderError(
            f"message of more than {max_delimiters} fields, components and repetitions (the limit per message)",
            code="207",
            location="MSH",
        )


def _hd(fields: tuple[str, ...], n: int, enc: Encoding) -> str:
    """An HD field as one key: its namespace id, else its universal id."""
    if n >= len(fields):
        return ""
    return (value_at(fields[n], enc, 1) or value_at(fields[n], enc, 2)).strip()


def decode(raw: bytes, header: Header) -> str:
    """The message as text, in the charset MSH-18 names (UTF-8 when absent). Undecodable bytes become
    U+FFFD rather than failing: the raw bytes are kept, so nothing is lost. The pipeline uses
    :func:`decode_checked`, which says so."""
    return strip_bom(raw).decode(header.codec, errors="replace")


# C0 controls other than TAB, LF and CR, and DEL: not allowed in a FHIR string (nor in a PostgreSQL text).
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CONTROL_BYTES = bytes([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])


def codec_for(charset: str) -> str | None:
    """The Python codec of an HL7 table 0211 name (``8859/1``) or of a Python codec name (``latin-1``,
    ``cp1252``); None when neither."""
    codec = _CHARSETS.get(charset.strip().upper())
    if codec:
        return codec
    try:
        return codecs.lookup(charset.strip()).name if charset.strip() else None
    except LookupError:
        return None


@dataclass(frozen=True, slots=True)
class Decoded:
    text: str
    codec: str  # the codec the text was decoded with
    warnings: tuple[tuple[str, str], ...]  # (code, text): invalid-encoding, control-characters


def decode_checked(raw: bytes, header: Header, fallback: str | None = None) -> Decoded:
    """The message as text, nothing replaced silently. Without MSH-18 a sender's ``fallback`` charset
    (``hub sender add --charset``) decodes bytes that are not UTF-8; bytes invalid in the charset in
    force become U+FFFD with an ``invalid-encoding`` warning; control characters (NUL and the others no
    FHIR string may hold) are removed with a ``control-characters`` warning. Warnings name the charset
    and count bytes, never the text."""
    data = strip_bom(raw)
    warnings: list[tuple[str, str]] = []
    codec = header.codec
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as exc:
        fb = codec_for(fallback) if fallback and not header.charset else None
        if fb is not None and fb != codec:
            codec = fb
            try:
                text = data.decode(fb)
            except UnicodeDecodeError as exc2:
                text = data.decode(fb, errors="replace")
                warnings.append(_invalid(fb, exc2.start))
        else:
            text = data.decode(codec, errors="replace")
            warnings.append(_invalid(codec, exc.start, named=bool(header.charset)))
    # Every charset of table 0211 the hub reads is ASCII-compatible: a control character is its byte.
    if len(data.translate(None, _CONTROL_BYTES)) != len(data) and _CONTROL.search(text):
        count = len(_CONTROL.findall(text))
        text = _CONTROL.sub("", text)
        warnings.append(("control-characters", f"{count} control character(s) (NUL and the like) removed"))
    return Decoded(text, codec, tuple(warnings))


def _invalid(codec: str, offset: int, named: bool = True) -> tuple[str, str]:
    where = "MSH-18" if named else "no MSH-18 and no sender charset: UTF-8"
    return (
        "invalid-encoding",
        f"bytes not valid {codec} ({where}) from byte {offset}; replaced by U+FFFD, raw bytes kept",
    )


def patient_key(text: str, enc: Encoding) -> str | None:
    """``PID-3`` first repetition as ``id^authority``: which messages must be applied in arrival order."""
    i = text.find("PID" + enc.field)
    while i > 0 and text[i - 1] not in "\r\n":
        i = text.find("PID" + enc.field, i + 1)
    if i < 0:
        return None
    end = len(text)
    for stop in ("\r", "\n"):
        j = text.find(stop, i)
        if 0 <= j < end:
            end = j
    parts = text[i:end].split(enc.field)
    if len(parts) < 4:
        return None
    raw = parts[3] or (parts[2] if len(parts) > 2 else "")
    ident = value_at(raw, enc, 1).strip()
    if not ident:
        return None
    authority = value_at(raw, enc, 4).strip()
    return _CONTROL.sub("", f"{ident}^{authority}")[:250]
