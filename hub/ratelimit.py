"""Rate limits: a token bucket per key (an API client, a sending facility). Over the limit the API answers
429 with ``Retry-After`` (an OperationOutcome ``throttled``); HL7 intake answers an AR ACK whose ERR says
when to send again, and stores nothing (so nothing accepted is ever dropped)."""

from __future__ import annotations

import math
import threading
import time

from hub import hl7
from hub.errors import HubError
from hub.ingest.ack import AckError, ack_code, build_ack


class RateLimited(HubError):
    code = "throttled"
    http_status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after)}


class RateLimiter:
    """``rate`` tokens a second, at most ``burst`` saved; one token a request."""

    def __init__(self, rate: float, burst: int, what: str = "client") -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.what = what
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                wait = max(1, math.ceil((1.0 - tokens) / self.rate))
                raise RateLimited(f"this {self.what} sends more than {self.rate:g} requests a second", wait)
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > 100_000:
                self._buckets.clear()


def rate_limited_ack(raw: bytes, retry_after: int) -> str:
    """The AR (CR in enhanced mode) ACK of a message refused for its sender's rate: not stored."""
    try:
        header: hl7.Header | None = hl7.peek_header(raw)
    except hl7.HeaderError:
        header = None
    err = AckError(
        "207", f"rate limit exceeded: message not accepted, send it again in {retry_after} s", "MSH"
    )
    return build_ack(header, ack_code("AR", header), error=err)
