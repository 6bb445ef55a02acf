"""README.md's five-minute tour works as written: every command of its ``sh`` blocks runs, in order and in
one shell, against a real ``hub serve`` (temporary SQLite database, loopback ports of its own), exits 0 and
prints what the tour says it shows. The only changes made to the commands are the port numbers and the
path of the ``hub`` and ``python`` programs of the running interpreter."""

from __future__ import annotations

import queue
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.processes import HUB, HubProcess, free_port, hub_env, hub_run

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TOUR_HEADING = "## A five-minute tour"

# What each tour command must print (every piece, in any order), found by a pattern of the command. Every
# command but a variable assignment needs exactly one entry, and every entry must match a command, so a
# command added to the tour without saying what it shows fails here, and so does a stale entry.
EXPECTED: list[tuple[str, list[str]]] = [
    (r"hub send fixtures/hl7/adt_a01.hl7 fixtures/hl7/oru_r01.hl7", ["MSA|AA|ADTA010001", "MSA|AA|ORU0001"]),
    (r"vxu_v04\.hl7 .*/hl7/v2 \| tr", ["MSH|^~\\&|HUB|", "\nMSA|AA|VXU0001"]),
    (r"hub import fixtures/batch/pkm_menteng_history\.hl7", ["3 messages: 3 accepted, 0 rejected"]),
    (
        r"/hl7/messages\?type=ORU\^R01",
        ['"control_id":"ORU0001"', '"message_type":"ORU^R01"', '"state":"processed"'],
    ),
    (
        r"/hl7/messages/2$",
        ['"control_id":"ORU0001"', '"raw":"MSH|', '"ack":"MSH|', '"resources":[', '"unmapped":['],
    ),
    (r"/hl7/messages/stats$", ['"by_state":', '"processed":6', '"facility":"PKM_MENTENG"']),
    (r"/metrics \| grep", ['hub_messages{state="processed"} 6.0']),
    (
        r"/fhir/Patient\?_tag=\$GOLD&identifier=\$NIK\"$",
        ['"resourceType":"Bundle"', '"total":1', '"code":"golden"', '"type":"seealso"', "3171234567890001"],
    ),
    (r"/fhir/Observation\?patient=\$GOLDEN&code=http://loinc.org\|718-7", ['"total":2', '"code":"718-7"']),
    (r"/fhir/Patient/\$GOLDEN/\\\$everything", ['"type":"searchset"', '"resourceType":"Immunization"']),
    (
        r"/stats/encounters\?period=202611",
        ['"applied":false', '"facility":"PKM_MENTENG","value":1', '"facility":"RSUD_SEHAT","value":1'],
    ),
    (r"hub mappings try fixtures/hl7/oru_r01\.hl7$", ['"resourceType": "Bundle"', "718-7", "unmapped ("]),
    (
        r"hub mappings try --sender rsud_contoh",
        ['"resourceType": "Bundle"', "https://fhir.kemkes.go.id/id/nik", "http://loinc.org", "unmapped (0)"],
    ),
]
ASSIGNMENT = re.compile(r"^([A-Z_][A-Z0-9_]*)=")
# A command that only reads may be tried again while the messages just sent are still being processed
# (as a person would run it again); one that sends or imports runs once.
WRITES = re.compile(r"--data-binary|hub send|hub import|-X ")
SETTLE_S = 20.0


@dataclass
class TourCommand:
    text: str
    pieces: list[str] = field(default_factory=list)
    variable: str | None = None


def tour_commands() -> list[str]:
    """The shell commands of the tour's ``sh`` blocks, continuation lines joined, comments dropped."""
    text = README.read_text(encoding="utf-8")
    start = text.index(TOUR_HEADING)
    end = text.find("\n## ", start + len(TOUR_HEADING))
    section = text[start : end if end > 0 else len(text)]
    commands: list[str] = []
    for block in re.findall(r"^```sh\n(.*?)^```", section, re.M | re.S):
        pending = ""
        for line in block.splitlines():
            pending += line
            if pending.endswith("\\"):
                pending = pending[:-1] + " "
                continue
            if pending.strip() and not pending.lstrip().startswith("#"):
                commands.append(pending.strip())
            pending = ""
    return commands


def _with_expectations(commands: list[str]) -> list[TourCommand]:
    used: set[str] = set()
    out: list[TourCommand] = []
    for cmd in commands:
        assigned = ASSIGNMENT.match(cmd)
        matches = [(p, pieces) for p, pieces in EXPECTED if re.search(p, cmd)]
        if assigned and not matches:
            out.append(TourCommand(cmd, variable=assigned.group(1)))
            continue
        assert len(matches) == 1, f"tour command without exactly one expectation in {__name__}: {cmd}"
        used.add(matches[0][0])
        out.append(TourCommand(cmd, pieces=matches[0][1]))
    stale = [p for p, _ in EXPECTED if p not in used]
    assert stale == [], f"expectations that match no tour command: {stale}"
    return out


def test_the_tour_is_found_and_every_command_has_an_expectation() -> None:
    commands = tour_commands()
    assert len(commands) >= 15
    assert commands[0].startswith(".venv/bin/hub send ")
    _with_expectations(commands)  # raises on a command without one, or on a stale one
    for cmd in commands:  # the tour names files that exist
        for name in re.findall(r"@?(fixtures/\S+\.hl7)", cmd):
            assert (ROOT / name).is_file(), name


