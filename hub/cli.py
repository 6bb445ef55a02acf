"""The ``hub`` command line (Typer)."""

from __future__ import annotations

from pathlib import Path

import typer

from hub.config import get_settings

app = typer.Typer(help="The hub: HL7 v2 intake, FHIR R4 store and API.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("heads", help="Target revision (default: all heads).")) -> None:
    """Bring the database (HUB_DATABASE_URL, or the SQLite file under var/) to the current schema."""
    from hub.store.schema import upgrade

    settings = get_settings()
    upgrade(settings.sqlalchemy_url, revision)
    typer.echo(f"database at {_safe_url(settings.sqlalchemy_url)} is up to date")


mappings_app = typer.Typer(help="The HL7 v2 → FHIR mapping files (mappings/).", no_args_is_help=True)
app.add_typer(mappings_app, name="mappings")


@mappings_app.command("check")
def mappings_check(
    directory: Path | None = typer.Option(
        None, "--dir", help="Mappings directory (default: HUB_MAPPINGS_DIR)."
    ),
) -> None:
    """Validate every mapping file, the base and every sender overlay; exit 1 naming file and line."""
    from hub.mapping import check_mappings

    root = directory or get_settings().mappings_dir
    problems = check_mappings(root)
    for problem in problems:
        typer.echo(str(problem), err=True)
    if problems:
        typer.echo(f"{len(problems)} problem(s) in {root}", err=True)
        raise typer.Exit(1)
    count = sum(1 for _ in root.rglob("*.yaml"))
    typer.echo(f"{count} mapping files in {root} are valid")


@mappings_app.command("try")
def mappings_try(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="An HL7 v2 message (ER7)."),
    sender: str | None = typer.Option(None, "--sender", help="Overlay name under mappings/senders/."),
    facility: str | None = typer.Option(None, "--facility", help="Sending facility (default: MSH-4)."),
    time_zone: str | None = typer.Option(
        None, "--time-zone", help="Sender time zone (default: HUB setting)."
    ),
    validate: bool = typer.Option(True, help="Check the resources against the FHIR R4 models."),
) -> None:
    """Print the FHIR Bundle FILE would become, then the unmapped report (and warnings, MPI actions)."""
    import orjson

    from hub import hl7
    from hub.errors import MappingError
    from hub.fhir.validate import validate_resource
    from hub.mapping import SenderContext, configure, map_message

    settings = get_settings()
    configure(settings.mappings_dir)
    raw = file.read_bytes()
    try:
        header = hl7.peek_header(raw)
    except hl7.HeaderError as exc:
        typer.echo(f"rejected: {exc.text} (ERR {exc.code} at {exc.location})", err=True)
        raise typer.Exit(1) from None
    ctx = SenderContext(
        facility=facility or header.sending_facility,
        overlay=sender,
        time_zone=time_zone or settings.default_time_zone,
    )
    try:
        result = map_message(hl7.parse(hl7.decode(raw, header)), ctx)
    except MappingError as exc:
        typer.echo(f"not mapped ({exc.code}): {exc.message}", err=True)
        raise typer.Exit(1) from None
    bundle = {
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
    typer.echo(orjson.dumps(bundle, option=orjson.OPT_INDENT_2).decode())
    typer.echo(f"\nunmapped ({len(result.unmapped)}):")
    for u in result.unmapped:
        name = f" {u['name']}" if u["name"] else ""
        typer.echo(f"  [{u['index']}] {u['segment']}-{u['field']}{name}: {u['value']}")
    for title, items in (
        ("warnings", result.warnings),
        ("actions", result.actions),
        ("explicit nulls", result.nulls),
    ):
        if items:
            typer.echo(f"{title}:")
            for item in items:
                typer.echo(f"  {item if isinstance(item, str) else orjson.dumps(item).decode()}")
    if validate:
        problems = [p for r in result.resources for p in validate_resource(r)]
        for problem in problems:
            typer.echo(f"invalid: {problem}", err=True)
        if problems:
            raise typer.Exit(2)


def _safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def main() -> None:
    app()
