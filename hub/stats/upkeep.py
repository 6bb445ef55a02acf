"""Keeping ``stats_fact`` and ``stats_person`` current: a write hook of ``hub.store.resources`` (one call per
write, in the writer's transaction: a correction, a cancel or a deletion changes the counts when it is
stored) and ``rebuild`` (``hub stats rebuild``) from the stored resources."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta, timezone
from typing import Any

import orjson
from sqlalchemy import Connection, Table, text
from sqlalchemy.orm import Session

from hub.stats.models import StatsFact, StatsPerson
from hub.stats.regions import home_address, resolve_address
from hub.store import bulk
from hub.store.resources import Change, register_write_hook

ICD10 = "http://hl7.org/fhir/sid/icd-10"
CVX = "http://hl7.org/fhir/sid/cvx"
LOINC = "http://loinc.org"
GOLDEN_SYSTEM = "https://hub.kemkes.go.id/fhir/CodeSystem/mpi"
TYPES = ("Patient", "Encounter", "Condition", "Immunization", "Observation")
_LOCAL = timezone(timedelta(hours=7))  # event dates are days in Indonesia's western zone

# ICD-10 (WHO 2019) chapters by the first code of each.
_CHAPTERS = (
    ("A00", "I"),
    ("C00", "II"),
    ("D50", "III"),
    ("E00", "IV"),
    ("F00", "V"),
    ("G00", "VI"),
    ("H00", "VII"),
    ("H60", "VIII"),
    ("I00", "IX"),
    ("J00", "X"),
    ("K00", "XI"),
    ("L00", "XII"),
    ("M00", "XIII"),
    ("N00", "XIV"),
    ("O00", "XV"),
    ("P00", "XVI"),
    ("Q00", "XVII"),
    ("R00", "XVIII"),
    ("S00", "XIX"),
    ("U00", "XXII"),
    ("V01", "XX"),
    ("Z00", "XXI"),
)
CHAPTERS = tuple(dict.fromkeys(c for _, c in _CHAPTERS))
_ICD = re.compile(r"^[A-Z]\d\d")


def icd10_chapter(code: str) -> str:
    category = code[:3].upper()
    if not _ICD.match(category):
        return ""
    chapter = ""
    for first, name in _CHAPTERS:
        if category >= first:
            chapter = name
    return chapter


def _date(value: Any) -> date | None:
    if not isinstance(value, str) or len(value) < 4:
        return None
    try:
        if len(value) <= 10:
            parts = [int(p) for p in value.split("-")]
            return date(parts[0], parts[1] if len(parts) > 1 else 1, parts[2] if len(parts) > 2 else 1)
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            return moment.date()
        return moment.astimezone(_LOCAL).date()
    except ValueError:
        return None


def _codes(concept: Any) -> list[tuple[str, str]]:
    if not isinstance(concept, dict):
        return []
    return [
        (str(c.get("system", "")), str(c["code"]))
        for c in concept.get("coding") or []
        if isinstance(c, dict) and isinstance(c.get("code"), str)
    ]


def _coded(concept: Any, system: str) -> str:
    for sys, code in _codes(concept):
        if sys == system:
            return code
    return ""


def _ref_id(ref: Any, rtype: str) -> str | None:
    if isinstance(ref, dict):
        target = ref.get("reference")
        if isinstance(target, str) and target.startswith(rtype + "/"):
            return target[len(rtype) + 1 :]
    return None


def _facility(resource: Mapping[str, Any]) -> str:
    """The sending facility: serviceProvider/performer's identifier or display, else the facility in the
    hub's identifier systems (``urn:hub:id:<facility>:<assigner>``)."""
    provider = resource.get("serviceProvider")
    if isinstance(provider, dict):
        ident = provider.get("identifier")
        if isinstance(ident, dict) and isinstance(ident.get("value"), str):
            return str(ident["value"])[:200]
    for ident in resource.get("identifier") or []:
        system = ident.get("system") if isinstance(ident, dict) else None
        if isinstance(system, str) and system.startswith("urn:hub:id:"):
            return system[len("urn:hub:id:") :].split(":", 1)[0][:200]
    return ""


