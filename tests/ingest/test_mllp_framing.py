from hypothesis import given
from hypothesis import strategies as st

from hub.ingest.mllp import FrameDecoder, Oversize, frame

payloads = st.lists(
    st.binary(max_size=200).map(lambda b: b.replace(b"\x0b", b"").replace(b"\x1c", b"")), max_size=8
)


@given(payloads, st.data())
def test_frames_survive_any_split(messages: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(frame(m) for m in messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    dec = FrameDecoder()
    got: list[bytes | Oversize] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        got += dec.feed(stream[prev:cut])
        prev = cut
    assert got == messages
    assert dec.pending == 0


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(noise: bytes) -> None:
    dec = FrameDecoder(max_frame=64)
    for item in dec.feed(noise) + dec.feed(frame(b"MSH|ok")):
        assert isinstance(item, bytes | Oversize)


def test_bytes_outside_frames_are_discarded() -> None:
    dec = FrameDecoder()
    assert dec.feed(b"junk" + frame(b"A") + b"\r\n" + frame(b"B")) == [b"A", b"B"]
    assert dec.discarded == 6


def test_oversize_frame_reported_once_then_stream_continues() -> None:
    dec = FrameDecoder(max_frame=10)
    out = dec.feed(b"\x0b" + b"x" * 25)
    assert len(out) == 1 and isinstance(out[0], Oversize)
    out = dec.feed(b"y" * 5 + b"\x1c\r" + frame(b"small"))
    assert out == [b"small"]


def test_fs_without_cr_ends_frame() -> None:
    assert FrameDecoder().feed(b"\x0bA\x1c\x0bB\x1c\r") == [b"A", b"B"]
