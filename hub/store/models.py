"""All ORM models. Tables are singular snake_case; the schema itself is owned by the Alembic migrations
in ``migrations/`` (a test checks that these models and the migrations agree)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Double,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JSONVariant = JSON().with_variant(JSONB(), "postgresql")
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER PRIMARY KEY only


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: DateTime(timezone=True)}


class Sender(Base):
    """A sending facility (MSH-4), registered by an operator or on first contact while registration is open."""

    __tablename__ = "sender"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    facility: Mapped[str] = mapped_column(String(200), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    time_zone: Mapped[str] = mapped_column(String(64), default="Asia/Jakarta")
    overlay: Mapped[str | None] = mapped_column(String(100))
    # The character set of a sender whose messages leave MSH-18 empty (``hub sender add --charset``): bytes
    # that are not UTF-8 are decoded with it (an HL7 table 0211 name such as 8859/1, or a codec name).
    charset: Mapped[str | None] = mapped_column(String(40))
    http_secret_hash: Mapped[str | None] = mapped_column(String(200))
    auto_registered: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class InboundMessage(Base):
    """One HL7 v2 message exactly as received, and what became of it."""

    __tablename__ = "inbound_message"
    __table_args__ = (
        # The duplicate key: HL7 makes MSH-10 unique per sending application (MSH-3) of a facility (MSH-4).
        Index("ix_inbound_message_control", "facility", "application", "control_id"),
        Index("ix_inbound_message_state", "state", "id"),
        Index("ix_inbound_message_patient", "patient_key", "id"),
        Index("ix_inbound_message_received", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    sender_id: Mapped[int | None] = mapped_column(ForeignKey("sender.id"))
    facility: Mapped[str] = mapped_column(String(200), default="")  # MSH-4 as sent ("" when unreadable)
    application: Mapped[str] = mapped_column(String(200), default="", server_default="")  # MSH-3 as sent
    control_id: Mapped[str] = mapped_column(String(200), default="")  # MSH-10
    message_type: Mapped[str] = mapped_column(String(40), default="")  # MSH-9.1^MSH-9.2, e.g. ORU^R01
    message_structure: Mapped[str] = mapped_column(String(40), default="")  # MSH-9.3 or derived
    version: Mapped[str] = mapped_column(String(20), default="")  # MSH-12
    content_hash: Mapped[str] = mapped_column(String(64))  # sha256 of the raw bytes, for duplicates
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    transport: Mapped[str] = mapped_column(String(16), default="mllp")  # mllp | http | import
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    # received -> processed | failed | held (patient-conflict: would move a resource to another patient);
    # rejected (AR, never processed); held (control-id-conflict: same control id, other content)
    state: Mapped[str] = mapped_column(String(16), default="received")
    ack_code: Mapped[str] = mapped_column(String(2), default="AA")
    ack: Mapped[str | None] = mapped_column(Text)  # the ACK sent back, ER7
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_text: Mapped[str | None] = mapped_column(Text)
    patient_key: Mapped[str | None] = mapped_column(String(250))  # orders one patient's messages
    duplicate_count: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    processed_at: Mapped[datetime | None] = mapped_column()
    unmapped: Mapped[Any | None] = mapped_column(JSONVariant)  # the unmapped report of the last processing
    # held for patient-conflict: {"resource", "stored_patient", "message_patient"} (ids only)
    patient_conflict: Mapped[Any | None] = mapped_column(JSONVariant)


class MessageResource(Base):
    """Which FHIR resource versions a message produced (for the operator's view and for Provenance)."""

    __tablename__ = "message_resource"

    message_id: Mapped[int] = mapped_column(
        ForeignKey("inbound_message.id", ondelete="CASCADE"), primary_key=True
    )
    resource_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[int] = mapped_column(Integer)


class Resource(Base):
    """The current version of a FHIR resource, as the JSON bytes served on read."""

    __tablename__ = "resource"
    # (patient_id alone is served by ix_resource_compartment, which it leads.)
    __table_args__ = (
        Index("ux_resource_key", "resource_type", "id", unique=True),
        Index("ix_resource_type_updated", "resource_type", "last_updated"),
    )
    # The FHIR key stays the ORM's identity: session.get(Resource, (type, id)) and the identity map.
    __mapper_args__ = {"primary_key": ["resource_type", "id"]}

    # The surrogate key the search index refers to: allocated in increasing order for new resources
    # (hub.store.resources) and never reused (resource rows are never removed: a deletion is a version),
    # so a new resource's index rows append at the right edge of every index that ends or starts with it.
    # SQLite: the rowid; PostgreSQL: a bigserial.
    pk: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    resource_type: Mapped[str] = mapped_column(String(64))
    id: Mapped[str] = mapped_column(String(64))
    version_id: Mapped[int] = mapped_column(Integer, default=1)
    last_updated: Mapped[datetime] = mapped_column(default=utcnow)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    patient_id: Mapped[str | None] = mapped_column(String(64))  # the source Patient's compartment
    content: Mapped[bytes] = mapped_column(LargeBinary)  # orjson bytes, with meta.versionId/lastUpdated


class ResourceContribution(Base):
    """What one message contributed to a shared resource (one that several messages make, such as an
    Encounter or a ServiceRequest): the stored resource is the merge of its contributions in message
    order (``hub.store.contributions``)."""

    __tablename__ = "resource_contribution"

    resource_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    message_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # 0: what was stored before
    sort_key: Mapped[str] = mapped_column(String(40))  # the message's time (UTC), then its id
    content: Mapped[bytes] = mapped_column(LargeBinary)  # orjson bytes, without meta


class ResourceVersion(Base):
    """Every version of every resource (history, vread)."""

    __tablename__ = "resource_version"

    resource_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_updated: Mapped[datetime] = mapped_column(default=utcnow)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    content: Mapped[bytes] = mapped_column(LargeBinary)


# ---------------------------------------------------------------------------------------------------------
# Search index (issue 4). One table per FHIR search parameter type; one row per extracted value. Rows are
# rewritten in the resource's own transaction by hub.store.search_index (a write hook of resources.upsert).
# Every table is keyed for lookup by (resource_type, param, value…, resource_pk, resource_id) and for
# probing and rewriting by resource_pk (``resource.pk``, increasing): a new resource's rows append at the
# right edge of the probe indexes, and at the right edge of their value's range in the value indexes,
# instead of at random places (the ids are hashes). The value indexes end with the id as well: SQLite,
# which plans without statistics, pages a search by seeking the ids they list (hub.fhir_api.search._among).
# Strings are stored normalised (lower case, accents removed) beside the exact form.
# ---------------------------------------------------------------------------------------------------------


class SearchToken(Base):
    """token parameters: Coding, CodeableConcept, Identifier, ContactPoint, code, boolean."""

    __tablename__ = "search_token"
    __table_args__ = (
        Index(
            "ix_search_token_value", "resource_type", "param", "code", "system", "resource_pk", "resource_id"
        ),
        # Probing one resource's values (a criterion tested per candidate, rewriting a resource's rows):
        # covering, so the probe is an index-only scan.
        Index("ix_search_token_probe", "resource_pk", "param", "code", "system"),
    )

    row_id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    resource_type: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(64))
    resource_pk: Mapped[int] = mapped_column(BigInteger)  # resource.pk
    param: Mapped[str] = mapped_column(String(64))
    system: Mapped[str] = mapped_column(String(255), default="")  # "" when the value has no system
    code: Mapped[str] = mapped_column(String(255))
    text: Mapped[str] = mapped_column(String(255), default="")  # display / CodeableConcept.text, normalised


