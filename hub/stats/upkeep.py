"""Keeping ``stats_fact`` and ``stats_person`` current: a write hook of ``hub.store.resources`` (one call per
write, in the writer's transaction: a correction, a cancel or a deletion changes the counts when it is
stored) and ``rebuild`` (``hub stats rebuild``) from the stored resources."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from datetime import date, datetime, timedelta, timezone
from typing import Any

import orjson
from sqlalchemy import Connection, Table, text
from sqlalchemy.orm import Session

from hub.stats.models import StatsFact, StatsPerson
from hub.stats.regions import home_address, resolve_address
from hub.store import bulk, deferred
from hub.store.resources import MESSAGE_FACILITY, Change, register_write_hook

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
            elif isinstance(applied, dict) and str(applied.get("doseNumberString", "")).isdecimal():
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
        if not code:
            return None
        positive = positivity(resource)
        if positive is None and not _is_laboratory(resource):
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
            positive,
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


# Inside a pipeline batch (hub.store.deferred) the new rows wait for the batch's end, one INSERT per
# table for all its messages; anything that reads or changes these tables writes what is held first.
_holding: ContextVar[tuple[Session, deferred.Held] | None] = ContextVar("hub_stats_holding", default=None)


def _before_read(table: str, at: int, values: Iterable[str]) -> None:
    """Write what the batch holds first when a held row of ``table`` has one of ``values`` at ``at``."""
    current = _holding.get()
    if current is None or not current[1].rows.get(table):
        return
    wanted = set(values)
    if wanted and any(row[at] in wanted for row in current[1].rows[table]):
        current[1].flush(current[0])


def _insert(
    connection: Connection, table: Table, columns: tuple[str, ...], rows: list[tuple[Any, ...]]
) -> None:
    current = _holding.get()
    if current is not None:
        current[1].hold(table, columns, rows)
    else:
        bulk.insert_rows(connection, table, columns, rows)


def _in(
    connection: Connection,
    sql: str,
    values: list[str],
    before: tuple[Any, ...] = (),
    guard: tuple[str, int] | None = None,
) -> list[Any]:
    """Run ``sql`` (its ``{}`` an IN list) over ``values`` in chunks; the rows of all chunks. ``guard``:
    the table and row position whose held rows with these values must be written first."""
    if guard is not None:
        _before_read(guard[0], guard[1], values)
    out: list[Any] = []
    for i in range(0, len(values), 500):
        chunk = values[i : i + 500]
        text_ = bulk.placeholders(connection.dialect, sql.format(bulk.marks(len(chunk))))
        result = connection.exec_driver_sql(text_, (*before, *chunk))
        if result.returns_rows:
            out.extend(result.all())
    return out


def _as_date(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


# A person row: (golden_id, sex, birth_date, province, regency, district).
Person = tuple[str, str, date | None, str, str, str]
_UNKNOWN_PERSON = ("unknown", None, "unknown", "unknown", "unknown")


def _persons(connection: Connection, ids: list[str]) -> dict[str, Person]:
    rows = _in(
        connection,
        "SELECT patient_id, golden_id, sex, birth_date, province, regency, district FROM stats_person"
        " WHERE patient_id IN ({})",
        ids,
        guard=("stats_person", 0),
    )
    return {
        pid: (golden, sex, _as_date(birth), prov, reg, dist)
        for pid, golden, sex, birth, prov, reg, dist in rows
    }


_FACT_PERSON = "golden_id = ?, sex = ?, birth_date = ?, province = ?, regency = ?, district = ?"


def _apply_patients(
    connection: Connection, patients: list[tuple[str, dict[str, Any] | None, bool]]
) -> dict[str, Person]:
    """Rewrite the person rows of these Patients; returns the person of each. A source whose golden record
    or attributes changed has its facts moved (a merge, a relink, a corrected address); a golden record
    whose attributes changed passes them to its sources and their facts."""
    if not patients:
        return {}
    # A Patient new to the store has no person row: resource rows are never removed (a deletion is a
    # version, which removes the person row here), so only a rewrite needs the lookup.
    known_before = [i for i, _s, existed in patients if existed]
    existing = _persons(connection, known_before) if known_before else {}
    goldens: dict[str, tuple[str, date | None, str, str, str]] = {}
    sources: dict[str, tuple[str, tuple[str, date | None, str, str, str]]] = {}
    deleted: list[str] = []
    for rid, stored, _existed in patients:
        if stored is None:
            deleted.append(rid)
        elif _is_golden(stored):
            goldens[rid] = person_attributes(stored)
        else:
            sources[rid] = (_golden_of(connection, stored), person_attributes(stored))
    wanted = sorted({g for g, _a in sources.values()} - set(goldens))
    golden_rows = _persons(connection, wanted) if wanted else {}
    new: dict[str, Person] = {}
    for rid, attrs in goldens.items():
        new[rid] = (rid, *attrs)
    for rid, (golden, attrs) in sources.items():
        if golden in goldens:
            attrs = goldens[golden]
        elif golden in golden_rows:
            attrs = golden_rows[golden][1:]
        new[rid] = (golden, *attrs)
    changed = [rid for rid, person in new.items() if existing.get(rid) != person]
    gone = [rid for rid in deleted if rid in existing]
    stale = [rid for rid in changed if rid in existing] + gone
    if stale:
        _in(connection, "DELETE FROM stats_person WHERE patient_id IN ({})", stale, guard=("stats_person", 0))
    if changed:
        _insert(connection, _table(StatsPerson), _PERSON_COLUMNS, [(rid, *new[rid]) for rid in changed])
    table = _table(StatsFact)
    # Facts recorded before their Patient (written apart, in that order, through the FHIR API) keep the
    # Patient's own id as their person until the Patient changes again or ``hub stats rebuild`` runs.
    moved = [(*new[rid], rid) for rid in changed if rid in existing]
    if moved:
        _before_read("stats_fact", 3, [row[-1] for row in moved])
        bulk.execute_many(
            connection,
            table,
            f"UPDATE stats_fact SET {_FACT_PERSON} WHERE patient_id = ?",
            (*_PERSON_COLUMNS[1:], "patient_id"),
            moved,
        )
    spread = [
        (rid, attrs) for rid, attrs in goldens.items() if rid in existing and existing[rid][1:] != attrs
    ]
    if spread:
        _before_read("stats_person", 1, [rid for rid, _a in spread])
        _before_read("stats_fact", len(_FACT_COLUMNS), [rid for rid, _a in spread])
        columns = ("sex", "birth_date", "province", "regency", "district", "golden_id")
        set_attrs = "sex = ?, birth_date = ?, province = ?, regency = ?, district = ?"
        rows = [(*attrs, rid) for rid, attrs in spread]
        bulk.execute_many(
            connection,
            _table(StatsPerson),
            f"UPDATE stats_person SET {set_attrs} WHERE golden_id = ? AND patient_id <> golden_id",
            columns,
            rows,
        )
        bulk.execute_many(
            connection, table, f"UPDATE stats_fact SET {set_attrs} WHERE golden_id = ?", columns, rows
        )
    return new


_ORDER = {"Patient": 0, "Encounter": 1}


def apply(
    connection: Connection,
    latest: Iterable[tuple[str, str, dict[str, Any] | None, bool]],
    facility: str | None = None,
) -> None:
    """Rewrite the facts and person rows of these resources: (type, id, the stored dict or None when
    deleted, whether a live version existed before: a new resource has no facts to remove). ``facility``:
    the sending facility of the message that wrote them (for a resource that names none); without it
    (a rebuild) such a resource takes its stored Patient's."""
    items = [item for item in latest if item[0] in TYPES]
    if not items:
        return
    # Patients first (the facts carry their person), encounters next (a Condition without a date of its
    # own takes its encounter's start).
    items.sort(key=lambda item: _ORDER.get(item[0], 2))
    persons = _apply_patients(connection, [(i, s, e) for t, i, s, e in items if t == "Patient"])
    # Whatever facts the rewritten resources had go (one statement for all their types); a resource new
    # to the store has none.
    by_type: dict[str, list[str]] = {}
    for t, i, _s, existed in items:
        if existed:
            by_type.setdefault(t, []).append(i)
    _before_read("stats_fact", 1, [i for ids in by_type.values() for i in ids])
    clauses = " OR ".join(
        f"(resource_type = ? AND resource_id IN ({bulk.marks(len(v))}))" for v in by_type.values()
    )
    params = tuple(x for t, v in by_type.items() for x in (t, *v))
    if not by_type:
        pass
    elif len(params) <= 900:
        connection.exec_driver_sql(
            bulk.placeholders(connection.dialect, f"DELETE FROM stats_fact WHERE {clauses}"), params
        )
    else:
        for rtype, ids in by_type.items():
            _in(
                connection,
                "DELETE FROM stats_fact WHERE resource_type = ? AND resource_id IN ({})",
                ids,
                (rtype,),
            )
    starts: dict[str | None, date | None] = {}
    need = sorted(
        {
            enc
            for t, _i, s, _e in items
            if t == "Condition" and s is not None and not _has_own_date(s)
            for enc in [_ref_id(s.get("encounter"), "Encounter")]
            if enc
        }
        - {i for t, i, _s, _e in items if t == "Encounter"}
    )
    if need:
        rows = _in(
            connection,
            "SELECT resource_id, started FROM stats_fact"
            " WHERE resource_type = 'Encounter' AND resource_id IN ({})",
            need,
            guard=("stats_fact", 1),
        )
        starts.update({rid: _as_date(start) for rid, start in rows})
    facts: list[Fact] = []
    for rtype, rid, stored, _existed in items:
        if stored is None:
            continue
        fact = fact_of(stored, starts)
        if rtype == "Encounter":
            starts[rid] = fact[5] if fact is not None else None
        if fact is not None:
            facts.append(fact)
    if not facts:
        return
    unknown = sorted({str(f[3]) for f in facts if f[3] and f[3] not in persons})
    if unknown:
        persons.update(_persons(connection, unknown))
    out: list[tuple[Any, ...]] = []
    # A resource that names no facility (an Observation) takes its Patient's, when written with it.
    facilities = {i: _facility(s) for t, i, s, _e in items if t == "Patient" and s is not None}
    if not facility:
        # no message to name the facility: the stored Patients of the resources that name none
        missing = sorted({str(f[3]) for f in facts if not f[4] and f[3] and f[3] not in facilities})
        if missing:
            for rid, content in _in(
                connection,
                "SELECT id, content FROM resource WHERE resource_type = 'Patient' AND id IN ({})",
                missing,
            ):
                facilities[str(rid)] = _facility(orjson.loads(content))
    for fact in facts:
        pid = fact[3]
        if not fact[4] and (found := facilities.get(pid) or facility):
            fact = (*fact[:4], found, *fact[5:])
        person = persons.get(pid) if pid else None
        out.append((*fact, *(person if person is not None else (pid or "", *_UNKNOWN_PERSON))))
    _insert(connection, table_fact(), _FACT_COLUMNS + _PERSON_COLUMNS[1:], out)


