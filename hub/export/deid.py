"""The de-identification profile of a Bulk Data export (the ministry's, and any client's whose scope asks
for it). It follows the HIPAA Safe Harbor list of identifiers (45 CFR 164.514(b)(2)) as HL7's FHIR
de-identification guidance applies it to resources, with the generalisations docs/ministry.md lists:

- **Removed everywhere**: ``identifier`` (but an Organization's or a Location's: facility codes are not
  personal), ``name`` and ``telecom`` of people (Patient, RelatedPerson, Practitioner, Person),
  ``telecom`` anywhere but on Organization/Location, ``photo``, ``contact``, ``communication``'s free
  text; narrative (``text`` holding a ``div``), ``note``, ``comment``, ``description``,
  ``patientInstruction``, ``valueString``; every Attachment (``data``, ``url``: a document's content,
  a report's ``presentedForm``); a Reference's ``display`` (it often names a person); extensions
  other than the region codes of an address.
- **Generalised**: an address keeps ``district``, ``city``, ``state``, ``country`` and its region-code
  extensions (no lines, postal code or text); a birth date keeps year and month, and a person 90 or
  older has the birth year of a 90th birthday in the export's year (Safe Harbor's "90 or older"); a
  death date keeps year and month; every other date-time keeps its day (the time of day is removed).
- **Pseudonymised**: every resource id, and every reference to one, becomes a keyed hash (keyed BLAKE2b,
  with a key the hub keeps, ``HUB_EXPORT_PSEUDONYM_KEY`` or a key file under ``HUB_VAR_DIR``), so the
  same resource has the same pseudonym in every export and references between exported resources
  resolve. A source Patient is replaced by its golden record (the master patient index): one person,
  one pseudonym, whichever hospital's record a resource points at; the source Patients themselves are
  not exported.

This module is pure (no database): the caller hands it, per batch, the golden id of each source Patient.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import date
from typing import Any

PROFILE = "hub-deid-safe-harbor-1"
# v3 ObservationValue security labels: pseudonymised and redacted.
SECURITY = [
    {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "PSEUDED"},
    {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "REDACTED"},
]

PERSON_TYPES = frozenset({"Patient", "RelatedPerson", "Practitioner", "Person"})
FACILITY_TYPES = frozenset({"Organization", "Location"})
# Never in a de-identified export: who looked at what, raw documents.
EXCLUDED_TYPES = frozenset({"AuditEvent", "Binary"})

_DROP_EVERYWHERE = frozenset(
    {"photo", "contact", "note", "comment", "description", "patientInstruction", "valueString"}
)
_ATTACHMENT_ELEMENTS = frozenset({"attachment", "presentedForm", "valueAttachment", "content"})
_ADDRESS_KEEP = frozenset({"use", "type", "district", "city", "state", "country", "extension"})
# Extensions kept (on an address): region codes such as SATUSEHAT's administrativeCode.
_KEPT_EXTENSION = re.compile(r"administrativeCode|region|province|district|regency", re.IGNORECASE)
_DATETIME = re.compile(r"^(\d{4}-\d{2}-\d{2})T")
# The elements ``Deidentifier._special`` decides on; every other element is kept and its content cleaned.
_SPECIAL_KEYS = (
    frozenset({"id", "meta", "resourceType", "identifier", "telecom", "name", "text", "display", "reference"})
    | frozenset({"extension", "address"})
    | _DROP_EVERYWHERE
    | _ATTACHMENT_ELEMENTS
)
_REFERENCE = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(/_history/.*)?$")


class Deidentifier:
    """Turns one stored resource into its de-identified form (or None when it is not exported)."""

    def __init__(self, key: bytes, today: date) -> None:
        self._mac_key = hashlib.blake2b(key, digest_size=64).digest()  # BLAKE2b keys are up to 64 bytes
        self._memo: dict[str, str] = {}
        self._today = today
        self.golden: dict[str, str] = {}  # source Patient id -> golden Patient id (filled per batch)

    def pseudonym(self, resource_type: str, rid: str) -> str:
        if resource_type == "Patient":
            rid = self.golden.get(rid, rid)
        name = f"{resource_type}/{rid}"
        found = self._memo.get(name)
        if found is None:
            if len(self._memo) > 100_000:
                self._memo.clear()
            # keyed BLAKE2b (a MAC in its own right, RFC 7693): the same key, the same pseudonym
            found = self._memo[name] = hashlib.blake2b(
                name.encode(), key=self._mac_key, digest_size=20
            ).hexdigest()
        return found

    def resource(self, res: Mapping[str, Any]) -> dict[str, Any] | None:
        rtype = str(res.get("resourceType", ""))
        if rtype in EXCLUDED_TYPES:
            return None
        out: dict[str, Any] = self._object(rtype, res, top=True, key="") or {}
        out["id"] = self.pseudonym(rtype, str(res.get("id", "")))
        out["meta"] = {"security": SECURITY}
        if rtype == "Patient":
            out.pop("link", None)  # a golden record's links name the source records, not exported
            birth = res.get("birthDate")
            if isinstance(birth, str):
                out["birthDate"] = self._birth_date(birth)
            death = res.get("deceasedDateTime")
            if isinstance(death, str):
                out["deceasedDateTime"] = death[:7]
        return out

    def _birth_date(self, value: str) -> str:
        try:
            year = int(value[:4])
        except ValueError:
            return ""
        if self._today.year - year >= 90:
            return str(self._today.year - 90)
        return value[:7]

    def _value(self, rtype: str, node: Any, *, top: bool = False, key: str = "") -> Any:
        if isinstance(node, dict):
            return self._object(rtype, node, top=top, key=key)
        if isinstance(node, list):
            return self._list(rtype, node, key)
        if isinstance(node, str):
            return self._string(node)
        return node

    @staticmethod
    def _string(node: str) -> str:
        # a date-time keeps its day: the cheap test first (index 10 is the "T" of YYYY-MM-DDThh…)
        if len(node) > 10 and node[10] == "T":
            m = _DATETIME.match(node)
            if m:
                return m.group(1)
        return node

    def _list(self, rtype: str, node: list[Any], key: str) -> list[Any]:
        out: list[Any] = []
        for item in node:
            if isinstance(item, dict):
                value = self._object(rtype, item, top=False, key=key)
                if value:
                    out.append(value)
            elif isinstance(item, str):
                out.append(self._string(item))
            elif isinstance(item, list):
                items = self._list(rtype, item, key)
                if items:
                    out.append(items)
            elif item is not None:
                out.append(item)
        return out

    def _object(self, rtype: str, node: Mapping[str, Any], *, top: bool, key: str) -> dict[str, Any] | None:
        if key == "text" and "div" in node:
            return None  # narrative
        out: dict[str, Any] = {}
        for k, v in node.items():
            if k in _SPECIAL_KEYS:
                self._special(rtype, node, out, k, v, top, key)
                continue
            # every other element: kept, its content cleaned (an Attachment under any name is dropped)
            if isinstance(v, dict):
                if _is_attachment(v):
                    continue
                value = self._object(rtype, v, top=False, key=k)
                if value:
                    out[k] = value
            elif isinstance(v, str):
                out[k] = self._string(v)
            elif isinstance(v, list):
                items = self._list(rtype, v, k)
                if items:
                    out[k] = items
            elif v is not None:
                out[k] = v
        return out

    def _special(
        self, rtype: str, node: Mapping[str, Any], out: dict[str, Any], k: str, v: Any, top: bool, key: str
    ) -> None:
        """The elements the profile removes, generalises or pseudonymises (``_SPECIAL_KEYS``)."""
        if k in ("id", "meta") and top:
            return
        if k == "resourceType":
            out[k] = v
            return
        if k in _DROP_EVERYWHERE:
            return
        if k == "identifier" and not (top and rtype in FACILITY_TYPES):
            return
        if k == "telecom" and not (top and rtype in FACILITY_TYPES):
            return
        if k == "name" and top and rtype in PERSON_TYPES:
            return
        if k == "text" and isinstance(v, dict):
            return  # narrative
        if k == "display" and "reference" in node:
            return
        if k == "reference" and isinstance(v, str):
            out[k] = self._reference(v)
            return
        if k == "extension":
            kept = [e for e in v if isinstance(e, dict) and _KEPT_EXTENSION.search(str(e.get("url", "")))]
            if kept and key == "address":
                out[k] = kept
            return
        if k in _ATTACHMENT_ELEMENTS or (isinstance(v, dict) and _is_attachment(v)):
            return
        if k == "address":
            addresses = v if isinstance(v, list) else [v]
            if top and rtype in FACILITY_TYPES:
                out[k] = v
                return
            cleaned = [self._address(rtype, a) for a in addresses if isinstance(a, dict)]
            cleaned = [a for a in cleaned if a]
            if cleaned:
                out[k] = cleaned if isinstance(v, list) else cleaned[0]
            return
        value = self._value(rtype, v, key=k)
        if value in (None, {}, []):
            return
        out[k] = value

    def _address(self, rtype: str, node: Mapping[str, Any]) -> dict[str, Any] | None:
        out: dict[str, Any] = {}
        for k, v in node.items():
            if k not in _ADDRESS_KEEP:
                continue
            if k == "extension":
                kept = [e for e in v if isinstance(e, dict) and _KEPT_EXTENSION.search(str(e.get("url", "")))]
                if kept:
                    out[k] = kept
                continue
            out[k] = v
        return out or None

    def _reference(self, ref: str) -> str:
        if ref.startswith("#"):
            return ref
        m = _REFERENCE.match(ref)
        if m is None:
            return ""  # an absolute URL or a form the profile cannot vouch for
        return f"{m.group(1)}/{self.pseudonym(m.group(1), m.group(2))}"


def _is_attachment(node: Mapping[str, Any]) -> bool:
    return "contentType" in node or "data" in node


def references(res: Any) -> list[str]:
    """Every ``Type/id`` reference in a resource (for checking that an export's references resolve)."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("reference")
            if isinstance(ref, str) and _REFERENCE.match(ref):
                found.append(ref)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(res)
    return found