class SearchString(Base):
    """string parameters (HumanName and Address parts, plain strings)."""

    __tablename__ = "search_string"
    __table_args__ = (
        # varchar_pattern_ops: PostgreSQL answers LIKE 'prefix%' (the default string search) from the
        # index whatever the database collation.
        Index(
            "ix_search_string_value",
            "resource_type",
            "param",
            "value",
            "resource_pk",
            "resource_id",
            postgresql_ops={"value": "varchar_pattern_ops"},
        ),
        Index("ix_search_string_resource", "resource_pk"),
    )

    row_id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    resource_type: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(64))
    resource_pk: Mapped[int] = mapped_column(BigInteger)  # resource.pk
    param: Mapped[str] = mapped_column(String(64))
    value: Mapped[str] = mapped_column(String(255))  # normalised: lower case, no accents
    exact: Mapped[str] = mapped_column(String(255))  # as written


class SearchDate(Base):
    """date parameters as closed ranges [low, high] in UTC (a date at day precision spans the day)."""

    __tablename__ = "search_date"
    __table_args__ = (
        Index("ix_search_date_value", "resource_type", "param", "low", "high", "resource_pk", "resource_id"),
        Index("ix_search_date_probe", "resource_pk", "param", "low", "high"),
    )

    row_id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    resource_type: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(64))
    resource_pk: Mapped[int] = mapped_column(BigInteger)  # resource.pk
    param: Mapped[str] = mapped_column(String(64))
    low: Mapped[datetime] = mapped_column()
    high: Mapped[datetime] = mapped_column()


