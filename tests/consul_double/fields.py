"""Reading Consul request bodies: the error type every endpoint raises, and typed field access.

Consul decodes JSON bodies into Go structs: keys match case-insensitively (and the double also
accepts snake_case, as py-consul's lowercase and some clients' snake_case keys must work), and
a value of the wrong type is a 400 "Request decode failed". These helpers give every endpoint
module (server.py, kv_api.py) the same rules and the same messages.
"""

from __future__ import annotations

from typing import Any

from .gotypes import duration_field


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}



def lower_keys(raw: Any, what: str = "body") -> dict[str, Any]:
    """Consul matches JSON keys case-insensitively and accepts snake_case: normalise both."""
    if not isinstance(raw, dict):
        raise HttpError(400, f"Request decode failed: {what} must be a JSON object")
    return {str(k).replace("_", "").lower(): v for k, v in raw.items()}


def field_str(fields: dict[str, Any], key: str, default: str = "") -> str:
    value = fields.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise HttpError(400, f"Request decode failed: {key} must be a string")
    return value


def field_int(fields: dict[str, Any], key: str, default: int = 0) -> int:
    value = fields.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise HttpError(400, f"Request decode failed: {key} must be an integer")
    return int(value)


def field_str_list(fields: dict[str, Any], key: str) -> list[str]:
    value = fields.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise HttpError(400, f"Request decode failed: {key} must be a list of strings")
    return list(value)


def field_str_map(fields: dict[str, Any], key: str) -> dict[str, str] | None:
    value = fields.get(key)
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise HttpError(400, f"Request decode failed: {key} must be a map of strings")
    return {str(k): v for k, v in value.items()}


def field_duration(fields: dict[str, Any], key: str) -> float:
    try:
        return duration_field(fields.get(key) or 0)
    except ValueError as exc:
        raise HttpError(400, f"Request decode failed: {exc}") from None


