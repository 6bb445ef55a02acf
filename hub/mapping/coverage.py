"""How much of the HL7 V2-to-FHIR IG's segment maps the hub's maps cover (``hub mappings coverage``).

For every row of every IG segment map (the IG's CSV tables, ``segments/*.csv``: one row per v2 field
and FHIR attribute), the report says whether a segment map of the hub reads that field into a resource
of the IG map's type (and which file, which target), or why not: a ``not_mapped`` reason a segment map
gives (``PID-1: …``, ``DG1[Encounter]: …``) or ``coverage.yaml`` gives (segments and IG maps no
segment map serves, fields the engine maps itself, e.g. MSH and EVN → Provenance).

Row statuses: ``mapped``; ``not-mapped`` (a reason is given); ``other`` (read only into another resource
type than the IG map's); ``missing`` (no map reads it and no reason is given); ``ig-none`` (the IG row
names no FHIR attribute: nothing to map).
"""

from __future__ import annotations

import csv
import re
from dataclasses import asdict, dataclass
from dataclasses import field as _field
from pathlib import Path
from typing import Any

from hub.mapping._loader import Problem, load_sources
from hub.mapping._schema import SegmentMap

STATUSES = ("mapped", "not-mapped", "other", "missing", "ig-none")
_IG_NAME = re.compile(r"([A-Z][A-Z0-9]{2})\[([^\]]+)\]")
_FIELD = re.compile(r"^([A-Z][A-Z0-9]{2})-(\d+)")
_TOP = re.compile(r"^[a-zA-Z]+")


class CoverageError(Exception):
    """The IG tables cannot be read (absent folder, no segment maps in it)."""


@dataclass(frozen=True, slots=True)
class Use:
    """One hub map element fed by a v2 field: the map, its file (relative to the maps) and target."""

    map: str
    file: str
    resource: str
    target: str


@dataclass(slots=True)
class Row:
    line: int  # line of the IG CSV file
    field: str  # "PID-3", or "" for a segment-level row (a constant)
    name: str
    attribute: str
    status: str = "missing"
    by: list[Use] = _field(default_factory=list)
    reason: str = ""


@dataclass(slots=True)
class IgMap:
    name: str  # "PID[Patient]"
    segment: str
    resource: str  # the IG map's resource, "Observation-Component"
    file: str
    rows: list[Row] = _field(default_factory=list)

    def totals(self) -> dict[str, int]:
        return _count(self.rows)


@dataclass(slots=True)
class Report:
    ig: str
    mappings: str
    maps: list[IgMap]

    def totals(self) -> dict[str, int]:
        return _count([r for m in self.maps for r in m.rows])

    def segments(self) -> dict[str, list[IgMap]]:
        out: dict[str, list[IgMap]] = {}
        for m in self.maps:
            out.setdefault(m.segment, []).append(m)
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "ig": self.ig,
            "mappings": self.mappings,
            "totals": self.totals(),
            "segments": [
                {
                    "segment": segment,
                    "totals": _count([r for m in maps for r in m.rows]),
                    "maps": [
                        {
                            "ig_map": m.name,
                            "file": m.file,
                            "totals": m.totals(),
                            "rows": [_row_json(r) for r in m.rows],
                        }
                        for m in maps
                    ],
                }
                for segment, maps in self.segments().items()
            ],
        }


def _row_json(row: Row) -> dict[str, Any]:
    out = asdict(row)
    out["by"] = [{"map": u.map, "file": u.file, "target": u.target} for u in row.by]
    return out


def _count(rows: list[Row]) -> dict[str, int]:
    out = {"rows": len(rows), **dict.fromkeys(STATUSES, 0)}
    for r in rows:
        out[r.status] += 1
    return out


def _base(resource: str) -> str:
    """The FHIR type of an IG map's resource name (``Observation-Component`` → ``Observation``)."""
    return resource.split("-", 1)[0]


def read_ig(ig_dir: Path, segments: set[str] | None = None) -> list[IgMap]:
    """The IG's segment maps: ``segments/*.csv`` under ``ig_dir`` (the IG repository's ``mappings``
    folder), each file named ``… SEG[Resource] ….csv``."""
    folder = ig_dir / "segments"
    if not folder.is_dir():
        raise CoverageError(
            f"no IG segment maps at {folder}: give --ig DIR, a folder with the V2-to-FHIR IG's mapping "
            "tables as CSV (segments/*.csv; the mappings/ folder of github.com/HL7/v2-to-fhir)"
        )
    out: list[IgMap] = []
    for path in sorted(folder.glob("*.csv")):
        found = _IG_NAME.search(path.name)
        if found is None:
            continue
        segment, resource = found.group(1), found.group(2)
        if segments and segment not in segments:
            continue
        out.append(IgMap(f"{segment}[{resource}]", segment, resource, path.name, _read_rows(path, segment)))
    if not out:
        raise CoverageError(f"no IG segment map (… SEG[Resource] ….csv) in {folder}")
    return out


