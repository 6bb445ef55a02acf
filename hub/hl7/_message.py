"""The hot-path tokenizer: a message is split into segments eagerly and into fields, repetitions,
components and subcomponents only when asked. Values are unescaped after splitting.

Field numbering follows HL7: ``seg[1]`` is the first field after the segment name. In MSH, ``MSH-1`` is
the field separator itself and ``MSH-2`` the encoding characters, so MSH field numbers line up with the
standard too.
"""

from __future__ import annotations

from collections.abc import Iterator

from hub.hl7._escape import DEFAULT_ENCODING, Encoding, unescape

EXPLICIT_NULL = '""'  # HL7 "present but null": clears the receiver's value (v2.5.1 2.5.3)


def split_segments(text: str) -> list[str]:
    """Segment lines from text that may end them with CR, LF or CRLF; blank lines are skipped."""
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\n" in text:
        text = text.replace("\r\n", "\r").replace("\n", "\r")
    return [line for line in text.split("\r") if line and not line.isspace()]  # no copy of each line


class Segment:
    """One segment. ``fields`` holds raw (still escaped) field strings, index 0 being the name."""

    __slots__ = ("_fields", "enc", "line", "name")

    def __init__(self, line: str, enc: Encoding = DEFAULT_ENCODING) -> None:
        self.line = line
        self.name = line[:3]
        self.enc = enc
        self._fields: list[str] | None = None

    @property
    def fields(self) -> list[str]:
        if self._fields is None:
            parts = self.line.split(self.enc.field)
            if self.name == "MSH" or self.name in ("FHS", "BHS"):
                # MSH-1 is the separator itself; MSH-2 follows it unsplit.
                parts = [parts[0], self.enc.field, *parts[1:]]
            self._fields = parts
        return self._fields

    def __len__(self) -> int:
        return len(self.fields) - 1

    def raw(self, field: int) -> str:
        f = self.fields
        return f[field] if 0 < field < len(f) else ""

    def repetitions(self, field: int) -> list[str]:
        raw = self.raw(field)
        if not raw:
            return []
        if self.name == "MSH" and field in (1, 2):
            return [raw]
        return raw.split(self.enc.repetition)

    def get(self, field: int, component: int = 1, subcomponent: int = 1, repetition: int = 0) -> str:
        """The unescaped value at ``SEG-field[rep].component.subcomponent`` ("" when absent)."""
        raw = self.raw(field)
        if not raw:
            return ""
        if self.name == "MSH" and field in (1, 2):
            return raw
        return value_at(raw, self.enc, component, subcomponent, repetition)

    def is_null(self, field: int) -> bool:
        return self.raw(field) == EXPLICIT_NULL

    def __repr__(self) -> str:
        return f"Segment({self.line[:40]!r})"


def value_at(raw: str, enc: Encoding, component: int = 1, subcomponent: int = 1, repetition: int = 0) -> str:
    reps = raw.split(enc.repetition) if enc.repetition in raw else [raw]
    if repetition >= len(reps):
        return ""
    rep = reps[repetition]
    comps = rep.split(enc.component) if enc.component in rep else [rep]
    if component > len(comps) or component < 1:
        return ""
    comp = comps[component - 1]
    if enc.subcomponent and enc.subcomponent in comp:
        subs = comp.split(enc.subcomponent)
        if subcomponent > len(subs):
            return ""
        comp = subs[subcomponent - 1]
    elif subcomponent > 1:
        return ""
    return unescape(comp, enc)


class Message:
    """A tokenized message. Build one with :func:`parse`."""

    __slots__ = ("enc", "segments")

    def __init__(self, segments: list[Segment], enc: Encoding) -> None:
        self.segments = segments
        self.enc = enc

    def __iter__(self) -> Iterator[Segment]:
        return iter(self.segments)

    def first(self, name: str) -> Segment | None:
        for seg in self.segments:
            if seg.name == name:
                return seg
        return None

    def all(self, name: str) -> list[Segment]:
        return [s for s in self.segments if s.name == name]

    @property
    def msh(self) -> Segment:
        return self.segments[0]

    def get(self, path: str) -> str:
        """Value at an HL7 path such as ``PID-3.4`` or ``PID-3[1].1`` (first segment of that name)."""
        name, field, rep, comp, sub = parse_path(path)
        seg = self.first(name)
        return seg.get(field, comp, sub, rep) if seg else ""

    def encode(self) -> str:
        return "\r".join(s.line for s in self.segments) + "\r"


def parse_path(path: str) -> tuple[str, int, int, int, int]:
    """``PID-3[1].4.2`` → ("PID", 3, 1, 4, 2); repetition index is 0-based, others 1-based as in HL7."""
    name, _, rest = path.partition("-")
    rep = 0
    if "[" in rest:
        head, _, tail = rest.partition("[")
        idx, _, after = tail.partition("]")
        rep = int(idx)
        rest = head + after
    parts = rest.split(".") if rest else ["0"]
    field = int(parts[0])
    comp = int(parts[1]) if len(parts) > 1 else 1
    sub = int(parts[2]) if len(parts) > 2 else 1
    return name, field, rep, comp, sub


def parse(text: str) -> Message:
    """Tokenize an ER7 message (already decoded to text). The header must have been checked with
    :func:`hub.hl7.peek_header` first; this function does not validate."""
    lines = split_segments(text)
    enc = DEFAULT_ENCODING
    if lines and lines[0][:3] in ("MSH", "FHS", "BHS") and len(lines[0]) > 3:
        enc = encoding_from_msh(lines[0])
    return Message([Segment(line, enc) for line in lines], enc)


def encoding_from_msh(line: str) -> Encoding:
    sep = line[3]
    end = line.find(sep, 4)
    chars = line[4:end] if end >= 0 else line[4:]
    return Encoding(
        field=sep,
        component=chars[0] if len(chars) > 0 else "^",
        repetition=chars[1] if len(chars) > 1 else "~",
        escape=chars[2] if len(chars) > 2 else "",
        subcomponent=chars[3] if len(chars) > 3 else "",
        truncation=chars[4] if len(chars) > 4 else "",
    )
