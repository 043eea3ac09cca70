"""Go-compatible parsing of the scalar values Consul reads from URLs and JSON bodies.

Consul is written in Go, so its query parameters follow ``strconv.ParseBool``,
``strconv.ParseUint`` and ``time.ParseDuration``; the double must accept and refuse exactly
the same spellings.
"""

from __future__ import annotations

import re

_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,  # micro sign
    "\u03bcs": 1e-6,  # greek mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_COMPONENT = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_MAX_UINT64 = 2**64 - 1


def parse_bool(value: str) -> bool:
    """``strconv.ParseBool``: raises ValueError on anything else (case matters)."""
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"invalid syntax: {value!r}")


def parse_uint(value: str) -> int:
    """``strconv.ParseUint(value, 10, 64)``: digits only, no sign, fits in 64 bits."""
    if not value or not value.isascii() or not value.isdigit():
        raise ValueError(f"invalid syntax: {value!r}")
    number = int(value)
    if number > _MAX_UINT64:
        raise ValueError(f"value out of range: {value!r}")
    return number


def parse_duration(value: str) -> float:
    """``time.ParseDuration`` in seconds: "300ms", "1.5h", "2h45m", "0"; "10" has no unit."""
    text = value
    sign = 1.0
    if text[:1] in "+-" and text:
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    if text == "0":
        return 0.0
    if not text:
        raise ValueError(f"invalid duration {value!r}")
    total = 0.0
    pos = 0
    while pos < len(text):
        match = _COMPONENT.match(text, pos)
        if match is None:
            raise ValueError(f"invalid duration {value!r}")
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return sign * total


def format_duration(seconds: float) -> str:
    """``time.Duration.String()`` for the values the double produces ("10s", "1m30s", "500ms")."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        millis = seconds * 1000
        return f"{millis:g}ms" if millis >= 1 else f"{seconds * 1e6:g}\u00b5s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.9f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    if minutes:
        return f"{int(minutes)}m{text}"
    return text


def duration_field(value: object) -> float:
    """A duration inside a JSON body: a Go duration string, or a number of nanoseconds."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        return float(value) / 1e9
    if isinstance(value, str):
        return parse_duration(value) if value else 0.0
    raise ValueError(f"invalid duration {value!r}")
