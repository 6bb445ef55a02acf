"""The ``hub`` command line (Typer)."""

from __future__ import annotations

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


@app.command("token")
def token(
    role: str = typer.Option(..., "--role", help="sender, clinician, ministry, steward or admin"),
    subject: str = typer.Option(None, "--subject", help="the sub claim (default: role plus a random suffix)"),
    scope: list[str] = typer.Option(None, "--scope", help="SMART v2 scope (repeatable; default: the role's)"),
    ttl: int = typer.Option(None, "--ttl", help="lifetime in seconds (default: HUB_TOKEN_TTL_S)"),
) -> None:
    """Print a signed bearer token for the FHIR API."""
    from hub.auth import ROLES, issue_token

    if role not in ROLES:
        raise typer.BadParameter(f"role must be one of {', '.join(ROLES)}", param_hint="--role")
    typer.echo(issue_token(get_settings(), role, subject=subject, scopes=scope or None, ttl_s=ttl))


def _safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def main() -> None:
    app()
