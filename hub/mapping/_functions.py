"""The closed registry of functions that mapping files may name: datatype converters, transforms,
conditions, id keys and MPI actions. Adding a function here is how the mapping language grows; the files
never embed code.

Datatype choices follow the HL7 V2-to-FHIR IG datatype maps (CX → Identifier, CWE → CodeableConcept,
XTN → ContactPoint, SN → Quantity/Range/Ratio, ED/RP → Attachment, …).
"""

from __future__ import annotations

import base64
import binascii
import html
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from hub.hl7 import EXPLICIT_NULL
from hub.mapping._engine import PARTICIPANT_TYPE, _sender, author_agent
from hub.mapping._ids import patient_id, resource_id
from hub.mapping._runtime import Choice as Choice
from hub.mapping._runtime import Runtime as Runtime
from hub.mapping._runtime import _translate, is_empty, parse_ref
from hub.mapping._runtime import key_id as key_id
from hub.mapping._time import TimeFormatError, to_date, to_datetime, to_instant

NIK_SYSTEM = "https://fhir.kemkes.go.id/id/nik"


# ---------------------------------------------------------------------------------------------------
# Datatype converters: (raw escaped value, nesting level, runtime, args) -> FHIR value or None.
# Level 0 is a field repetition (split on ^), 1 a component (split on &), 2 a subcomponent.

DatatypeFn = Callable[[str, int, "Runtime", dict[str, Any]], Any]
DATATYPES: dict[str, DatatypeFn] = {}


def _datatype(name: str) -> Callable[[DatatypeFn], DatatypeFn]:
    def deco(fn: DatatypeFn) -> DatatypeFn:
        DATATYPES[name] = fn
        return fn

    return deco


