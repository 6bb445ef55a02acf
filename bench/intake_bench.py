"""End-to-end intake benchmark: real ``hub serve`` (and ``hub worker``) processes, real MLLP senders.

``python -m bench intake [-n 20000] [--connections 4] [--modes embedded,pg-celery]``

N synthetic ORU^R01 messages (10 OBX each) are sent over C MLLP connections; each connection sends one
message and waits for its ACK before sending the next (as real senders do: no pipelining). Reported per
mode: accepted msgs/s (N / time from the first send to the last ACK), ACK latency p50/p99 (send → ACK
read, per message), processed msgs/s (N / time from the first send until no message is left
``received``), and, as the ceiling, a naive single-process parse of the same messages (``hub.hl7.parse``
plus reading every OBX-5), with the ratios.

Modes: ``embedded`` = the default of ``make run`` (SQLite file, ``hub serve`` and its worker process);
``pg-celery`` = PostgreSQL + Celery on RabbitMQ (``hub worker``), each on a fresh database / queue that
is dropped afterwards; ``pg-intake`` = ``hub serve`` on PostgreSQL with no worker at all (the intake
alone: accepted and ACK figures only; not in the default modes). Targets on the 2-core machine: ACK p99 ≤ 20 ms, accepted ≥ 2,000 msgs/s,
processed ≥ 1,000 msgs/s.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from hub import hl7
from hub.ingest.mllp import FrameDecoder, frame

HUB = str(Path(sys.executable).with_name("hub"))
PG_ADMIN_URL = os.environ.get("HUB_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
RABBITMQ_URL = os.environ.get("HUB_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")

TARGET_P99_MS = 20.0
TARGET_ACCEPTED = 2000.0
TARGET_PROCESSED = 1000.0


_SYLLABLES = ["ba", "di", "ka", "lu", "ma", "ni", "pu", "ra", "si", "to", "wa", "yu", "ha", "je", "go", "fe"]


def _name(p: int, salt: int) -> str:
    """A made-up name, distinct per patient (so the MPI sees 2,000 different people, as in a real feed)."""
    x = p * 7919 + salt
    return "".join(_SYLLABLES[(x >> (4 * i)) % 16] for i in range(3)).capitalize()


def oru(n: int, patients: int) -> bytes:
    """A synthetic ORU^R01 with 10 OBX (no real patient data)."""
    p = n % patients
    born = 19400101 + (p % 60) * 10000 + ((p // 60) % 12) * 100 + (p % 28)
    lines = [
        f"MSH|^~\\&|LIS|LAB_SEHAT|HUB|KEMKES|20261101083000+0700||ORU^R01^ORU_R01|B{n:07d}|P|2.5.1",
        f"PID|1||BM{p:06d}^^^LAB_SEHAT^MR||{_name(p, 1)}^{_name(p, 2)}||{born}|{'FM'[p % 2]}",
        f"OBR|1|ORD{n}|FIL{n}|24323-8^Comprehensive metabolic panel^LN|||20261101070000+0700",
    ]
    for i in range(1, 11):
        lines.append(
            f"OBX|{i}|NM|{2000 + i}-{i % 10}^Analyte {i}^LN||{(n % 97) + i * 1.5:.1f}|mg/dL|1.0-99.0|N|||F"
        )
    return ("\r".join(lines) + "\r").encode()


def parse_ceiling(messages: list[bytes]) -> float:
    """msgs/s of a naive single-process parse: header, decode, tokenize, read every OBX-5."""
    start = time.perf_counter()
    for raw in messages:
        header = hl7.peek_header(raw)
        msg = hl7.parse(hl7.decode(raw, header))
        for seg in msg.all("OBX"):
            seg.get(5)
    return len(messages) / (time.perf_counter() - start)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name = f"hub {args[0]}"
        self.log = log
        self._out = log.open("ab")
        self.proc = subprocess.Popen(
            [HUB, *args], env=env, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_port(self, port: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub exited early:\n{self.log.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"hub did not listen on {port}")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._out.close()


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of a process group (Linux /proc)."""
    return _cpu_s(lambda comm, fields, pid: int(fields[2]) == pgid)


