"""The ``hub`` command line (Typer): serve, worker, send, import, replay, sender, db."""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from hub.config import get_settings

if TYPE_CHECKING:
    from hub.mapping import MappingResult

app = typer.Typer(help="The hub: HL7 v2 intake, FHIR R4 store and API.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
sender_app = typer.Typer(help="Sending facilities.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(sender_app, name="sender")
client_app = typer.Typer(
    help="Systems registered for the client-credentials grant (/auth/token).", no_args_is_help=True
)
audit_app = typer.Typer(help="The audit trail.", no_args_is_help=True)
app.add_typer(client_app, name="client")
app.add_typer(audit_app, name="audit")


def _audit(kind: str, reason: str) -> None:
    """Record an admin change made from the command line in the audit trail."""
    import getpass

    from hub.audit import record_now
    from hub.db import make_engine

    settings = get_settings()
    engine = make_engine(settings.sqlalchemy_url)
    try:
        record_now(
            engine, kind, agent=f"shell:{getpass.getuser()}", role="admin", reason=reason, method="CLI"
        )
    except Exception as exc:  # no schema yet (`hub db upgrade`), or the store is down: say so, go on
        typer.echo(f"warning: not recorded in the audit trail ({type(exc).__name__})", err=True)
    finally:
        engine.dispose()


from hub.stats.cli import stats_app  # noqa: E402

app.add_typer(stats_app, name="stats")


def _safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("heads", help="Target revision (default: all heads).")) -> None:
    """Bring the database (HUB_DATABASE_URL, or the SQLite file under var/) to the current schema."""
    from hub.store.schema import upgrade

    settings = get_settings()
    upgrade(settings.sqlalchemy_url, revision)
    typer.echo(f"database at {_safe_url(settings.sqlalchemy_url)} is up to date")


@app.command()
def serve(
    host: str = typer.Option(None, help="HTTP bind address (HUB_HTTP_HOST)"),
    port: int = typer.Option(None, help="HTTP port (HUB_HTTP_PORT)"),
) -> None:
    """Run HTTP (FHIR API, HL7 over HTTP), the MLLP listener and, without a broker, the worker."""

    import uvicorn

    from hub.app import create_app

    settings = get_settings()
    if host:
        settings.http_host = host
    if port:
        settings.http_port = port
    from hub import logs

    logs.configure(settings)
    mllp = (
        f"MLLP on {settings.mllp_host}:{settings.mllp_port}" if settings.mllp_enabled else "no MLLP listener"
    )
    typer.echo(
        f"hub: HTTP on {settings.http_host}:{settings.http_port}, {mllp}, "
        f"database {_safe_url(settings.sqlalchemy_url)}, "
        f"{'Celery at ' + _safe_url(settings.broker_url) if settings.broker_url else 'in-process worker'}, "
        f"registration {'open' if settings.registration_open else 'closed'}"
    )
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again with the handler found before
    # it: the default one would end the process at once, without the exit handlers that release the
    # worker process's queues (the "leaked semaphore" warnings). This one ends it normally.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    tls: dict[str, str] = {}
    if settings.http_tls_cert and settings.http_tls_key:
        tls = {"ssl_certfile": str(settings.http_tls_cert), "ssl_keyfile": str(settings.http_tls_key)}
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        access_log=False,
        # JSON lines: uvicorn's loggers go through the root logger's JSON handler, not its own.
        log_config=None if logs.json_logs(settings) else uvicorn.config.LOGGING_CONFIG,
        **tls,  # type: ignore[arg-type]
    )


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


@app.command()
def worker(
    concurrency: int = typer.Option(2, "--concurrency", "-c", help="worker processes (or threads)"),
    pool: str = typer.Option("prefork", help="Celery pool: prefork, threads or solo"),
) -> None:
    """Run a Celery worker that processes messages (needs HUB_BROKER_URL)."""
    settings = get_settings()
    if not settings.broker_url:
        typer.echo(
            "hub worker needs HUB_BROKER_URL (amqp://… or redis://…); without it `hub serve` processes",
            err=True,
        )
        raise typer.Exit(2)
    from hub.tasks.celery_app import make_celery

    if settings.worker_nice > 0:
        os.nice(settings.worker_nice)  # the worker's processes inherit it
    if settings.export_runner:  # Bulk Data export jobs run beside the message processing
        from hub.db import get_engine
        from hub.export.jobs import ExportRunner

        ExportRunner(get_engine(settings.sqlalchemy_url), settings).start()
    make_celery(settings.broker_url, settings.celery_queue).worker_main(
        [
            "worker",
            "--loglevel",
            settings.log_level,
            "--concurrency",
            str(concurrency),
            "--pool",
            pool,
            "--without-gossip",
            "--without-mingle",
            # A node name of its own: two workers on one host (two hubs, or a restart while the old one
            # drains) would otherwise both claim celery@host's exclusive control queue, and the second
            # one dies with RESOURCE_LOCKED on RabbitMQ.
            "--hostname",
            f"hub-{settings.celery_queue}-{os.getpid()}@%h",
        ]
    )