class Shell:
    """One bash process the commands run in one after the other (variables carry over, as in a terminal);
    each command's output and exit status are read back through a marker line."""

    MARK = "@@tour-command-done@@"

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def run(self, command: str, timeout: float = 60) -> tuple[int, str]:
        assert self.proc.stdin is not None
        # stdin from /dev/null: a command must not read the rest of the script as its input.
        self.proc.stdin.write(f"{{ {command}\n}} </dev/null\nprintf '\\n{self.MARK} %s\\n' \"$?\"\n")
        self.proc.stdin.flush()
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no end of {command!r} within {timeout} s:\n{''.join(out)}") from None
            if line.startswith(self.MARK):
                text = "".join(out)
                return int(line.split()[1]), text[:-1] if text.endswith("\n") else text
            out.append(line)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.reader.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _localise(command: str, http_port: int) -> str:
    """The tour's command for this test's hub: its HTTP port, and the interpreter's own programs."""
    command = command.replace("127.0.0.1:8080", f"127.0.0.1:{http_port}")
    command = re.sub(r"(?<![\w/.])\.venv/bin/hub\b", shlex.quote(HUB), command)
    return re.sub(r"(?<![\w/.])\.venv/bin/python\b", shlex.quote(sys.executable), command)


@pytest.fixture(scope="module")
def tour_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """``hub db upgrade`` then ``hub serve`` on loopback ports of their own (registration open, as in
    ``make run``); yields the environment the tour's shell gets."""
    tmp = tmp_path_factory.mktemp("tour")
    http, mllp = free_port(), free_port()
    env = hub_env(
        f"sqlite:///{tmp / 'hub.db'}",
        tmp / "var",
        HUB_HTTP_PORT=str(http),
        HUB_MLLP_PORT=str(mllp),
        PYTHONPATH=str(ROOT),
    )
    hub_run(["db", "upgrade"], env)
    server = HubProcess(["serve"], env, tmp / "serve.log")
    try:
        server.wait_port(http)
        server.wait_port(mllp)
        yield env
    finally:
        server.stop()


def _run_tour(env: dict[str, str]) -> list[str]:
    """Every tour command in one shell, in order; the first that failed (empty: all of them worked)."""
    http_port = int(env["HUB_HTTP_PORT"])
    shell = Shell(env)
    try:
        for step in _with_expectations(tour_commands()):
            command = _localise(step.text, http_port)
            retry = not WRITES.search(step.text)
            deadline = time.monotonic() + (SETTLE_S if retry else 0)
            while True:
                code, output = shell.run(command)
                if step.variable is not None and code == 0:
                    code, value = shell.run(f'printf %s "${step.variable}"')
                    missing = [] if value else [f"${step.variable} is empty"]
                else:
                    missing = [p for p in step.pieces if p not in output]
                if "| tr '\\r' '\\n'" in step.text and "\r" in output:
                    missing.append("the ACK printed one segment a line (no CR)")
                if code == 0 and not missing:
                    break
                if time.monotonic() > deadline:
                    # The later commands build on this one: the first failure is the one to read.
                    return [f"exit {code}, missing {missing}:\n{step.text}\n{output[-3000:]}"]
                time.sleep(0.5)
    finally:
        shell.close()
    return []


@pytest.fixture(scope="module")
def toured(tour_hub: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The hub after the tour ran on it once (the tour needs a fresh hub: it names message 2)."""
    return tour_hub, _run_tour(tour_hub)


@pytest.mark.slow
def test_every_tour_command_succeeds_against_a_running_hub(toured: tuple[dict[str, str], list[str]]) -> None:
    _, failures = toured
    assert failures == [], "\n\n".join(failures)


# docs/api.md's Python examples, run against the hub the tour filled: what each must print.
API_PAGE = ROOT / "docs" / "api.md"
API_EXPECTED = [
    [
        "golden ",
        "sources: ['Patient/",
        "13.5 gram per deciliter from Patient/",
        "immunizations: 2",
        "everything: ",
    ],
    ["13.5"],
]


@pytest.mark.slow
def test_the_api_pages_python_examples_run(toured: tuple[dict[str, str], list[str]]) -> None:
    env, _ = toured
    blocks = re.findall(r"^```python\n(.*?)^```", API_PAGE.read_text(encoding="utf-8"), re.M | re.S)
    assert len(blocks) == len(API_EXPECTED), "an example of docs/api.md without its expected output here"
    token = hub_run(["token", "--role", "clinician"], env).stdout.strip()
    env = {**env, "FHIR_BASE": f"http://127.0.0.1:{env['HUB_HTTP_PORT']}/fhir", "TOKEN": token}
    for block, pieces in zip(blocks, API_EXPECTED, strict=True):
        proc = subprocess.run(
            [sys.executable, "-c", block],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, f"{block}\n{proc.stdout}\n{proc.stderr}"
        missing = [p for p in pieces if p not in proc.stdout]
        assert missing == [], f"{block}\nmissing {missing} in:\n{proc.stdout}"
