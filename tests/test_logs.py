"""HUB_LOG_FORMAT=json: one JSON object per line, an exception by its type only."""

from __future__ import annotations

import logging

import orjson

from hub.logs import JsonFormatter


def test_json_log_lines_carry_no_exception_text() -> None:
    try:
        raise RuntimeError("SELECT * FROM patient WHERE name = 'secret'")
    except RuntimeError:
        import sys

        record = logging.LogRecord(
            "hub.x", logging.ERROR, __file__, 1, "message %s failed", (7,), sys.exc_info()
        )
    line = JsonFormatter().format(record)
    body = orjson.loads(line)
    assert body["message"] == "message 7 failed" and body["level"] == "ERROR" and body["logger"] == "hub.x"
    assert body["exc_type"] == "RuntimeError" and "secret" not in line and "\n" not in line