_POSITIVE_INTERPRETATION = {"POS", "DET", "A", "AA", "R"}
_NEGATIVE_INTERPRETATION = {"NEG", "ND", "N", "S"}
# SNOMED CT: positive, detected, reactive / negative, not detected, non-reactive.
_POSITIVE_VALUES = {"10828004", "260373001", "11214006", "52101004"}
_NEGATIVE_VALUES = {"260385009", "260415000", "131194007", "2667000"}
_POSITIVE_WORDS = {"positive", "positif", "detected", "terdeteksi", "reactive", "reaktif"}
_NEGATIVE_WORDS = {"negative", "negatif", "not detected", "tidak terdeteksi", "non-reactive", "non reaktif"}


def positivity(obs: Mapping[str, Any]) -> bool | None:
    """Positive from ``interpretation`` (POS, DET, A…), else from a coded or written value."""
    for concept in obs.get("interpretation") or []:
        for _sys, code in _codes(concept):
            if code in _POSITIVE_INTERPRETATION:
                return True
            if code in _NEGATIVE_INTERPRETATION:
                return False
    value = obs.get("valueCodeableConcept")
    for _sys, code in _codes(value):
        if code in _POSITIVE_VALUES:
            return True
        if code in _NEGATIVE_VALUES:
            return False
    words = []
    if isinstance(value, dict):
        words += [str(c.get("display", "")) for c in value.get("coding") or [] if isinstance(c, dict)]
        words.append(str(value.get("text", "")))
    if isinstance(obs.get("valueString"), str):
        words.append(obs["valueString"])
    for word in words:
        w = word.strip().lower()
        if w in _NEGATIVE_WORDS:
            return False
        if w in _POSITIVE_WORDS:
            return True
    return None


def _is_laboratory(obs: Mapping[str, Any]) -> bool:
    for concept in obs.get("category") or []:
        for _sys, code in _codes(concept):
            if code == "laboratory":
                return True
    # Without a category: a LOINC-coded result with a positivity reading counts as a lab test.
    return False


_FACT_COLUMNS = (
    "resource_type",
    "resource_id",
    "kind",
    "patient_id",
    "facility",
    "started",
    "ended",
    "code",
    "category",
    "chapter",
    "dose",
    "positive",
)
_PERSON_COLUMNS = ("patient_id", "golden_id", "sex", "birth_date", "province", "regency", "district")
Fact = tuple[Any, ...]


def fact_of(resource: Mapping[str, Any], encounter_start: Mapping[str | None, date | None]) -> Fact | None:
    """The fact a stored resource contributes, or None (not counted: cancelled, refuted, no date…)."""
    rtype = resource.get("resourceType")
    rid = str(resource.get("id"))
    status = resource.get("status")
    patient = _ref_id(resource.get("subject") or resource.get("patient"), "Patient")
    facility = _facility(resource)
    if rtype == "Encounter":
        if status in ("cancelled", "entered-in-error"):
            return None
        period = resource.get("period") or {}
        start = _date(period.get("start"))
        if start is None:
            return None
        klass = resource.get("class")
        code = str(klass.get("code", "")) if isinstance(klass, dict) else ""
        end = _date(period.get("end")) if status in ("finished", None) or period.get("end") else None
        return ("Encounter", rid, "encounter", patient, facility, start, end, code[:64], "", "", None, None)
    if rtype == "Condition":
        verification = _coded(resource.get("verificationStatus"), "")
        codes = {c for _s, c in _codes(resource.get("verificationStatus"))} | {verification}
        if codes & {"refuted", "entered-in-error"}:
            return None
        code = _coded(resource.get("code"), ICD10).upper()
        if not code:
            return None
        start = (
            _date(resource.get("onsetDateTime"))
            or _date((resource.get("onsetPeriod") or {}).get("start"))
            or _date(resource.get("recordedDate"))
        )
        if start is None:
            enc = _ref_id(resource.get("encounter"), "Encounter")
            start = encounter_start.get(enc) if enc else None
        if start is None:
            return None
        category = code.replace(".", "")[:3]
        return (
            "Condition",
            rid,
            "condition",
            patient,
            facility,
            start,
            None,
            code[:64],
            category,
            icd10_chapter(code),
            None,
            None,
        )
    if rtype == "Immunization":
        if status in ("not-done", "entered-in-error"):
            return None
        code = _coded(resource.get("vaccineCode"), CVX) or next(
            (c for _s, c in _codes(resource.get("vaccineCode"))), ""
        )
        start = _date(resource.get("occurrenceDateTime")) or _date(resource.get("recorded"))
        if not code or start is None:
            return None
        dose = None
        for applied in resource.get("protocolApplied") or []:
            if isinstance(applied, dict) and isinstance(applied.get("doseNumberPositiveInt"), int):
                dose = applied["doseNumberPositiveInt"]
            elif isinstance(applied, dict) and str(applied.get("doseNumberString", "")).isdigit():
                dose = int(applied["doseNumberString"])
        return (
            "Immunization",
            rid,
            "immunization",
            patient,
            facility,
            start,
            None,
            code[:64],
            "",
            "",
            dose,
            None,
        )
    if rtype == "Observation":
        if status in ("cancelled", "entered-in-error", "registered"):
            return None
        code = _coded(resource.get("code"), LOINC)
        if not code or (not _is_laboratory(resource) and positivity(resource) is None):
            return None
        start = (
            _date(resource.get("effectiveDateTime"))
            or _date((resource.get("effectivePeriod") or {}).get("start"))
            or _date(resource.get("issued"))
        )
        if start is None:
            return None
        return (
            "Observation",
            rid,
            "lab",
            patient,
            facility,
            start,
            None,
            code[:64],
            "",
            "",
            None,
            positivity(resource),
        )
    if rtype == "Patient":
        died = _date(resource.get("deceasedDateTime"))
        if died is None:
            return None
        return ("Patient", rid, "death", rid, "", died, None, "", "", "", None, None)
    return None