def _read_rows(path: Path, segment: str) -> list[Row]:
    records: list[tuple[int, list[str]]] = []  # (first line of the record, its cells)
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            start = 1
            for cells in reader:
                records.append((start, cells))
                start = reader.line_num + 1  # a quoted cell may span lines
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CoverageError(f"{path}: cannot read ({exc})") from None
    header = next((i for i, (_, r) in enumerate(records) if "FHIR Attribute" in r), None)
    if header is None:
        raise CoverageError(f"{path}: no header row naming 'FHIR Attribute'")
    col = records[header][1].index("FHIR Attribute")
    rows: list[Row] = []
    for number, cells in records[header + 1 :]:
        if not any(c.strip() for c in cells):
            continue
        cells = [*cells, *[""] * (col + 1 - len(cells))]
        ident, name, attribute = cells[1].strip(), cells[2].strip(), cells[col].strip()
        found = _FIELD.match(ident)
        if found:
            at = f"{found.group(1)}-{int(found.group(2))}"
        elif ident in (segment, "") and name and cells[0].strip().isdigit() and int(cells[0]) > 0:
            at = f"{segment}-{int(cells[0])}"  # a row naming the segment, numbered by its sort order
        else:
            at = ""  # a segment-level row: a constant the resource carries
        rows.append(Row(number, at, name, attribute))
    return rows


@dataclass(slots=True)
class _HubMaps:
    """What the hub's maps read, field by field, and the reasons they give."""

    reads: dict[str, list[Use]] = _field(default_factory=dict)  # "PID-3" → uses
    tops: dict[str, set[str]] = _field(default_factory=dict)  # resource type → top-level elements set
    segments_of: dict[str, set[str]] = _field(default_factory=dict)  # resource type → hub segments
    reasons: dict[tuple[str, str], str] = _field(default_factory=dict)  # (resource or "", key) → reason


def _hub_maps(mappings_dir: Path) -> _HubMaps:
    problems: list[Problem] = []
    src = load_sources(mappings_dir, None, problems)
    if not src.segments and problems:
        raise CoverageError(f"cannot read the maps in {mappings_dir}: {problems[0]}")
    hub = _HubMaps()
    for name, (path, sm) in sorted(src.segments.items()):
        _add_map(hub, name, _relative(path, mappings_dir), sm)
    if src.coverage is not None:
        path, notes = src.coverage
        rel = _relative(path, mappings_dir)
        for at, targets in notes.engine.items():
            for target in targets:
                resource, _, element = target.partition(".")
                use = Use("engine", rel, resource, element or target)
                hub.reads.setdefault(_field_of(at), []).append(use)
                hub.tops.setdefault(resource, set()).add(_top(element))
                hub.segments_of.setdefault(resource, set()).add(at[:3])
        for key, reason in notes.not_mapped.items():
            hub.reasons.setdefault(("", key), reason.strip())
    return hub


def _add_map(hub: _HubMaps, name: str, file: str, sm: SegmentMap) -> None:
    resource = sm.resource
    hub.segments_of.setdefault(resource, set()).add(sm.segment)
    tops = hub.tops.setdefault(resource, set())
    for f in sm.fields:
        tops.add(_top(f.target))
        paths = [p for p in (f.path, *f.fallback, *f.paths, *f.reads) if p]
        if f.when is not None and f.when.path:
            paths.append(f.when.path)  # MSH-9.2 choosing Encounter.status
        for p in paths:
            use = Use(name, file, resource, f.target)
            uses = hub.reads.setdefault(_field_of(p), [])
            if use not in uses:
                uses.append(use)
    for rule in sm.id:
        for p in (*rule.keys, *rule.extra):
            use = Use(name, file, resource, "id")
            uses = hub.reads.setdefault(_field_of(p), [])
            if use not in uses:
                uses.append(use)
    for key, reason in sm.not_mapped.items():
        hub.reasons.setdefault((resource, key), reason.strip())
        hub.reasons.setdefault(("", key), reason.strip())


def _field_of(path: str) -> str:
    found = _FIELD.match(path)
    return f"{found.group(1)}-{int(found.group(2))}" if found else path


def _top(target: str) -> str:
    found = _TOP.match(target)
    return found.group(0) if found else target


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def coverage_report(ig_dir: Path, mappings_dir: Path, segments: set[str] | None = None) -> Report:
    """The report for the IG tables under ``ig_dir`` and the base maps under ``mappings_dir``."""
    ig_maps = read_ig(ig_dir, segments)
    hub = _hub_maps(mappings_dir)
    for ig in ig_maps:
        resource = _base(ig.resource)
        for row in ig.rows:
            _judge(row, ig, resource, hub)
    return Report(str(ig_dir), str(mappings_dir), ig_maps)