def _read_messages(files: list[Path]) -> list[tuple[Path, bytes]]:
    from hub.hl7 import split_messages

    out: list[tuple[Path, bytes]] = []
    for f in files:
        try:
            data = f.read_bytes()
        except OSError as exc:
            typer.echo(f"{f}: cannot read ({exc.strerror})", err=True)
            raise typer.Exit(2) from exc
        out.extend((f, m) for m in split_messages(data))
    return out


@app.command()
def send(
    files: list[Path] = typer.Argument(..., help="files of HL7 v2 messages (batches allowed)"),
    host: str = typer.Option("127.0.0.1", help="MLLP host"),
    port: int = typer.Option(None, help="MLLP port (default HUB_MLLP_PORT)"),
    timeout: float = typer.Option(30.0, help="seconds to wait for each ACK"),
) -> None:
    """Send messages over MLLP and print each ACK."""
    from hub.ingest.mllp import FrameDecoder, frame

    port = port or get_settings().mllp_port
    messages = _read_messages(files)
    failures = 0
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        typer.echo(f"cannot connect to MLLP at {host}:{port}: {exc.strerror or exc}", err=True)
        raise typer.Exit(2) from exc
    with sock:
        decoder = FrameDecoder()
        for path, raw in messages:
            sock.sendall(frame(raw))
            acks: list[bytes] = []
            while not acks:
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    typer.echo(f"{path}: no ACK within {timeout} s", err=True)
                    raise typer.Exit(1) from None
                if not data:
                    typer.echo(f"{path}: connection closed by the hub before an ACK", err=True)
                    raise typer.Exit(1)
                acks = [a for a in decoder.feed(data) if isinstance(a, bytes)]
            text = acks[0].decode("utf-8", errors="replace")
            typer.echo(f"# {path}")
            typer.echo(text.replace("\r", "\n").rstrip("\n"))
            if "|AA|" not in text and "|CA|" not in text:
                failures += 1
    if failures:
        raise typer.Exit(1)


@app.command("import")
def import_(
    files: list[Path] = typer.Argument(..., help="files of HL7 v2 messages or HL7 batch files"),
    process: bool = typer.Option(True, help="process the messages too (in-process worker or Celery)"),
) -> None:
    """Load files of messages (back-loading history): store each like any received message."""
    from rich.progress import Progress

    from hub.db import make_engine, processing_engine
    from hub.ingest.service import Intake
    from hub.tasks.worker import InProcessWorker

    settings = get_settings()
    engine = make_engine(settings.sqlalchemy_url)
    messages = _read_messages(files)
    worker_ = None
    celery = None
    dispatch: Callable[[Sequence[int]], None] | None = None
    if process and settings.broker_url:
        from hub.tasks.celery_app import CeleryDispatcher

        celery = CeleryDispatcher(
            settings.broker_url, settings.celery_queue, settings.worker_batch, settings.celery_linger_ms
        )
        dispatch = celery
    elif process:
        worker_ = InProcessWorker(processing_engine(engine), settings.worker_threads, settings.worker_batch)
        worker_.start()
        dispatch = worker_.dispatch
    intake = Intake(engine, settings, dispatch)
    intake.start()
    try:
        with Progress(transient=not sys.stdout.isatty()) as progress:
            task = progress.add_task("importing", total=len(messages))
            futures = []
            for _path, raw in messages:
                futures.append(intake.submit(raw, "import"))
            for fut in futures:
                fut.result()
                progress.advance(task)
            intake.stop()
            if worker_ is not None:
                pt = progress.add_task("processing", total=None)
                worker_.wait_idle(timeout=3600)
                progress.update(pt, completed=1, total=1)
    finally:
        intake.stop()
        if celery is not None:
            celery.close()  # every id published before the command returns
        if worker_ is not None:
            worker_.stop()
            worker_.engine.dispose()
        engine.dispose()
    s = intake.stats
    typer.echo(
        f"{len(messages)} messages: {s.accepted} accepted, {s.rejected} rejected, {s.duplicates} duplicates, "
        f"{s.held} held (control id reused with other content)"
    )


