"""Reading a request body within the hub's one size limit (``HUB_MLLP_MAX_FRAME_BYTES``, 10 MiB by
default, the same for an MLLP frame, an HL7-over-HTTP body and a FHIR write): a body that declares a
larger ``Content-Length`` is refused before any of it is read, and one that streams past the limit is
read no further than the limit."""

from __future__ import annotations

from starlette.requests import Request

HEAD_BYTES = 4096  # what is kept of a refused body: enough to read MSH for the ACK


class TooLarge(Exception):
    """The body exceeds ``limit``: ``size`` is its declared or its seen-so-far size, ``head`` its first
    bytes (at most :data:`HEAD_BYTES`)."""

    def __init__(self, head: bytes, size: int, limit: int) -> None:
        super().__init__(f"body of {size} bytes exceeds the {limit}-byte limit")
        self.head = head
        self.size = size
        self.limit = limit


async def read_limited(request: Request, limit: int) -> bytes:
    """The whole body, or :class:`TooLarge` once it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    size = int(declared) if declared.isascii() and declared.isdigit() else -1
    chunks: list[bytes] = []
    seen = 0
    async for chunk in request.stream():
        if not chunk:
            continue
        chunks.append(chunk)
        seen += len(chunk)
        if size > limit and seen >= HEAD_BYTES:
            break
        if seen > limit:
            break
    if seen > limit or size > limit:
        head = b"".join(chunks)[:HEAD_BYTES]
        raise TooLarge(head, max(size, seen), limit)
    return b"".join(chunks)
