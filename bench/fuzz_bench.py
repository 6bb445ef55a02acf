"""``make bench BENCH_ARGS="fuzz --seconds 60"`` (or ``python -m bench fuzz``): mutation fuzzing of
everything that reads bytes from a sender, bounded in time.

Targets, each given mutated messages of ``fixtures/hl7`` (byte flips, cuts, insertions of delimiters,
control characters, non-UTF-8 bytes, repeated segments, a second MSH):

- ``framing``: the MLLP :class:`~hub.ingest.mllp.FrameDecoder`, fed the frames in random chunks, with
  bytes outside frames and oversize frames;
- ``header``: :func:`hub.hl7.peek_header` and :func:`hub.hl7.check_message` (only ``HeaderError`` may
  come out);
- ``tokenizer``: decoding and tokenizing every field, repetition and component;
- ``mapping``: the whole mapping of the mutated message (only the hub's documented errors, ``HubError``
  and ``HeaderError``, may come out).

Anything else is a finding: printed with the seed that reproduces it (``--seed``), and the run exits 1.
The figures printed are the inputs tried per target.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from hub import hl7
from hub.errors import HubError
from hub.ingest.mllp import FrameDecoder, frame
from hub.mapping import SenderContext, map_message

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hl7"
_INSERTS = [b"|", b"^", b"~", b"\\", b"&", b"\r", b"\n", b"\x00", b"\x0b", b"\x1c", b"\xff", b"\xc3", b'""']


def _corpus() -> list[bytes]:
    out = []
    for path in sorted(FIXTURES.glob("*.hl7")):
        raw = path.read_bytes()
        try:
            out.extend(m for m in hl7.split_messages(raw) if m)
        except Exception:
            out.append(raw)
    return out


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.random()
        pos = rng.randint(0, max(0, len(buf) - 1))
        if op < 0.3 and buf:
            buf[pos] = rng.randint(0, 255)
        elif op < 0.5:
            del buf[pos : pos + rng.randint(1, 40)]
        elif op < 0.8:
            buf[pos:pos] = rng.choice(_INSERTS) * rng.randint(1, 5)
        elif op < 0.9:
            lines = bytes(buf).split(b"\r")
            if len(lines) > 1:
                i = rng.randrange(1, len(lines))
                lines.insert(i, lines[i] * 1)
                buf = bytearray(b"\r".join(lines))
        else:
            buf += b"\r" + bytes(data.split(b"\r", 1)[0])  # a second MSH
    return bytes(buf)


def _framing(rng: random.Random, msg: bytes) -> None:
    dec = FrameDecoder(max_frame=rng.choice([256, 4096, 1 << 20]))
    stream = (
        rng.choice([b"", b"noise", b"\r\n"])
        + frame(msg)
        + frame(mutate(rng, msg))
        + rng.choice([b"", b"\x0b"])
    )
    i = 0
    framed = 0
    while i < len(stream):
        n = rng.randint(1, 512)
        for item in dec.feed(stream[i : i + n]):
            framed += len(item) if isinstance(item, bytes) else len(item.head)
        i += n
        # Never more held than one frame's limit, never more handed out than was sent.
        assert dec.pending <= dec.max_frame and framed + dec.discarded <= i


def _header(rng: random.Random, msg: bytes) -> None:
    try:
        h = hl7.peek_header(msg)
        hl7.check_message(msg, h, max_segments=50_000, max_delimiters=2_000_000)
    except hl7.HeaderError:
        pass


def _tokenizer(rng: random.Random, msg: bytes) -> None:
    try:
        h = hl7.peek_header(msg)
    except hl7.HeaderError:
        return
    text = hl7.decode_checked(msg, h, rng.choice([None, "8859/1"])).text
    for seg in hl7.parse(text):
        for n in range(1, len(seg) + 1):
            for r, _ in enumerate(seg.repetitions(n)[:5]):
                for c in range(1, 6):
                    seg.get(n, c, 1, r)


def _mapping(rng: random.Random, msg: bytes) -> None:
    try:
        h = hl7.peek_header(msg)
        hl7.check_message(msg, h, max_segments=50_000, max_delimiters=2_000_000)
    except hl7.HeaderError:
        return
    message = hl7.parse(hl7.decode_checked(msg, h).text)
    with contextlib.suppress(HubError):
        map_message(message, SenderContext(facility=h.sending_facility or "FUZZ"))


TARGETS: dict[str, Callable[[random.Random, bytes], None]] = {
    "framing": _framing,
    "header": _header,
    "tokenizer": _tokenizer,
    "mapping": _mapping,
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench fuzz")
    parser.add_argument("--seconds", type=float, default=60.0, help="time for all targets together")
    parser.add_argument("--seed", type=int, default=None, help="reproduce a run")
    parser.add_argument("--target", choices=sorted(TARGETS), action="append")
    args, _ = parser.parse_known_args(argv)
    corpus = _corpus()
    targets = args.target or list(TARGETS)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    print(f"fuzz: {len(corpus)} corpus messages, seed {seed}, {args.seconds:.0f} s")
    findings = 0
    for name in targets:
        fn = TARGETS[name]
        rng = random.Random(f"{seed}:{name}")
        deadline = time.monotonic() + args.seconds / len(targets)
        tried = 0
        while time.monotonic() < deadline:
            msg = mutate(rng, rng.choice(corpus))
            tried += 1
            try:
                fn(rng, msg)
            except Exception:
                findings += 1
                if findings <= 5:
                    print(f"  FINDING in {name} (input {tried}, seed {seed}): {msg[:200]!r}")
                    traceback.print_exc(limit=4)
        print(f"  {name:10} {tried:8d} inputs")
    print(f"fuzz: {findings} finding(s)")
    return 1 if findings else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