@app.command()
def replay(
    state: str = typer.Option(None, help="replay messages in this state (failed, held, processed, received)"),
    id: list[int] = typer.Option(None, "--id", help="replay this message (repeatable)"),
    since: datetime = typer.Option(None, help="only messages received at or after this time"),
    type: str = typer.Option(None, "--type", help="only this message type, e.g. ORU^R01"),
    sender: str = typer.Option(None, help="only this sending facility"),
    all_: bool = typer.Option(False, "--all", help="every processed or failed message (re-apply maps)"),
    accept_patient_change: bool = typer.Option(
        False,
        "--accept-patient-change",
        help="with --id: apply a message held for patient-conflict (its resources move to its patient)",
    ),
) -> None:
    """Process stored messages again from their raw bytes (deterministic ids make it an update)."""
    from sqlalchemy import select

    from hub.db import make_engine, session_scope
    from hub.pipeline import process_batch
    from hub.store.models import InboundMessage

    if not (state or id or all_ or since or type or sender):
        typer.echo("say what to replay: --state, --id, --since, --type, --sender or --all", err=True)
        raise typer.Exit(2)
    if accept_patient_change and not id:
        typer.echo("--accept-patient-change releases the messages named by --id only", err=True)
        raise typer.Exit(2)
    engine = make_engine(get_settings().sqlalchemy_url)
    stmt = select(InboundMessage.id).order_by(InboundMessage.id)
    if id:
        stmt = stmt.where(InboundMessage.id.in_(id))
    if state:
        stmt = stmt.where(InboundMessage.state == state)
    elif not id:
        stmt = stmt.where(InboundMessage.state.in_(("processed", "failed")))
    if since:
        stmt = stmt.where(InboundMessage.received_at >= since)
    if type:
        stmt = stmt.where(InboundMessage.message_type == type)
    if sender:
        stmt = stmt.where(InboundMessage.facility == sender)
    counts: dict[str, int] = {}
    try:
        with session_scope(engine) as session:
            ids = list(session.scalars(stmt))
        missing = sorted(set(id or []) - set(ids)) if id and not state else []
        if missing:
            typer.echo(f"no stored message with id {', '.join(map(str, missing))}", err=True)
            raise typer.Exit(2)
        for start in range(0, len(ids), 200):
            with session_scope(engine) as session:
                batch = ids[start : start + 200]
                for outcome in process_batch(
                    session, batch, force=True, accept_patient_change=accept_patient_change
                ):
                    counts[outcome.state] = counts.get(outcome.state, 0) + 1
    finally:
        engine.dispose()
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing to do"
    typer.echo(f"replayed {len(ids)} message(s): {summary}")
    if counts.get("held"):
        typer.echo(
            "held: a message would move a resource to another patient (GET /hl7/messages/{id} names"
            " both); after checking, apply it with hub replay --id N --accept-patient-change",
            err=True,
        )
    if counts.get("failed"):
        raise typer.Exit(1)


