"""Structured log lines: one line per event, with time, level, logger, message and fields."""

from __future__ import annotations

import json
import logging
import re
import sys

import pytest

from slb.logs import StructuredFormatter


def record(msg: str = "proxy answered %d", *args: object, fields: dict | None = None,
           exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("boom\nsecond line")
        except RuntimeError:
            exc_info = sys.exc_info()
    rec = logging.LogRecord("slb.proxy.answers", logging.WARNING, __file__, 1, msg,
                            args or (503,), exc_info)
    if fields is not None:
        rec.fields = fields
    return rec


def test_text_line_is_key_value_with_time_level_logger_and_fields() -> None:
    line = StructuredFormatter("text").format(
        record(fields={"status": 503, "flag": "UH", "request": "GET /a b"}))
    assert re.match(r"ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=WARNING "
                    r"logger=slb\.proxy\.answers msg=\"proxy answered 503\" ", line)
    assert line.endswith(' status=503 flag=UH request="GET /a b"')


def test_json_line_parses_and_keeps_field_types() -> None:
    event = json.loads(StructuredFormatter("json").format(record(fields={"status": 503})))
    assert event["level"] == "WARNING" and event["msg"] == "proxy answered 503"
    assert event["status"] == 503


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_traceback_stays_on_one_line(fmt: str) -> None:
    line = StructuredFormatter(fmt).format(record(exc=True))
    assert "\n" not in line
    assert "RuntimeError: boom" in line


def test_unknown_format_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="text, json"):
        StructuredFormatter("xml")
