"""HL7 v2 escape sequences (v2.5.1 ch. 2.7): ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\Xhh..\\ \\.br\\`` and friends.

Values are split on delimiters first and unescaped after: an escape never contains a delimiter, so the
order is what makes ``\\F\\`` inside a component come out as a literal ``|``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True, slots=True)
class Encoding:
    """The delimiters of one message, from MSH-1 and MSH-2."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str = ""  # v2.7+: the optional fifth MSH-2 character


DEFAULT_ENCODING = Encoding()


def unescape(value: str, enc: Encoding = DEFAULT_ENCODING) -> str:
    """Resolve escape sequences. ``\\.br\\`` becomes a line feed; highlighting and character-set switches
    (``\\H\\ \\N\\ \\C..\\ \\M..\\``) carry no text and are dropped; an unknown or unterminated escape is
    kept literally rather than losing data."""
    esc = enc.escape
    if not esc or esc not in value:
        return value
    out: list[str] = []
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if ch != esc:
            j = value.find(esc, i)
            if j < 0:
                out.append(value[i:])
                break
            out.append(value[i:j])
            i = j
            continue
        end = value.find(esc, i + 1)
        if end < 0:
            out.append(value[i:])
            break
        seq = value[i + 1 : end]
        rep = _resolve(seq, enc)
        if rep is None:
            out.append(value[i : end + 1])
        else:
            out.append(rep)
        i = end + 1
    return "".join(out)


def _resolve(seq: str, enc: Encoding) -> str | None:
    if seq == "F":
        return enc.field
    if seq == "S":
        return enc.component
    if seq == "T":
        return enc.subcomponent
    if seq == "R":
        return enc.repetition
    if seq == "E":
        return enc.escape
    if seq == "P" and enc.truncation:
        return enc.truncation
    if seq == ".br":
        return "\n"
    if seq in ("H", "N") or seq.startswith((".sp", ".in", ".ti", ".sk", ".ce", ".fi", ".nf")):
        return "\n" if seq.startswith(".sp") else ""
    if seq[:1] in ("C", "M") and len(seq) > 1 and all(c in "0123456789ABCDEFabcdef" for c in seq[1:]):
        return ""
    if seq[:1] == "X" and len(seq) > 1 and len(seq) % 2 == 1:
        try:
            return bytes.fromhex(seq[1:]).decode("utf-8")
        except ValueError:
            try:
                return bytes.fromhex(seq[1:]).decode("latin-1")
            except ValueError:
                return None
    return None


def escape(value: str, enc: Encoding = DEFAULT_ENCODING) -> str:
    """The inverse of :func:`unescape` for text the hub writes (ACK texts, ERR user messages)."""
    if not value:
        return value
    table = _escapes(enc)
    if not any(c in table for c in value):  # the common case: a control id, a plain text
        return value
    return "".join(table.get(c, c) for c in value)


@lru_cache(maxsize=32)
def _escapes(enc: Encoding) -> dict[str, str]:
    """What each character the delimiters of ``enc`` give a meaning to is written as."""
    table = {
        enc.escape: f"{enc.escape}E{enc.escape}",
        enc.field: f"{enc.escape}F{enc.escape}",
        enc.component: f"{enc.escape}S{enc.escape}",
        enc.subcomponent: f"{enc.escape}T{enc.escape}",
        enc.repetition: f"{enc.escape}R{enc.escape}",
        "\r": f"{enc.escape}.br{enc.escape}",
        "\n": f"{enc.escape}.br{enc.escape}",
    }
    if enc.truncation:
        table[enc.truncation] = f"{enc.escape}P{enc.escape}"
    return table
