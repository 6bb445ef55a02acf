"""``make bench BENCH_ARGS="schemathesis --examples 50"`` (or ``python -m bench schemathesis``):
schemathesis over the hub's OpenAPI document, in process (the ASGI app, with its lifespan), with no
token and with every role's token, in schemathesis' positive and negative generation modes.

The routes that read their body themselves (HL7 over HTTP, FHIR writes, ``$match``, the MPI decisions,
the token endpoint) declare no request body to FastAPI; :func:`with_bodies` describes theirs, so the
bodies are generated too. A finding is any 5xx response or an exception out of the app: printed with a
curl command that reproduces it, and the run exits 1. The figures printed are the cases sent and the
responses by status class.

The store first gets the messages of ``fixtures/hl7``, processed, and the positive mode uses the ids of
what they made for the path parameters (the negative mode anything else). ``--database-url`` fuzzes an
existing, migrated database (a PostgreSQL one, say); by default the run uses a new SQLite file under a
temporary directory.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_FHIR_RESOURCE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "resourceType": {
            "type": "string",
            "enum": ["Patient", "Observation", "Encounter", "Bundle", "Parameters", "Foo"],
        },
        "id": {"type": "string"},
        "meta": {"type": "object", "properties": {"versionId": {"type": "string"}}},
        "identifier": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"system": {"type": "string"}, "value": {"type": "string"}},
            },
        },
        "name": {
            "type": "array",
            "items": {"type": "object", "properties": {"family": {"type": "string"}}},
        },
        "birthDate": {"type": "string"},
        "subject": {"type": "object", "properties": {"reference": {"type": "string"}}},
        "status": {"type": "string"},
        "type": {"type": "string", "enum": ["transaction", "batch", "searchset"]},
        "entry": {
            "type": "array",
            "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {
                    "fullUrl": {"type": "string"},
                    "resource": {"type": "object"},
                    "request": {
                        "type": "object",
                        "properties": {
                            "method": {"type": "string", "enum": ["GET", "POST", "PUT", "DELETE"]},
                            "url": {"type": "string"},
                        },
                    },
                },
            },
        },
        "parameter": {
            "type": "array",
            "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "enum": ["resource", "count", "onlyCertainMatches"]},
                    "resource": {"type": "object"},
                    "valueInteger": {"type": "integer"},
                    "valueBoolean": {"type": "boolean"},
                },
            },
        },
    },
    "required": ["resourceType"],
}
_FHIR_BODY = {"content": {"application/fhir+json": {"schema": _FHIR_RESOURCE}}}
_DECISION = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "source": {"type": "string"},
                    "target": {"type": "string"},
                    "who": {"type": "string"},
                    "why": {"type": "string"},
                },
            }
        }
    }
}
_HL7 = {
    "content": {
        "text/plain": {
            "schema": {
                "type": "string",
                "pattern": r"^MSH\|\^~\\&\|[A-Z]{0,6}\|[A-Z0-9-]{0,8}\|\|\|[0-9]{0,14}\|\|ADT\^A0[1-8]\|[A-Za-z0-9]{0,8}\|P\|2\.5\|*\r(PID\|[^\r]{0,60}\r?)?$",
            }
        }
    }
}
_TOKEN = {
    "content": {
        "application/x-www-form-urlencoded": {
            "schema": {
                "type": "object",
                "properties": {
                    "grant_type": {"type": "string", "enum": ["client_credentials", "password"]},
                    "client_id": {"type": "string"},
                    "client_secret": {"type": "string"},
                    "client_assertion_type": {"type": "string"},
                    "client_assertion": {"type": "string"},
                    "scope": {"type": "string"},
                },
            }
        }
    }
}
_BREAK_GLASS = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"patient": {"type": "string"}, "reason": {"type": "string"}},
            }
        }
    }
}
_SEARCH_FORM = {
    "content": {
        "application/x-www-form-urlencoded": {
            "schema": {
                "type": "object",
                "properties": {
                    "_id": {"type": "string"},
                    "_count": {"type": "string"},
                    "identifier": {"type": "string"},
                    "patient": {"type": "string"},
                    "_include": {"type": "string"},
                },
            }
        }
    }
}

# The request bodies of the routes that read their body themselves: (method, path) -> OpenAPI requestBody.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/hl7/v2"): _HL7,
    ("post", "/auth/token"): _TOKEN,
    ("post", "/auth/break-glass"): _BREAK_GLASS,
    ("post", "/fhir/Patient/$match"): _FHIR_BODY,
    ("post", "/mpi/review/{review_id}/link"): _DECISION,
    ("post", "/mpi/review/{review_id}/not-duplicate"): _DECISION,
    ("post", "/mpi/review/link"): _DECISION,
    ("post", "/mpi/review/unlink"): _DECISION,
    ("post", "/fhir/{resource_type}"): _FHIR_BODY,
    ("put", "/fhir/{resource_type}"): _FHIR_BODY,
    ("put", "/fhir/{resource_type}/{rid}"): _FHIR_BODY,
    ("post", "/fhir"): _FHIR_BODY,
    ("post", "/fhir/{resource_type}/_search"): _SEARCH_FORM,
}


def with_bodies(spec: dict[str, Any], known: dict[str, list[Any]] | None = None) -> dict[str, Any]:
    """A copy of the OpenAPI document with :data:`BODIES` added where an operation declares no body, and
    the path parameters named in ``known`` (``rid``, ``message_id``, …) restricted to those values (the
    ids of what is stored) in the positive mode; the negative mode sends anything else."""
    out = copy.deepcopy(spec)
    for (method, path), body in BODIES.items():
        op = out.get("paths", {}).get(path, {}).get(method)
        if op is not None and "requestBody" not in op:
            op["requestBody"] = copy.deepcopy(body)
    for operations in out.get("paths", {}).values():
        for op in operations.values():
            for param in op.get("parameters", []):
                values = (known or {}).get(param["name"])
                if param.get("in") == "path" and values:
                    param["schema"] = {**param.get("schema", {}), "enum": values}
    return out


# Two synthetic patients of two hospitals close enough for a steward's review (a possible match).
_POSSIBLE_PAIR = [
    "\r".join(
        [
            f"MSH|^~\\&|SIMRS|{facility}|HUB|KEMKES|20261101083000+0700||ADT^A04^ADT_A01|{control}|P|2.5.1",
            "EVN|A04|20261101083000+0700",
            f"PID|1||{mrn}^^^{facility}^MR||{family}^Dewi||19920817|F",
        ]
    )
    + "\r"
    for facility, control, mrn, family in (
        ("RS_FUZZ_A", "PAIR1", "FZ-1", "Lestari"),
        ("RS_FUZZ_B", "PAIR2", "FZ-2", "Lestary"),
    )
]


def seed_store(engine: Any, files: int | None = None) -> dict[str, list[Any]]:
    """Store and process the messages of ``fixtures/hl7`` (its first ``files`` files) and a possible
    match (so reads, histories, ``$everything`` and the
    operator's views find rows); the ids stored, by path parameter name."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from hub import hl7, pipeline
    from hub.config import Settings
    from hub.db import session_scope
    from hub.ingest.service import Intake
    from hub.store.models import InboundMessage, MpiDecision, MpiReview, Resource

    intake = Intake(engine, Settings())
    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "hl7"
    ids = [
        intake.accept(message, "http").message_id
        for path in sorted(fixtures.glob("*.hl7"))[:files]
        for message in hl7.split_messages(path.read_bytes())
        if message
    ]
    ids += [intake.accept(m.encode(), "http").message_id for m in _POSSIBLE_PAIR]
    with session_scope(engine) as session:
        pipeline.process_batch(session, [i for i in ids if i is not None])
    with Session(engine) as session:
        rows = session.execute(select(Resource.resource_type, Resource.id).order_by(Resource.id)).all()
        known: dict[str, list[Any]] = {
            "resource_type": sorted({t for t, _ in rows}),
            "rid": [i for _, i in rows[:40]],
            "patient_id": [i for t, i in rows if t == "Patient"][:20],
            "version_id": ["1", "2"],
            "message_id": list(session.scalars(select(InboundMessage.id).limit(40))),
            "review_id": list(session.scalars(select(MpiReview.id).limit(20))),
            "decision_id": list(session.scalars(select(MpiDecision.id).limit(20))),
        }
    return {name: values for name, values in known.items() if values}


_CONSTRAINED = ('"integer"', '"number"', '"boolean"', '"array"', '"format"', '"enum"', '"pattern"')


def _negatable(operation: dict[str, Any]) -> bool:
    """Whether schemathesis can make an invalid request for ``operation`` (a body, a required query
    parameter, a parameter that is more than a string); for the others it only searches in vain."""
    if operation.get("requestBody"):
        return True
    for param in operation.get("parameters", []):
        if param.get("in") == "query" and param.get("required"):
            return True
        if any(word in json.dumps(param.get("schema", {})) for word in _CONSTRAINED):
            return True
    return False


@dataclass
class Tally:
    """What one run sent and got."""

    operations: int = 0
    inputs: int = 0  # generated cases; each is sent once per token
    cases: int = 0  # requests sent
    statuses: Counter[str] = field(default_factory=Counter)
    findings: Counter[str] = field(default_factory=Counter)  # "METHOD path (token): what" -> times
    examples: dict[str, str] = field(default_factory=dict)  # the same key -> a curl command of the first
    stopped_early: bool = False

    @property
    def server_errors(self) -> int:
        return self.statuses["5xx"] + self.statuses["exception"]


def _found(tally: Tally, key: str, case: Any, headers: dict[str, str]) -> None:
    tally.findings[key] += 1
    if key not in tally.examples:
        curl = case.as_curl_command(headers=headers)
        tally.examples[key] = curl if len(curl) < 2000 else curl[:2000] + "…"


def _sender(tally: Tally, role_headers: dict[str, dict[str, str]]) -> Any:
    """The test body: send one generated case with every role's headers, count the statuses, keep each
    5xx or exception."""

    def send(case: Any) -> None:
        tally.inputs += 1
        for role, headers in role_headers.items():
            tally.cases += 1
            try:
                response = case.call(headers=headers)
            except Exception as exc:  # the app raised: a finding, like a 5xx
                tally.statuses["exception"] += 1
                _found(tally, f"{case.method} {case.path} ({role}): {type(exc).__name__}", case, headers)
                continue
            status = response.status_code
            tally.statuses[f"{status // 100}xx"] += 1
            if status >= 500:
                _found(tally, f"{case.method} {case.path} ({role}): {status}", case, headers)

    return send


def fuzz(
    app: Any,
    role_headers: dict[str, dict[str, str]],
    *,
    examples: int,
    seed: int | None = None,
    seconds: float | None = None,
    operations: Iterable[str] | None = None,
    known: dict[str, list[Any]] | None = None,
) -> Tally:
    """Generate ``examples`` cases per operation and generation mode and send each to ``app`` in process
    once per entry of ``role_headers`` (a name -> its headers, ``{}`` for no token); stop starting new
    operations after ``seconds``. ``operations`` restricts the run to those paths; ``known`` (see
    :func:`seed_store`) gives the positive mode the ids of stored rows for the path parameters."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis.errors import Unsatisfiable
    from schemathesis.python import asgi
    from starlette.testclient import TestClient

    spec = TestClient(app).get("/openapi.json").json()  # as the app serves it (no lifespan needed)
    document = with_bodies(spec, known)
    schema = schemathesis.openapi.from_dict(document)
    schema.app = app
    schema.location = "/openapi.json"
    wanted = set(operations) if operations is not None else None
    tally = Tally()
    deadline = time.monotonic() + seconds if seconds is not None else None
    modes = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    try:
        for result in schema.get_all_operations():
            op = result.ok()
            if wanted is not None and op.path not in wanted:
                continue
            tally.operations += 1
            raw = document["paths"][op.path][op.method.lower()]
            for mode in modes if _negatable(raw) else modes[:1]:
                if deadline is not None and time.monotonic() > deadline:
                    tally.stopped_early = True
                    return tally
                test = settings(
                    max_examples=examples,
                    deadline=None,
                    database=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck),
                    verbosity=Verbosity.quiet,
                )(given(op.as_strategy(generation_mode=mode))(_sender(tally, role_headers)))
                if seed is not None:
                    test = hypothesis_seed(seed)(test)
                # Unsatisfiable: nothing invalid to generate (say, all strings but one integer in a range)
                with contextlib.suppress(Unsatisfiable):
                    test()
    finally:
        asgi.shutdown_lifespans()
    return tally


def role_headers_for(settings: Any, facility: str = "BENCH") -> dict[str, dict[str, str]]:
    """No token, and a token of every role (a sender's bound to ``facility``)."""
    from hub.auth import ROLES, issue_token

    out: dict[str, dict[str, str]] = {"no token": {}}
    for role in ROLES:
        token = issue_token(settings, role, facilities=[facility] if role == "sender" else None)
        out[role] = {"Authorization": f"Bearer {token}"}
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench schemathesis", description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=50, help="cases per operation, role and mode")
    parser.add_argument("--seconds", type=float, default=900.0, help="start no operation after this")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--database-url", default=None, help="a migrated database (default: new SQLite)")
    args, _ = parser.parse_known_args(argv)

    from hub.app import create_app
    from hub.config import Settings
    from hub.store.schema import upgrade

    tmp = Path(tempfile.mkdtemp(prefix="hub-schemathesis-"))
    url = args.database_url
    if url is None:
        url = f"sqlite:///{tmp / 'hub.db'}"
        upgrade(url)
    settings = Settings(database_url=url, var_dir=tmp / "var", mllp_enabled=False, worker_enabled=False)
    from hub.db import make_engine

    engine = make_engine(url)
    known = seed_store(engine)
    engine.dispose()
    print(
        f"store: {len(known.get('message_id', []))} messages (of fixtures/hl7), resources of "
        f"{len(known.get('resource_type', []))} types, {len(known.get('review_id', []))} MPI reviews"
    )
    started = time.monotonic()
    tally = fuzz(
        create_app(settings),
        role_headers_for(settings),
        examples=args.examples,
        seed=args.seed,
        seconds=args.seconds,
        known=known,
    )
    took = time.monotonic() - started
    for key, times in tally.findings.items():
        print(f"finding: {key} ({times}x), e.g.\n    {tally.examples[key]}")
    by_status = ", ".join(f"{k} {v:,}" for k, v in sorted(tally.statuses.items()))
    print(
        f"schemathesis: {tally.operations} operations, {tally.inputs:,} generated cases sent with "
        f"{len(role_headers_for(settings))} tokens each: {tally.cases:,} requests in {took:.0f} s "
        f"({by_status}); 5xx or exceptions: {tally.server_errors}"
        + (" (stopped at --seconds)" if tally.stopped_early else "")
    )
    return 1 if tally.server_errors else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