def postgres_cpu_s(database: str) -> float:
    """CPU seconds used so far by the local PostgreSQL server for ``database``: the backends connected
    to it (they live for the whole run, so the difference of two readings is their work) and the
    server's shared writers (WAL writer, checkpointer, background writer), which the run keeps busy.
    Other databases' backends (another client of the same server) are left out."""
    shared = ("walwriter", "checkpointer", "background writer")

    def ours(comm: str, fields: list[str], pid: str) -> bool:
        if comm != "postgres":
            return False
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return False
        return f" {database} " in title or any(name in title for name in shared)

    return _cpu_s(ours)


def client_cpu_s() -> float:
    """CPU seconds of this process: the MLLP senders and the polling for the processed count."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_s(wanted: Callable[[str, list[str], str], bool]) -> float:
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, tail = stat.read_text().rsplit(")", 1)
            comm, fields = head.split("(", 1)[1], tail.split()
        except (OSError, IndexError, ValueError):
            continue
        if wanted(comm, fields, stat.parent.name):
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    mode: str
    n: int
    accepted_s: float = 0.0
    processed_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    not_aa: int = 0
    cpu_s: dict[str, float] = field(default_factory=dict)
    accept_cpu_s: dict[str, float] = field(default_factory=dict)  # until the last ACK

    def pct(self, q: float) -> float:
        lat = sorted(self.latencies)
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000


def _sender(port: int, messages: list[bytes], window: int, latencies: list[float], errors: list[str]) -> None:
    """Send ``messages`` keeping at most ``window`` without an ACK (1: send, wait for the ACK, next)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    decoder = FrameDecoder()
    sent_at: list[float] = []
    acked = 0
    try:
        while acked < len(messages):
            burst = []
            while len(sent_at) < len(messages) and len(sent_at) - acked < window:
                burst.append(frame(messages[len(sent_at)]))
                sent_at.append(time.perf_counter())
            if burst:
                sock.sendall(b"".join(burst))
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the hub")
            now = time.perf_counter()
            for ack in decoder.feed(data):
                if not isinstance(ack, bytes):
                    continue
                latencies.append(now - sent_at[acked])
                acked += 1
                if b"MSA|AA|" not in ack:
                    errors.append(ack.decode(errors="replace"))
    finally:
        sock.close()


class _Pending:
    """Counts the stored messages and those still ``received``, on one connection pool for the whole
    wait. Polled ten times a second, a fresh engine and a scan of every row each time cost PostgreSQL
    ≈15 ms of CPU a poll at 4,000 messages (≈15 % of a core, taken from the hub it measures): the total
    is counted until it is reached, then only the ``received`` rows, through their index."""

    def __init__(self, database_url: str, n: int) -> None:
        from sqlalchemy import create_engine

        self.engine = create_engine(database_url)
        self.n = n
        self.stored = False

    def done(self) -> bool:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            if not self.stored:
                self.stored = (
                    conn.execute(text("SELECT count(*) FROM inbound_message")).scalar_one() >= self.n
                )
                if not self.stored:
                    return False
            received = conn.execute(
                text("SELECT count(*) FROM inbound_message WHERE state = 'received'")
            ).scalar_one()
        return int(received) == 0

    def close(self) -> None:
        self.engine.dispose()


