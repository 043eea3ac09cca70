"""The node's own log: one structured line per event, ``key=value`` or JSON (``log.format``).

    ts=2026-12-01T01:20:03.412Z level=WARNING logger=slb.proxy.answers msg="proxy answered 503"
    status=503 flag=UH vs=shop group=api member=- id=9f2c01aa-1b ...

    {"ts": "2026-12-01T01:20:03.412Z", "level": "WARNING", "logger": "slb.proxy.answers",
     "msg": "proxy answered 503", "status": 503, "flag": "UH", ...}

Every line starts with the time (UTC, milliseconds), the level and the logger, then the message,
then the event's own fields: code that has fields passes them as ``extra={"fields": {...}}``, so
they stay machine-readable instead of being baked into the message. A traceback becomes one
``exc`` field (escaped in text, a string in JSON): one event is always one line, so a log
shipper never splits it.

The format and level come from the node's file (``log:``) and ``--log-level``; the supervisor's
worker processes inherit them through the environment (``SLB_LOG_FORMAT``, ``SLB_LOG_LEVEL``),
so every process of a node writes the same format. The admin reads the same ``log:`` key from its
own file and writes the same lines: a leaf module (it imports nothing of slb), shared by both
planes like ``slb.errors``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from typing import Any

ENV_FORMAT = "SLB_LOG_FORMAT"
ENV_LEVEL = "SLB_LOG_LEVEL"
FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error")
# a value written without quotes: one C match, not a generator step per character (a node's
# "applied 100 groups" line took 14 us to format, a fifth of a small delta's handling)
_BARE = re.compile(r"[A-Za-z0-9\-_.:/@+]+")

_second: tuple[int, str] = (-1, "")  # the last whole second stamped, and its text (one tuple:
# a thread reads both halves of the same second)


def _stamp(created: float) -> str:
    global _second
    whole, text = _second
    if whole != int(created):  # strftime once a second, not once a line
        whole = int(created)
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _second = (whole, text)
    return f"{text}.{int(created * 1000) % 1000:03d}Z"


def _value(value: Any) -> str:
    """A value as ``key=value`` writes it: bare when unambiguous, else a JSON string."""
    text = value if isinstance(value, str) else str(value)
    if _BARE.fullmatch(text):
        return text
    return json.dumps(text, ensure_ascii=False)  # quotes, escapes newlines and quotes


class StructuredFormatter(logging.Formatter):
    """One line per record, ``text`` (key=value) or ``json``; see the module docstring."""

    def __init__(self, fmt: str = "text") -> None:
        if fmt not in FORMATS:
            raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        super().__init__()
        self.json = fmt == "json"

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": _stamp(record.created), "level": record.levelname,
            "logger": record.name, "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            event.update(fields)
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            event["exc"] = record.exc_text
        if self.json:
            return json.dumps(event, ensure_ascii=False, default=str)
        return " ".join(f"{key}={_value(value)}" for key, value in event.items())


def setup_logging(fmt: str, level: str) -> None:
    """Send every log line of this process to stderr in ``fmt``, and pass both on to workers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(StructuredFormatter(fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    os.environ[ENV_FORMAT] = fmt
    os.environ[ENV_LEVEL] = level


def setup_from_environment() -> None:
    """A worker process: the format and level its supervisor chose."""
    fmt = os.environ.get(ENV_FORMAT, "text")
    level = os.environ.get(ENV_LEVEL, "info")
    setup_logging(fmt if fmt in FORMATS else "text", level if level in LEVELS else "info")