def _is_golden(patient: Mapping[str, Any]) -> bool:
    tags = (patient.get("meta") or {}).get("tag") or []
    return any(
        isinstance(t, dict) and t.get("system") == GOLDEN_SYSTEM and t.get("code") == "golden" for t in tags
    )


def person_attributes(patient: Mapping[str, Any]) -> tuple[str, date | None, str, str, str]:
    sex = patient.get("gender") if patient.get("gender") in ("male", "female", "other") else "unknown"
    address = home_address(patient.get("address"))
    province = regency = district = None
    if address is not None:
        province, regency, district = resolve_address(address)
    return (
        str(sex),
        _date(patient.get("birthDate")),
        province or "unknown",
        regency or "unknown",
        district or "unknown",
    )


def _golden_of(connection: Connection, patient: Mapping[str, Any]) -> str:
    for link in patient.get("link") or []:
        if isinstance(link, dict) and link.get("type") == "refer":
            golden = _ref_id(link.get("other"), "Patient")
            if golden:
                return golden
    row = connection.exec_driver_sql(
        bulk.placeholders(connection.dialect, "SELECT golden_id FROM mpi_source WHERE id = ?"),
        (str(patient["id"]),),
    ).first()
    return str(row[0]) if row is not None else str(patient["id"])


def _table(model: type) -> Table:
    return model.__table__  # type: ignore[attr-defined,no-any-return]


def _delete(connection: Connection, table: str, column: str, values: list[str], extra: str = "") -> None:
    for i in range(0, len(values), 500):
        chunk = values[i : i + 500]
        sql = f"DELETE FROM {table} WHERE {column} IN ({bulk.marks(len(chunk))}){extra}"
        connection.exec_driver_sql(bulk.placeholders(connection.dialect, sql), tuple(chunk))


def apply(connection: Connection, latest: Iterable[tuple[str, str, dict[str, Any] | None]]) -> None:
    """Rewrite the facts and person rows of these resources (type, id, stored dict or None when deleted)."""
    items = [(t, i, s) for t, i, s in latest if t in TYPES]
    if not items:
        return
    # Encounters first: a Condition without a date of its own takes its encounter's start.
    items.sort(key=lambda item: item[0] != "Encounter")
    starts: dict[str | None, date | None] = {}
    facts: list[Fact] = []
    for rtype in {t for t, _i, _s in items}:
        ids = [i for t, i, _s in items if t == rtype]
        _delete(connection, "stats_fact", "resource_id", ids, f" AND resource_type = '{rtype}'")
    need = {
        enc
        for t, _i, s in items
        if t == "Condition" and s is not None
        for enc in [_ref_id(s.get("encounter"), "Encounter")]
        if enc
    }
    if need:
        starts.update(_encounter_starts(connection, sorted(need)))
    for rtype, rid, stored in items:
        if stored is None:
            continue
        fact = fact_of(stored, starts)
        if rtype == "Encounter":
            starts[rid] = fact[5] if fact is not None else None
        if fact is not None:
            facts.append(fact)
    bulk.insert_rows(connection, _table(StatsFact), _FACT_COLUMNS, facts)
    _apply_patients(connection, [(i, s) for t, i, s in items if t == "Patient"])


