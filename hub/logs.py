"""Logging for ``hub serve`` and its worker process: text lines, or JSON lines with
``HUB_LOG_FORMAT=json`` (one object per line: ``time``, ``level``, ``logger``, ``message``, and
``exc_type`` for a logged exception; never its text or traceback values)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import orjson

from hub.config import LOG_FORMAT, Settings


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info and record.exc_info[0] is not None:
            line["exc_type"] = record.exc_info[0].__name__
        return orjson.dumps(line).decode()


def configure(settings: Settings) -> None:
    if settings.log_format.lower() == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=settings.log_level, handlers=[handler], force=True)
    else:
        logging.basicConfig(level=settings.log_level, format=LOG_FORMAT)


def json_logs(settings: Settings) -> bool:
    return settings.log_format.lower() == "json"
