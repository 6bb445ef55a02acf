"""Settings from the environment (prefix ``HUB_``); nothing else in the hub reads ``os.environ``."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # hub serve and its worker process


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HUB_", extra="ignore")

    var_dir: Path = Path("var")
    database_url: str = ""  # empty: SQLite file under var_dir
    broker_url: str | None = None  # set: Celery; unset: in-process worker threads
    celery_queue: str = "hub"  # the Celery queue tasks go to and `hub worker` consumes
    celery_linger_ms: float = 20.0  # gather message ids this long into one task (processing latency only)
    # `hub worker` lowers its CPU priority by this much (0: not at all): on a machine it shares with `hub
    # serve`, the intake (whose ACKs wait) gets a core before the processing, whose latency nobody waits on.
    worker_nice: int = 10

    http_host: str = "127.0.0.1"
    http_port: int = 8080
    mllp_enabled: bool = True  # `hub serve` runs the MLLP listener beside HTTP
    mllp_host: str = "127.0.0.1"
    mllp_port: int = 2575
    mllp_max_frame_bytes: int = 10 * 1024 * 1024
    mllp_idle_timeout_s: float = 300.0
    # Bytes outside MLLP frames a connection may send before it is closed (reported once per connection).
    mllp_max_garbage_bytes: int = 4096
    # Per message (MLLP and HTTP): at most this many segments and field/component/repetition separators.
    hl7_max_segments: int = 50_000
    hl7_max_delimiters: int = 2_000_000
    mllp_tls_cert: Path | None = None
    mllp_tls_key: Path | None = None
    mllp_tls_client_ca: Path | None = None  # set: client certificates are required

    # None: open while every listener is bound to loopback, closed otherwise.
    open_registration: bool | None = None

    # Group commit of accepted messages: whatever arrived while the previous commit ran goes into the
    # next one (at most commit_max_batch); commit_window_ms > 0 also waits that long for company (measured
    # on 2 cores: any wait only adds ACK latency, since a commit's fsync already gathers the next batch).
    commit_window_ms: float = 0.0
    commit_max_batch: int = 500
    # ... and while a commit has fewer messages than the previous one had (the senders it answered are
    # about to send again), it waits up to commit_gather_ms for them: one fsync for the round, not two.
    commit_gather_ms: float = 1.0

    worker_enabled: bool = True  # the embedded worker when no broker is set
    # ... in a child process of its own (its interpreter lock and a core apart from the intake's), or,
    # false, as threads of the serving process.
    worker_process: bool = True
    worker_threads: int = 1
    # While the intake commits back to back, the largest share of the time the worker's turns take: the
    # embedded worker's share of SQLite's write lock, a `hub worker`'s of the time when it shares the
    # intake's machine (hub.tasks.pacing); 1.0: no pause.
    worker_burst_share: float = 0.1
    worker_batch: int = 50
    sweep_interval_s: float = 30.0
    sweep_after_s: float = 60.0

    mappings_dir: Path | None = None  # None: the mappings/ folder shipped with the hub
    # HUB_VALIDATE=all|sample|off: check mapped resources against the FHIR R4B models at run time.
    validate_mode: str = Field(default="off", validation_alias=AliasChoices("HUB_VALIDATE", "validate_mode"))
    default_time_zone: str = "Asia/Jakarta"

    # The master patient index (hub.mpi): Fellegi–Sunter thresholds (log2 weights) and the twin gate
    # (without agreeing name and birth date, an automatic link also needs an agreeing BPJS/passport).
    mpi_match_threshold: float = 16.0
    mpi_possible_threshold: float = 8.0
    mpi_twin_gate: bool = True
    # Golden-record survivorship (hub.mpi.survivorship, docs/mpi.md): the trust of sending facilities
    # (JSON, e.g. {"RSUP-PUSAT": 10, "PKM-C": 1}; higher wins where an element's rules say "trust") and
    # rules per element in place of the defaults (JSON, e.g. {"address": ["trust", "recent"]}).
    mpi_sender_trust: dict[str, int] = Field(default_factory=dict)
    mpi_survivorship: dict[str, list[str]] = Field(default_factory=dict)

    token_ttl_s: int = 3600

    # Bulk Data export (hub.export): where its files go (default: var_dir/exports), how long a finished
    # job and its files are kept, the size at which an NDJSON file is split, how often a client may poll
    # its status, the runner threads of each hub process (export_runner: whether this process runs them),
    # after how long without a heartbeat a running job is taken over, resources read a batch, and the
    # pseudonymisation key of de-identified exports (default: a key file under var_dir).
    export_dir: Path | None = None
    export_ttl_s: float = 86400.0
    export_file_max_bytes: int = 256 * 1024 * 1024
    export_min_poll_s: float = 1.0
    export_retry_after_s: int = 2
    export_runner: bool = True
    export_workers: int = 2
    export_poll_s: float = 1.0
    export_stale_s: float = 60.0
    export_batch: int = 1000
    export_pseudonym_key: str | None = None

    # An external OpenID provider whose JWT access tokens the hub accepts beside its own (hub.auth).
    oidc_issuer: str = ""  # empty: only the hub's own tokens
    oidc_audience: str = ""  # the `aud` the tokens must carry (empty: not checked)
    oidc_jwks_url: str = ""  # empty: the jwks_uri of <issuer>/.well-known/openid-configuration
    oidc_algorithms: str = "RS256,ES256"
    oidc_leeway_s: int = 60  # clock skew allowed on exp / nbf / iat
    oidc_jwks_min_refresh_s: float = 10.0  # an unknown kid fetches the keys again at most this often
    oidc_role_claim: str = "roles"  # a dotted path: realm_access.roles for Keycloak's realm roles
    oidc_role_prefix: str = ""  # e.g. "hub-": the provider's role hub-sender is the hub's sender
    oidc_scope_claim: str = "scope"
    oidc_facility_claim: str = "facility"
    oidc_patient_claim: str = "patient"

    # MLLP senders without a client certificate: comma-separated FACILITY=ADDRESS[/PREFIX] pairs
    # (several for one facility allowed); with any set, a connection from an address not listed sends
    # for no facility. Client certificates are mapped to senders by their subject CN (= MSH-4).
    mllp_allow: str = ""

    # HTTPS for the HTTP listener (uvicorn's TLS).
    http_tls_cert: Path | None = None
    http_tls_key: Path | None = None

    # Rate limits (token buckets): requests per second and burst per API client (token subject or client
    # id); messages per second and burst per sending facility on intake. 0: no limit.
    rate_api_per_s: float = 0.0
    rate_api_burst: int = 100
    rate_intake_per_s: float = 0.0
    rate_intake_burst: int = 500

    # The audit trail (hub.audit): accesses are written by a background writer at most this late.
    audit_flush_ms: float = 200.0
    # Each access event is journaled under var_dir/audit-journal before its answer leaves; fdatasync'ed
    # unless this is off (then it survives a killed process but not a power loss).
    audit_journal_sync: bool = True
    break_glass_ttl_s: int = 3600  # how long an emergency access lasts

    # Ministry statistics (hub.stats): a YAML file of settings (suppression threshold, rounding, age bands,
    # notifiable conditions, a population table, the DHIS2 mapping); None: the defaults.
    stats_config: Path | None = None
    dhis2_url: str = ""  # `hub stats push`: the DHIS2 server (its api/dataValueSets is appended)
    dhis2_username: str = ""
    dhis2_password: str = ""
    log_level: str = "INFO"
    log_format: str = "text"  # text | json (one JSON object per line)

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.var_dir / 'hub.db').as_posix()}"

    @property
    def registration_open(self) -> bool:
        if self.open_registration is not None:
            return self.open_registration
        return _is_loopback(self.http_host) and _is_loopback(self.mllp_host)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