def _encounter_starts(connection: Connection, ids: list[str]) -> dict[str | None, date | None]:
    out: dict[str | None, date | None] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        sql = (
            "SELECT resource_id, started FROM stats_fact WHERE resource_type = 'Encounter'"
            f" AND resource_id IN ({bulk.marks(len(chunk))})"
        )
        for rid, start in connection.exec_driver_sql(
            bulk.placeholders(connection.dialect, sql), tuple(chunk)
        ):
            out[rid] = start if isinstance(start, date) or start is None else date.fromisoformat(str(start))
    return out


def _apply_patients(connection: Connection, patients: list[tuple[str, dict[str, Any] | None]]) -> None:
    if not patients:
        return
    _delete(connection, "stats_person", "patient_id", [i for i, _s in patients])
    rows: list[tuple[Any, ...]] = []
    goldens: list[tuple[str, tuple[Any, ...]]] = []
    own: dict[str, tuple[Any, ...]] = {}
    for rid, stored in patients:
        if stored is None:
            continue
        attrs = person_attributes(stored)
        if _is_golden(stored):
            goldens.append((rid, attrs))
            rows.append((rid, rid, *attrs))
        else:
            own[rid] = (_golden_of(connection, stored), *attrs)
    known = {g: a for g, a in goldens}
    missing = sorted({v[0] for v in own.values()} - set(known))
    if missing:
        sql = (
            "SELECT patient_id, sex, birth_date, province, regency, district FROM stats_person"
            f" WHERE patient_id IN ({bulk.marks(len(missing))})"
        )
        for pid, sex, birth, province, regency, district in connection.exec_driver_sql(
            bulk.placeholders(connection.dialect, sql), tuple(missing)
        ):
            if birth is not None and not isinstance(birth, date):
                birth = date.fromisoformat(str(birth))
            known[pid] = (sex, birth, province, regency, district)
    for rid, (golden, *own_attrs) in own.items():
        rows.append((rid, golden, *known.get(golden, tuple(own_attrs))))
    bulk.insert_rows(connection, _table(StatsPerson), _PERSON_COLUMNS, rows)
    table = _table(StatsPerson)
    update = (
        "UPDATE stats_person SET sex = ?, birth_date = ?, province = ?, regency = ?, district = ?"
        " WHERE golden_id = ? AND patient_id <> golden_id"
    )
    bulk.execute_many(
        connection,
        table,
        update,
        ("sex", "birth_date", "province", "regency", "district", "golden_id"),
        [(*attrs, golden) for golden, attrs in goldens],
    )


def on_write(session: Session, changes: list[Change]) -> None:
    """The write hook: the last state of each counted resource of one write."""
    latest: dict[tuple[str, str], dict[str, Any] | None] = {}
    for rtype, rid, _pk, stored, _old in changes:
        if rtype in TYPES:
            latest[(rtype, rid)] = stored
    if latest:
        apply(session.connection(), [(t, i, s) for (t, i), s in latest.items()])


def rebuild(connection: Connection, batch: int = 2000) -> int:
    """Recompute both tables from the live resources; returns the number of facts."""
    connection.execute(text("DELETE FROM stats_fact"))
    connection.execute(text("DELETE FROM stats_person"))
    # Goldens before sources (the sources copy their golden's attributes), encounters before conditions.
    order = ["Patient", "Encounter", "Condition", "Immunization", "Observation"]
    for rtype in order:
        last = -1
        while True:
            sql = bulk.placeholders(
                connection.dialect,
                "SELECT pk, id, content FROM resource WHERE resource_type = ? AND deleted = ? AND pk > ?"
                " ORDER BY pk LIMIT ?",
            )
            rows = connection.exec_driver_sql(sql, (rtype, False, last, batch)).all()
            if not rows:
                break
            last = rows[-1][0]
            loaded = [(rtype, str(rid), orjson.loads(content)) for _pk, rid, content in rows]
            if rtype == "Patient":
                loaded.sort(key=lambda item: not _is_golden(item[2]))
            apply(connection, loaded)
    return int(connection.execute(text("SELECT count(*) FROM stats_fact")).scalar() or 0)


def install() -> None:
    register_write_hook(on_write)


install()

__all__ = ["apply", "fact_of", "install", "on_write", "rebuild"]