@_datatype("string")
def dt_string(raw: str, level: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """ST/ID/IS and friends: the first component, unescaped."""
    return rt.text(rt.parts(raw, level)[0]).strip() or None


@_datatype("text")
def dt_text(raw: str, level: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """FT/TX over every repetition: repetitions are lines; ``\\.br\\`` is unescaped after splitting."""
    if level != 0 or rt.enc.repetition not in raw:
        line = rt.text(raw)
        if "\n" not in line:  # one line: the same as below
            text = line.rstrip().strip("\n")
            return text if text.strip() else None
        lines = [line]
    else:
        lines = [rt.text(r) for r in raw.split(rt.enc.repetition)]
    # Trailing spaces are not significant in ST/TX/FT (v2.5.1 2A.3.70); leading ones are.
    text = "\n".join(part.rstrip() for line in lines for part in line.split("\n")).strip("\n")
    return text if text.strip() else None


@_datatype("date")
def dt_date(raw: str, level: int, rt: Runtime, args: dict[str, Any]) -> Any:
    value = rt.text(rt.parts(raw, level)[0]).strip()
    if not value:
        return None
    try:
        return to_date(value)
    except TimeFormatError as exc:
        rt.warn(str(exc))
        return None


@_datatype("dateTime")
def dt_datetime(raw: str, level: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """TS (whose first component is the DTM) or DTM → dateTime in the sender's zone when no offset."""
    value = rt.text(rt.parts(raw, level)[0]).strip()
    if not value:
        return None
    try:
        return to_datetime(value, rt.zone)
    except TimeFormatError as exc:
        rt.warn(str(exc))
        return None


@_datatype("instant")
def dt_instant(raw: str, level: int, rt: Runtime, args: dict[str, Any]) -> Any:
    value = rt.text(rt.parts(raw, level)[0]).strip()
    if not value:
        return None
    try:
        return to_instant(value, rt.zone)
    except TimeFormatError as exc:
        rt.warn(str(exc))
        return None


_DECIMAL = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")


def decimal(text: str) -> int | float | None:
    """An NM value as a JSON number (integers stay integers so ``5`` is not written ``5.0``)."""
    text = text.strip()
    # The shapes nearly every result has (``250``, ``13.5``) without the regular expression.
    if text.isdecimal():
        return int(text)
    head, dot, tail = text.partition(".")
    if dot and head.isdecimal() and tail.isdecimal():
        return float(text)
    if not _DECIMAL.match(text):
        return None
    if "." in text:
        if text.startswith("."):
            text = "0" + text
        elif text.startswith(("-.", "+.")):
            text = text[0] + "0" + text[1:]
        return float(text.rstrip("0").rstrip(".") or "0") if text.endswith(".") else float(text)
    return int(text)


@_datatype("decimal")
def dt_decimal(raw: str, level: int, rt: Runtime, args: dict[str, Any]) -> Any:
    return decimal(rt.text(rt.parts(raw, level)[0]))


@_datatype("integer")
def dt_integer(raw: str, level: int, rt: Runtime, args: dict[str, Any]) -> Any:
    value = decimal(rt.text(rt.parts(raw, level)[0]))
    # FHIR integer is 32-bit signed: a larger number is left out (the resource would be invalid)
    return int(value) if isinstance(value, int) and -(2**31) <= value < 2**31 else None


@_datatype("positiveInt")
def dt_positive_int(raw: str, level: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """A FHIR positiveInt (1 and up): anything else, 0 included, is left out."""
    value = dt_integer(raw, level, rt, args)
    return value if value is not None and value >= 1 else None


@_datatype("unsignedInt")
def dt_unsigned_int(raw: str, level: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """A FHIR unsignedInt (0 and up): a negative number is left out."""
    value = dt_integer(raw, level, rt, args)
    return value if value is not None and value >= 0 else None


MEMO_MAX = 20_000  # entries remembered per compiled maps before starting over
_OID = re.compile(r"^\d+(\.\d+)+$")
_HL7_TABLE = re.compile(r"^(HL7)?\d{4}$")


def coding_system(rt: Runtime, name: str) -> str | None:
    """A CWE coding system name (HL7 table 0396) as a FHIR system URI (remembered per maps and sender:
    a feed uses a handful of names)."""
    if not name:
        return None
    key = ("coding-system", name, rt.memo_key)
    memo = rt.maps.memo
    found = memo.get(key)
    if found is None:
        if len(memo) > MEMO_MAX:
            memo.clear()
        found = memo[key] = _coding_system(rt, name)
    return found


def _coding_system(rt: Runtime, name: str) -> str | None:
    found = rt.vocab("coding-systems").get(name)
    if isinstance(found, str):
        return found
    if _OID.match(name):
        return "urn:oid:" + name
    if name.startswith(("http://", "https://", "urn:")):
        return name
    if _HL7_TABLE.match(name):  # an HL7 table: v2-NNNN
        return "http://terminology.hl7.org/CodeSystem/v2-" + name[-4:]
    # L, 99zzz and other local names are the sender's own code systems.
    local = "".join(ch if ch.isalnum() or ch in "-._" else "_" for ch in rt.text(name))
    return f"urn:hub:codesystem:{rt.facility_key}:{local}"


def fhir_code(value: str) -> str:
    """A FHIR ``code`` has no leading, trailing or repeated whitespace (R4 2.24.0.1 code: [^\\s]+(\\s[^\\s]+)*)."""
    return " ".join(value.split())


def _coding(rt: Runtime, code: str, display: str, system: str) -> dict[str, Any] | None:
    code = fhir_code(code)
    if not code:
        return None
    coding: dict[str, Any] = {}
    sys_uri = coding_system(rt, system)
    if sys_uri:
        coding["system"] = sys_uri
    coding["code"] = code
    if display:
        coding["display"] = display
    return coding


@_datatype("CodeableConcept")
def dt_codeable_concept(raw: str, level: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """CWE/CE/CNE: identifier, text, coding system and the alternate triplet; CWE-9 original text.
    A feed sends the same few hundred codes over and over: the result is remembered per maps and sender
    (a pure function of the raw value) and each caller gets its own copy."""
    key = ("CWE", raw, level, args.get("default_system"), rt.memo_key)
    memo = rt.maps.memo
    found: dict[str, Any] | None = memo.get(key)
    if found is None:
        if len(memo) > MEMO_MAX:
            memo.clear()
        found = memo[key] = _codeable_concept(raw, level, rt, args) or {}
    if not found:
        return None
    coding = found.get("coding")
    if coding is None:
        return dict(found)
    out = dict(found)
    out["coding"] = [dict(c) for c in coding]
    return out


def _codeable_concept(raw: str, level: int, rt: Runtime, args: dict[str, Any]) -> Any:
    enc = rt.enc
    if level == 0:
        parts = raw.split(enc.component)
    elif level == 1 and enc.subcomponent:
        parts = raw.split(enc.subcomponent)
    else:
        parts = [raw]
    if enc.escape and enc.escape in raw:
        c = [rt.text(p).strip() for p in parts]
    else:
        c = [p.strip() for p in parts]
    if len(c) < 12:
        c += [""] * (12 - len(c))
    if c[0] and not c[2] and args.get("default_system"):
        c[2] = str(args["default_system"])
    # The identifier, the alternate (CWE-4..6) and the second alternate (CWE-10..12, v2.7+) triplets.
    triplets = ((c[0], c[1], c[2]), (c[3], c[4], c[5]), (c[9], c[10], c[11]))
    codings = [x for x in (_coding(rt, *t) for t in triplets) if x is not None]
    out: dict[str, Any] = {}
    if codings:
        out["coding"] = codings
    text = c[8] or ("" if codings else c[1] or c[0])
    if text:
        out["text"] = text
    return out or None


@_datatype("Coding")
def dt_coding(raw: str, level: int, rt: Runtime, args: dict[str, Any]) -> Any:
    c = rt.texts(raw, level)
    c += [""] * (3 - len(c))
    return _coding(rt, c[0], c[1], c[2])


@_datatype("code")
def dt_code(raw: str, level: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """The code of a CWE (or ID) alone, for elements typed ``code``."""
    return rt.text(rt.parts(raw, level)[0]).strip() or None


def hd_system(rt: Runtime, namespace: str, universal: str, universal_type: str) -> str | None:
    """HD → a system URI: a configured authority, an ISO OID, a URI, else a hub-local URN."""
    table = rt.vocab("identifier-authorities")
    for key in (namespace, universal):
        found = table.get(key) if key else None
        if isinstance(found, str):
            return found
    if universal:
        if universal_type.upper() == "ISO" or re.match(r"^\d+(\.\d+)+$", universal):
            return "urn:oid:" + universal
        if universal.startswith(("http://", "https://", "urn:")):
            return universal
    if namespace:
        return f"urn:hub:id:{rt.facility_key}:{namespace}"
    return None


@_datatype("HD")
def dt_hd(raw: str, level: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """HD as a system URI (CX-4, EI-2/3)."""
    c = rt.texts(raw, level)
    c += [""] * (3 - len(c))
    return hd_system(rt, c[0], c[1], c[2])


def cx_identifier(rt: Runtime, value: str, authority: str, universal: str, utype: str, id_type: str) -> Any:
    """CX → Identifier. The system comes from the assigning authority (CX-4) when one is configured,
    else from the identifier type (CX-5: ``NNIDN`` is the NIK, per the national profile), else from an
    OID/URI authority, else a hub-local system for that sender and authority."""
    if not value:
        return None
    # The system is a pure function of the authority and type (a feed has a handful): remembered.
    key = ("cx-system", authority, universal, utype, id_type, rt.memo_key)
    memo = rt.maps.memo
    system = memo.get(key)
    if system is None:
        if len(memo) > MEMO_MAX:
            memo.clear()
        system = memo[key] = _cx_system(rt, authority, universal, utype, id_type)
    out: dict[str, Any] = {}
    id_type = fhir_code(id_type)
    if id_type:
        out["type"] = {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": id_type}]
        }
    out["system"] = system
    out["value"] = value
    return out


def _cx_system(rt: Runtime, authority: str, universal: str, utype: str, id_type: str) -> str:
    system: str | None = None
    table = rt.vocab("identifier-authorities")
    for key in (authority, universal):
        found = table.get(key) if key else None
        if isinstance(found, str):
            system = found
            break
    if system is None and id_type:
        found = rt.vocab("identifier-types").get(id_type)
        if isinstance(found, str):
            system = found
    if system is None:
        system = hd_system(rt, authority, universal, utype) or f"urn:hub:id:{rt.facility_key}"
    return system


@_datatype("Identifier")
def dt_cx(raw: str, level: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """CX (value, check digit, scheme, authority HD, type) → Identifier."""
    parts = rt.parts(raw, level)
    parts += [""] * (5 - len(parts))
    authority = rt.texts(parts[3], level + 1)
    authority += [""] * (3 - len(authority))
    return cx_identifier(
        rt, rt.text(parts[0]).strip(), authority[0], authority[1], authority[2], rt.text(parts[4]).strip()
    )


@_datatype("EI")
def dt_ei(raw: str, level: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """EI (entity id, namespace, universal id, type) → Identifier."""
    c = rt.texts(raw, level)
    c += [""] * (4 - len(c))
    if not c[0]:
        return None
    out: dict[str, Any] = {}
    if args.get("type"):
        out["type"] = {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": args["type"]}]
        }
    # The system is a pure function of the HD (a feed has a handful): remembered like a CX's.
    key = ("ei-system", c[1], c[2], c[3], rt.memo_key)
    memo = rt.maps.memo
    system = memo.get(key)
    if system is None:
        if len(memo) > MEMO_MAX:
            memo.clear()
        system = memo[key] = hd_system(rt, c[1], c[2], c[3]) or f"urn:hub:id:{rt.facility_key}"
    out["system"] = system
    out["value"] = c[0]
    return out


_TELECOM_SYSTEM = {
    "PH": "phone",
    "CP": "phone",
    "FX": "fax",
    "BP": "pager",
    "INTERNET": "email",
    "X.400": "email",
}
_TELECOM_USE = {
    "PRN": "home",
    "ORN": "home",
    "VHN": "home",
    "WPN": "work",
    "EMR": "home",
    "NET": "home",
    "PRS": "mobile",
}


@_datatype("ContactPoint")
def dt_xtn(raw: str, level: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """XTN → ContactPoint: XTN-1 (v2.3 formatted number), else XTN-4 email, else XTN-5..8 parts;
    XTN-2 use (table 0201) and XTN-3 equipment (table 0202); ``args.default_use`` when XTN-2 is empty."""
    c = rt.texts(raw, level)
    c += [""] * (12 - len(c))
    use_code, equipment = c[1].upper(), c[2].upper()
    system = _TELECOM_SYSTEM.get(equipment)
    value = c[11] or ""
    if equipment in ("INTERNET", "X.400") or use_code == "NET":
        value, system = c[3] or c[0], "email"
    if not value:
        value = c[0]
    if not value and (c[5] or c[6]):
        value = "".join(
            (f"+{c[4]} " if c[4] else "", f"({c[5]}) " if c[5] else "", c[6], f" ext. {c[7]}" if c[7] else "")
        ).strip()
    if not value:
        return None
    out: dict[str, Any] = {"system": system or ("email" if "@" in value else "phone"), "value": value}
    use = "mobile" if equipment == "CP" else _TELECOM_USE.get(use_code)
    if not use and not use_code:
        use = args.get("default_use")  # PID-13 home (V2-to-FHIR IG: when XTN-2 is not valued)
    if use:
        out["use"] = use
    return out


def _attachment_content_type(rt: Runtime, type_of_data: str, subtype: str) -> str | None:
    """ED-2/ED-3 (or RP-3/RP-4) → a MIME type: table 0191 type over the 0291 subtype."""
    sub = subtype.strip()
    if "/" in sub:
        return sub.lower()
    found = rt.vocab("mime-types").get(sub) or rt.vocab("mime-types").get(type_of_data)
    return found if isinstance(found, str) else None


@_datatype("Attachment")
def dt_ed(raw: str, level: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """ED → Attachment: ED-4 encoding (Base64 kept, Hex converted, A(SCII) encoded) and ED-5 data."""
    c = rt.parts(raw, level)
    c += [""] * (5 - len(c))
    data = rt.text(c[4]).strip()
    if not data:
        return None
    encoding = rt.text(c[3]).strip().upper()
    if encoding == "BASE64":
        payload = "".join(data.split())
        try:
            base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            rt.warn("ED-5 says Base64 but is not valid Base64; the data is left out")
            ctype = _attachment_content_type(rt, rt.text(c[1]), rt.text(c[2]))
            return {"contentType": ctype or "application/octet-stream"}
    elif encoding == "HEX":
        try:
            payload = base64.b64encode(binascii.unhexlify("".join(data.split()))).decode("ascii")
        except (binascii.Error, ValueError):
            rt.warn("ED-5 hex data is not valid hex; kept as text")
            payload = base64.b64encode(data.encode()).decode("ascii")
    else:
        payload = base64.b64encode(data.encode()).decode("ascii")
    out: dict[str, Any] = {}
    ctype = _attachment_content_type(rt, rt.text(c[1]), rt.text(c[2]))
    if ctype:
        out["contentType"] = ctype
    out["data"] = payload
    return out


@_datatype("AttachmentReference")
def dt_rp(raw: str, level: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """RP → Attachment.url: RP-1 pointer, qualified by the RP-2 application's universal id when it is a
    URI base."""
    c = rt.parts(raw, level)
    c += [""] * (4 - len(c))
    pointer = rt.text(c[0]).strip()
    if not pointer:
        return None
    app = [rt.text(p) for p in rt.parts(c[1], level + 1)] + ["", ""]
    base = app[1].strip()
    url = pointer
    if base.startswith(("http://", "https://")) and not pointer.startswith(("http://", "https://")):
        url = base.rstrip("/") + "/" + pointer.lstrip("/")
    out: dict[str, Any] = {}
    ctype = _attachment_content_type(rt, rt.text(c[2]), rt.text(c[3]))
    if ctype:
        out["contentType"] = ctype
    out["url"] = url
    return out


_SN_COMPARATORS = {"<", "<=", ">", ">="}


@_datatype("SN")
def dt_sn(raw: str, level: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """SN → Quantity (with comparator), Range (``-``, ``+`` separators) or Ratio (``:``, ``/``)."""
    c = rt.texts(raw, level)
    c += [""] * (4 - len(c))
    comparator, num1, sep, num2 = c[:4]  # SN has four components; a sender's extra ones are ignored
    n1, n2 = decimal(num1), decimal(num2)
    if sep in (":", "/") and n1 is not None and n2 is not None:
        return Choice("Ratio", {"numerator": {"value": n1}, "denominator": {"value": n2}})
    if sep in ("-", "+") and (n1 is not None or n2 is not None):
        rng: dict[str, Any] = {}
        if n1 is not None:
            rng["low"] = {"value": n1}
        if n2 is not None:
            rng["high"] = {"value": n2}
        return Choice("Range", rng)
    if n1 is None:
        return None
    q: dict[str, Any] = {"value": n1}
    if comparator in _SN_COMPARATORS:
        q["comparator"] = comparator
    elif comparator == "=" or not comparator:
        pass
    elif comparator == "<>":
        rt.warn("SN comparator <> has no FHIR Quantity.comparator; kept as the bare value")
    return Choice("Quantity", q)


@_datatype("NR")
def dt_nr(raw: str, level: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """NR (low, high) → Range."""
    c = [decimal(rt.text(p)) for p in rt.parts(raw, level)] + [None, None]
    out: dict[str, Any] = {}
    if c[0] is not None:
        out["low"] = {"value": c[0]}
    if c[1] is not None:
        out["high"] = {"value": c[1]}
    return out or None


def quantity(rt: Runtime, value: Any, units_raw: str, level: int) -> dict[str, Any]:
    """A Quantity whose units are a CWE: UCUM codes get the UCUM system (V2-to-FHIR IG CWE[Quantity])."""
    q: dict[str, Any] = {"value": value}
    if units_raw:
        # Units are a code: remembered per maps (a pure function of the raw units).
        key = ("units", units_raw, level, rt.memo_key)
        memo = rt.maps.memo
        elements = memo.get(key)
        if elements is None:
            if len(memo) > MEMO_MAX:
                memo.clear()
            elements = memo[key] = _unit_elements(rt, units_raw, level)
        q.update(elements)
    return q


def _unit_elements(rt: Runtime, units_raw: str, level: int) -> tuple[tuple[str, str], ...]:
    u = [*rt.texts(units_raw, level), "", "", ""]
    out: list[tuple[str, str]] = []
    unit = u[1] or u[0]
    if unit:
        out.append(("unit", unit))
    # Only units the sender declares UCUM get the UCUM system; others stay display text.
    if u[0] and u[2].upper() in ("UCUM", "ANS+", "ISO+"):
        out.append(("system", "http://unitsofmeasure.org"))
        out.append(("code", u[0]))
    return tuple(out)


@_datatype("CQ")
def dt_cq(raw: str, level: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """CQ (quantity, units CWE) → Quantity."""
    c = rt.parts(raw, level)
    c += [""] * (2 - len(c))
    value = decimal(rt.text(c[0]))
    if value is None:
        return None
    return quantity(rt, value, c[1], level + 1)


@_datatype("identifier_at")
def dt_identifier_at(raw: str, level: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """An identifier spread over components of a larger datatype (XCN-1/XCN-9/XCN-13, XON-10/XON-6/
    XON-7): ``args`` names the component numbers of the value, the authority and the type."""
    parts = rt.parts(raw, level)

    def comp(n: int | None) -> str:
        return parts[n - 1] if n and n <= len(parts) else ""

    value = rt.text(rt.parts(comp(args.get("value")), level + 1)[0]).strip()
    if not value and args.get("fallback_value"):
        value = rt.text(rt.parts(comp(args["fallback_value"]), level + 1)[0]).strip()
    auth = [*rt.texts(comp(args.get("authority")), level + 1), "", "", ""]
    id_type = rt.text(rt.parts(comp(args.get("type")), level + 1)[0]).strip()
    return cx_identifier(rt, value, auth[0], auth[1], auth[2], id_type)


@_datatype("joined")
def dt_joined(raw: str, level: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """Components (``args.components``) joined by ``args.separator`` (PL → a Location name)."""
    parts = rt.parts(raw, level)
    picked = []
    for n in args.get("components", []):
        if n <= len(parts):
            text = rt.text(rt.parts(parts[n - 1], level + 1)[0]).strip()
            if text:
                picked.append(text)
    return str(args.get("separator", " ")).join(picked) or None


# ---------------------------------------------------------------------------------------------------
# Transforms: applied to a converted value (after the datatype and vocabulary): (value, rt, args) -> value.

TransformFn = Callable[[Any, "Runtime", dict[str, Any]], Any]
TRANSFORMS: dict[str, TransformFn] = {}


def _transform(name: str) -> Callable[[TransformFn], TransformFn]:
    def deco(fn: TransformFn) -> TransformFn:
        TRANSFORMS[name] = fn
        return fn

    return deco


@_transform("codeable_concept")
def tf_codeable(value: Any, rt: Runtime, args: dict[str, Any]) -> Any:
    """Wrap a code (or a coding) as a CodeableConcept of ``args.system``."""
    if isinstance(value, dict) and "coding" in value:
        return value
    if isinstance(value, dict):
        return {"coding": [value]}
    code = fhir_code(str(value))
    coding = {"code": code} if not args.get("system") else {"system": args["system"], "code": code}
    return {"coding": [coding]}


@_transform("concept_text")
def tf_concept_text(value: Any, rt: Runtime, args: dict[str, Any]) -> Any:
    """A free-text value as a CodeableConcept with only text."""
    return value if isinstance(value, dict) else {"text": str(value)}


@_transform("constant")
def tf_constant(value: Any, rt: Runtime, args: dict[str, Any]) -> Any:
    """``args.value`` whenever the source is present (e.g. PV1-45 present → status finished)."""
    return args.get("value")


@_transform("identifier")
def tf_identifier(value: Any, rt: Runtime, args: dict[str, Any]) -> Any:
    """A bare id (e.g. a Z-segment's NIK) as an Identifier of ``args.system`` (optional) and ``args.type``."""
    out: dict[str, Any] = {}
    if args.get("type"):
        out["type"] = {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": args["type"]}]
        }
    if args.get("system"):
        out["system"] = args["system"]
    out["value"] = str(value)
    return out


@_transform("as_list")
def tf_as_list(value: Any, rt: Runtime, args: dict[str, Any]) -> Any:
    return [value]


@_transform("boolean_yn")
def tf_boolean(value: Any, rt: Runtime, args: dict[str, Any]) -> Any:
    """HL7 table 0136 Y/N → boolean."""
    text = str(value).strip().upper()
    return True if text in ("Y", "YES", "1", "T") else False if text in ("N", "NO", "0", "F") else None


@_transform("deceased_datetime")
def tf_deceased(value: Any, rt: Runtime, args: dict[str, Any]) -> Any:
    return Choice("DateTime", value)


@_transform("choice")
def tf_choice(value: Any, rt: Runtime, args: dict[str, Any]) -> Any:
    """Mark a value for a choice element with the FHIR type in ``args.type``."""
    return Choice(str(args["type"]), value)


@_transform("annotation")
def tf_annotation(value: Any, rt: Runtime, args: dict[str, Any]) -> Any:
    return {"text": str(value)}


@_transform("narrative")
def tf_narrative(value: Any, rt: Runtime, args: dict[str, Any]) -> Any:
    """A free-text description (PV2-12 visit description) as the resource's narrative (``text``), the
    text escaped into the XHTML div FHIR requires; status additional (it is not generated from the
    resource's elements)."""
    text = str(value).strip()
    if not text:
        return None
    return {
        "status": "additional",
        "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{html.escape(text)}</div>',
    }


@_transform("period_start")
def tf_period_start(value: Any, rt: Runtime, args: dict[str, Any]) -> Any:
    return {"start": value}


@_transform("period_end")
def tf_period_end(value: Any, rt: Runtime, args: dict[str, Any]) -> Any:
    return {"end": value}


@_transform("quantity")
def tf_quantity(value: Any, rt: Runtime, args: dict[str, Any]) -> Any:
    """A bare number as a Quantity, with an optional UCUM ``args.unit``."""
    if not isinstance(value, int | float):
        return None
    q: dict[str, Any] = {"value": value}
    if args.get("unit"):
        q.update(unit=args["unit"], system="http://unitsofmeasure.org", code=args["unit"])
    return q


# ---------------------------------------------------------------------------------------------------
# Multi-input functions (``paths:``): (raw field values, segment index, rt, args) -> value.

SegmentFn = Callable[[list[str], int, "Runtime", dict[str, Any]], Any]
SEGMENT_FUNCTIONS: dict[str, SegmentFn] = {}


def _segment_fn(name: str) -> Callable[[SegmentFn], SegmentFn]:
    def deco(fn: SegmentFn) -> SegmentFn:
        SEGMENT_FUNCTIONS[name] = fn
        return fn

    return deco


_OBX_TYPES = {
    "NM": "decimal",
    "SN": "SN",
    "ST": "string",
    "TX": "text",
    "FT": "text",
    "CE": "CodeableConcept",
    "CWE": "CodeableConcept",
    "CNE": "CodeableConcept",
    "CF": "CodeableConcept",
    "TS": "dateTime",
    "DTM": "dateTime",
    "DT": "date",
    "TM": "string",
    "ED": "Attachment",
    "RP": "AttachmentReference",
    "NR": "NR",
    "CQ": "CQ",
    "ID": "string",
    "IS": "IS",
    "VR": "VR",
}
_CHOICE_TYPE = {
    "decimal": "Quantity",
    "string": "String",
    "text": "String",
    "CodeableConcept": "CodeableConcept",
    "dateTime": "DateTime",
    "date": "DateTime",
    "Attachment": "Attachment",
    "AttachmentReference": "Attachment",
    "NR": "Range",
    "CQ": "Quantity",
}


@_segment_fn("observation_value")
def fn_observation_value(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """OBX-5 as value[x] by OBX-2 (V2-to-FHIR IG OBX[Observation]): NM with OBX-6 units → Quantity,
    SN → Quantity/Range/Ratio, CWE → CodeableConcept, TX/FT/ST → string (repetitions are lines), TS →
    dateTime. ED/RP have no value[x] in R4: :func:`fn_observation_attachment` keeps them."""
    vtype, value, units = raws if len(raws) == 3 else ([*raws, "", "", ""])[:3]
    if not value:
        return None
    kind = _OBX_TYPES.get(vtype)  # the type as senders write it: no escapes, spaces or lower case
    if kind is None:
        vtype = rt.text(vtype).strip().upper()
        kind = _OBX_TYPES.get(vtype, "string" if vtype else "text")
    if kind in ("text", "string"):  # TM too
        text = dt_text(value, 0, rt, {})
        return Choice("String", text) if text else None
    rep = rt.enc.repetition
    if rep in value and kind not in ("Attachment", "AttachmentReference") and _repeats(value, rep) > 1:
        return None  # several values: each is a component (observation_components, IG Observation-Component)
    if kind == "IS":  # a user-defined table's code (IG: IS[CodeableConcept])
        code = rt.text(_first_rep(rt, value).split(rt.enc.component, 1)[0]).strip()
        return Choice("CodeableConcept", {"coding": [{"code": code}]}) if code else None
    if kind == "VR":  # a value range, low ^ high (IG: valueString OBX-5.1 + "-" + OBX-5.2)
        bounds = [rt.text(part).strip() for part in [*_first_rep(rt, value).split(rt.enc.component), ""][:2]]
        text = "-".join(bounds) if bounds[1] else bounds[0]
        return Choice("String", text) if text else None
    if kind == "decimal":
        number = decimal(rt.text(value.split(rep, 1)[0] if rep in value else value))
        if number is None:
            text = rt.text(value).strip()
            return Choice("String", text) if text else None
        return Choice("Quantity", quantity(rt, number, units.split(rep, 1)[0] if rep in units else units, 0))
    first = value.split(rep, 1)[0] if rep in value else value
    if kind == "SN":
        sn = dt_sn(first, 0, rt, {})
        if isinstance(sn, Choice) and sn.type == "Quantity" and units:
            q = quantity(rt, sn.value["value"], units.split(rep, 1)[0] if rep in units else units, 0)
            if "comparator" in sn.value:
                q = {
                    "value": q["value"],
                    "comparator": sn.value["comparator"],
                    **{k: v for k, v in q.items() if k != "value"},
                }
            return Choice("Quantity", q)
        return sn
    if kind in ("Attachment", "AttachmentReference"):
        return None  # R4 has no Observation.valueAttachment: see observation_attachment
    converted = DATATYPES[kind](first, 0, rt, {})
    if converted is None:
        return None
    if isinstance(converted, Choice):
        return converted
    return Choice(_CHOICE_TYPE[kind], converted)


@_segment_fn("observation_attachment")
def fn_observation_attachment(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """OBX-5 of type ED/RP (a PDF report, an image link): R4 Observation has no valueAttachment, so the
    attachment becomes a DocumentReference of the patient, and the Observation is derived from it."""
    if raws and len(raws[0]) < 4 and raws[0].strip().upper() not in ("ED", "RP"):
        return None  # most OBX: no escape fits in a 2-letter type, so this is the answer below
    vtype, value, code = ([*raws, "", "", ""])[:3]
    vtype = rt.text(vtype).strip().upper()
    if vtype not in ("ED", "RP") or not value or value == '""':
        return None
    first = value.split(rt.enc.repetition)[0]
    attachment = dt_ed(first, 0, rt, {}) if vtype == "ED" else dt_rp(first, 0, rt, {})
    if not attachment:
        return None
    doc: dict[str, Any] = {"resourceType": "DocumentReference", "id": ""}
    doc["status"] = "current"
    concept = dt_codeable_concept(code, 0, rt, {}) if code else None
    if concept:
        doc["type"] = concept
    patient = rt.patient_key_at(index)
    if patient[0]:
        doc["subject"] = {"reference": f"Patient/{rt.patient_id_at(index)}"}
    doc["content"] = [{"attachment": attachment}]
    doc["id"] = resource_id("DocumentReference", rt.ctx.facility, "OBX", *rt.observation_key(index))
    rt.add_extra(doc)
    return {"reference": f"DocumentReference/{doc['id']}"}


@_segment_fn("quantity_with_units")
def fn_quantity(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """A number field and its units field (RXA-6/RXA-7, RXE-3/RXE-5) → Quantity."""
    value, units = ([*raws, "", ""])[:2]
    number = decimal(rt.text(value.split(rt.enc.repetition)[0].split(rt.enc.component)[0]))
    if number is None:
        return None
    return quantity(rt, number, units.split(rt.enc.repetition)[0], 0)


@_segment_fn("timing_period")
def fn_timing_period(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """A start and an end TS → Period."""
    out: dict[str, Any] = {}
    for key, raw in zip(("start", "end"), raws, strict=False):
        value = dt_datetime(raw, 0, rt, {}) if raw else None
        if value:
            out[key] = value
    return out or None


@_segment_fn("first_datetime")
def fn_first_datetime(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """The first of several TS fields that is present, as dateTime (``args.instant``: as instant)."""
    convert = dt_instant if args.get("instant") else dt_datetime
    for raw in raws:
        value = convert(raw, 0, rt, {}) if raw and raw != '""' else None
        if value:
            return value
    return None


_LOINC_SYSTEMS = frozenset(("LN", "LOINC", "HTTP://LOINC.ORG", "2.16.840.1.113883.6.1"))
_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"


def _category_code(
    rt: Runtime, args: dict[str, Any], codes: list[tuple[str, str]], section: str, message: str
) -> str:
    """The category code for a result: a LOINC code of ``by_code`` (vital signs, social history,
    surveys), else the diagnostic service section (OBR-24, table 0074) through ``by_section``, else the
    message type's default (``by_message``: a lab result message's results are laboratory results)."""
    by_code = args.get("by_code")
    if by_code:
        vocab = rt.vocab(by_code)
        for code, system in codes:
            if code and (not system or rt.text(system).strip().upper() in _LOINC_SYSTEMS):
                found = vocab.lookup(rt.text(code).strip())
                if found:
                    return str(found)
    by_section = args.get("by_section")
    if section and by_section:
        found = rt.vocab(by_section).lookup(rt.text(section.split(rt.enc.component, 1)[0]).strip())
        if found:
            return str(found)
        return ""  # a section the table does not place: no guess from the message type
    return str((args.get("by_message") or {}).get(rt.text(message).strip().upper(), ""))


@_segment_fn("observation_category")
def fn_observation_category(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """Observation.category from what the message says: the inputs are OBX-3 (its code and alternate
    code with their systems), OBR-24 and MSH-9; see :func:`_category_code` for the order in which they
    decide."""
    identifier, section, message = ([*raws, "", "", ""])[:3]
    comp = rt.enc.component
    parts = [*identifier.split(comp), "", "", "", "", "", ""]
    codes = [(parts[0], parts[2]), (parts[3], parts[5])]
    code = _category_code(rt, args, codes, section, message.split(comp, 1)[0])
    if not code:
        return None
    display = {
        "laboratory": "Laboratory",
        "vital-signs": "Vital Signs",
        "imaging": "Imaging",
        "social-history": "Social History",
        "survey": "Survey",
        "exam": "Exam",
        "procedure": "Procedure",
        "therapy": "Therapy",
        "activity": "Activity",
    }.get(code, code)
    return {"coding": [{"system": _CATEGORY_SYSTEM, "code": code, "display": display}]}


@_segment_fn("report_category")
def fn_report_category(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """DiagnosticReport.category when OBR-24 is empty: the message type's default section (``by_message``,
    a v2 table 0074 code such as LAB for a lab result message)."""
    section, message = ([*raws, "", ""])[:2]
    if section:
        return None  # OBR-24 itself is mapped
    code = (args.get("by_message") or {}).get(rt.text(message.split(rt.enc.component, 1)[0]).strip().upper())
    if not code:
        return None
    return {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": code}]}


@_segment_fn("document_content")
def fn_document_content(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """MDM OBX-2/OBX-5 → Attachment: ED as it is; TX/FT/ST text base64-encoded as text/plain.
    Multiple OBX of a document are joined by the engine's ``join_text`` handling."""
    vtype, value = ([*raws, "", ""])[:2]
    vtype = rt.text(vtype).strip().upper()
    if not value:
        return None
    if vtype == "ED":
        return dt_ed(value.split(rt.enc.repetition)[0], 0, rt, {})
    if vtype == "RP":
        return dt_rp(value.split(rt.enc.repetition)[0], 0, rt, {})
    text = dt_text(value, 0, rt, {})
    if not text:
        return None
    return {"contentType": "text/plain", "data": base64.b64encode(text.encode()).decode("ascii")}


@_segment_fn("patient_contact")
def fn_patient_contact(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """NK1 → Patient.contact (V2-to-FHIR IG NK1[Patient]): name NK1-2, relationship NK1-3 and NK1-7,
    address NK1-4, telecom NK1-5/NK1-6 (work), then (inputs 7 on, all optional) period NK1-8/NK1-9,
    organization NK1-13 (XON → Organization) with its contact person NK1-30/NK1-31/NK1-32 as the
    Organization's contact, gender NK1-15, telecom NK1-40/NK1-41."""
    name, relationship, address, phone, business, role = (raws + [""] * 6)[:6]
    start, end, org, sex, person, person_phone, person_address, nk_telecom, person_telecom = (
        [_unless_null(r) for r in raws[6:]] + [""] * 9
    )[:9]
    conv = rt.maps.converters
    out: dict[str, Any] = {}
    rels = [
        c
        for c in (
            conv["CWE"](r, 0, rt, {}) if r and r != '""' else None
            for r in (relationship.split(rt.enc.repetition)[0], role.split(rt.enc.repetition)[0])
        )
        if c
    ]
    if rels and relationship and relationship != '""':
        # NK1-3 through the IG's Relationship map (vocab relationship), as for the RelatedPerson.
        rels[0] = _translate(rt, "relationship", rels[0], _NK1_3)
    if rels:
        out["relationship"] = rels
    if name and name != '""':
        human = conv["XPN"](name.split(rt.enc.repetition)[0], 0, rt, {})
        if human:
            out["name"] = human
    telecom = [
        {**t, "use": "work"} if k == 1 and "use" not in t else t  # NK1-6: the business number
        for k, raw in enumerate((phone, business, nk_telecom, person_telecom))
        for rep in (raw.split(rt.enc.repetition) if raw and raw != '""' else [])
        if (t := dt_xtn(rep, 0, rt, {}))
    ]
    if telecom:
        out["telecom"] = telecom
    if address and address != '""':
        addr = conv["XAD"](address.split(rt.enc.repetition)[0], 0, rt, {})
        if addr:
            out["address"] = addr
    if sex:
        code = rt.text(_component(rt, _first_rep(rt, sex), 1)).strip()
        gender = rt.vocab("administrative-gender").get(code) if code else None
        if isinstance(gender, str):
            out["gender"] = gender
    organization = _contact_organization(rt, org, person, person_phone, person_address)
    if organization:
        out["organization"] = organization
    period = {
        k: when
        for k, raw in (("start", start), ("end", end))
        if raw and (when := dt_date(_first_rep(rt, raw), 0, rt, {}))
    }
    if period:
        out["period"] = period
    return out if (out.keys() - {"relationship", "gender", "period"}) else None


_NK1_3 = parse_ref("NK1-3")


def _unless_null(raw: str) -> str:
    return "" if raw == '""' else raw


def _contact_organization(rt: Runtime, org: str, person: str, phone: str, address: str) -> Any:
    """NK1-13 (XON → the Organization, made) with NK1-30/-31/-32, the contact person there, as its
    ``contact`` (V2-to-FHIR IG NK1[Patient]: contact.organization(Organization.contact.*))."""
    xon = rt.maps.converters.get("XON.Organization")
    first = _first_rep(rt, org)
    ref = xon(first, 0, rt, {}) if xon is not None and first else None
    if not isinstance(ref, dict) or not ref.get("reference"):
        return None
    made = rt.extra.get(ref["reference"])
    conv = rt.maps.converters
    contact: dict[str, Any] = {}
    if person and (human := conv["XPN"](_first_rep(rt, person), 0, rt, {})):
        contact["name"] = human
    telecom = [
        t for rep in (phone.split(rt.enc.repetition) if phone else []) if (t := dt_xtn(rep, 0, rt, {}))
    ]
    if telecom:
        contact["telecom"] = telecom
    if address and (addr := conv["XAD"](_first_rep(rt, address), 0, rt, {})):
        contact["address"] = addr
    if contact and made is not None:
        contacts = made.setdefault("contact", [])
        if contact not in contacts:
            contacts.append(contact)
    return ref


@_segment_fn("reference_by_identifier")
def fn_reference_by_identifier(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """A Reference to the ``args.resource`` keyed like its own map keys it (EI value and namespace within
    the sender), e.g. TXA-13 parent document → DocumentReference."""
    raw = ([*raws, ""])[0]
    if not raw or raw == '""':
        return None
    c = [*rt.texts(raw.split(rt.enc.repetition)[0], 0), ""]
    if not c[0]:
        return None
    rtype = str(args["resource"])
    return {"reference": f"{rtype}/{resource_id(rtype, rt.ctx.facility, c[0], c[1])}"}


# The R5 element Device.version.installDate as the IG's cross-version extension (R4 has none).
INSTALL_DATE_URL = "https://hl7.org/fhir/5.0/StructureDefinition/extension-Device.version.installDate"


@_segment_fn("device_version")
def fn_device_version(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """SFT-2 release number and SFT-6 install date as one ``Device.version`` (V2-to-FHIR IG
    SFT[Device]: version.value, version.extension installDate)."""
    release, installed = ([*raws, "", ""])[:2]
    value = rt.text(release.split(rt.enc.repetition, 1)[0].split(rt.enc.component, 1)[0]).strip()
    if not value or value == '""':
        return None
    out: dict[str, Any] = {"value": value}
    when = dt_datetime(installed.split(rt.enc.repetition, 1)[0], 0, rt, {}) if installed else None
    if when:
        out["extension"] = [{"url": INSTALL_DATE_URL, "valueDateTime": when}]
    return out


@_segment_fn("practitioner")
def fn_practitioner(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """The person of a PRT or ROL (XCN, first repetition) as a Reference to a Practitioner (V2-to-FHIR
    IG XCN[Practitioner]) whose address is the second input (XAD: PRT-14, ROL-11 → the IG's
    practitioner(Practitioner.address))."""
    person, address = ([*raws, "", ""])[:2]
    if not person or person == EXPLICIT_NULL:
        return None
    rep = rt.enc.repetition
    conv = rt.maps.converters
    ref = conv["XCN.Practitioner"](person.split(rep, 1)[0], 0, rt, {})
    if not isinstance(ref, dict) or not address or address == EXPLICIT_NULL:
        return ref
    found = rt.extra.get(str(ref.get("reference", "")))
    if found is not None:
        for raw in address.split(rep):
            value = conv["XAD"](raw, 0, rt, {}) if raw and raw != EXPLICIT_NULL else None
            if value and value not in found.get("address", []):
                found.setdefault("address", []).append(value)
    return ref


@_segment_fn("participant")
def fn_participant(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """One participant of an Encounter or a CareTeam from a PRT or ROL (V2-to-FHIR IG PRT/ROL maps):
    the Reference to the resource the map ``args.map`` made from this segment (its PractitionerRole)
    as ``args.element`` (``individual``, ``member``), the role (the first input, CWE, table
    ``args.role_system``, translated by the vocabulary ``args.role_vocab`` with the sender's coding
    kept beside) as ``args.role`` (``type``, ``role``), the period (the second and third inputs) and
    the organization the person acts for (the fourth, XON: a CareTeam's onBehalfOf). None when that
    map made nothing from the segment."""
    role, start, end, organization = ([*raws, "", "", "", ""])[:4]
    made = rt.made.get((str(args.get("map", "")), index))
    rep = rt.enc.repetition
    out: dict[str, Any] = {}
    member: Any = None
    if made is None or not any(r is made for r in rt.resources):
        # No person: with ``args.organization_member`` the organization is the member (CareTeam).
        if not (args.get("organization_member") and organization and organization != EXPLICIT_NULL):
            return None
        member = rt.maps.converters["XON"](organization.split(rep, 1)[0], 0, rt, {})
        if not member:
            return None
        made, organization = None, ""
    if role and role != EXPLICIT_NULL:
        concept = rt.maps.converters["CWE"](
            role.split(rep, 1)[0], 0, rt, {"default_system": args.get("role_system", "HL70443")}
        )
        vocab = rt.vocab(str(args["role_vocab"])) if args.get("role_vocab") else None
        if concept and vocab is not None and concept.get("coding"):
            found = vocab.lookup(concept["coding"][0].get("code", ""))
            if isinstance(found, dict):
                coding = (
                    {"system": vocab.system, **found} if vocab.system and "system" not in found else found
                )
                concept["coding"] = [dict(coding), *concept["coding"]]
        if concept:
            out[str(args.get("role", "type"))] = [concept]
    out[str(args.get("element", "individual"))] = (
        member if made is None else {"reference": f"{made['resourceType']}/{made['id']}"}
    )
    period: dict[str, Any] = {}
    for key, raw in (("start", start), ("end", end)):
        when = dt_datetime(raw.split(rep, 1)[0], 0, rt, {}) if raw and raw != EXPLICIT_NULL else None
        if when:
            period[key] = when
    if period:
        out["period"] = period
    if organization and organization != EXPLICIT_NULL:
        on_behalf = rt.maps.converters["XON"](organization.split(rep, 1)[0], 0, rt, {})
        if on_behalf:
            out["onBehalfOf"] = on_behalf
    return out


# ---------------------------------------------------------------------------------------------------
# Conditions: (unescaped value at the condition's path, rt, args) -> bool.

ConditionFn = Callable[[str, "Runtime", list[Any]], bool]
CONDITIONS: dict[str, ConditionFn] = {
    "present": lambda v, rt, a: bool(v.strip()),
    "absent": lambda v, rt, a: not v.strip(),
    "equals": lambda v, rt, a: v.strip().upper() in {str(x).upper() for x in a},
    "not_equals": lambda v, rt, a: v.strip().upper() not in {str(x).upper() for x in a},
    "is_number": lambda v, rt, a: decimal(v) is not None,
}


def _whole_field(fn: ConditionFn) -> ConditionFn:
    """A condition that reads the field's raw first repetition (every component), not its first value."""
    fn.whole_field = True  # type: ignore[attr-defined]
    return fn


def is_vaccine_code(raw: str, rt: Runtime, args: list[Any]) -> bool:
    """A CWE (RXA-5 administered code) names a vaccine: one of its codings (CWE-1..3, the alternate
    CWE-4..6, the second alternate CWE-10..12) is in a vaccine code system of the vocabulary ``args[0]``
    (``vaccine-codes``: a coding system name → ``all``, or the code prefixes that are vaccines, e.g.
    ATC → J07). A sender overlay adds its own (a local formulary's vaccine codes)."""
    first = raw.split(rt.enc.repetition, 1)[0] if raw else ""
    if not first or first == '""' or not args:
        return False
    vocab = rt.vocab(str(args[0]))
    c = [*rt.texts(first, 0), *[""] * 12]
    for code, system in ((c[0], c[2]), (c[3], c[5]), (c[9], c[11])):
        if not code or not system:
            continue
        found = vocab.lookup(system)
        if found is None and coding_system(rt, system) == "http://hl7.org/fhir/sid/cvx":
            found = "all"
        if found is None:
            continue
        prefixes = str(found).split()
        if "all" in prefixes or any(code.upper().startswith(p.upper()) for p in prefixes):
            return True
    return False


CONDITIONS["vaccine_code"] = _whole_field(is_vaccine_code)
CONDITIONS["not_vaccine_code"] = _whole_field(
    lambda v, rt, a: bool(v.strip()) and not is_vaccine_code(v, rt, a)
)


def _valued(raw: str, rt: Runtime, args: list[Any]) -> bool:
    """``valued``: the field at the path holds something in any component of its first repetition
    (``present`` looks at the first component only: an XCN ``^Lestari^Sri`` has no XCN-1)."""
    first = raw.split(rt.enc.repetition, 1)[0]
    return first != EXPLICIT_NULL and bool(first.strip(f"{rt.enc.component}{rt.enc.subcomponent} "))


CONDITIONS["valued"] = _whole_field(_valued)


# ---------------------------------------------------------------------------------------------------
# Id functions: (segment index, rt) -> key parts, or None when the rule does not apply.

IdFn = Callable[[int, "Runtime"], "tuple[str, ...] | None"]
ID_FUNCTIONS: dict[str, IdFn] = {}


def _id_fn(name: str) -> Callable[[IdFn], IdFn]:
    def deco(fn: IdFn) -> IdFn:
        ID_FUNCTIONS[name] = fn
        return fn

    return deco


@_id_fn("one_per_patient")
def id_one_per_patient(index: int, rt: Runtime) -> tuple[str, ...] | None:
    """One resource of the map's type per source Patient, keyed by the patient alone (the patient's
    CareTeam as the sender tells it, whose participants every PRT and ROL of the message adds)."""
    return (rt.patient_id_at(index),) if rt.patient_key_at(index)[0] else None


@_id_fn("patient")
def id_patient(index: int, rt: Runtime) -> tuple[str, ...] | None:
    """A source Patient is keyed by (sender, PID-3 first identifier, its authority): see patient_id."""
    return None if not rt.patient_key_at(index)[0] else ("=" + rt.patient_id_at(index),)


# ---------------------------------------------------------------------------------------------------
# Actions: instructions for the MPI from merge/link messages: (rt) -> list of action dicts.

ActionFn = Callable[["Runtime"], list[dict[str, Any]]]
ACTIONS: dict[str, ActionFn] = {}


def _action(name: str) -> Callable[[ActionFn], ActionFn]:
    def deco(fn: ActionFn) -> ActionFn:
        ACTIONS[name] = fn
        return fn

    return deco


def _mrg_identifier(rt: Runtime, mrg: int, field: int) -> tuple[str, str, dict[str, Any] | None]:
    seg = rt.segments[mrg]
    if seg.raw(field):
        rt.used[mrg].add(field)
    raw = seg.repetitions(field)[0] if seg.repetitions(field) else ""
    value = rt.text(seg.get(field, 1)) if raw else ""
    authority = seg.get(field, 4) or seg.get(field, 4, 2)
    ident = dt_cx(raw, 0, rt, {}) if raw else None
    return value.strip(), authority.strip(), ident


@_action("merge")
def act_merge(rt: Runtime) -> list[dict[str, Any]]:
    """A40/A34 (and A39/A41 shapes): each PID/MRG pair merges the MRG-1 patient into the PID patient."""
    out: list[dict[str, Any]] = []
    for i, seg in enumerate(rt.segments):
        if seg.name != "MRG":
            continue
        pid = rt.nearest(i, "PID")
        value, authority, _ = _mrg_identifier(rt, i, 1)
        if pid < 0 or not value:
            rt.warn(f"MRG at segment {i} has no MRG-1 prior patient identifier; no merge action")
            continue
        retired = patient_id(rt.ctx.facility, value, authority)
        survivor = rt.patient_id_at(pid)
        if retired != survivor:
            out.append({"type": "merge", "survivor": survivor, "retired": retired})
    return out


@_action("change_identifier")
def act_change_identifier(rt: Runtime) -> list[dict[str, Any]]:
    """A47: MRG-1 is the identifier being replaced by PID-3 on the same (source) patient."""
    out: list[dict[str, Any]] = []
    for i, seg in enumerate(rt.segments):
        if seg.name != "MRG":
            continue
        pid = rt.nearest(i, "PID")
        value, authority, old = _mrg_identifier(rt, i, 1)
        if pid < 0 or not value or old is None:
            rt.warn(f"MRG at segment {i} has no MRG-1 identifier; no change-identifier action")
            continue
        new = (
            dt_cx(rt.segments[pid].repetitions(3)[0], 0, rt, {}) if rt.segments[pid].repetitions(3) else None
        )
        if new is None:
            continue
        out.append(
            {
                "type": "change-identifier",
                "patient": patient_id(rt.ctx.facility, value, authority),
                "old": {"system": old["system"], "value": old["value"]},
                "new": {"system": new["system"], "value": new["value"]},
            }
        )
    return out


@_action("unlink")
def act_unlink(rt: Runtime) -> list[dict[str, Any]]:
    """A37: the two PID segments name the patients to unlink."""
    pids = [i for i, s in enumerate(rt.segments) if s.name == "PID"]
    if len(pids) < 2:
        rt.warn("A37 needs two PID segments; no unlink action")
        return []
    return [{"type": "unlink", "patients": [rt.patient_id_at(pids[0]), rt.patient_id_at(pids[1])]}]


# ===================================================================================================
# Pharmacy, scheduling, referral and problem helpers (RXE/RXO dosage with its TQ1 and RXR, Appointment
# participants, REF providers from PRD, PPR problem status).
# ---------------------------------------------------------------------------------------------------


def _order_group(rt: Runtime, index: int) -> range:
    """The segments of the order ``index`` belongs to: from its ORC (or the message start) to the next
    ORC or PID (exclusive)."""
    segs = rt.segments
    start = index
    while start > 0 and segs[start].name not in ("ORC", "PID"):
        start -= 1
    end = index + 1
    while end < len(segs) and segs[end].name not in ("ORC", "PID"):
        end += 1
    return range(start, end)


def _field(rt: Runtime, i: int, n: int) -> str:
    """Raw field ``n`` of segment ``i`` ("" when absent or an explicit null), marked used."""
    fields = rt.fields[i]
    raw = fields[n] if len(fields) > n else ""
    if raw:
        rt.used[i].add(n)
    return "" if raw == '""' else raw


def _first_rep(rt: Runtime, raw: str) -> str:
    return raw.split(rt.enc.repetition)[0] if raw else ""


def _component(rt: Runtime, raw: str, n: int) -> str:
    parts = raw.split(rt.enc.component)
    return parts[n - 1] if len(parts) >= n else ""


# Table 0335 repeat patterns → Timing.repeat frequency/period (the common ones; others keep the code).
_REPEAT_PATTERNS: dict[str, tuple[int, float, str]] = {
    "QD": (1, 1, "d"),
    "OD": (1, 1, "d"),
    "BID": (2, 1, "d"),
    "TID": (3, 1, "d"),
    "QID": (4, 1, "d"),
    "QOD": (1, 2, "d"),
    "QW": (1, 1, "wk"),
    "QAM": (1, 1, "d"),
    "QPM": (1, 1, "d"),
    "QHS": (1, 1, "d"),
}
_Q_HOURS = re.compile(r"^Q(\d{1,2})H$")
_DURATION_UNITS = {
    "s": "s",
    "sec": "s",
    "min": "min",
    "h": "h",
    "hr": "h",
    "hour": "h",
    "d": "d",
    "day": "d",
    "wk": "wk",
    "week": "wk",
    "mo": "mo",
    "month": "mo",
    "a": "a",
    "yr": "a",
    "year": "a",
}


def _repeat_code(rt: Runtime, raw: str) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """A repeat pattern (RPT / TQ-2.1 CWE) → (Timing.code, Timing.repeat frequency elements)."""
    c = rt.texts(raw, 1) if rt.enc.subcomponent in raw else rt.texts(raw, 0)
    code, text = ([*c, "", ""])[:2]
    repeat: dict[str, Any] = {}
    if not code and not text:
        return None, repeat
    concept: dict[str, Any] = {}
    if code and not text and " " in code:  # free text where the code belongs ("twice a day")
        code, text = "", code
    if code:
        coding: dict[str, Any] = {"system": "http://terminology.hl7.org/CodeSystem/v2-0335", "code": code}
        if text:
            coding["display"] = text
        concept["coding"] = [coding]
        upper = code.upper()
        known = _REPEAT_PATTERNS.get(upper)
        hours = _Q_HOURS.match(upper)
        if known:
            repeat = {"frequency": known[0], "period": known[1], "periodUnit": known[2]}
        elif hours and int(hours.group(1)) > 0:
            repeat = {"frequency": 1, "period": int(hours.group(1)), "periodUnit": "h"}
    if text:
        concept["text"] = text
    return concept, repeat


def _cq_parts(rt: Runtime, raw: str) -> tuple[int | float | None, str]:
    """A CQ (quantity ^ units CWE) → (number, unit code)."""
    c = raw.split(rt.enc.component)
    number = decimal(rt.text(c[0]).strip()) if c and c[0] else None
    unit = rt.text(c[1].split(rt.enc.subcomponent)[0]).strip() if len(c) > 1 else ""
    return number, unit


def _drop_reversed_end(bounds: dict[str, Any]) -> None:
    """A period whose end is before its start (seen in real feeds: the cancel time in TQ-5) is not a
    valid FHIR Period (per-1): keep the start."""
    start, end = bounds.get("start"), bounds.get("end")
    if isinstance(start, str) and isinstance(end, str) and len(start) == len(end) and end < start:
        del bounds["end"]


_TM = re.compile(r"^(\d{2})(\d{2})?(\d{2})?(\.\d{1,4})?([+-]\d{4})?$")
_UCUM_TIME = {"s": 1, "min": 60, "h": 3600, "d": 86400, "wk": 604800}


def _tm_time(value: str) -> str:
    """A v2 TM (HH[MM[SS[.S]]][+/-ZZZZ]) → FHIR time "HH:MM:SS"; "" when it is not one."""
    found = _TM.match(value)
    if not found:
        return ""
    hh, mm, ss = found.group(1), found.group(2) or "00", found.group(3) or "00"
    if int(hh) > 23 or int(mm) > 59 or int(ss) > 59:
        return ""
    return f"{hh}:{mm}:{ss}"


def _duration(rt: Runtime, raw: str) -> dict[str, Any] | None:
    """A CQ duration ("5^d", "30^min") → a FHIR Duration in UCUM time units, None when it is not one."""
    number, unit = _cq_parts(rt, _first_rep(rt, raw))
    code = _DURATION_UNITS.get(unit.lower()) if number is not None else None
    if code is None or number is None or number < 0:
        return None
    return {"value": number, "unit": code, "system": "http://unitsofmeasure.org", "code": code}


def _add_duration(start: str, duration: dict[str, Any]) -> str | None:
    """``start`` (a FHIR dateTime with a time and offset) plus a Duration in s, min, h, d or wk; None
    when the start has no time or the unit has no fixed length (mo, a)."""
    seconds = _UCUM_TIME.get(duration["code"])
    if seconds is None or "T" not in start:
        return None
    try:
        at = datetime.fromisoformat(start)
    except ValueError:
        return None
    if at.tzinfo is None:
        return None
    return (at + timedelta(seconds=duration["value"] * seconds)).isoformat()


def _timing_from_tq1(rt: Runtime, i: int, dosage: dict[str, Any]) -> dict[str, Any]:
    """V2-to-FHIR IG TQ1[MedicationRequest]: one TQ1 → Timing (and the dose, text and condition it gives
    the Dosage)."""
    timing: dict[str, Any] = {}
    repeat: dict[str, Any] = {}
    quantity_raw = _field(rt, i, 2)
    if quantity_raw and "doseAndRate" not in dosage:
        q = dt_cq(_first_rep(rt, quantity_raw), 0, rt, {})
        if q:
            dosage["doseAndRate"] = [{"doseQuantity": q}]
    pattern = _first_rep(rt, _field(rt, i, 3))
    if pattern:
        concept, freq = _repeat_code(
            rt, pattern.split(rt.enc.component, 1)[0] if rt.enc.subcomponent in pattern else pattern
        )
        if concept:
            timing["code"] = concept
        repeat.update(freq)
    # TQ1-4 explicit times: a TM ("0800") is a time of day (Timing.repeat.timeOfDay), a full date/time
    # (sent by some systems) an event.
    events: list[str] = []
    for rep in _field(rt, i, 4).split(rt.enc.repetition):
        explicit = rt.text(rep.split(rt.enc.component, 1)[0]).strip()
        time_of_day = _tm_time(explicit)
        if time_of_day:
            repeat.setdefault("timeOfDay", []).append(time_of_day)
        elif explicit and (v := dt_datetime(rep, 0, rt, {})):
            events.append(v)
    if events:
        timing["event"] = events
    bounds: dict[str, Any] = {}
    for key, n in (("start", 7), ("end", 8)):
        raw = _field(rt, i, n)
        value = dt_datetime(raw, 0, rt, {}) if raw else None
        if value:
            bounds[key] = value
    _drop_reversed_end(bounds)
    # TQ1-6 service duration: the end of the bounds from the start, else the bounds as a Duration.
    service = _duration(rt, _field(rt, i, 6))
    if service is not None and "start" in bounds and "end" not in bounds:
        end = _add_duration(bounds["start"], service)
        if end:
            bounds["end"] = end
    elif service is not None and not bounds:
        repeat["boundsDuration"] = service
    if bounds:
        repeat["boundsPeriod"] = bounds
    condition = rt.text(_field(rt, i, 10)).strip()
    if condition:
        dosage.setdefault("additionalInstruction", []).append({"text": condition})
    text = rt.text(_field(rt, i, 11)).strip()
    if text and "text" not in dosage:
        dosage["text"] = text
    number, unit = _cq_parts(rt, _field(rt, i, 13))
    if number is not None and _DURATION_UNITS.get(unit.lower()):
        repeat["duration"] = number
        repeat["durationUnit"] = _DURATION_UNITS[unit.lower()]
    total = decimal(rt.text(_field(rt, i, 14)).strip())
    if isinstance(total, int) and total > 0:
        repeat["countMax"] = total
    if repeat:
        timing["repeat"] = repeat
    return timing


def _timing_from_tq(rt: Runtime, raw: str, dosage: dict[str, Any]) -> dict[str, Any]:
    """A v2.3-style TQ (ORC-7, RXE-1): quantity ^ interval (repeat pattern & explicit time) ^ duration ^
    start ^ end ^ priority ^ condition ^ text."""
    c = (raw.split(rt.enc.component) + [""] * 8)[:8]
    timing: dict[str, Any] = {}
    repeat: dict[str, Any] = {}
    interval = c[1].split(rt.enc.subcomponent)[0] if c[1] else ""
    if interval:
        concept, freq = _repeat_code(rt, interval)
        if concept:
            timing["code"] = concept
        repeat.update(freq)
    bounds = {k: v for k, n in (("start", 3), ("end", 4)) if c[n] and (v := dt_datetime(c[n], 0, rt, {}))}
    _drop_reversed_end(bounds)
    if bounds:
        repeat["boundsPeriod"] = bounds
    if repeat:
        timing["repeat"] = repeat
    condition = rt.text(c[6]).strip()
    if condition:
        dosage.setdefault("additionalInstruction", []).append({"text": condition})
    text = rt.text(c[7]).strip()
    if text and "text" not in dosage:
        dosage["text"] = text
    return timing


@_segment_fn("medication_dosage")
def fn_medication_dosage(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """One Dosage of a medication order (V2-to-FHIR IG RXO/RXE, TQ1 and RXR [MedicationRequest]).

    ``paths``: the order's TQ (RXE-1 / ORC-7), give amount minimum, maximum, units, administration
    instructions (CWE), dispensing instructions (text) and, optionally, a fallback TQ (ORC-7 when RXE-1
    is empty) and, optionally, the total daily dose (RXE-19 → maxDosePerPeriod). Timing comes from the
    TQ1 segments of the
    order group (ORC to the next ORC), else the TQ; route, site, method and routing instruction from the
    first RXR after the segment (else the first RXR of the group), so one order has one Dosage."""
    tq, low, high, units, instructions, special, order_tq, daily = ([*raws, *[""] * 8])[:8]
    tq = tq or order_tq
    dosage: dict[str, Any] = {}
    instruction = _first_rep(rt, instructions)
    if instruction:
        c = rt.texts(instruction, 0)
        text = ([*c, "", ""])[1] or c[0]
        if text:
            dosage["text"] = text
    lo = decimal(rt.text(_component(rt, _first_rep(rt, low), 1)).strip()) if low else None
    hi = decimal(rt.text(_component(rt, _first_rep(rt, high), 1)).strip()) if high else None
    unit_raw = _first_rep(rt, units)
    if lo is not None and hi is not None and hi != lo:
        dosage["doseAndRate"] = [
            {"doseRange": {"low": quantity(rt, lo, unit_raw, 0), "high": quantity(rt, hi, unit_raw, 0)}}
        ]
    elif lo is not None:
        dosage["doseAndRate"] = [{"doseQuantity": quantity(rt, lo, unit_raw, 0)}]
    group = _order_group(rt, index)
    segs = rt.segments
    timing: dict[str, Any] = {}
    for i in group:
        if segs[i].name == "TQ1":
            found = _timing_from_tq1(rt, i, dosage)
            if found and not timing:
                timing = found
    if not timing and tq:
        timing = _timing_from_tq(rt, _first_rep(rt, tq), dosage)
    if timing:
        dosage["timing"] = timing
    rxr = [i for i in group if segs[i].name == "RXR"]
    after = [i for i in rxr if i > index]
    chosen = after[0] if after else (rxr[0] if rxr else -1)
    for i in rxr:  # every RXR of the group is read (the RXO and RXE copies are the same route)
        for n in (1, 2, 4, 5):
            _field(rt, i, n)
    if chosen >= 0:
        conv = rt.maps.converters.get("CWE") or dt_codeable_concept
        for key, n in (("route", 1), ("site", 2), ("method", 4)):
            raw = _first_rep(rt, _field(rt, chosen, n))
            concept = conv(raw, 0, rt, {}) if raw else None
            if concept:
                dosage[key] = concept
        for raw in _field(rt, chosen, 5).split(rt.enc.repetition):
            concept = conv(raw, 0, rt, {}) if raw else None
            if concept:
                dosage.setdefault("additionalInstruction", []).append(concept)
    extra = dt_text(special, 0, rt, {}) if special else None
    if extra:
        dosage.setdefault("additionalInstruction", []).append({"text": extra})
    total = dt_cq(_first_rep(rt, daily), 0, rt, {}) if daily and daily != '""' else None
    if total:  # RXE-19 total daily dose: the most per day
        day = {"value": 1, "unit": "d", "system": "http://unitsofmeasure.org", "code": "d"}
        dosage["maxDosePerPeriod"] = {"numerator": total, "denominator": day}
    return dosage or None


# Segments that may stand between an OBR and the timing (TQ1/TQ2) of its order.
_OBR_TIMING_BEFORE = frozenset({"TQ1", "TQ2", "PRT"})  # ORC, TQ1, TQ2, OBR (ORM, OML, OMG)
_OBR_TIMING_AFTER = frozenset({"TQ1", "TQ2", "PRT", "NTE"})  # OBR, NTE, TQ1, TQ2 (ORU, OUL)


def _order_tq1s(rt: Runtime, index: int) -> list[int]:
    """The TQ1 segments that time the order of segment ``index``. An OBR's are the TQ1s between its ORC
    and it (the ORC's timing group in ORM/OML/OMG) or right after it (the OBR's timing group in ORU),
    never another OBR's; a pharmacy segment's are those of its order group (ORC to the next ORC)."""
    segs = rt.segments
    if segs[index].name != "OBR":
        return [i for i in _order_group(rt, index) if segs[i].name == "TQ1"]
    before: list[int] = []
    i = index - 1
    while i > 0 and segs[i].name in _OBR_TIMING_BEFORE:
        if segs[i].name == "TQ1":
            before.insert(0, i)
        i -= 1
    if before and segs[i].name == "ORC":
        return before
    after: list[int] = []
    i = index + 1
    while i < len(segs) and segs[i].name in _OBR_TIMING_AFTER:
        if segs[i].name == "TQ1":
            after.append(i)
        i += 1
    return after


@_segment_fn("service_timing")
def fn_service_timing(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """V2-to-FHIR IG TQ1[ServiceRequest]: the order's first TQ1 with a timing (repeat pattern, times,
    start/end, durations, count) → ServiceRequest.occurrenceTiming; without one, the v2.3 TQ of
    ``paths`` (ORC-7, OBR-27: interval, start, end)."""
    timing: dict[str, Any] = {}
    scratch: dict[str, Any] = {"doseAndRate": None}  # a TQ1's dose and texts are not the Timing's
    for i in _order_tq1s(rt, index):
        found = _timing_from_tq1(rt, i, scratch)
        if found and not timing:
            timing = found
    for raw in raws:
        if timing:
            break
        if raw:
            timing = _timing_from_tq(rt, _first_rep(rt, raw), scratch)
    return Choice("Timing", timing) if timing else None


@_segment_fn("order_tq1")
def fn_order_tq1(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """Field ``args.field`` of the order's first TQ1 that has it, as ``args.as``: ``quantity`` (a CQ,
    TQ1-2 → ServiceRequest.quantityQuantity) or ``annotation`` (a text, TQ1-11 → note); else the same
    component of the v2.3 TQ in ``paths`` (ORC-7: 1 quantity, 8 text)."""
    n = int(args["field"])
    kind = str(args.get("as", "annotation"))
    raw = ""
    for i in _order_tq1s(rt, index):
        raw = _first_rep(rt, _field(rt, i, n))
        if raw:
            break
    level = 0
    tq_component = {2: 1, 11: 8}.get(n)
    if not raw and tq_component:
        for tq in raws:
            raw = _component(rt, _first_rep(rt, tq), tq_component)
            if raw:
                level = 1
                break
    if not raw:
        return None
    if kind == "quantity":
        q = dt_cq(raw, level, rt, {})
        return Choice("Quantity", q) if q else None
    text = rt.text(raw).strip()
    return {"text": text} if text else None


@_segment_fn("order_priority")
def fn_order_priority(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """The priority of an order (TQ1-9 of its TQ1s, see ``_order_tq1s``, else TQ-6 of ``paths``) as a
    request priority code (vocab request-priority)."""
    code = ""
    for i in _order_tq1s(rt, index):
        code = rt.text(_component(rt, _first_rep(rt, _field(rt, i, 9)), 1)).strip()
        if code:
            break
    if not code:
        for raw in raws:
            code = rt.text(_component(rt, _first_rep(rt, raw), 6)).strip()
            if code:
                break
    return rt.vocab("request-priority").lookup(code) if code else None


_PARTICIPATION_STATUS = {
    "BOOKED": "accepted",
    "CONFIRMED": "accepted",
    "COMPLETE": "accepted",
    "STARTED": "accepted",
    "OVERBOOK": "accepted",
    "PENDING": "tentative",
    "WAITLIST": "needs-action",
    "CANCELLED": "declined",
    "DELETED": "declined",
    "NOSHOW": "declined",
    "DC": "declined",
}
# SIU triggers that cancel, discontinue or delete the service or resource the message carries.
# S20 cancel, S21 discontinue, S22 delete a service or resource; S23 its time slots blocked. S24 (slots
# opened again) and S25 (a schedule query) withdraw no one.
_RESOURCE_CANCEL_TRIGGERS = {"S20", "S21", "S22", "S23"}


@_segment_fn("appointment_participant")
def fn_appointment_participant(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """V2-to-FHIR IG AIP/AIL/AIG[Appointment]: one participant: the actor (``args.datatype``: XCN → a
    Practitioner, PL → a Location; CWE → a Reference by identifier and display only, as the IG's AIG-3),
    its type, its period start and its status (the resource's filler status; ``declined`` when the
    trigger cancels, discontinues or deletes the resource or blocks its slots, S20–S23)."""
    actor_raw, type_raw, start_raw, status_raw = ([*raws, "", "", "", ""])[:4]
    actor_raw = _first_rep(rt, actor_raw if actor_raw != '""' else "")
    if not actor_raw:
        return None
    kind = str(args.get("datatype", "XCN"))
    conv = rt.maps.converters
    actor: Any = None
    if kind == "CWE":
        c = [*rt.texts(actor_raw, 0), "", "", ""]
        if c[0] or c[1]:
            actor = {}
            if c[0]:
                actor["identifier"] = {"value": c[0]}
            if c[1] or c[0]:
                actor["display"] = c[1] or c[0]
    else:
        converter = conv.get(kind)
        actor = converter(actor_raw, 0, rt, {}) if converter else None
    if not actor:
        return None
    out: dict[str, Any] = {"actor": actor}
    type_raw = _first_rep(rt, type_raw if type_raw != '""' else "")
    concept = (conv.get("CWE") or dt_codeable_concept)(type_raw, 0, rt, {}) if type_raw else None
    if concept:
        out["type"] = [concept]
    start = dt_datetime(start_raw, 0, rt, {}) if start_raw and start_raw != '""' else None
    if start:
        out["period"] = {"start": start}
    trigger = rt.text(rt.segments[0].get(9, 2)).strip().upper() if rt.segments else ""
    status_code = rt.text(_component(rt, _first_rep(rt, status_raw), 1)).strip().upper()
    if trigger in _RESOURCE_CANCEL_TRIGGERS:
        out["status"] = "declined"
    else:
        out["status"] = _PARTICIPATION_STATUS.get(status_code, "accepted")
    return out


def _hd_organization(rt: Runtime, hd: list[str]) -> dict[str, Any] | None:
    """A facility (HD: namespace, universal id, its type) → a Reference to its Organization (made):
    the name, and the universal id as identifier (an OID as urn:oid when its type is ISO)."""
    from hub.mapping._loader import _as_resource

    if not hd or not (hd[0] or (len(hd) > 1 and hd[1])):
        return None
    universal = hd[1] if len(hd) > 1 else ""
    body: dict[str, Any] = {"name": hd[0] or universal}
    if universal and len(hd) > 2 and hd[2].upper() == "ISO":
        body["identifier"] = [{"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{universal}"}]
    elif universal:
        body["identifier"] = [{"value": universal}]
    return _as_resource(rt, "Organization", body)


@_segment_fn("facility_organization")
def fn_facility_organization(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """An HD field (MSH-4 sending facility) → a Reference to the facility's Organization (made)."""
    raw = _first_rep(rt, ([*raws, ""])[0])
    return _hd_organization(rt, rt.texts(raw, 0)) if raw and raw != '""' else None


def _prd_party(rt: Runtime, i: int) -> list[dict[str, Any]]:
    """References to the Practitioner and the Organization one PRD (provider data) names; both are made.
    PRD-2 name, PRD-3 address, PRD-5 telecom, PRD-7 identifiers (PLN) → Practitioner; PRD-10 (XON,
    v2.7+), else the facility of PRD-4 (PL-4) → Organization."""
    from hub.mapping._loader import _as_resource

    conv = rt.maps.converters
    refs: list[dict[str, Any]] = []
    body: dict[str, Any] = {}
    idents = []
    for raw in _field(rt, i, 7).split(rt.enc.repetition):
        c = [*rt.texts(raw, 0), "", ""] if raw else []
        if c and c[0]:
            ident: dict[str, Any] = {
                "system": f"urn:hub:id:{rt.ctx.facility}:{c[1] or 'provider'}",
                "value": c[0],
            }
            if c[1]:
                ident["type"] = {"text": c[1]}
            idents.append(ident)
    if idents:
        body["identifier"] = idents
    name_raw = _first_rep(rt, _field(rt, i, 2))
    human = conv["XPN"](name_raw, 0, rt, {}) if name_raw and "XPN" in conv else None
    if human:
        body["name"] = [human]
    telecom = [
        t for raw in _field(rt, i, 5).split(rt.enc.repetition) if raw and (t := dt_xtn(raw, 0, rt, {}))
    ]
    if telecom:
        body["telecom"] = telecom
    addr_raw = _first_rep(rt, _field(rt, i, 3))
    address = conv["XAD"](addr_raw, 0, rt, {}) if addr_raw and "XAD" in conv else None
    if address:
        body["address"] = [address]
    if body.get("identifier") or body.get("name"):
        refs.append(_as_resource(rt, "Practitioner", body))
    org_raw = _first_rep(rt, _field(rt, i, 10))
    org = conv["XON"](org_raw, 0, rt, {}) if org_raw and "XON" in conv else None
    if not org:
        location = _first_rep(rt, _field(rt, i, 4))
        org = _hd_organization(rt, rt.texts(_component(rt, location, 4), 1)) if location else None
    if org:
        refs.append(org)
    return refs


@_segment_fn("referral_provider")
def fn_referral_provider(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """REF (V2-to-FHIR IG has no RF1/PRD map): the PRD segments of the message whose provider role
    (PRD-1, table 0286) is one of ``args.roles`` (RP referring, RT referred to, CP consulting, PP primary
    care) → References to the Practitioners and Organizations they name. ``args.first``: only the first
    (a single Reference, e.g. requester: the practitioner, else the organization)."""
    roles = {str(r).upper() for r in args.get("roles", [])}
    refs: list[dict[str, Any]] = []
    for i, seg in enumerate(rt.segments):
        if seg.name != "PRD":
            continue
        role_raw = _field(rt, i, 1)
        codes = {rt.text(_component(rt, r, 1)).strip().upper() for r in role_raw.split(rt.enc.repetition)}
        if codes & roles:
            refs.extend(_prd_party(rt, i))
    if args.get("first"):
        return refs[0] if refs else None
    return refs or None


@_segment_fn("problem_clinical_status")
def fn_problem_clinical_status(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """PRB → Condition.clinicalStatus: PRB-14 (life cycle status) through vocab condition-clinical, else
    active; none for a deleted problem (PPR PC3 or PRB-1 DE), whose verificationStatus is entered-in-error
    (FHIR con-5: no clinicalStatus then)."""
    trigger, action, status = ([*raws, "", "", ""])[:3]
    if (
        rt.text(trigger).strip().upper() == "PC3"
        or rt.text(_component(rt, action, 1)).strip().upper() == "DE"
    ):
        return None
    code = rt.text(_component(rt, _first_rep(rt, status), 1)).strip()
    found = rt.vocab("condition-clinical").get(code) if code else None
    return {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                "code": found or "active",
            }
        ]
    }


@_segment_fn("reference_by_patient_identifier")
def fn_reference_by_patient_identifier(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """A Reference to the ``args.resource`` a map keys by an EI (value, namespace) with ``scope:
    patient``, e.g. TXA-13 parent document → the DocumentReference TXA-12 made for this patient."""
    raw = ([*raws, ""])[0]
    if not raw or raw == '""':
        return None
    c = [*rt.texts(raw.split(rt.enc.repetition)[0], 0), ""]
    if not c[0]:
        return None
    rtype = str(args["resource"])
    return {"reference": f"{rtype}/{resource_id(rtype, rt.patient_id_at(index), c[0], c[1])}"}


@_segment_fn("patient_account")
def fn_patient_account(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """PID-18 (patient account number, CX) → a Reference to the patient's Account, which is made
    (identifier, status active, subject). Keyed as PID[Account] keys it (PID-18.1 and its authority
    PID-18.4, scope patient), so a charge (FT1 → ChargeItem.account) and the ADT/BAR Account are one;
    when the message map made that Account (PID.Account), only the Reference is returned."""
    raw = _first_rep(rt, ([*raws, ""])[0])
    if not raw:
        return None
    c = [*rt.texts(raw, 0), "", "", "", ""]
    if not c[0]:
        return None
    pid = rt.nearest(index, "PID")
    if pid < 0:
        return None
    rt.used[pid].add(18)
    # The authority's first subcomponent (HD namespace id), as the map's key path PID-18.4 reads it.
    authority = c[3].split(rt.enc.subcomponent, 1)[0].strip() if rt.enc.subcomponent else c[3]
    rid = resource_id("Account", rt.patient_id_at(index), c[0], authority)
    if f"Account/{rid}" in rt.keys:  # the message map made it already (PID.Account)
        return {"reference": f"Account/{rid}"}
    account: dict[str, Any] = {"resourceType": "Account", "id": rid, "status": "active"}
    ident = dt_cx(raw, 0, rt, {})
    if ident:
        account["identifier"] = [ident]
    account["subject"] = [{"reference": f"Patient/{rt.patient_id_at(index)}"}]
    rt.add_extra(account)
    return {"reference": f"Account/{rid}"}


@_segment_fn("dr_period")
def fn_dr_period(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """A DR (date/time range: start ^ end, e.g. FT1-4) → Period; an end before the start is left out."""
    raw = _first_rep(rt, ([*raws, ""])[0])
    if not raw or raw == '""':
        return None
    c = [*raw.split(rt.enc.component), "", ""]
    bounds = {
        k: v for k, part in (("start", c[0]), ("end", c[1])) if part and (v := dt_datetime(part, 0, rt, {}))
    }
    _drop_reversed_end(bounds)
    return bounds or None


_MINUTES_PER_UNIT = {
    "S": 1 / 60,
    "SEC": 1 / 60,
    "MIN": 1,
    "M": 1,
    "H": 60,
    "HR": 60,
    "HOUR": 60,
    "D": 1440,
    "DAY": 1440,
}


@_segment_fn("appointment_end")
def fn_appointment_end(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """Appointment.end as the start plus the duration when the message gives no end: ``paths`` start
    (TS, or the TQ whose ``args.start_component`` it is), duration (NM) and its units (CNE, default
    minutes: SCH-10 / AIS-8). FHIR app-3: a booked
    appointment has both a start and an end."""
    from datetime import datetime, timedelta

    start_raw, duration_raw, units_raw = ([*raws, "", "", ""])[:3]
    start_raw = _first_rep(rt, start_raw)
    if args.get("start_component"):  # the start inside a TQ (SCH-11.4): the inputs are whole fields
        start_raw = _component(rt, start_raw, int(args["start_component"]))
    start = dt_instant(start_raw, 0, rt, {}) if start_raw and start_raw != '""' else None
    duration = decimal(rt.text(_component(rt, duration_raw, 1)).strip()) if duration_raw else None
    unit = rt.text(_component(rt, units_raw, 1)).strip().upper() if units_raw else "MIN"
    per = _MINUTES_PER_UNIT.get(unit or "MIN")
    if not isinstance(start, str) or duration is None or duration <= 0 or per is None:
        return None
    try:
        moment = datetime.fromisoformat(start)
        return (moment + timedelta(minutes=float(duration) * per)).isoformat()
    except (ValueError, OverflowError):  # not an instant, or an end beyond year 9999
        return None


# === end of the pharmacy, scheduling, referral and problem helpers ===


# === specimen helpers ===


@_segment_fn("specimen_parent")
def fn_specimen_parent(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """SPM-3 parent specimen ids (EIP: placer ^ filler, each an EI) → References to the parent Specimens,
    which are made (identifiers PGN/FGN, the patient as subject) and keyed as SPM.Specimen keys a
    specimen (SPM-2.1 value and namespace, else SPM-2.2, scope patient): the parent sent later in an
    SPM of its own is the same resource (V2-to-FHIR IG SPM[Specimen]: parent)."""
    raw = ([*raws, ""])[0]
    if not raw or raw == '""':
        return None
    out: list[dict[str, Any]] = []
    patient = rt.patient_id_at(index)
    # The subject is the message's Patient resource (the id the References to it carry).
    made = rt.made.get(("PID.Patient", rt.nearest(index, "PID")))
    subject = f"Patient/{made['id']}" if made and made.get("id") else f"Patient/{patient}"
    for rep in raw.split(rt.enc.repetition):
        comps = [*rep.split(rt.enc.component), "", ""]
        idents = [
            ident
            for part, kind in ((comps[0], "PGN"), (comps[1], "FGN"))
            if part and (ident := dt_ei(part, 1, rt, {"type": kind}))
        ]
        if not idents:
            continue
        key = comps[0] or comps[1]
        sub = [*rt.texts(key, 1), ""]
        rid = (
            resource_id("Specimen", patient, sub[0], sub[1])
            if sub[1]
            else resource_id("Specimen", patient, sub[0])
        )
        specimen: dict[str, Any] = {
            "resourceType": "Specimen",
            "id": rid,
            "identifier": idents,
            "subject": {"reference": subject},
        }
        rt.add_extra(specimen)
        ref = {"reference": f"Specimen/{rid}"}
        if ref not in out:
            out.append(ref)
    return out or None


@_segment_fn("specimen_container")
def fn_specimen_container(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """SPM-27 container type and SPM-6 additives (CWE) → one ``Specimen.container`` (V2-to-FHIR IG
    SPM[Specimen]: container.type, container.additiveCodeableConcept; FHIR has one additive per
    container, so the first additive)."""
    kind_raw, additive_raw = ([*raws, "", ""])[:2]
    cwe = rt.maps.converters.get("CWE")
    if cwe is None:
        return None
    out: dict[str, Any] = {}
    kind_raw = _first_rep(rt, kind_raw)
    if kind_raw and kind_raw != '""':
        kind = cwe(kind_raw, 0, rt, {})
        if kind:
            out["type"] = kind
    additive_raw = _first_rep(rt, additive_raw)
    if additive_raw and additive_raw != '""':
        additive = cwe(additive_raw, 0, rt, {})
        if additive:
            out["additiveCodeableConcept"] = additive
    return [out] if out else None


@_segment_fn("administration_part_of")
def fn_administration_part_of(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """An OBX in the order group of an RXA (VXU ORDER.OBSERVATION, RAS) → a Reference to what that RXA
    made, the Immunization or the MedicationAdministration (V2-to-FHIR IG VXU_V04: Observation.partOf).
    Only an RXA *before* the OBX governs it: a patient-level OBX (before any ORC/RXA) is part of none."""
    positions = [i for i in rt._positions.get("RXA", ()) if i < index]
    if not positions:
        return None
    rxa = positions[-1]
    for name in args.get("maps", ("RXA.Immunization", "RXA.MedicationAdministration")):
        made = rt.made.get((str(name), rxa))
        if made is not None and made.get("id"):
            return {"reference": f"{made['resourceType']}/{made['id']}"}
    return None


# The R5 element Observation.specimen (0..1) as the IG's cross-version extension, for an OBX-33 that
# names several specimens (V2-to-FHIR IG OBX[Observation]: IF OBX-33 COUNT>1).
OBSERVATION_SPECIMEN_URL = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Observation.specimen"


@_segment_fn("related_specimen")
def fn_related_specimen(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """OBX-33 (observation related specimen identifier, EIP, repeating) with one repetition → a
    Reference to that Specimen, made and keyed as SPM.Specimen keys it (V2-to-FHIR IG OBX[Observation]:
    specimen when OBX-33 COUNT=1). With several repetitions: none (see :func:`fn_related_specimens`)."""
    raw = ([*raws, ""])[0]
    if not raw or raw == '""' or rt.enc.repetition in raw.strip(rt.enc.repetition):
        return None
    refs = fn_specimen_parent([raw.strip(rt.enc.repetition)], index, rt, {})
    return refs[0] if refs else None


@_segment_fn("related_specimens")
def fn_related_specimens(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """OBX-33 with several repetitions → one extension (R5 Observation.specimen) per Specimen, each
    made and keyed as SPM.Specimen keys it (V2-to-FHIR IG OBX[Observation]: IF OBX-33 COUNT>1)."""
    raw = ([*raws, ""])[0]
    reps = [r for r in raw.split(rt.enc.repetition) if r and r != '""'] if raw else []
    if len(reps) < 2:
        return None
    refs = fn_specimen_parent([rt.enc.repetition.join(reps)], index, rt, {}) or []
    return [{"url": OBSERVATION_SPECIMEN_URL, "valueReference": ref} for ref in refs] or None


@_segment_fn("producer_organization")
def fn_producer_organization(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """OBX-15 producer's ID (CWE: the laboratory that produced the result) → a Reference to its
    Organization, which is made: CWE-1 as identifier (its system from CWE-3, else the sender's), CWE-2
    as name (V2-to-FHIR IG OBX[Observation]: performer (Organization), CWE[Organization])."""
    from hub.mapping._loader import _as_resource

    raw = _first_rep(rt, ([*raws, ""])[0])
    if not raw or raw == '""':
        return None
    c = [*rt.texts(raw, 0), "", "", ""]
    if not (c[0] or c[1]):
        return None
    body: dict[str, Any] = {}
    if c[0]:
        system = coding_system(rt, c[2]) if c[2] else None
        body["identifier"] = [{"system": system or f"urn:hub:id:{rt.facility_key}", "value": c[0]}]
    if c[1]:
        body["name"] = c[1]
    return _as_resource(rt, "Organization", body)


# V2 table 0912 (participation): MDIR, the medical director of the performing organization.
_MEDICAL_DIRECTOR = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/v2-0912",
            "code": "MDIR",
            "display": "Medical Director",
        }
    ]
}


@_segment_fn("performing_organization")
def fn_performing_organization(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """OBX-23 performing organization (XON), OBX-24 its address (XAD) and OBX-25 its medical director
    (XCN) → the Observation's performer (V2-to-FHIR IG OBX[Observation]): without a director a Reference
    to the Organization (made, with the address); with one a Reference to a PractitionerRole (made:
    the director as practitioner, the Organization, code MDIR of table 0912)."""

    org_raw, addr_raw, director_raw = ([*raws, "", "", ""])[:3]
    conv = rt.maps.converters
    org_raw = _first_rep(rt, org_raw if org_raw != '""' else "")
    org = conv["XON"](org_raw, 0, rt, {}) if org_raw and "XON" in conv else None
    addr_raw = _first_rep(rt, addr_raw if addr_raw != '""' else "")
    address = conv["XAD"](addr_raw, 0, rt, {}) if org and addr_raw and "XAD" in conv else None
    if org and address:
        made = rt.extra.get(org["reference"])
        if made is not None and address not in made.setdefault("address", []):
            made["address"].append(address)
    director_raw = _first_rep(rt, director_raw if director_raw != '""' else "")
    director = conv["XCN"](director_raw, 0, rt, {}) if director_raw and "XCN" in conv else None
    if not director:
        return org
    body: dict[str, Any] = {"practitioner": director, "code": [_MEDICAL_DIRECTOR]}
    if org:
        body["organization"] = org
    key = "|".join(str(x.get("reference", "")) for x in (director, org or {}))
    rid = resource_id("PractitionerRole", "MDIR", key)
    rt.add_extra({"resourceType": "PractitionerRole", "id": rid, **body})
    ref: dict[str, Any] = {"reference": f"PractitionerRole/{rid}"}
    if director.get("display"):
        ref["display"] = director["display"]
    return ref


_RANGE = re.compile(r"^\s*(-?\d+(?:[.,]\d+)?)\s*(?:-|–|\.\.|to)\s*(-?\d+(?:[.,]\d+)?)\s*$")
_BOUND = re.compile(r"^\s*(<=|>=|<|>|≤|≥)\s*(-?\d+(?:[.,]\d+)?)\s*$")


@_segment_fn("reference_range")
def fn_reference_range(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """OBX-7 references range (ST) → one ``Observation.referenceRange``: the text as sent (V2-to-FHIR
    IG OBX[Observation]: referenceRange.text) and, for a numeric result (OBX-2 NM, SN), the bounds it
    states ("12.0-16.0", "<5", ">=60") as low/high in the OBX-6 units, so a client can compare."""
    range_raw, units_raw, vtype_raw = ([*raws, "", "", ""])[:3]
    if not range_raw or range_raw == '""':
        return None
    text = rt.text(range_raw).strip()
    if not text:
        return None
    out: dict[str, Any] = {}
    if rt.text(vtype_raw).strip().upper() in ("NM", "SN", ""):
        units = _first_rep(rt, units_raw if units_raw != '""' else "")
        pair, bound = _RANGE.match(text), _BOUND.match(text)
        if pair:
            low, high = decimal(pair.group(1).replace(",", ".")), decimal(pair.group(2).replace(",", "."))
            if low is not None and high is not None and low <= high:
                out["low"] = quantity(rt, low, units, 0)
                out["high"] = quantity(rt, high, units, 0)
        elif bound:
            value = decimal(bound.group(2).replace(",", "."))
            if value is not None:
                out["high" if bound.group(1) in ("<", "<=", "≤") else "low"] = quantity(rt, value, units, 0)
    out["text"] = text
    return out


# === visit helpers ===


@_segment_fn("visit_diagnosis")
def fn_visit_diagnosis(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """One diagnosis of an Encounter or an EpisodeOfCare from a DG1 (V2-to-FHIR IG DG1[Encounter],
    DG1[EpisodeOfCare]): the Condition the DG1 made (``args.map``, DG1.Condition) as ``condition``,
    DG1-6 diagnosis type (table 0052, vocab ``args.vocab``: A admitting → diagnosis-role AD, the
    sender's coding kept beside) as ``args.role_element`` (``use`` on an Encounter, ``role`` on an
    EpisodeOfCare) and DG1-15 priority as ``rank`` (a positiveInt; 0 or no number gives none). No
    Condition (no code in the DG1): no diagnosis."""
    kind_raw, priority_raw = ([*raws, "", ""])[:2]
    condition = rt.made.get((str(args.get("map", "DG1.Condition")), index))
    # The Condition needs its code and its patient (DG1.Condition requires both), else it is not made.
    if not condition or not condition.get("id") or "code" not in condition or rt.nearest(index, "PID") < 0:
        return None
    out: dict[str, Any] = {"condition": {"reference": f"Condition/{condition['id']}"}}
    kind_raw = _first_rep(rt, kind_raw)
    cwe = rt.maps.converters.get("CWE")
    if kind_raw and kind_raw != '""' and cwe is not None:
        concept = cwe(kind_raw, 0, rt, {"default_system": "HL70052"})
        if isinstance(concept, dict) and concept:
            vocab = rt.vocab(str(args.get("vocab", "diagnosis-role")))
            codings = concept.get("coding") or []
            found = vocab.lookup(codings[0].get("code", "")) if codings else None
            if isinstance(found, dict):
                coding = (
                    {"system": vocab.system, **found}
                    if vocab.system and "system" not in found
                    else dict(found)
                )
                if coding not in codings:
                    concept = {**concept, "coding": [coding, *codings]}
            out[str(args.get("role_element", "use"))] = concept
    if priority_raw and priority_raw != '""':
        rank = dt_positive_int(_first_rep(rt, priority_raw), 0, rt, {})
        if isinstance(rank, int):
            out["rank"] = rank
    return out


# ---------------------------------------------------------------------------------------------------
# The patient and the people around them (V2-to-FHIR IG PID[Patient], PD1[Patient], NK1[Patient]).


@_transform("extension")
def tf_extension(value: Any, rt: Runtime, args: dict[str, Any]) -> Any:
    """A value as an extension: ``{url: args.url, value<args.type>: value}``; with ``args.part`` the
    value sits in a sub-extension of that url (``patient-citizenship`` → ``code``, ``patient-animal`` →
    ``species``), as the complex extensions of the FHIR core define."""
    if value is None or (isinstance(value, str | dict | list) and not value):
        return None
    inner = {f"value{args.get('type', 'String')}": value}
    part = args.get("part")
    if part:
        return {"url": str(args["url"]), "extension": [{"url": str(part), **inner}]}
    return {"url": str(args["url"]), **inner}


@_segment_fn("complex_extension")
def fn_complex_extension(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """One complex extension of ``args.url`` whose sub-extensions ``args.parts`` (one per input, in
    order) carry the first repetition of each input as a CodeableConcept (CWE), e.g. PID-35 species
    and PID-36 breed → ``patient-animal``. None when no input is valued."""
    cwe = rt.maps.converters.get("CWE")
    if cwe is None:
        return None
    parts: list[dict[str, Any]] = []
    for name, raw in zip(args.get("parts", ()), raws, strict=False):
        first = _first_rep(rt, raw)
        if first and first != '""' and (concept := cwe(first, 0, rt, {})):
            parts.append({"url": str(name), "valueCodeableConcept": concept})
    return {"url": str(args["url"]), "extension": parts} if parts else None


@_segment_fn("patient_addresses")
def fn_patient_addresses(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """PID-11 (every repetition, XAD) with PID-12 county code as the V2-to-FHIR IG PID[Patient] says:
    the district of the only address when that address has no county (XAD-9) of its own, else (another
    county, or several addresses: PID-12 cannot say which) an address of its own holding the district;
    without PID-11, an address with only the district."""
    addresses_raw, county_raw = ([*raws, "", ""])[:2]
    xad = rt.maps.converters.get("XAD")
    out: list[dict[str, Any]] = []
    reps = [r for r in addresses_raw.split(rt.enc.repetition) if r and r != '""'] if addresses_raw else []
    for rep in reps:
        addr = xad(rep, 0, rt, {}) if xad is not None else None
        if addr and addr not in out:
            out.append(addr)
    county = rt.text(_component(rt, _first_rep(rt, county_raw), 1)).strip() if county_raw != '""' else ""
    if county:
        if len(reps) == 1 and len(out) == 1 and not out[0].get("district"):
            out[0] = {**out[0], "district": county}
        elif not (len(out) == 1 and out[0].get("district") == county):
            out.append({"district": county})
    return out or None


@_id_fn("segment_per_patient")
def id_segment_per_patient(index: int, rt: Runtime) -> tuple[str, ...] | None:
    """One resource per patient for a segment that occurs once per patient (PD1-7 living will → one
    Observation, updated by each message): the segment's name, scoped to the patient by the rule."""
    return ("segment", rt.segments[index].name)


@_segment_fn("note_annotation")
def fn_note_annotation(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """An NTE as one Annotation (V2-to-FHIR IG NTE[Observation], NTE[Appointment-Comment]): NTE-3 the
    text, NTE-5 the author, NTE-6 the time as :func:`fn_nte_annotation` reads them; with
    ``args.comment_type``, the fourth input (NTE-4 comment type) as the annotationType extension."""
    note = fn_nte_annotation(raws[:3], index, rt, {})
    type_raw = _first_rep(rt, raws[3]) if len(raws) > 3 and raws[3] != '""' else ""
    if note and args.get("comment_type") and type_raw:
        cwe = rt.maps.converters.get("CWE") or dt_codeable_concept
        concept = cwe(type_raw, 0, rt, {"default_system": "HL70364"})
        if concept:
            note["extension"] = [
                {
                    "url": "http://hl7.org/fhir/StructureDefinition/annotationType",
                    "valueCodeableConcept": concept,
                }
            ]
    return note


@_segment_fn("coded_comment_content")
def fn_coded_comment_content(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """NTE-9 coded comment (CWE) → a text/plain attachment (V2-to-FHIR IG NTE[DocumentReference]:
    content.attachment.data = CWE-9 original text, a line feed, then each coding as code-display-system)."""
    raw = ([*raws, ""])[0]
    if not raw or raw == '""':
        return None
    lines: list[str] = []
    for rep in raw.split(rt.enc.repetition):
        c = [*rt.texts(rep, 0), *[""] * 12]
        if c[8]:
            lines.append(c[8])
        for triplet in ((c[0], c[1], c[2]), (c[3], c[4], c[5]), (c[9], c[10], c[11])):
            if any(triplet):
                lines.append("-".join(triplet))
    if not lines:
        return None
    data = base64.b64encode("\n".join(lines).encode()).decode("ascii")
    return {"contentType": "text/plain", "data": data}


def _shift(start: Any, amount_raw: str, units_raw: str, rt: Runtime, allow_zero: bool) -> str | None:
    """An instant (ISO text) moved by an NM amount in CNE units (default minutes), or None."""
    from datetime import datetime, timedelta

    if not isinstance(start, str) or not amount_raw or amount_raw == '""':
        return None
    amount = decimal(rt.text(_component(rt, _first_rep(rt, amount_raw), 1)).strip())
    unit = rt.text(_component(rt, _first_rep(rt, units_raw), 1)).strip().upper() if units_raw else ""
    per = _MINUTES_PER_UNIT.get(unit or "MIN")
    if amount is None or per is None or amount < 0 or (amount == 0 and not allow_zero):
        return None
    try:
        return (datetime.fromisoformat(start) + timedelta(minutes=float(amount) * per)).isoformat()
    except (ValueError, OverflowError):  # not a datetime; an amount past the calendar
        return None


@_segment_fn("appointment_participant_timed")
def fn_appointment_participant_timed(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """An AIG/AIL/AIP participant (:func:`fn_appointment_participant`: actor, type, start, status, the
    first four inputs) with the rest of its period (V2-to-FHIR IG AIG/AIL/AIP[Appointment]): without a
    start date/time, the appointment's start (SCH-11.4) plus the start offset in its units; the end, the
    start plus the duration in its units. Inputs 5–9: offset, offset units, duration, duration units,
    SCH-11."""
    out = fn_appointment_participant(raws[:4], index, rt, args)
    if not out:
        return out
    offset, offset_units, duration, duration_units, timing = ([*raws[4:], "", "", "", "", ""])[:5]
    start = (out.get("period") or {}).get("start")
    if start is None:
        sch_start = _component(rt, _first_rep(rt, timing), 4) if timing else ""
        base = dt_instant(sch_start, 0, rt, {}) if sch_start and sch_start != '""' else None
        start = _shift(base, offset, offset_units, rt, allow_zero=True)
        if start:
            out["period"] = {"start": start}
    end = _shift(start, duration, duration_units, rt, allow_zero=False)
    if end:
        out.setdefault("period", {})["end"] = end
    return out


@_segment_fn("allergy_recorder")
def fn_allergy_recorder(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """IAM-14 reported by (XPN) and IAM-15 relationship to patient (CWE, table 0063) → the
    AllergyIntolerance's recorder (V2-to-FHIR IG IAM[AllergyIntolerance]): no relationship, a
    Practitioner of that name; SEL, the patient; another relationship, a RelatedPerson of the patient
    (made: name, relationship through vocab relationship, keyed by the patient, name and relationship)."""
    from hub.mapping._loader import _as_resource
    from hub.mapping._runtime import _translate, parse_ref

    name_raw, rel_raw = ([*raws, "", ""])[:2]
    name_raw = _first_rep(rt, name_raw if name_raw != '""' else "")
    rel_raw = _first_rep(rt, rel_raw if rel_raw != '""' else "")
    conv = rt.maps.converters
    human = conv["XPN"](name_raw, 0, rt, {}) if name_raw and "XPN" in conv else None
    rel_code = rt.text(_component(rt, rel_raw, 1)).strip().upper() if rel_raw else ""
    made = rt.made.get(("PID.Patient", rt.nearest(index, "PID")))
    patient = f"Patient/{made['id']}" if made and made.get("id") else f"Patient/{rt.patient_id_at(index)}"
    if rel_code == "SEL":
        return {"reference": patient}
    if not human:
        return None
    if not rel_code:
        return _as_resource(rt, "Practitioner", {"name": [human]})
    concept = (conv.get("CWE") or dt_codeable_concept)(rel_raw, 0, rt, {"default_system": "HL70063"})
    if concept and "relationship" in rt.maps.vocabs:
        concept = _translate(rt, "relationship", concept, parse_ref("IAM-15"))
    display = " ".join([*human.get("given", []), human.get("family", "")]).strip()
    rid = resource_id("RelatedPerson", rt.patient_id_at(index), display, rel_code)
    person: dict[str, Any] = {"resourceType": "RelatedPerson", "id": rid, "patient": {"reference": patient}}
    person["name"] = [human]
    if concept:
        person["relationship"] = [concept]
    rt.add_extra(person)
    ref: dict[str, Any] = {"reference": f"RelatedPerson/{rid}"}
    if display:
        ref["display"] = display
    return ref


@_segment_fn("codings")
def fn_codings(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """Every coding of a CWE field's repetitions, to be added beside a concept's own (V2-to-FHIR IG
    IAM-27 clinician identified code: "added as additional .coding entries" of AllergyIntolerance.code)."""
    raw = ([*raws, ""])[0]
    if not raw or raw == '""':
        return None
    cwe = rt.maps.converters.get("CWE") or dt_codeable_concept
    out: list[dict[str, Any]] = []
    for rep in raw.split(rt.enc.repetition):
        concept = cwe(rep, 0, rt, {}) if rep and rep != '""' else None
        for coding in (concept or {}).get("coding", []):
            if coding not in out:
                out.append(coding)
    return out or None


@_segment_fn("location_with_address")
def fn_location_with_address(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """A PL (RXA-27 administer-at, else the v2.5 RXA-11 administered-at location) → a Reference to its
    Location (made), with the address the segment gives for it (RXA-28, XAD) as Location.address
    (V2-to-FHIR IG RXA[Immunization]: location(Location.address))."""
    place_raw, fallback_raw, addr_raw = ([*raws, "", "", ""])[:3]
    conv = rt.maps.converters
    place_raw = _first_rep(rt, place_raw if place_raw != '""' else "") or _first_rep(
        rt, fallback_raw if fallback_raw != '""' else ""
    )
    location = conv["PL"](place_raw, 0, rt, {}) if place_raw and "PL" in conv else None
    addr_raw = _first_rep(rt, addr_raw if addr_raw != '""' else "")
    address = conv["XAD"](addr_raw, 0, rt, {}) if location and addr_raw and "XAD" in conv else None
    if location and address:
        made = rt.extra.get(location["reference"])
        if made is not None and "address" not in made:
            made["address"] = address  # Location.address is 0..1
    return location


def _repeats(value: str, rep: str) -> int:
    return sum(1 for r in value.split(rep) if r and r != '""')


@_segment_fn("observation_components")
def fn_observation_components(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """OBX-5 with several repetitions (not text, whose repetitions are lines; not NA) → one component per
    value, each with the OBX-3 code and the value as :func:`fn_observation_value` reads it (V2-to-FHIR
    IG ORU_R01: OBX-5 LST.count > 1 → OBX[Observation-Component]: component[each].code, .value[x])."""
    vtype, value, units, code_raw = ([*raws, "", "", "", ""])[:4]
    rep = rt.enc.repetition
    if not value or rep not in value or _repeats(value, rep) < 2:
        return None
    kind = _OBX_TYPES.get(rt.text(vtype).strip().upper(), "text" if not vtype.strip() else "string")
    if kind in ("text", "string", "Attachment", "AttachmentReference"):
        return None
    cwe = rt.maps.converters.get("CWE") or dt_codeable_concept
    code = cwe(_first_rep(rt, code_raw), 0, rt, {}) if code_raw and code_raw != '""' else None
    if not code:
        return None
    out: list[dict[str, Any]] = []
    for one in value.split(rep):
        if not one or one == '""':
            continue
        found = fn_observation_value([vtype, one, units], index, rt, {})
        if isinstance(found, Choice) and not is_empty(found.value):
            out.append({"code": code, f"value{found.type}": found.value})
    return out or None


@_segment_fn("appointment_comment")
def fn_appointment_comment(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """R4 Appointment.comment (one string) from every note of the appointment: the NTE-3 text of the
    NTE segments right after the SCH and right after each AIS (IG SIU_S12: SCH's NTE and
    RESOURCES.SERVICE.NTE → NTE[Appointment-Comment]), one note a line. Each note is also its own R5
    Appointment.note extension (NTE.AppointmentNote)."""
    owners = {str(n) for n in args.get("after", ("SCH", "AIS"))}
    texts: list[str] = []
    following = False
    for i in range(index, len(rt.segments)):
        name = rt.segments[i].name
        if i > index and name == "SCH":
            break  # the next appointment's
        if name == "NTE":
            if following:
                text = dt_text(_field(rt, i, 3), 0, rt, {})
                if text:
                    texts.append(text)
            continue
        following = name in owners
    return "\n".join(texts) or None


# ===================================================================================================
# Orders: NTE annotations with their author and time, NDL (the result interpreter, technician and
# transcriptionist of an OBR), the v2 confidentiality code as a security label.
# ---------------------------------------------------------------------------------------------------


@_segment_fn("nte_annotation")
def fn_nte_annotation(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """V2-to-FHIR IG NTE[ServiceRequest]: ``paths`` NTE-3 comment, NTE-5 entered by (XCN → a
    Practitioner), NTE-6 entered date/time → one Annotation (text, authorReference, time). A note
    without a comment is none (Annotation.text is required)."""
    comment, entered_by, entered_at = ([*raws, "", "", ""])[:3]
    text = dt_text(comment, 0, rt, {}) if comment and comment != '""' else None
    if not text:
        return None
    note: dict[str, Any] = {"text": text}
    author = _first_rep(rt, entered_by)
    if author and author != '""':
        conv = rt.maps.converters.get("XCN")
        ref = conv(author, 0, rt, {}) if conv is not None else None
        if ref:
            note["authorReference"] = ref
    if entered_at and entered_at != '""':
        at = dt_datetime(_first_rep(rt, entered_at), 0, rt, {})
        if at:
            note["time"] = at
    return note


@_datatype("NDL")
def dt_ndl(raw: str, level: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """NDL (CNN name & id ^ start ^ end ^ point of care ...) → a Reference to the Practitioner, through
    the XCN map: CNN-1..8 are XCN-1..8 (id, family, given, middle, suffix, prefix, degree, source
    table), CNN-9..11 XCN-9's HD. A field sent XCN-style (``123^Family^Given``, no subcomponents in
    the first component) is read as an XCN."""
    conv = rt.maps.converters.get("XCN")
    if conv is None or level != 0:
        return None
    sub, comp = rt.enc.subcomponent, rt.enc.component
    first = raw.split(comp, 1)[0]
    if not sub or sub not in first:
        return conv(raw, 0, rt, args)
    subs = [*first.split(sub), *[""] * 11][:11]
    xcn = comp.join([*subs[:8], sub.join(subs[8:11]).rstrip(sub)]).rstrip(comp)
    return conv(xcn, 0, rt, args) if xcn else None


# The order's Provenance (V2-to-FHIR IG ORC[Provenance]): its agents, entering device and location.


def _coded_resource(rt: Runtime, raw: str, resource_type: str) -> dict[str, Any] | None:
    """A CWE naming an Organization (ORC-17) or a Device (ORC-18): a resource identified by the code in
    its coding system (else the sender's), named by the text; a Reference to it."""
    c = [*rt.texts(raw, 0), "", "", ""]
    code, text = c[0].strip(), c[1].strip()
    if not code and not text:
        return None
    system = coding_system(rt, c[2].strip()) or f"urn:hub:id:{rt.facility_key}"
    body: dict[str, Any] = {}
    if code:
        body["identifier"] = [{"system": system, "value": code}]
    name = text or code
    if resource_type == "Device":
        body["deviceName"] = [{"name": name, "type": "user-friendly-name"}]
    else:
        body["name"] = name
    rid = (
        resource_id(resource_type, system, code)
        if code
        else resource_id(resource_type, rt.ctx.facility, text)
    )
    rt.add_extra({"resourceType": resource_type, "id": rid, **body})
    return {"reference": f"{resource_type}/{rid}", "display": name}


@_segment_fn("order_agent")
def fn_order_agent(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """Provenance agents of an order: each repetition of ``paths[0]`` (an XCN person, or with
    ``args.device`` a CWE device) with the participant type ``args.type`` (none for a device), and
    ``paths[1]`` (a CWE organization, ORC-17) as the first agent's onBehalfOf."""
    person, organization = ([*raws, "", ""])[:2]
    agents: list[dict[str, Any]] = []
    conv = rt.maps.converters.get("XCN")
    for rep in person.split(rt.enc.repetition) if person else []:
        if not rep or rep == '""':
            continue
        who = (
            _coded_resource(rt, rep, "Device")
            if args.get("device")
            else (conv(rep, 0, rt, {}) if conv else None)
        )
        if not who:
            continue
        agent: dict[str, Any] = {}
        if args.get("type"):
            agent["type"] = {"coding": [{"system": PARTICIPANT_TYPE, "code": str(args["type"])}]}
        agent["who"] = who
        agents.append(agent)
    org_raw = _first_rep(rt, organization)
    if agents and org_raw and org_raw != '""':
        org = _coded_resource(rt, org_raw, "Organization")
        if org:
            agents[0]["onBehalfOf"] = org
    return agents or None


@_segment_fn("order_location")
def fn_order_location(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """The ordering facility (ORC-21 XON name and identifier, ORC-22 address, ORC-23 phone) as a
    Location; a Reference to it. Keyed by the XON identifier, else by the name within the sender.
    Without ORC-21, the enterer's location (ORC-13, a PL, the fourth path) through the PL map."""
    name_raw, address_raw, phone_raw, entered_at = ([*raws, "", "", "", ""])[:4]
    xon = _first_rep(rt, name_raw)
    if not xon or xon == '""':
        pl = _first_rep(rt, entered_at)
        conv = rt.maps.converters.get("PL")
        return conv(pl, 0, rt, {}) if conv is not None and pl and pl != '""' else None
    name = rt.text(xon.split(rt.enc.component, 1)[0]).strip()
    ident = dt_identifier_at(xon, 0, rt, {"value": 10, "fallback_value": 3, "authority": 6, "type": 7})
    body: dict[str, Any] = {}
    if ident:
        body["identifier"] = [ident]
    if name:
        body["name"] = name
    if not body:
        return None
    xad = rt.maps.converters.get("XAD")
    address = (
        xad(_first_rep(rt, address_raw), 0, rt, {}) if xad and address_raw and address_raw != '""' else None
    )
    if address:
        body["address"] = address
    phones = [
        p
        for rep in phone_raw.split(rt.enc.repetition)
        if rep and rep != '""' and (p := dt_xtn(rep, 0, rt, {}))
    ]
    if phones:
        body["telecom"] = phones
    if ident and ident.get("value"):
        rid = resource_id("Location", str(ident.get("system", "")), str(ident["value"]))
    else:
        rid = resource_id("Location", rt.ctx.facility, name)
    rt.add_extra({"resourceType": "Location", "id": rid, **body})
    ref: dict[str, Any] = {"reference": f"Location/{rid}"}
    if name:
        ref["display"] = name
    return ref


@_segment_fn("ordering_provider_address")
def fn_ordering_provider_address(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """``paths`` ORC-12 ordering provider and ORC-24 its address: the ORC-12 Practitioner (through the
    XCN map, the same Reference ORC-12 alone gives) with the address added; None without ORC-12."""
    person, address_raw = ([*raws, "", ""])[:2]
    rep = _first_rep(rt, person)
    conv = rt.maps.converters.get("XCN")
    if not rep or rep == '""' or conv is None:
        return None
    ref = conv(rep, 0, rt, {})
    if not ref:
        return None
    xad = rt.maps.converters.get("XAD")
    practitioner = rt.extra.get(str(ref.get("reference", "")))
    if xad and practitioner is not None and address_raw and address_raw != '""':
        address = xad(_first_rep(rt, address_raw), 0, rt, {})
        if address and address not in practitioner.setdefault("address", []):
            practitioner["address"].append(address)
    return ref


@_segment_fn("message_sender")
def fn_message_sender(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """The sending facility as the message's Provenance names it (agent ``author``, ``urn:hub:sender``)
    with ``args.as: agent``, or the source message (its control id, ``paths``: MSH-9, MSH-10) with
    ``args.as: entity``: an order's Provenance says who sent it and in which message, as the message's
    own does (and so always has the agent FHIR requires). With ``args.as: recorded``, the first of
    ``paths`` (ORC-9) as an instant, else the message's date/time (MSH-7); give a path on another
    segment too (MSH-10), so the function runs when ORC-9 is empty."""
    msh = rt.segments[0]
    if args.get("as") == "recorded":
        for raw in [raws[0] if raws else "", msh.get(7)]:
            at = dt_instant(_first_rep(rt, raw), 0, rt, {}) if raw and raw != '""' else None
            if at:
                return at
        return None
    if args.get("as") == "entity":
        control_id = msh.get(10)
        message_type = f"{msh.get(9, 1)}^{msh.get(9, 2)}"
        what: dict[str, Any] = {"display": f"{message_type} {control_id}".strip()}
        if control_id:
            what = {"identifier": {"system": f"urn:hub:hl7v2:{rt.facility_key}", "value": control_id}, **what}
        return {"role": "source", "what": what}
    return author_agent(_sender(rt.ctx.facility, msh.get(3)))


@_segment_fn("message_recorded")
def fn_message_recorded(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """The message's date/time (MSH-7) as an instant, for a Provenance a segment makes beside the
    message's own (PID[Provenance-Patient].recorded): the same value, so a replay changes nothing.
    The inputs only say when the Provenance applies; MSH-7 itself is the engine's (coverage)."""
    sent = rt.segments[0].get(7) if rt.segments else ""
    if not sent:
        return None
    try:
        return to_instant(sent, rt.zone)
    except TimeFormatError:
        return None  # the message's Provenance warns about it


# ---------------------------------------------------------------------------------------------------
# Insurance (IN1/IN2 → Coverage) and guarantors (GT1 → Account.guarantor).

COVERAGE_CLASS = "http://terminology.hl7.org/CodeSystem/coverage-class"
# HL7 table 0063 code of the patient itself (IN1-17 insured's, GT1-11 guarantor's relationship).
_SELF_CODES = frozenset({"SEL"})


def _first_text(rt: Runtime, raw: str, n: int = 1) -> str:
    """The text of component ``n`` (its first subcomponent) of the first repetition of ``raw``."""
    comp = _component(rt, _first_rep(rt, raw), n)
    return rt.text(comp.split(rt.enc.subcomponent, 1)[0] if rt.enc.subcomponent else comp).strip()


def is_self(rt: Runtime, relationship_raw: str) -> bool:
    """Whether a table 0063 relationship (CWE) says the party is the patient (SEL)."""
    return _first_text(rt, relationship_raw).upper() in _SELF_CODES


@_segment_fn("coverage_class")
def fn_coverage_class(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """One ``Coverage.class`` of ``args.type`` (coverage-class: plan, group …): the value is the first
    input's first component (IN1-2 health plan id, IN1-8 group number), the name the second input's
    first component (IN1-9 group name), else the first input's second component (IN1-2.2 plan text)."""
    first, second = ([*raws, "", ""])[:2]
    value = _first_text(rt, first) if first and first != '""' else ""
    if not value:
        return None
    name = _first_text(rt, second) if second and second != '""' else _first_text(rt, first, 2)
    out: dict[str, Any] = {
        "type": {"coding": [{"system": COVERAGE_CLASS, "code": str(args.get("type", "plan"))}]},
        "value": value,
    }
    if name:
        out["name"] = name
    return out


def _party_reference(
    rt: Runtime, index: int, relationship_raw: str, name_raw: str, resource: str = "RelatedPerson"
) -> Any:
    """The Patient when the relationship is SEL, else the RelatedPerson a map keys as (relationship
    code, family name, given name) within the patient: IN1.RelatedPerson, GT1.RelatedPerson."""
    if is_self(rt, relationship_raw):
        return {"reference": f"Patient/{rt.patient_id_at(index)}"}
    relationship = _first_text(rt, relationship_raw)
    family = _first_text(rt, name_raw)
    if not relationship or not family:
        return None
    given = _first_text(rt, name_raw, 2)
    return {
        "reference": f"{resource}/{resource_id(resource, rt.patient_id_at(index), relationship, family, given)}"
    }


@_segment_fn("insured_party")
def fn_insured_party(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """IN1-17 relationship and IN1-16 insured's name → ``Coverage.subscriber`` (V2-to-FHIR IG
    IN1[Coverage]): the Patient when IN1-17 is SEL, else the insured RelatedPerson IN1.RelatedPerson
    makes (keyed by IN1-17.1, IN1-16.1 and IN1-16.2 within the patient, as that map keys it)."""
    relationship, name = ([*raws, "", ""])[:2]
    return _party_reference(rt, index, relationship, name)


def _organization(rt: Runtime, name: str, identifiers: list[dict[str, Any]], extra: dict[str, Any]) -> Any:
    from hub.mapping._loader import _as_resource

    body: dict[str, Any] = {}
    if identifiers:
        body["identifier"] = identifiers
    if name:
        body["name"] = name
    if not body:
        return None
    body.update({k: v for k, v in extra.items() if v})
    return _as_resource(rt, "Organization", body)


def _cx_list(rt: Runtime, raw: str, skip_types: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    out = []
    for rep in raw.split(rt.enc.repetition) if raw and raw != '""' else []:
        if skip_types and rt.text(_component(rt, rep, 5)).strip().upper() in skip_types:
            continue
        ident = dt_cx(rep, 0, rt, {})
        if ident and ident not in out:
            out.append(ident)
    return out


@_segment_fn("payor_organization")
def fn_payor_organization(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """The insurer (V2-to-FHIR IG IN1[Coverage] payor): an Organization named by IN1-4 (XON; its
    XON-10/XON-3 identifier), identified by IN1-3 insurance company id (CX), with IN1-5 address and
    IN1-7 phone. Keyed by its first identifier (IN1-3), else by its name within the sender."""
    company, ids, address, phone = ([*raws, "", "", "", ""])[:4]
    company = _first_rep(rt, company) if company != '""' else ""
    identifiers = _cx_list(rt, ids)
    if company:
        own = dt_identifier_at(company, 0, rt, {"value": 10, "fallback_value": 3, "authority": 6, "type": 7})
        if own and own.get("value") and own not in identifiers:
            identifiers.append(own)
    conv = rt.maps.converters
    addr_raw = _first_rep(rt, address) if address != '""' else ""
    addr = conv["XAD"](addr_raw, 0, rt, {}) if addr_raw and "XAD" in conv else None
    telecom = [
        t
        for rep in (phone.split(rt.enc.repetition) if phone and phone != '""' else [])
        if (t := dt_xtn(rep, 0, rt, {}))
    ]
    return _organization(
        rt,
        _first_text(rt, company) if company else "",
        identifiers,
        {"address": [addr] if addr else None, "telecom": telecom},
    )


@_segment_fn("policy_holder")
def fn_policy_holder(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """IN1-11 insured's group employer name (XON) and IN1-10 its id (CX) → ``Coverage.policyHolder``,
    an Organization (V2-to-FHIR IG IN1[Coverage]). An IN1-10 typed SN is the subscriber's number
    (see ``subscriber_id``), not the employer's."""
    employer, ids = ([*raws, "", ""])[:2]
    employer = _first_rep(rt, employer) if employer != '""' else ""
    identifiers = _cx_list(rt, ids, frozenset({"SN"}))
    return _organization(rt, _first_text(rt, employer) if employer else "", identifiers, {})


@_segment_fn("subscriber_id")
def fn_subscriber_id(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """``Coverage.subscriberId`` (R4: a string; the IG's R5 subscriberId extension): IN1-49 insured's
    id number, else an IN1-10 typed SN (subscriber number), else IN1-36 policy number."""
    insured, group_ids, policy = ([*raws, "", "", ""])[:3]
    value = _first_text(rt, insured) if insured and insured != '""' else ""
    if not value and group_ids and group_ids != '""':
        for rep in group_ids.split(rt.enc.repetition):
            if rt.text(_component(rt, rep, 5)).strip().upper() == "SN":
                value = rt.text(_component(rt, rep, 1)).strip()
                if value:
                    break
    if not value and policy and policy != '""':
        value = _first_text(rt, policy)
    return value or None


_GT1_NUMBER = (parse_ref("GT1-2.1"), parse_ref("GT1-2.4"))
_GT1_PERSON = (parse_ref("GT1-3.1"), parse_ref("GT1-3.2"), parse_ref("GT1-11.1"), parse_ref("GT1-8"))


@_segment_fn("guarantor")
def fn_guarantor(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """GT1 → one ``Account.guarantor``: the party is the Patient when GT1-11 (relationship, table
    0063) is SEL, else the guarantor RelatedPerson GT1.RelatedPerson makes (keyed as that map keys
    it: GT1-2 guarantor number, else GT1-3 name, GT1-11 and GT1-8 within the patient), else an
    Organization (GT1-21 guarantor organization name, XON); GT1-13/GT1-14 the period."""
    relationship, name, number, organization, begin, end = ([*raws, "", "", "", "", "", ""])[:6]
    pid = rt.patient_id_at(index)
    party: dict[str, Any] | None = None
    if is_self(rt, relationship):
        party = {"reference": f"Patient/{pid}"}
    elif (number and number != '""' and (key := [rt.value(r, index) for r in _GT1_NUMBER])[0]) or (
        name and name != '""' and (key := [rt.value(r, index) for r in _GT1_PERSON])[0]
    ):
        party = {"reference": f"RelatedPerson/{resource_id('RelatedPerson', pid, *key)}"}
    elif organization and organization != '""':
        org = _first_rep(rt, organization)
        ident = dt_identifier_at(org, 0, rt, {"value": 10, "fallback_value": 3, "authority": 6, "type": 7})
        party = _organization(rt, _first_text(rt, org), [ident] if ident and ident.get("value") else [], {})
    if party is None:
        return None
    out: dict[str, Any] = {"party": party}
    period = {
        k: v
        for k, raw in (("start", begin), ("end", end))
        if raw and raw != '""' and (v := dt_date(_first_rep(rt, raw), 0, rt, {}))
    }
    _drop_reversed_end(period)
    if period:
        out["period"] = period
    return out


@_segment_fn("procedure_performed")
def fn_procedure_performed(raws: list[str], index: int, rt: Runtime, args: dict[str, Any]) -> Any:
    """PR1-5 procedure date/time and PR1-7 procedure minutes → ``Procedure.performed[x]`` (V2-to-FHIR
    IG PR1[Procedure]): a performedPeriod from PR1-5 to PR1-5 plus PR1-7 minutes when PR1-7 is valued
    and PR1-5 is precise to the minute, else performedDateTime PR1-5."""
    from datetime import datetime, timedelta

    when_raw, minutes_raw = ([*raws, "", ""])[:2]
    when_raw = _first_rep(rt, when_raw) if when_raw != '""' else ""
    if not when_raw:
        return None
    start = dt_datetime(when_raw, 0, rt, {})
    if not isinstance(start, str):
        return None
    minutes = decimal(rt.text(_component(rt, minutes_raw, 1)).strip()) if minutes_raw else None
    if minutes is None or minutes <= 0 or "T" not in start:
        return Choice("DateTime", start)
    try:
        moment = datetime.fromisoformat(start)
    except ValueError:
        return Choice("DateTime", start)
    end = (moment + timedelta(minutes=float(minutes))).isoformat()
    return Choice("Period", {"start": start, "end": end})


def _longer_than(v: str, rt: Runtime, a: list[Any]) -> bool:
    """The value has more than ``a[0]`` characters (PID-7 with a time: longer than the 8 of a date)."""
    return len(v.strip()) > int(a[0]) if a else False


CONDITIONS["longer_than"] = _longer_than
