"""Two first arrivals of one person on two workers at once end in one golden record (PostgreSQL, where
workers really run side by side)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from hub.db import session_scope
from hub.store.models import MpiSource
from tests.mpi.builders import ingest, patient

NIK = "3171015505900003"


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_simultaneous_first_arrivals_share_one_golden(engine: Engine) -> None:
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def arrive(facility: str, mrn: str) -> None:
        try:
            with session_scope(engine) as session:
                barrier.wait(timeout=10)
                ingest(
                    session, facility, patient(facility, mrn, "Siti Aminah", "1990-05-15", "female", nik=NIK)
                )
        except BaseException as exc:  # reported below
            errors.append(exc)

    for round_ in range(5):
        threads = [
            threading.Thread(target=arrive, args=(f"RS_A{round_}", f"A{round_}")),
            threading.Thread(target=arrive, args=(f"RS_B{round_}", f"B{round_}")),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not errors
        with Session(engine) as s:
            goldens = s.scalar(select(func.count(func.distinct(MpiSource.golden_id))))
        assert goldens == 1, f"round {round_}: {goldens} golden records for one person"
