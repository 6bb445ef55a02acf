"""The schema of the files under ``mappings/``: message maps, segment maps, datatype maps, vocabularies
and sender overlays. The files are YAML; these pydantic models validate them (``hub mappings check``).

There is no expression language: a condition or transform is the name of a function in the closed
registry of :mod:`hub.mapping._functions`, and paths are HL7 paths (``PID-3.4``, ``OBR-4``).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

PATH = re.compile(r"^[A-Z][A-Z0-9]{2}-\d{1,3}(\.\d{1,3}){0,2}$")
# An IG segment map's name, ``SEG[Resource]`` (``OBX[Observation-Component]``, ``DG1[Encounter]``).
IG_MAP = re.compile(r"^[A-Z][A-Z0-9]{2}\[[A-Za-z][A-Za-z0-9-]*\]$")
TARGET = re.compile(r"^[a-zA-Z][a-zA-Z0-9]*(\[\]|\[x\])?(\.[a-zA-Z][a-zA-Z0-9]*(\[\]|\[x\])?)*$")


def _check_path(value: str) -> str:
    if not PATH.match(value):
        raise ValueError(f"{value!r} is not an HL7 path like PID-3 or PID-3.4.1")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Condition(_Strict):
    """A named predicate from the registry, applied to the value at ``path`` (the field's own value when
    no path is given)."""

    function: str
    path: str | None = None
    args: list[Any] = Field(default_factory=list)

    @field_validator("path")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        return _check_path(v) if v is not None else v


class FieldMap(_Strict):
    """One element of a resource: where the value comes from and where it goes.

    Exactly one source: ``path`` (with optional ``fallback`` paths tried in order when it is empty),
    ``paths`` (the inputs of a multi-input ``function``), ``value`` (a constant), ``ref`` (a Reference to
    the resource another map made from the enclosing segment) or ``children`` (References to the resources
    a map made from the segments this one is the parent of).

    ``reads`` names the fields of other segments a registry ``function`` finds itself (the TQ1 and RXR of
    an order group, which no "nearest segment" path can pick): not read by the engine, listed so
    ``hub mappings coverage`` and a reader of the map see them."""

    target: str
    path: str | None = None
    fallback: list[str] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list)
    value: Any = None
    ref: str | None = None
    children: str | None = None
    datatype: str | None = None
    vocab: str | None = None
    function: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    when: Condition | None = None
    repeat: bool | None = None  # default: every repetition when the target appends ([]), else the first
    with_: dict[str, Any] | None = Field(default=None, alias="with")
    reads: list[str] = Field(default_factory=list)  # fields the function reads itself (see above)

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        if not TARGET.match(v):
            raise ValueError(f"{v!r} is not a target like name[] or code.coding[] or value[x]")
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        return _check_path(v) if v is not None else v

    @field_validator("fallback", "paths", "reads")
    @classmethod
    def _paths(cls, v: list[str]) -> list[str]:
        return [_check_path(p) for p in v]

    def model_post_init(self, _context: Any) -> None:
        sources = [
            self.path is not None,
            bool(self.paths),
            self.value is not None,
            self.ref is not None,
            self.children is not None,
        ]
        if sum(sources) != 1:
            raise ValueError(f"{self.target}: give exactly one of path, paths, value, ref, children")
        if self.paths and not self.function:
            raise ValueError(f"{self.target}: paths needs a function")
        if self.reads and not self.function:
            raise ValueError(f"{self.target}: reads needs a function")


class IdRule(_Strict):
    """One way to key a resource id: the non-empty values at ``keys`` (the first must be non-empty for the
    rule to apply) or a registry ``function``; ``scope`` adds the patient, the sender or the message."""

    keys: list[str] = Field(default_factory=list)  # all must be non-empty for the rule to apply
    extra: list[str] = Field(default_factory=list)  # included when present
    function: str | None = None
    scope: Literal["none", "facility", "patient", "message"] = "patient"

    @field_validator("keys", "extra")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        return [_check_path(p) for p in v]


class SegmentMap(_Strict):
    """``segments/<SEG>.<Resource>.yaml``: one segment to one resource (or merged into another map's)."""

    segment: str
    resource: str
    description: str = ""
    extends: str | None = None  # overlays only: the base map this one changes
    remove: list[str] = Field(default_factory=list)  # overlays only: targets of base fields to drop
    merge_into: str | None = None  # map whose resource (from the enclosing segment) receives these elements
    # Segments of one message with the same id make one resource, each adding its elements (the PRTs
    # and ROLs of a patient are the participants of one CareTeam); else they are kept apart.
    accumulate: bool = False
    when: Condition | None = None
    id: list[IdRule] = Field(default_factory=list)
    required: list[str] = Field(default_factory=list)
    fields: list[FieldMap] = Field(default_factory=list)
    # Why the hub leaves a field of this segment unmapped (``PID-1: numbers the segments only``), or a
    # whole IG segment map of this segment (``DG1[Encounter]: …``): ``hub mappings coverage`` shows it.
    not_mapped: dict[str, str] = Field(default_factory=dict)

    @field_validator("not_mapped")
    @classmethod
    def _not_mapped(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_reasons(v)

    def model_post_init(self, _context: Any) -> None:
        wrong = [k for k in self.not_mapped if k[:3] != self.segment]
        if wrong:
            raise ValueError(f"not_mapped names another segment than {self.segment}: {', '.join(wrong)}")


def _check_reasons(v: dict[str, str]) -> dict[str, str]:
    for key, reason in v.items():
        if not (PATH.match(key) or IG_MAP.match(key) or re.fullmatch(r"[A-Z][A-Z0-9]{2}", key)):
            raise ValueError(f"{key!r} is not a field (PID-1), a segment (MSA) or an IG map (DG1[Encounter])")
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError(f"{key}: give the reason it is not mapped")
    return v


class ComponentMap(_Strict):
    """One component (or the whole value when ``component`` is absent) of a datatype."""

    target: str
    component: int | None = None
    subcomponent: int | None = None
    datatype: str | None = None
    vocab: str | None = None
    function: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    value: Any = None

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        if not TARGET.match(v):
            raise ValueError(f"{v!r} is not a target")
        return v


class DatatypeMap(_Strict):
    """``datatypes/<DT>.<FhirType>.yaml``: components to elements, or a registry ``function``. With
    ``resource``, the value becomes a resource of its own and the element a Reference to it."""

    datatype: str
    fhir_type: str
    description: str = ""
    function: str | None = None
    whole_field: bool = False  # the converter receives every repetition at once (FT, TX)
    components: list[ComponentMap] = Field(default_factory=list)
    resource: str | None = None

    def model_post_init(self, _context: Any) -> None:
        if bool(self.function) == bool(self.components):
            raise ValueError(f"{self.datatype}: give either function or components")


class Entry(_Strict):
    """Which segments of a message a segment map applies to."""

    segment: str
    map: str
    first: bool = False  # only the first such segment
    anchors: list[str] = Field(default_factory=list)  # a segment's parent: nearest preceding of these
    parent: str | None = None  # apply only when the parent is this segment
    # Compute the resource's id so References resolve, but emit nothing: e.g. an ORU's PV1 points at the
    # Encounter the ADT feed owns without overwriting it.
    reference_only: bool = False
    # Apply only when this holds for the segment (the IG message maps' conditions: a PRT after the PID
    # with role PP is the patient's primary care provider, another PRT there a related person).
    when: Condition | None = None


class MessageMap(_Strict):
    """``messages/<STRUCTURE>.yaml``: the message types it serves and the segments that make resources.

    One file may be the **fallback** (``fallback: true``, no ``events``): it serves every message type
    no other file serves, by its segments. Its ``resources`` choose the map of a segment explicitly;
    with ``auto`` (the default) every other segment that exactly one segment map serves is mapped by
    that map too, so a segment map added later is used without editing this file (``exclude`` names
    maps that must not apply on their own). Its
    ``every_message`` entries apply to every message, with or without a map of its own, for a segment
    that message's map does not list (SFT → Device)."""

    message: str
    events: list[str] = Field(default_factory=list)
    description: str = ""
    extends: str | None = None  # overlays only
    resources: list[Entry] = Field(default_factory=list)
    actions: list[str] = Field(default_factory=list)  # registry functions that emit MPI actions
    fallback: bool = False
    auto: bool = True  # fallback only: pick up every unambiguous segment map
    exclude: list[str] = Field(default_factory=list)  # fallback only: maps ``auto`` must not pick up
    every_message: list[Entry] = Field(default_factory=list)  # fallback only

    def model_post_init(self, _context: Any) -> None:
        if self.fallback and self.events:
            raise ValueError("a fallback map serves the types no other map serves: give no events")
        if not self.fallback and not self.extends and not self.events:
            raise ValueError("events: name the message types (MSH-9.1^MSH-9.2) this map serves")
        if (self.every_message or self.exclude) and not (self.fallback or self.extends):
            raise ValueError("every_message and exclude belong in the fallback map")


class Vocabulary(_Strict):
    """``vocab/<name>.yaml``: codes to codes (a string) or to codings ({code, system, display})."""

    vocab: str
    description: str = ""
    system: str | None = None  # system of the translated codes
    default: Any = None
    case_sensitive: bool = False
    replace: bool = False  # overlays only: replace the base table instead of merging over it
    codes: dict[str, Any] = Field(default_factory=dict)


class CoverageNotes(_Strict):
    """``coverage.yaml``: what ``hub mappings coverage`` cannot read from the segment maps. ``engine``:
    fields the engine maps itself, without a segment map (MSH and EVN → Provenance), as
    ``{path: target}``; ``not_mapped``: why a segment, an IG segment map or a field that no segment map
    serves is not mapped (``MSA: …``, ``MSH[MessageHeader]: …``, ``MSH-5: …``)."""

    description: str = ""
    engine: dict[str, list[str]] = Field(default_factory=dict)
    not_mapped: dict[str, str] = Field(default_factory=dict)

    @field_validator("engine")
    @classmethod
    def _engine(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for key in v:
            _check_path(key)
        return v

    @field_validator("not_mapped")
    @classmethod
    def _not_mapped(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_reasons(v)


class SenderSettings(_Strict):
    """``senders/<name>/sender.yaml``."""

    sender: str
    description: str = ""
    time_zone: str | None = None