def table_fact() -> Table:
    return _table(StatsFact)


def _has_own_date(condition: Mapping[str, Any]) -> bool:
    return bool(
        condition.get("onsetDateTime")
        or (condition.get("onsetPeriod") or {}).get("start")
        or condition.get("recordedDate")
    )


def on_write(session: Session, changes: list[Change]) -> None:
    """The write hook: the last state of each counted resource of one write."""
    latest: dict[tuple[str, str], tuple[dict[str, Any] | None, bool]] = {}
    for rtype, rid, _pk, stored, old in changes:
        if rtype in TYPES:
            earlier = latest.get((rtype, rid))
            latest[(rtype, rid)] = (stored, old is not None or (earlier is not None and earlier[1]))
    if latest:
        held = deferred.held(session)
        token = _holding.set((session, held) if held is not None else None)
        try:
            apply(
                session.connection(),
                [(t, i, s, e) for (t, i), (s, e) in latest.items()],
                session.info.get(MESSAGE_FACILITY),
            )
        finally:
            _holding.reset(token)


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
            loaded = [(rtype, str(rid), orjson.loads(content), False) for _pk, rid, content in rows]
            if rtype == "Patient":
                loaded.sort(key=lambda item: not _is_golden(item[2]))
            apply(connection, loaded)
    return int(connection.execute(text("SELECT count(*) FROM stats_fact")).scalar() or 0)


def install() -> None:
    register_write_hook(on_write)


install()

__all__ = ["apply", "fact_of", "install", "on_write", "rebuild"]