class SearchReference(Base):
    """reference parameters: ``target_type``/``target_id`` of a relative reference (or of an absolute URL
    ending in Type/id); any other reference is kept whole in ``target_id`` with ``target_type`` empty."""

    __tablename__ = "search_reference"
    # target_id leads: a reference given without its type (subject=123) still seeks the index. The
    # referring resource's id comes before its pk: a search driven by a patient reference walks a target's
    # range in id order, the order of its pages (hub.fhir_api.search.Driver), and the criteria take the
    # pk from the index. (Its inserts land wherever the target's id sorts whatever the last columns: the
    # pk could not make them sequential.)
    __table_args__ = (
        Index(
            "ix_search_reference_target",
            "target_id",
            "target_type",
            "param",
            "resource_type",
            "resource_id",
            "resource_pk",
        ),
        # Probing and _include (the targets of given resources) as index-only scans.
        Index("ix_search_reference_probe", "resource_pk", "param", "target_type", "target_id"),
    )

    row_id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    resource_type: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(64))
    resource_pk: Mapped[int] = mapped_column(BigInteger)  # resource.pk
    param: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str] = mapped_column(String(64), default="")
    target_id: Mapped[str] = mapped_column(String(255))  # the id, or the whole reference when not relative


class SearchQuantity(Base):
    """quantity parameters: value with its UCUM (or other) system and code; ``unit`` as written."""

    __tablename__ = "search_quantity"
    __table_args__ = (
        Index("ix_search_quantity_value", "resource_type", "param", "value", "resource_pk", "resource_id"),
        Index("ix_search_quantity_resource", "resource_pk"),
    )

    row_id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    resource_type: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(64))
    resource_pk: Mapped[int] = mapped_column(BigInteger)  # resource.pk
    param: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Double)
    system: Mapped[str] = mapped_column(String(255), default="")
    code: Mapped[str] = mapped_column(String(64), default="")
    unit: Mapped[str] = mapped_column(String(64), default="")


class SearchNumber(Base):
    """number parameters."""

    __tablename__ = "search_number"
    __table_args__ = (
        Index("ix_search_number_value", "resource_type", "param", "value", "resource_pk", "resource_id"),
        Index("ix_search_number_resource", "resource_pk"),
    )

    row_id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    resource_type: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(64))
    resource_pk: Mapped[int] = mapped_column(BigInteger)  # resource.pk
    param: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Double)


class SearchUri(Base):
    """uri parameters (profiles, attachment URLs, canonical references)."""

    __tablename__ = "search_uri"
    __table_args__ = (
        Index(
            "ix_search_uri_value",
            "resource_type",
            "param",
            "value",
            "resource_pk",
            "resource_id",
            postgresql_ops={"value": "varchar_pattern_ops"},
        ),
        Index("ix_search_uri_resource", "resource_pk"),
    )

    row_id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    resource_type: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(64))
    resource_pk: Mapped[int] = mapped_column(BigInteger)  # resource.pk
    param: Mapped[str] = mapped_column(String(64))
    value: Mapped[str] = mapped_column(String(255))


