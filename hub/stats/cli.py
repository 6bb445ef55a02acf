"""``hub stats rebuild`` and ``hub stats push``."""

from __future__ import annotations

import json

import typer

from hub.config import get_settings

stats_app = typer.Typer(help="Ministry statistics.", no_args_is_help=True)


@stats_app.command("rebuild")
def rebuild() -> None:
    """Recompute the statistics facts from the stored resources (after an upgrade, or to check them)."""
    from hub.db import get_engine
    from hub.stats.upkeep import rebuild as run

    settings = get_settings()
    engine = get_engine(settings.sqlalchemy_url)
    with engine.begin() as conn:
        count = run(conn)
    typer.echo(f"{count} statistics facts rebuilt")


@stats_app.command("push")
def push(
    data_set: str = typer.Option(..., "--data-set", help="The data set of the DHIS2 mapping"),
    period: str = typer.Option(..., "--period", help="A DHIS2 period code, e.g. 2026W10"),
    org_unit: str = typer.Option(None, "--org-unit", help="Only this org unit"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the document instead of sending it"),
) -> None:
    """Send the (suppressed) dataValueSets of a data set and period to HUB_DHIS2_URL's api/dataValueSets."""
    from hub.db import get_read_engine
    from hub.errors import HubError
    from hub.stats import dhis2
    from hub.stats.config import load_config

    settings = get_settings()
    try:
        with get_read_engine(settings.sqlalchemy_url).connect() as conn:
            doc = dhis2.data_value_set(conn, load_config(settings.stats_config), data_set, period, org_unit)
        if dry_run:
            typer.echo(json.dumps(doc, indent=2))
            return
        answer = dhis2.push(settings.dhis2_url, settings.dhis2_username, settings.dhis2_password, doc)
    except HubError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{len(doc['dataValues'])} data values sent ({doc['suppressed']} suppressed left out)")
    typer.echo(json.dumps(answer.get("importCount", answer.get("status", "")), indent=None))
