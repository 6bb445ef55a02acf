"""Splitting files and HL7 batches (FHS/BHS … BTS/FTS, v2.5.1 2.10.3) into single messages."""

from __future__ import annotations

from collections.abc import Iterator

from hub.hl7._header import strip_bom

_ENVELOPE = (b"FHS", b"BHS", b"BTS", b"FTS")


def split_messages(data: bytes) -> Iterator[bytes]:
    """Yield each message of a file holding one or more messages, with or without batch envelopes, with
    any segment ending; each message comes out with CR segment ends. MLLP framing bytes are ignored."""
    data = strip_bom(data).replace(b"\x0b", b"").replace(b"\x1c", b"\r")
    current: list[bytes] = []
    for line in data.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r"):
        line = line.strip(b"\x00")
        if not line.strip():
            continue
        tag = line[:3]
        if tag in _ENVELOPE:
            if current:
                yield b"\r".join(current) + b"\r"
                current = []
            continue
        if tag == b"MSH" and current:
            yield b"\r".join(current) + b"\r"
            current = []
        current.append(line)
    if current:
        yield b"\r".join(current) + b"\r"
