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

    token_ttl_s: int = 3600

    # Ministry statistics (hub.stats): a YAML file of settings (suppression threshold, rounding, age bands,
    # notifiable conditions, a population table, the DHIS2 mapping); None: the defaults.
    stats_config: Path | None = None
    dhis2_url: str = ""  # `hub stats push`: the DHIS2 server (its api/dataValueSets is appended)
    dhis2_username: str = ""
    dhis2_password: str = ""
    log_level: str = "INFO"

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