@sender_app.command("add")
def sender_add(
    facility: str = typer.Argument(..., help="sending facility as in MSH-4"),
    name: str = typer.Option("", help="display name"),
    time_zone: str = typer.Option(None, "--tz", help="IANA time zone for datetimes without offset"),
    overlay: str = typer.Option(None, help="mapping overlay under mappings/senders/"),
    secret: str = typer.Option(None, help="password for HL7 over HTTP (Basic auth, user = facility)"),
    charset: str = typer.Option(
        None, help="character set of messages that leave MSH-18 empty, e.g. 8859/1 or cp1252 ('' clears it)"
    ),
) -> None:
    """Register (or update) a sending facility."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from sqlalchemy import select

    from hub.auth_secrets import hash_secret
    from hub.db import make_engine, session_scope
    from hub.store.models import Sender

    settings = get_settings()
    if time_zone:
        try:
            ZoneInfo(time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            typer.echo(f"unknown time zone {time_zone!r} (use an IANA name such as Asia/Jakarta)", err=True)
            raise typer.Exit(2) from None
    if overlay:
        from hub.mapping import configure, mappings_dir

        if settings.mappings_dir:
            configure(settings.mappings_dir)
        odir = mappings_dir() / "senders" / overlay
        if not odir.is_dir():
            typer.echo(f"overlay {overlay!r} does not exist (no folder {odir})", err=True)
            raise typer.Exit(2)
    if charset:
        from hub.hl7 import codec_for

        if codec_for(charset) is None:
            typer.echo(f"unknown character set {charset!r} (e.g. 8859/1, cp1252, UTF-8)", err=True)
            raise typer.Exit(2)
    engine = make_engine(settings.sqlalchemy_url)
    with session_scope(engine) as session:
        sender = session.scalars(select(Sender).where(Sender.facility == facility)).first()
        created = sender is None
        if sender is None:
            sender = Sender(facility=facility, time_zone=settings.default_time_zone)
            session.add(sender)
        sender.name = name or sender.name or facility
        sender.auto_registered = False
        sender.active = True
        if time_zone:
            sender.time_zone = time_zone
        if overlay is not None:
            sender.overlay = overlay or None
        if secret:
            sender.http_secret_hash = hash_secret(secret)
        if charset is not None:
            sender.charset = charset or None
    engine.dispose()
    _audit("admin", f"sender {facility} {'registered' if created else 'updated'}")
    typer.echo(f"sender {facility} {'registered' if created else 'updated'}")


@sender_app.command("list")
def sender_list() -> None:
    """List registered sending facilities."""
    from sqlalchemy import select

    from hub.db import make_engine, session_scope
    from hub.store.models import Sender

    with session_scope(make_engine(get_settings().sqlalchemy_url)) as session:
        rows = session.scalars(select(Sender).order_by(Sender.facility)).all()
        typer.echo(f"{'FACILITY':24} {'NAME':24} {'TIME ZONE':20} {'OVERLAY':12} ORIGIN")
        for s in rows:
            origin = "first contact" if s.auto_registered else "registered"
            if not s.active:
                origin += " (inactive)"
            typer.echo(f"{s.facility:24} {s.name:24} {s.time_zone:20} {s.overlay or '-':12} {origin}")


mappings_app = typer.Typer(help="The HL7 v2 → FHIR mapping files (mappings/).", no_args_is_help=True)
app.add_typer(mappings_app, name="mappings")


@mappings_app.command("check")
def mappings_check(
    directory: Path | None = typer.Option(
        None, "--dir", help="Mappings directory (default: HUB_MAPPINGS_DIR)."
    ),
) -> None:
    """Validate every mapping file, the base and every sender overlay; exit 1 naming file and line."""
    from hub.mapping import check_mappings, mappings_dir

    root = directory or get_settings().mappings_dir or mappings_dir()
    problems = check_mappings(root)
    for problem in problems:
        typer.echo(str(problem), err=True)
    if problems:
        typer.echo(f"{len(problems)} problem(s) in {root}", err=True)
        raise typer.Exit(1)
    count = sum(1 for _ in root.rglob("*.yaml"))
    typer.echo(f"{count} mapping files in {root} are valid")


# The IG's mapping tables beside the project (the hub does not ship them; --ig points elsewhere).
DEFAULT_IG = Path(__file__).resolve().parents[1] / ".." / "shared" / "v2-to-fhir-maps"


@mappings_app.command("coverage")
def mappings_coverage(
    ig: Path = typer.Option(
        DEFAULT_IG,
        "--ig",
        help="The V2-to-FHIR IG's mapping tables as CSV (a folder with segments/*.csv).",
        show_default="../shared/v2-to-fhir-maps beside the project",
    ),
    directory: Path | None = typer.Option(
        None, "--dir", help="Mappings directory (default: HUB_MAPPINGS_DIR)."
    ),
    output: str = typer.Option("text", "--format", help="text, json or markdown"),
    summary: bool = typer.Option(False, "--summary", help="Totals only, no row by row detail."),
    segment: list[str] = typer.Option(
        None, "--segment", help="Only the IG maps of this segment (repeatable), e.g. PID."
    ),
) -> None:
    """For every row of every IG segment map: whether the hub maps it (map file and target) or why
    not; totals per IG map, per segment and overall."""
    import orjson

    from hub.mapping import mappings_dir
    from hub.mapping.coverage import CoverageError, coverage_report, render_markdown, render_text

    if output not in ("text", "json", "markdown"):
        raise typer.BadParameter("give text, json or markdown", param_hint="--format")
    root = directory or get_settings().mappings_dir or mappings_dir()
    try:
        report = coverage_report(ig.resolve(), root, {s.upper() for s in segment} if segment else None)
    except CoverageError as exc:
        typer.echo(f"coverage: {exc}", err=True)
        raise typer.Exit(2) from None
    if output == "json":
        data = report.as_json()
        if summary:
            for seg in data["segments"]:
                for m in seg["maps"]:
                    del m["rows"]
        typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    elif output == "markdown":
        typer.echo(render_markdown(report, summary))
    else:
        typer.echo(render_text(report, summary))


def _message_files(paths: list[Path]) -> tuple[list[Path], int]:
    """The files to read: each named file, and every file under each named folder (sorted, hidden ones
    left out) that holds HL7 v2 (starts with MSH, FHS or BHS); and how many folder files did not."""
    files: list[Path] = []
    skipped = 0
    for path in paths:
        if not path.is_dir():
            files.append(path)
            continue
        for found in sorted(p for p in path.rglob("*") if p.is_file()):
            if any(part.startswith(".") for part in found.relative_to(path).parts):
                continue
            try:
                with found.open("rb") as fh:
                    head = fh.read(64)
            except OSError:
                head = b""
            if head.lstrip(b"\xef\xbb\xbf\x0b\r\n\t ")[:3] in (b"MSH", b"FHS", b"BHS"):
                files.append(found)
            else:
                skipped += 1
    return files, skipped


@mappings_app.command("try")
def mappings_try(
    paths: list[Path] = typer.Argument(
        ..., exists=True, help="HL7 v2 message files (ER7; batches too) and folders of them."
    ),
    sender: str | None = typer.Option(None, "--sender", help="Overlay name under mappings/senders/."),
    facility: str | None = typer.Option(None, "--facility", help="Sending facility (default: MSH-4)."),
    time_zone: str | None = typer.Option(
        None, "--time-zone", help="Sender time zone (default: HUB setting)."
    ),
    validate: bool = typer.Option(True, help="Check the resources against the FHIR R4 models."),
    ndjson: bool = typer.Option(
        False, "--ndjson", help="One JSON line per message: its Bundle, unmapped report and warnings."
    ),
) -> None:
    """Print the FHIR Bundle each message would become, then its unmapped report (and warnings, MPI
    actions), storing nothing. Several messages (files, folders, batches) end with a summary on stderr.
    Exit status: 0 all mapped, 1 some message was rejected or not mapped, 2 some resource is invalid."""
    import orjson

    from hub import hl7
    from hub.errors import MappingError
    from hub.fhir.validate import validate_resource
    from hub.mapping import SenderContext, configure, map_message

    settings = get_settings()
    if settings.mappings_dir:
        configure(settings.mappings_dir)
    files, skipped = _message_files(paths)
    counts = {"mapped": 0, "by segment": 0, "failed": 0, "invalid": 0}
    failures: dict[str, int] = {}
    numbers: dict[Path, int] = {}
    total = 0
    several = len(files) > 1
    for path, number, count, raw in _each_message(files):  # one file in memory at a time
        total += 1
        numbers[path] = number
        several = several or count > 1
        where = f"{path} [{number}]: " if several else ""
        line: dict[str, object] = {"file": str(path), "message": number}
        error: dict[str, str] | None = None
        try:
            header = hl7.peek_header(raw)
            line["type"] = header.message_type
            line["control_id"] = header.control_id
            ctx = SenderContext(
                facility=facility or header.sending_facility,
                overlay=sender,
                time_zone=time_zone or settings.default_time_zone,
            )
            decoded = hl7.decode_checked(raw, header)
            result = map_message(hl7.parse(decoded.text), ctx)
            result.warnings.extend(f"{code}: {text}" for code, text in decoded.warnings)
        except hl7.HeaderError as exc:
            error = {"code": "rejected", "text": f"{exc.text} (ERR {exc.code} at {exc.location})"}
        except MappingError as exc:
            error = {"code": exc.code, "text": exc.message}
        if error is not None:
            counts["failed"] += 1
            failures[error["code"]] = failures.get(error["code"], 0) + 1
            if ndjson:
                typer.echo(orjson.dumps({**line, "bundle": None, "error": error}).decode())
            prefix = "rejected" if error["code"] == "rejected" else f"not mapped ({error['code']})"
            typer.echo(f"{where}{prefix}: {error['text']}", err=True)
            continue
        counts["mapped"] += 1
        if any(u.get("note") for u in result.unmapped[:1]):
            counts["by segment"] += 1
        bundle: dict[str, object] = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": f"urn:uuid:{r['id']}",
                    "resource": r,
                    "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
                }
                for r in result.resources
            ],
        }
        problems = [p for r in result.resources for p in validate_resource(r)] if validate else []
        if problems:
            counts["invalid"] += 1
        if ndjson:
            line.update(
                bundle=bundle,
                unmapped=result.unmapped,
                warnings=result.warnings,
                actions=result.actions,
                nulls=result.nulls,
                cancels=result.cancels,
                replaces=result.replaces,
            )
            if validate:
                line["invalid"] = [str(p) for p in problems]
            typer.echo(orjson.dumps(line).decode())
        else:
            if several:
                typer.echo(f"== {path} [{number}] {line['type']} {line['control_id']}")
            _print_result(bundle, result)
        for problem in problems:
            typer.echo(f"{where}invalid: {problem}", err=True)
    if several or skipped or not total:
        _print_summary(total, len(numbers), skipped, counts, failures)
    if counts["failed"] or not total:
        raise typer.Exit(1)
    if counts["invalid"]:
        raise typer.Exit(2)


def _each_message(files: list[Path]) -> Iterator[tuple[Path, int, int, bytes]]:
    """(file, number of the message in it, how many it holds, message) for every message of every file
    (batches split)."""
    from hub.hl7 import split_messages

    for path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            typer.echo(f"{path}: cannot read ({exc.strerror})", err=True)
            raise typer.Exit(2) from exc
        messages = list(split_messages(data))
        del data
        for number, raw in enumerate(messages, 1):
            yield path, number, len(messages), raw


def _print_result(bundle: dict[str, object], result: MappingResult) -> None:
    """One message of ``hub mappings try``: the Bundle, then the unmapped report, warnings, actions."""
    import orjson

    typer.echo(orjson.dumps(bundle, option=orjson.OPT_INDENT_2).decode())
    typer.echo(f"\nunmapped ({len(result.unmapped)}):")
    for u in result.unmapped:
        name = f" {u['name']}" if u["name"] else ""
        note = f" ({u['note']})" if u.get("note") else ""
        typer.echo(f"  [{u['index']}] {u['segment']}-{u['field']}{name}: {u['value']}{note}")
    for title, items in (
        ("warnings", result.warnings),
        ("actions", result.actions),
        ("explicit nulls", result.nulls),
        ("cancels", result.cancels),
        ("replaces", result.replaces),
    ):
        if items:
            typer.echo(f"{title}:")
            for item in items:
                typer.echo(f"  {item if isinstance(item, str) else orjson.dumps(item).decode()}")


def _print_summary(
    total: int, files: int, skipped: int, counts: dict[str, int], failures: dict[str, int]
) -> None:
    text = f"{total} message(s) in {files} file(s): {counts['mapped']} mapped"
    if counts["by segment"]:
        text += f" ({counts['by segment']} by segment: no message map)"
    text += f", {counts['failed']} failed"
    if failures:
        text += " (" + ", ".join(f"{code} {n}" for code, n in sorted(failures.items())) + ")"
    if counts["invalid"]:
        text += f", {counts['invalid']} with invalid resources"
    if skipped:
        text += f"; {skipped} file(s) in the folders hold no HL7 v2 and were left out"
    typer.echo(text, err=True)


@app.command("token")
def token(
    role: str = typer.Option(..., "--role", help="sender, clinician, ministry, steward or admin"),
    subject: str = typer.Option(None, "--subject", help="the sub claim (default: role plus a random suffix)"),
    scope: list[str] = typer.Option(None, "--scope", help="SMART v2 scope (repeatable; default: the role's)"),
    facility: list[str] = typer.Option(None, "--facility", help="a sender's facility, MSH-4 (repeatable)"),
    patient: str = typer.Option(None, "--patient", help="the patient of patient/… scopes"),
    ttl: int = typer.Option(None, "--ttl", help="lifetime in seconds (default: HUB_TOKEN_TTL_S)"),
) -> None:
    """Print a signed bearer token for the FHIR API (recorded in the audit trail)."""
    from hub.auth import ROLES, issue_token

    if role not in ROLES:
        raise typer.BadParameter(f"role must be one of {', '.join(ROLES)}", param_hint="--role")
    if role == "sender" and not facility:
        raise typer.BadParameter("a sender token needs the facilities it sends for", param_hint="--facility")
    out = issue_token(
        get_settings(),
        role,
        subject=subject,
        scopes=scope or None,
        ttl_s=ttl,
        facilities=facility,
        patient=patient,
    )
    _audit("login", f"token issued on the command line: role {role}, subject {subject or '(random)'}")
    typer.echo(out)


@client_app.command("add")
def client_add(
    client_id: str = typer.Argument(..., help="the client_id"),
    role: str = typer.Option(..., "--role", help="sender, clinician, ministry, steward or admin"),
    scope: list[str] = typer.Option(None, "--scope", help="SMART v2 scope it may ask for (repeatable)"),
    facility: list[str] = typer.Option(None, "--facility", help="a sender's facility, MSH-4 (repeatable)"),
    secret: str = typer.Option(None, "--secret", help="client secret (client_secret_basic / _post)"),
    jwks: Path = typer.Option(None, "--jwks", help="JSON file of its public keys (private_key_jwt)"),
) -> None:
    """Register (or update) a system for the client-credentials grant."""
    import json

    from hub.auth import ROLE_SCOPES, ROLES, parse_scope
    from hub.auth_secrets import hash_secret
    from hub.db import make_engine, session_scope
    from hub.store.models import ApiClient

    if role not in ROLES:
        raise typer.BadParameter(f"role must be one of {', '.join(ROLES)}", param_hint="--role")
    if role == "sender" and not facility:
        raise typer.BadParameter("a sender needs the facilities it sends for", param_hint="--facility")
    scopes = list(scope or ROLE_SCOPES[role])
    bad = [s for s in scopes if parse_scope(s) is None]
    if bad:
        raise typer.BadParameter(f"not SMART v2 scopes: {' '.join(bad)}", param_hint="--scope")
    if not secret and jwks is None:
        raise typer.BadParameter("give --secret or --jwks", param_hint="--secret")
    keys = json.loads(jwks.read_text()) if jwks is not None else None
    if keys is not None and "keys" not in keys:
        keys = {"keys": [keys]}
    with session_scope(make_engine(get_settings().sqlalchemy_url)) as session:
        found = session.get(ApiClient, client_id)
        created = found is None
        client = found or ApiClient(client_id=client_id)
        client.role, client.scopes, client.facilities = role, " ".join(scopes), " ".join(facility or [])
        client.active = True
        if secret:
            client.secret_hash = hash_secret(secret)
        if keys is not None:
            client.jwks = keys
        session.add(client)
    _audit("admin", f"client {client_id} {'registered' if created else 'updated'} (role {role})")
    typer.echo(f"client {client_id} {'registered' if created else 'updated'}")


@client_app.command("list")
def client_list() -> None:
    """List registered clients."""
    from sqlalchemy import select

    from hub.db import make_engine, session_scope
    from hub.store.models import ApiClient

    with session_scope(make_engine(get_settings().sqlalchemy_url)) as session:
        for c in session.scalars(select(ApiClient).order_by(ApiClient.client_id)):
            auth = "+".join(a for a, on in (("secret", c.secret_hash), ("jwks", c.jwks)) if on)
            typer.echo(f"{c.client_id:24} {c.role:10} {auth:12} {c.facilities or '-':20} {c.scopes}")


@audit_app.command("verify")
def audit_verify() -> None:
    """Recompute the audit trail's hash chain; exits 1 naming the first broken link."""
    from hub.audit import verify
    from hub.db import make_engine

    engine = make_engine(get_settings().sqlalchemy_url)
    try:
        checked, broken = verify(engine)
    finally:
        engine.dispose()
    if broken is not None:
        typer.echo(
            f"audit trail broken at row {broken.row_id}: {broken.problem} ({checked} rows before it intact)",
            err=True,
        )
        raise typer.Exit(1)
    typer.echo(f"audit trail intact: {checked} rows")


def main() -> None:
    app()
