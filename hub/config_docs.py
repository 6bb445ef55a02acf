"""docs/configuration.md, generated from the settings class (hub.config.Settings): every ``HUB_*``
setting with its default and what it does.

    python -m hub.config_docs            # writes docs/configuration.md
    python -m hub.config_docs --check    # exits 1 when the file is not what the settings make

Each setting's user-facing text is here, grouped by section; a setting of the class that no section names
(or a name no setting has) is an error, so the page cannot fall behind the settings."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from hub.config import Settings

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
COMMAND = "python -m hub.config_docs"

# (section, [(setting, meaning) or (setting, meaning, default as shown)])
Entry = tuple[str, str] | tuple[str, str, str]
SECTIONS: list[tuple[str, str, list[Entry]]] = [
    (
        "Storage and processing",
        "",
        [
            (
                "var_dir",
                "SQLite file (without `HUB_DATABASE_URL`), the token signing key, export files and keys",
            ),
            (
                "database_url",
                "SQLAlchemy URL of the database, e.g. `postgresql+psycopg://hub@db.example/hub`",
                "SQLite file `$HUB_VAR_DIR/hub.db`",
            ),
            (
                "broker_url",
                "`amqp://…` (RabbitMQ) or `redis://…`: messages are processed by `hub worker`s; unset: by the"
                " embedded worker of `hub serve`",
                "unset: embedded worker",
            ),
            ("celery_queue", "the Celery queue tasks go to and `hub worker` consumes"),
            ("celery_linger_ms", "message ids are gathered this long into one Celery task"),
            ("worker_batch", "most message ids in one task (Celery) or one turn (embedded worker)"),
            (
                "worker_nice",
                "`hub worker` and the embedded worker process lower their CPU priority by this much, so the"
                " intake's ACKs get a core first (0: off)",
            ),
            (
                "worker_enabled",
                "without a broker, `hub serve` runs the embedded worker (false: nothing processes)",
            ),
            (
                "worker_process",
                "the embedded worker runs in a child process of its own (restarted if it dies); false: as"
                " threads inside `hub serve`",
            ),
            ("worker_threads", "threads of the embedded worker"),
            (
                "worker_burst_share",
                "while the intake commits back to back, the largest share of the time processing takes (of"
                " SQLite's write lock, or of the CPU for a `hub worker` on the intake's machine); 1: no pause",
            ),
            ("sweep_interval_s", "how often messages still `received` are looked for and dispatched again"),
            (
                "sweep_after_s",
                "a message `received` this long ago without being processed is dispatched again",
            ),
            (
                "commit_window_ms",
                "group commit of accepted messages: a window > 0 also waits this long for more (0: what"
                " arrives while a commit runs goes into the next)",
            ),
            ("commit_max_batch", "most messages in one group commit"),
            (
                "commit_gather_ms",
                "a commit with fewer messages than the previous one waits up to this long for the rest",
            ),
            (
                "validate_mode",
                "`all` / `sample` / `off`: check mapped resources against the FHIR R4B models at run time",
            ),
            ("mappings_dir", "where the maps live", "the shipped `mappings/`"),
            (
                "default_time_zone",
                "time zone of datetimes without an offset, for senders registered without one",
            ),
        ],
    ),
    (
        "Listeners and intake",
        "Limits and the answers to input beyond them are in [errors-and-limits.md](errors-and-limits.md).",
        [
            ("http_host", "HTTP bind address (also `hub serve --host`)"),
            ("http_port", "HTTP port (also `hub serve --port`)"),
            ("http_tls_cert", "certificate file (PEM): `hub serve` speaks HTTPS"),
            ("http_tls_key", "private key file (PEM) of `HUB_HTTP_TLS_CERT`"),
            ("mllp_enabled", "`hub serve` runs the MLLP listener beside HTTP"),
            ("mllp_host", "MLLP bind address"),
            ("mllp_port", "MLLP port (also the default of `hub send --port`)"),
            ("mllp_tls_cert", "certificate file (PEM): MLLP over TLS"),
            ("mllp_tls_key", "private key file (PEM) of `HUB_MLLP_TLS_CERT`"),
            (
                "mllp_tls_client_ca",
                "CA file: MLLP clients must present a certificate it signed; its subject CN is the facility",
            ),
            (
                "mllp_allow",
                "MLLP senders by address: `FACILITY=ADDRESS[/PREFIX],…`; with any set, a connection from an"
                " address not listed sends for no facility",
            ),
            (
                "open_registration",
                "accept messages of unknown sending facilities and register them",
                "open only while every listener is on loopback",
            ),
            (
                "mllp_max_frame_bytes",
                "largest MLLP frame (answered AR, connection closed) and HTTP body (413) the hub reads",
            ),
            ("mllp_idle_timeout_s", "an MLLP connection idle this long is closed"),
            ("mllp_max_garbage_bytes", "bytes outside MLLP frames a connection may send before it is closed"),
            ("hl7_max_segments", "most segments in one message (more: AR)"),
            (
                "hl7_max_delimiters",
                "most field/component/repetition/subcomponent separators in one message (more: AR)",
            ),
            ("rate_intake_per_s", "messages a second per sending facility (HTTP and MLLP; 0: no limit)"),
            ("rate_intake_burst", "burst of messages per sending facility"),
        ],
    ),
    (
        "Authentication and audit",
        "Roles, scopes and the identity provider are in [security.md](security.md).",
        [
            ("token_ttl_s", "lifetime of the tokens the hub signs (`hub token`, `POST /auth/token`)"),
            ("break_glass_ttl_s", "how long an emergency (break-the-glass) access lasts"),
            (
                "oidc_issuer",
                "issuer URL of an OpenID provider whose JWT access tokens the hub accepts",
                "unset",
            ),
            (
                "oidc_audience",
                "the `aud` those tokens must carry (unset: not checked; set it in production)",
                "unset",
            ),
            (
                "oidc_jwks_url",
                "the provider's signing keys",
                "the `jwks_uri` of `<issuer>/.well-known/openid-configuration`",
            ),
            ("oidc_algorithms", "accepted signature algorithms"),
            ("oidc_leeway_s", "clock skew allowed on `exp`, `nbf`, `iat`"),
            (
                "oidc_jwks_min_refresh_s",
                "a token naming an unknown `kid` fetches the keys again at most this often",
            ),
            (
                "oidc_role_claim",
                "where the hub role is in the token (a dotted path: `realm_access.roles` for Keycloak)",
            ),
            (
                "oidc_role_prefix",
                "prefix of the provider's role names (`hub-`: its role `hub-sender` is `sender`)",
            ),
            ("oidc_scope_claim", "claim with the SMART scopes"),
            ("oidc_facility_claim", "claim with a sender's facilities"),
            ("oidc_patient_claim", "claim with the patient of a patient-level token"),
            (
                "rate_api_per_s",
                "requests a second per API client (its client id, else the token's subject; 0: no limit)",
            ),
            ("rate_api_burst", "burst of requests per API client"),
            (
                "audit_flush_ms",
                "accesses, journaled before each answer leaves, reach the audit trail at most this late",
            ),
            (
                "audit_journal_sync",
                "fdatasync the audit journal before each answer (off: it survives a killed process,"
                " not a power loss)",
            ),
        ],
    ),
    (
        "Master patient index",
        "Matching and survivorship are in [mpi.md](mpi.md).",
        [
            (
                "mpi_match_threshold",
                "score (log2 weights) at or above which two patients are linked automatically",
            ),
            ("mpi_possible_threshold", "score at or above which a pair goes to the review queue"),
            (
                "mpi_twin_gate",
                "without an agreeing name and birth date, an automatic link also needs an agreeing BPJS or"
                " passport number",
            ),
            (
                "mpi_sender_trust",
                'trust of sending facilities (JSON, e.g. `{"RSUP-PUSAT": 10}`; higher wins where a rule says'
                " `trust`)",
                "`{}` (every facility 0)",
            ),
            (
                "mpi_survivorship",
                'survivorship rules per element in place of the defaults (JSON, e.g. `{"address": ["trust",'
                ' "recent"]}`)',
                "`{}` (the defaults)",
            ),
        ],
    ),
    (
        "Bulk export",
        "How export jobs run is in [bulk-export.md](bulk-export.md).",
        [
            ("export_dir", "where export files are written", "`$HUB_VAR_DIR/exports`"),
            ("export_ttl_s", "how long a finished job and its files are kept"),
            ("export_file_max_bytes", "size at which an NDJSON file is split"),
            ("export_min_poll_s", "a status poll sooner than this after the last one gets 429"),
            ("export_retry_after_s", "the `Retry-After` the status answers"),
            ("export_runner", "whether this process (`hub serve`, `hub worker`) runs export jobs"),
            ("export_workers", "export runner threads a process"),
            ("export_poll_s", "how often an idle runner looks for a job"),
            ("export_stale_s", "heartbeat age after which a running job is taken over by another runner"),
            ("export_batch", "resources read a query"),
            (
                "export_pseudonym_key",
                "pseudonymisation key of de-identified exports",
                "a key file under `$HUB_VAR_DIR`",
            ),
        ],
    ),
    (
        "Statistics",
        "The statistics settings file is described in [ministry.md](ministry.md).",
        [
            (
                "stats_config",
                "YAML file of statistics settings (suppression, age bands, populations, DHIS2 mapping)",
                "unset: the defaults",
            ),
            (
                "dhis2_url",
                "DHIS2 server `hub stats push` sends to (its `api/dataValueSets` is appended)",
                "unset",
            ),
            ("dhis2_username", "DHIS2 user", "unset"),
            ("dhis2_password", "DHIS2 password", "unset"),
        ],
    ),
    (
        "Logging",
        "",
        [
            ("log_level", "`DEBUG`, `INFO`, `WARNING`, `ERROR`"),
            ("log_format", "`text`, or `json`: one JSON object per log line (`hub serve` and its worker)"),
        ],
    ),
]


def env_name(name: str, field: FieldInfo) -> str:
    alias = field.validation_alias
    choices = getattr(alias, "choices", None)
    if choices:
        return str(next(c for c in choices if isinstance(c, str) and c.startswith("HUB_")))
    return "HUB_" + name.upper()


def _show(value: Any) -> str:
    if value is None or value == "":
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and value >= 1024 * 1024 and value % (1024 * 1024) == 0:
        return f"`{value}` ({value // (1024 * 1024)} MiB)"
    return f"`{value}`"


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return _show(field.default_factory())  # type: ignore[call-arg]
    if field.default is PydanticUndefined:
        return "required"
    return _show(field.default)


def render() -> str:
    fields = Settings.model_fields
    named = [e[0] for _, _, entries in SECTIONS for e in entries]
    unknown = sorted(set(named) - set(fields))
    missing = [n for n in fields if n not in named]
    twice = sorted({n for n in named if named.count(n) > 1})
    if unknown or missing or twice:
        raise SystemExit(
            "hub.config_docs.SECTIONS does not match hub.config.Settings:"
            + (f" not documented: {', '.join(missing)};" if missing else "")
            + (f" not a setting: {', '.join(unknown)};" if unknown else "")
            + (f" documented twice: {', '.join(twice)};" if twice else "")
        )
    out = [
        "# Configuration",
        "",
        "The hub reads its settings from the environment, each prefixed `HUB_` (a `.env` file is not read:",
        "set them in the service's environment, e.g. a systemd `EnvironmentFile=` or a container's `env`).",
        "Every process (`hub serve`, `hub worker`, the other `hub` commands) reads the same settings; give",
        "them all the same environment. Durations end in `_S` (seconds) or `_MS` (milliseconds).",
        "",
        f"This page is generated from the settings class by `{COMMAND}`; a test fails when it is stale.",
        "",
    ]
    for title, intro, entries in SECTIONS:
        out += [f"## {title}", ""]
        if intro:
            out += [intro, ""]
        out += ["| setting | default | meaning |", "|---|---|---|"]
        for entry in entries:
            name, meaning = entry[0], entry[1]
            field = fields[name]
            default = entry[2] if len(entry) == 3 else _default(field)
            out.append(f"| `{env_name(name, field)}` | {default} | {meaning} |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale, write nothing")
    parser.add_argument("--output", type=Path, default=DOC, help=f"where to write (default {DOC.name})")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run {COMMAND}", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