def drive(
    mode: str,
    port: int,
    database_url: str,
    messages: list[bytes],
    args: argparse.Namespace,
    procs: list[Proc],
) -> Result:
    connections, wait_processed = args.connections, not args.accept_only and mode != "pg-intake"
    _settle(procs)
    cpu0 = _cpu_readings(procs, database_url)
    res = Result(mode, len(messages))
    per_conn = [messages[i::connections] for i in range(connections)]
    lats: list[list[float]] = [[] for _ in range(connections)]
    errors: list[str] = []
    threads = [
        threading.Thread(target=_sender, args=(port, per_conn[i], args.window, lats[i], errors), daemon=True)
        for i in range(connections)
    ]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    res.accepted_s = time.perf_counter() - start
    res.accept_cpu_s = {k: v - cpu0[k] for k, v in _cpu_readings(procs, database_url).items()}
    res.latencies = [x for lat in lats for x in lat]
    res.not_aa = len(errors)
    if len(res.latencies) != len(messages):
        raise RuntimeError(f"{mode}: only {len(res.latencies)} of {len(messages)} ACKs")
    deadline = time.monotonic() + (600 if wait_processed else 0)
    pending = _Pending(database_url, len(messages))
    try:
        while time.monotonic() < deadline:
            if pending.done():
                break
            time.sleep(0.1)
        else:
            return res  # processing not awaited (or not finished in time): no processed figure
    finally:
        pending.close()
    res.processed_s = time.perf_counter() - start
    res.cpu_s = {k: v - cpu0[k] for k, v in _cpu_readings(procs, database_url).items()}
    return res


def _settle(procs: list[Proc], quiet_s: float = 0.5, limit_s: float = 60.0) -> None:
    """Wait until the hub's processes have finished starting (a worker imports the hub and compiles the
    maps after its parent's port is open): until they use under a tenth of a core for ``quiet_s``. A
    hub in service is warm; the first seconds of a run should not measure its start-up."""
    deadline = time.monotonic() + limit_s
    last = sum(group_cpu_s(p.proc.pid) for p in procs)
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = sum(group_cpu_s(p.proc.pid) for p in procs)
        if now - last < 0.1 * quiet_s:
            return
        last = now


def _cpu_readings(procs: list[Proc], database_url: str) -> dict[str, float]:
    """CPU seconds so far of each hub process, of the PostgreSQL server when it runs on this machine,
    and of the bench's own senders."""
    readings = {p.name: group_cpu_s(p.proc.pid) for p in procs}
    host = urlsplit(database_url).hostname
    if database_url.startswith("postgresql") and host in ("127.0.0.1", "localhost", "::1"):
        readings["PostgreSQL"] = postgres_cpu_s(urlsplit(database_url).path.lstrip("/"))
    readings["bench senders"] = client_cpu_s()
    return readings


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    from hub.store.schema import scratch_database

    with scratch_database(PG_ADMIN_URL, "hub_bench") as url:
        yield url