# $everything pages a patient compartment in (resource_type, id) order straight off this index.
Index("ix_resource_compartment", Resource.patient_id, Resource.resource_type, Resource.id)
# The live rows of a type in id order: a search finds its page of ids with index-only scans (the predicate
# matches the ``deleted IS false`` every search carries) and reads the content of that page only. The
# criteria probe the index tables by pk: SQLite's indexes carry the rowid anyway, PostgreSQL's includes it.
Index(
    "ix_resource_live",
    Resource.resource_type,
    Resource.id,
    postgresql_include=["pk"],
    postgresql_where=Resource.deleted.is_(False),
    sqlite_where=Resource.deleted.is_(False),
)
# ---------------------------------------------------------------------------------------------------------
# end of the search index section
# ---------------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------------
# Master patient index (hub.mpi.service). Source Patients, their blocking keys, the review queue of possible
# matches and the stewards' decisions. The golden Patients themselves are ordinary rows of ``resource``.
# ---------------------------------------------------------------------------------------------------------


class MpiSource(Base):
    """One source Patient (sender + PID-3 identifier) and the one golden Patient it is linked to."""

    __tablename__ = "mpi_source"
    __table_args__ = (
        Index("ix_mpi_source_golden", "golden_id"),
        Index("ix_mpi_source_replaced_by", "replaced_by"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the source Patient id
    golden_id: Mapped[str] = mapped_column(String(64))
    facility: Mapped[str] = mapped_column(String(200), default="")
    # new (own golden) | auto (matched) | manual (a steward's or sender's decision; never moved
    # automatically) | merge (retired by an A40/A34 merge)
    link_kind: Mapped[str] = mapped_column(String(16), default="new")
    weight: Mapped[float | None] = mapped_column(Float)  # the match weight of an automatic link
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    replaced_by: Mapped[str | None] = mapped_column(String(64))  # survivor of a merge
    content: Mapped[Any] = mapped_column(JSONVariant)  # the source Patient as last received, without links
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class MpiBlock(Base):
    """Blocking keys (``nik:…``, ``ny:<soundex>|<year>``, …) and identifier keys (``ident:system|value``)."""

    __tablename__ = "mpi_block"
    __table_args__ = (Index("ix_mpi_block_source", "source_id"),)

    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    source_id: Mapped[str] = mapped_column(ForeignKey("mpi_source.id", ondelete="CASCADE"), primary_key=True)


class MpiReview(Base):
    """A possible match waiting for a data steward: a source and the golden record it may belong to."""

    __tablename__ = "mpi_review"
    __table_args__ = (
        Index("ux_mpi_review_pair", "source_id", "candidate_source_id", unique=True),
        Index("ix_mpi_review_status", "status", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    source_id: Mapped[str] = mapped_column(String(64))
    candidate_source_id: Mapped[str] = mapped_column(String(64))  # the best-scoring source of the candidate
    golden_id: Mapped[str] = mapped_column(String(64))  # the candidate's golden when the review was queued
    weight: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(String(32))
    comparisons: Mapped[Any] = mapped_column(JSONVariant)  # [{"field", "level", "weight"}]
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | linked | not-duplicate
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column()


class MpiDecision(Base):
    """Every identity decision made by a steward or an HL7 merge message: who, when, why, and what it
    replaced (so that it can be undone)."""

    __tablename__ = "mpi_decision"
    __table_args__ = (
        Index("ix_mpi_decision_source", "source_id", "id"),
        Index("ix_mpi_decision_other", "other_source_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    # link | unlink | not-duplicate | merge | change-identifier | undo
    action: Mapped[str] = mapped_column(String(32))
    source_id: Mapped[str] = mapped_column(String(64))
    other_source_id: Mapped[str | None] = mapped_column(String(64))
    golden_id: Mapped[str | None] = mapped_column(String(64))
    previous_golden_id: Mapped[str | None] = mapped_column(String(64))
    review_id: Mapped[int | None] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[Any | None] = mapped_column(JSONVariant)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    undone_at: Mapped[datetime | None] = mapped_column()
    undone_by: Mapped[int | None] = mapped_column(BigInteger)  # the id of the undo decision


# ---------------------------------------------------------------------------------------------------------
# Bulk Data export (hub.export): one row per ``$export`` kick-off. The runner claims a queued job (or one
# whose runner stopped sending heartbeats), writes its NDJSON files under the export directory and records
# the manifest's outputs here; expired jobs are removed with their files.
# ---------------------------------------------------------------------------------------------------------


class ExportJob(Base):
    __tablename__ = "export_job"
    __table_args__ = (Index("ix_export_job_state", "state", "heartbeat_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # queued | running | completed | failed | cancelled
    state: Mapped[str] = mapped_column(String(16), default="queued")
    level: Mapped[str] = mapped_column(String(16))  # system | patient | group
    group_id: Mapped[str | None] = mapped_column(String(64))
    params: Mapped[Any] = mapped_column(JSONVariant)  # _type, _since, _typeFilter, _elements
    request_url: Mapped[str] = mapped_column(Text)
    owner: Mapped[str] = mapped_column(String(200))  # the token subject that kicked it off
    owner_role: Mapped[str] = mapped_column(String(32))
    deidentified: Mapped[bool] = mapped_column(Boolean, default=False)
    transaction_time: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime | None] = mapped_column()
    last_polled_at: Mapped[datetime | None] = mapped_column()
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    exported: Mapped[int] = mapped_column(BigInteger, default=0)  # resources written so far
    progress: Mapped[str] = mapped_column(String(200), default="")
    output: Mapped[Any | None] = mapped_column(JSONVariant)  # [{"type", "file", "count"}]
    errors: Mapped[Any | None] = mapped_column(JSONVariant)  # [{"type": "OperationOutcome", "file", "count"}]
    completed_at: Mapped[datetime | None] = mapped_column()
    expires_at: Mapped[datetime | None] = mapped_column()


# The audit trail (hub.audit): one row per access, append-only, each row's hash covering the previous
# row's, and the chain's head (last id and hash) in a row of its own so that a removed tail shows too.
class AuditRecord(Base):
    """One access to the hub: who, what, when, from where, and the outcome (an AuditEvent, IHE BALP)."""

    __tablename__ = "audit_event"
    __table_args__ = (
        Index("ix_audit_event_patient", "patient_id", "id"),
        Index("ix_audit_event_agent", "agent", "id"),
        Index("ix_audit_event_recorded", "recorded"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    recorded: Mapped[datetime] = mapped_column()
    kind: Mapped[str] = mapped_column(String(32))  # read, search, everything, create, stats, mpi, …
    action: Mapped[str] = mapped_column(String(1))  # C R U D E
    outcome: Mapped[str] = mapped_column(String(2))  # 0 success, 4 minor failure (refused), 8 serious
    status: Mapped[int] = mapped_column(Integer)  # the HTTP status answered
    agent: Mapped[str] = mapped_column(String(200), default="")  # the token's subject ("" without one)
    role: Mapped[str] = mapped_column(String(20), default="")
    client: Mapped[str] = mapped_column(String(200), default="")
    issuer: Mapped[str] = mapped_column(String(300), default="")
    address: Mapped[str] = mapped_column(String(100), default="")
    method: Mapped[str] = mapped_column(String(8), default="")
    path: Mapped[str] = mapped_column(String(500), default="")
    query: Mapped[str] = mapped_column(Text, default="")
    entity_type: Mapped[str] = mapped_column(String(64), default="")
    entity_id: Mapped[str] = mapped_column(String(64), default="")
    patient_id: Mapped[str | None] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(32), default="")  # BTG: an emergency access
    reason: Mapped[str] = mapped_column(Text, default="")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The audit chain's head: one row (id 1)."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_id: Mapped[int] = mapped_column(BigInteger, default=0)
    last_hash: Mapped[str] = mapped_column(String(64))


class ApiClient(Base):
    """A system registered for the OAuth2 client-credentials grant (``POST /auth/token``): a hospital's
    or the ministry's, authenticated by a client secret or a signed JWT (``private_key_jwt``)."""

    __tablename__ = "api_client"

    client_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    role: Mapped[str] = mapped_column(String(20))
    scopes: Mapped[str] = mapped_column(Text, default="")  # space-separated SMART scopes it may ask for
    facilities: Mapped[str] = mapped_column(Text, default="")  # space-separated MSH-4 (senders)
    secret_hash: Mapped[str | None] = mapped_column(String(200))
    jwks: Mapped[Any | None] = mapped_column(JSONVariant)  # public keys for private_key_jwt
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