def _judge(row: Row, ig: IgMap, resource: str, hub: _HubMaps) -> None:
    reasons = hub.reasons
    if row.field:
        uses = hub.reads.get(row.field, [])
        same = [u for u in uses if u.resource == resource]
        if not row.attribute:  # the IG maps the field to nothing here (the hub may elsewhere)
            row.status, row.by = "ig-none", same
            return
        if same:
            row.status, row.by = "mapped", same
            return
        segment = row.field.split("-", 1)[0]
        for key in (
            (resource, ig.name),
            ("", ig.name),
            (resource, row.field),
            ("", row.field),
            ("", segment),
        ):
            if key in reasons:
                row.status, row.reason = "not-mapped", reasons[key]
                return
        if uses:
            row.status, row.by = "other", uses
            return
        row.status = "missing"
        return
    # A segment-level row: a constant element of the resource (AL1 clinicalStatus "active").
    if not row.attribute:
        row.status = "ig-none"
        return
    if ig.segment in hub.segments_of.get(resource, set()) and _top(row.attribute) in hub.tops.get(
        resource, set()
    ):
        row.status = "mapped"
        row.by = [Use("", "", resource, _top(row.attribute))]
        return
    for key in ((resource, ig.name), ("", ig.name), ("", ig.segment)):
        if key in reasons:
            row.status, row.reason = "not-mapped", reasons[key]
            return
    row.status = "missing"


# -- rendering -------------------------------------------------------------------------------------

_LABEL = {
    "mapped": "mapped",
    "not-mapped": "not mapped",
    "other": "other",
    "missing": "missing",
    "ig-none": "IG: none",
}


def _totals_text(t: dict[str, int]) -> str:
    share = _share(t)
    return (
        f"{t['rows']} rows: {t['mapped']} mapped, {t['not-mapped']} not mapped (with a reason), "
        f"{t['other']} into another resource, {t['missing']} missing, {t['ig-none']} the IG maps to nothing"
        f"; {share}"
    )


def _share(t: dict[str, int]) -> str:
    """Mapped share of the rows the IG maps to something."""
    mappable = t["rows"] - t["ig-none"]
    if not mappable:
        return "nothing to map"
    return f"{100 * t['mapped'] / mappable:.1f} % of the mappable rows mapped"


def _row_text(row: Row) -> str:
    what = row.field or "(segment)"
    attribute = row.attribute or "-"
    if row.status in ("mapped", "other"):
        detail = "; ".join(f"{u.map} {u.target}".strip() for u in row.by) or "-"
    elif row.status == "not-mapped":
        detail = row.reason
    else:
        detail = ""
    return f"    {what:8} {attribute[:48]:48} {_LABEL[row.status]:10} {detail}".rstrip()


def render_text(report: Report, summary: bool = False) -> str:
    lines = [f"IG segment maps: {report.ig}", f"hub maps: {report.mappings}", ""]
    for segment, maps in report.segments().items():
        lines.append(f"{segment}: {_totals_text(_count([r for m in maps for r in m.rows]))}")
        for m in maps:
            lines.append(f"  {m.name}: {_totals_text(m.totals())}")
            if not summary:
                lines += [_row_text(r) for r in m.rows]
    lines += ["", f"overall ({len(report.maps)} IG segment maps): {_totals_text(report.totals())}"]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Report, summary: bool = False) -> str:
    t = report.totals()
    lines = [
        "# V2-to-FHIR IG segment maps: hub coverage",
        "",
        f"{len(report.maps)} IG segment maps, {_totals_text(t)}.",
        "",
        "| segment | IG map | rows | mapped | not mapped | other | missing | IG: none | mapped share |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for segment, maps in report.segments().items():
        for m in maps:
            mt = m.totals()
            lines.append(
                f"| {segment} | {m.name} | {mt['rows']} | {mt['mapped']} | {mt['not-mapped']} | {mt['other']} "
                f"| {mt['missing']} | {mt['ig-none']} | {_share(mt).split(' %')[0]} |"
            )
    lines.append(
        f"| **all** | | {t['rows']} | {t['mapped']} | {t['not-mapped']} | {t['other']} | {t['missing']} "
        f"| {t['ig-none']} | {_share(t).split(' %')[0]} |"
    )
    if summary:
        return "\n".join(lines)
    for m in report.maps:
        lines += [
            "",
            f"## {m.name}",
            "",
            "| field | IG attribute | status | hub map and target, or why not |",
        ]
        lines.append("|---|---|---|---|")
        for r in m.rows:
            if r.status in ("mapped", "other"):
                detail = "; ".join(f"{u.map} `{u.target}`" if u.map else f"`{u.target}`" for u in r.by)
            else:
                detail = r.reason
            lines.append(
                f"| {r.field or '(segment)'} | {_cell(r.attribute) or '-'} | {_LABEL[r.status]} | {_cell(detail)} |"
            )
    return "\n".join(lines)