def _env(database_url: str, var_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(HUB_DATABASE_URL=database_url, HUB_VAR_DIR=str(var_dir), HUB_LOG_LEVEL="WARNING", **extra)
    return env


def run_mode(mode: str, messages: list[bytes], args: argparse.Namespace, tmp: Path) -> Result:
    mllp, http = free_port(), free_port()
    ports = {"HUB_MLLP_PORT": str(mllp), "HUB_HTTP_PORT": str(http)}
    procs: list[Proc] = []

    def serve(url: str, env: dict[str, str], *worker: str) -> Result:
        """Migrate, start ``hub worker`` (when given its arguments) and ``hub serve``, then drive them;
        the processes stop before the database is dropped."""
        subprocess.run([HUB, "db", "upgrade"], env=env, check=True, capture_output=True)
        if worker:
            procs.append(Proc(["worker", *worker], env, tmp / f"{mode}-worker.log"))
        procs.append(Proc(["serve"], env, tmp / f"{mode}-serve.log"))
        procs[-1].wait_port(mllp)
        try:
            return drive(mode, mllp, url, messages, args, procs)
        finally:
            for p in reversed(procs):
                p.stop()
            procs.clear()

    try:
        if mode == "embedded":
            url = f"sqlite:///{tmp / 'embedded.db'}"
            return serve(url, _env(url, tmp / "var", **ports, **args.env))
        if mode == "pg-intake":
            with pg_database() as url:
                return serve(url, _env(url, tmp / "var", HUB_WORKER_ENABLED="false", **ports, **args.env))
        with pg_database() as url:
            queue = f"hub-bench-{uuid.uuid4().hex[:8]}"
            env = _env(
                url, tmp / "var", HUB_BROKER_URL=args.broker, HUB_CELERY_QUEUE=queue, **ports, **args.env
            )
            try:
                return serve(url, env, "-c", str(args.celery_concurrency), "--pool", args.celery_pool)
            finally:
                from kombu import Connection

                with Connection(args.broker, connect_timeout=3) as conn:
                    conn.default_channel.queue_delete(queue)
    finally:
        for p in reversed(procs):
            p.stop()


def report(res: Result, ceiling: float, connections: int, window: int) -> bool:
    accepted = res.n / res.accepted_s
    processed = res.n / res.processed_s if res.processed_s else 0.0
    p50, p99 = res.pct(0.50), res.pct(0.99)
    ok_p99, ok_acc = p99 <= TARGET_P99_MS, accepted >= TARGET_ACCEPTED
    ok_proc = processed >= TARGET_PROCESSED or not res.processed_s

    def mark(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    how = "send-and-wait" if window == 1 else f"pipelined, window {window} per connection"
    print(f"-- {res.mode}: {res.n} ORU^R01 (10 OBX) over {connections} MLLP connections, {how}")
    print(
        f"   accepted   {accepted:8.0f} msgs/s  ({res.accepted_s:.1f} s)            target ≥ 2,000  {mark(ok_acc)}"
    )
    print(
        f"   ACK p50    {p50:8.2f} ms   p99 {p99:.2f} ms  max {res.pct(1.0):.1f} ms   target p99 ≤ 20 ms  {mark(ok_p99)}"
    )
    if res.processed_s:
        print(
            f"   processed  {processed:8.0f} msgs/s  (all done {res.processed_s:.1f} s after the first send)  target ≥ 1,000  {mark(ok_proc)}"
        )
    else:
        print(f"   processed  not measured ({'no worker' if res.mode == 'pg-intake' else '--accept-only'})")
    print(
        f"   ratio to the parse ceiling: accepted {accepted / ceiling:.2f}, processed {processed / ceiling:.2f}"
    )
    if res.accept_cpu_s:
        cpu = ", ".join(f"{name} {sec / res.n * 1000:.2f} ms" for name, sec in res.accept_cpu_s.items())
        print(f"   CPU per message until the last ACK (load-independent; processing included): {cpu}")
    if res.cpu_s:
        cpu = ", ".join(f"{name} {sec / res.n * 1000:.2f} ms" for name, sec in res.cpu_s.items())
        print(f"   CPU per message until all processed (load-independent): {cpu}")
    if res.not_aa:
        print(f"   {res.not_aa} ACKs were not AA")
    return ok_p99 and ok_acc and ok_proc and not res.not_aa


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench intake", description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=20000, help="messages (default 20000)")
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--modes", default="embedded,pg-celery")
    ap.add_argument(
        "--window", type=int, default=1, help="messages in flight per connection (1: send-and-wait)"
    )
    ap.add_argument("--patients", type=int, default=2000)
    ap.add_argument("--broker", default=RABBITMQ_URL)
    ap.add_argument("--celery-concurrency", type=int, default=2)
    ap.add_argument("--celery-pool", default="prefork", help="prefork, threads or solo")
    ap.add_argument("--accept-only", action="store_true", help="do not wait for processing")
    ap.add_argument("--set", action="append", default=[], metavar="HUB_X=V", help="extra hub setting")
    args = ap.parse_args(argv)
    args.env = dict(s.split("=", 1) for s in args.set)
    # A SIGTERM (e.g. from `timeout`) unwinds normally, so the hub processes started here are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    messages = [oru(i, args.patients) for i in range(args.n)]
    ceiling = parse_ceiling(messages)
    print(f"-- parse ceiling: {ceiling:,.0f} msgs/s (hub.hl7 header + parse + every OBX-5, one process)")
    all_ok = True
    with tempfile.TemporaryDirectory(prefix="hub-bench-") as d:
        for mode in args.modes.split(","):
            tmp = Path(d) / mode
            tmp.mkdir()
            res = run_mode(mode, messages, args, tmp)
            all_ok = report(res, ceiling, args.connections, args.window) and all_ok
    return 0 if all_ok else 1
