"""The statistics fact tables, kept up to date by ``hub.stats.upkeep`` in the transaction of every write.

``stats_fact``: one row per counted resource (an Encounter, a Condition, an Immunization, a laboratory
Observation, a deceased Patient), with the source Patient it belongs to and that person's golden record,
sex, birth date and home region. ``stats_person``: one row per Patient (source or golden) with its golden
record and the golden record's attributes. A merge or a relink (which rewrites the source Patient) and a
golden record's new address update the facts of the people concerned, so a query reads ``stats_fact``
alone.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import Boolean, Date, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from hub.store.models import Base

# What a query reads besides the index keys (PostgreSQL: carried in the indexes, for index-only scans).
PERSON = ("golden_id", "province", "regency", "district", "sex", "birth_date")
BY_CODE = (*PERSON, "facility", "positive", "started", "ended", "dose")
BY_DATE = (*BY_CODE, "code", "category", "chapter")


class StatsFact(Base):
    __tablename__ = "stats_fact"
    __table_args__ = (
        # A code, a category (a condition's) or a class list, over a date range.
        Index("ix_stats_fact_code", "kind", "category", "code", "started", postgresql_include=list(BY_CODE)),
        # All of a kind over a date range (no code, or an ICD-10 chapter).
        Index("ix_stats_fact_kind_start", "kind", "started", postgresql_include=list(BY_DATE)),
        Index("ix_stats_fact_kind_end", "kind", "ended", postgresql_include=list(BY_DATE)),
        # Moving a person's facts (a merge, a relink) and a golden record's (its attributes changed).
        Index("ix_stats_fact_patient", "patient_id"),
        Index("ix_stats_fact_golden", "golden_id"),
    )

    resource_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # encounter | condition | immunization | lab | death
    kind: Mapped[str] = mapped_column(String(16))
    patient_id: Mapped[str | None] = mapped_column(String(64))  # the (source) Patient
    facility: Mapped[str] = mapped_column(String(200), default="")
    started: Mapped[date | None] = mapped_column(Date)  # the event's date (an encounter's start)
    ended: Mapped[date | None] = mapped_column(Date)  # an encounter's end (discharge)
    code: Mapped[str] = mapped_column(String(64), default="")  # ICD-10, CVX, LOINC, encounter class
    category: Mapped[str] = mapped_column(String(8), default="")  # ICD-10 3-character category
    chapter: Mapped[str] = mapped_column(String(8), default="")  # ICD-10 chapter (roman numeral)
    dose: Mapped[int | None] = mapped_column(Integer)  # an immunization's dose number
    positive: Mapped[bool | None] = mapped_column(Boolean)  # a lab result's positivity (None: unknown)
    # The person, as in stats_person (copied so that a query reads this table alone).
    golden_id: Mapped[str] = mapped_column(String(64), default="")
    sex: Mapped[str] = mapped_column(String(16), default="unknown")
    birth_date: Mapped[date | None] = mapped_column(Date)
    province: Mapped[str] = mapped_column(String(8), default="unknown")
    regency: Mapped[str] = mapped_column(String(8), default="unknown")
    district: Mapped[str] = mapped_column(String(8), default="unknown")


class StatsPerson(Base):
    __tablename__ = "stats_person"
    __table_args__ = (Index("ix_stats_person_golden", "golden_id"),)

    patient_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    golden_id: Mapped[str] = mapped_column(String(64))
    sex: Mapped[str] = mapped_column(String(16), default="unknown")
    birth_date: Mapped[date | None] = mapped_column(Date)
    province: Mapped[str] = mapped_column(String(8), default="unknown")
    regency: Mapped[str] = mapped_column(String(8), default="unknown")
    district: Mapped[str] = mapped_column(String(8), default="unknown")
