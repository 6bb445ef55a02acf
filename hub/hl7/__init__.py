"""HL7 v2 ER7: the hot-path tokenizer, header peeking, escapes and (through hl7apy) reference data.

This is the only package that imports hl7apy, and only for reference data (message structures, segment
field names and datatypes); parsing on the hot path is our own tokenizer.
"""

from hub.hl7._batch import split_messages
from hub.hl7._escape import DEFAULT_ENCODING, Encoding, escape, unescape
from hub.hl7._header import (
    Decoded,
    Header,
    HeaderError,
    check_message,
    codec_for,
    decode,
    decode_checked,
    patient_key,
    peek_header,
    strip_bom,
)
from hub.hl7._message import EXPLICIT_NULL, Message, Segment, parse, parse_path, split_segments, value_at

__all__ = [
    "DEFAULT_ENCODING",
    "EXPLICIT_NULL",
    "Decoded",
    "Encoding",
    "Header",
    "HeaderError",
    "Message",
    "Segment",
    "check_message",
    "codec_for",
    "decode",
    "decode_checked",
    "escape",
    "parse",
    "parse_path",
    "patient_key",
    "peek_header",
    "split_messages",
    "split_segments",
    "strip_bom",
    "unescape",
    "value_at",
]
