"""MLLP framing (HL7 v2 transport, Appendix C): ``<VT> message <FS><CR>``. Framing only: no I/O here.

The decoder is fed whatever bytes one TCP read returned and yields complete frames; it copes with several
frames in one read, a frame split over many reads, and bytes outside frames (discarded and counted). A
frame that grows past ``max_frame`` is reported once as :class:`Oversize` and its remaining bytes are
skipped up to the end marker, so the connection can be answered and closed cleanly.
"""

from __future__ import annotations

from dataclasses import dataclass

START = b"\x0b"
END = b"\x1c\x0d"
END_BYTE = 0x1C


def frame(payload: bytes) -> bytes:
    return START + payload + END


@dataclass(frozen=True, slots=True)
class Oversize:
    """A frame exceeded the size limit; ``head`` holds its first bytes (enough to read MSH)."""

    head: bytes
    size: int


class FrameDecoder:
    def __init__(self, max_frame: int = 10 * 1024 * 1024) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._in_frame = False
        self._skipping = False  # inside an oversize frame, waiting for its end
        self._oversize_seen = 0
        self.discarded = 0  # bytes received outside any frame

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame held in memory."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes | Oversize]:
        out: list[bytes | Oversize] = []
        i = 0
        n = len(data)
        while i < n:
            if not self._in_frame:
                j = data.find(START, i)
                if j < 0:
                    self.discarded += n - i
                    break
                self.discarded += j - i
                self._in_frame = True
                self._skipping = False
                self._buf.clear()
                i = j + 1
                continue
            # Inside a frame: look for the FS byte. The CR after FS is required by the spec but some
            # senders omit it, so FS alone ends the frame and a following CR is skipped. A VT inside a
            # frame means the sender abandoned the frame and started again: the partial frame is dropped
            # (it was never acknowledged, so the sender still owns it).
            j = data.find(b"\x1c", i)
            k = data.find(START, i, j if j >= 0 else n)
            if k >= 0:
                self.discarded += len(self._buf) + (k - i)
                self._buf.clear()
                self._skipping = False
                i = k + 1
                continue
            chunk_end = j if j >= 0 else n
            if not self._skipping:
                room = self.max_frame - len(self._buf)
                take = chunk_end - i
                if take > room:
                    self._buf += data[i : i + room]
                    self._skipping = True
                    self._oversize_seen = len(self._buf) + (take - room)
                    out.append(Oversize(bytes(self._buf[:4096]), self._oversize_seen))
                    self._buf.clear()
                else:
                    self._buf += data[i:chunk_end]
            else:
                self._oversize_seen += chunk_end - i
            if j < 0:
                break
            # End of frame.
            if not self._skipping:
                out.append(bytes(self._buf))
            self._buf.clear()
            self._in_frame = False
            self._skipping = False
            i = j + 1
            if i < n and data[i] == 0x0D:
                i += 1
        return out
