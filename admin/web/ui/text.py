"""What the pages show, as text: times, diffs, audit rows, links, a group's source.

Pure functions of their arguments (the clock aside), shared by every page and registered as
jinja2 filters where templates need them.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from admin.domain.errors import Invalid

PREFIX = "/ui"
DASH = "\u2013"  # shown for a figure that is not known


def fmt_when(ts: float | None) -> str:
    if ts is None:
        return DASH
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def fmt_ago(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return "never"
    seconds = max(0.0, (now or time.time()) - ts)
    if seconds < 60:
        return f"{int(seconds)} s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} d ago"


def diff_lines(text: str) -> list[tuple[str, str]]:
    """A unified diff as (css class, line), without its ---/+++ header."""
    out = []
    for line in text.splitlines():
        if line.startswith(("---", "+++")):
            continue
        kind = "hunk" if line.startswith("@@") else "add" if line.startswith("+") \
            else "del" if line.startswith("-") else "ctx"
        out.append((kind, line))
    return out


def short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True,
                                                           separators=(",", ":"))
    return text if len(text) <= limit else text[:limit - 1] + "…"


def flatten(value: Any, path: str = "") -> dict[str, Any]:
    """Leaf values by path; list items with an address or name are keyed by it."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{path}.{key}" if path else str(key)))
        return out or {path: {}}
    if isinstance(value, list) and value and all(isinstance(i, dict) for i in value):
        out = {}
        for index, item in enumerate(value):
            key = item.get("address") or item.get("name") or index
            out.update(flatten(item, f"{path}[{key}]"))
        return out
    return {path: value}


def audit_change(entry: dict[str, Any], limit: int = 3) -> str:
    """What an audit row changed, in a few words: ``value: true → false``."""
    before, after = entry.get("before"), entry.get("after")
    if isinstance(before, dict) and isinstance(after, dict):
        old, new = flatten(before), flatten(after)
        keys = [k for k in sorted(set(old) | set(new))
                if old.get(k) != new.get(k) and k not in ("who", "why", "at")]
        parts = [f"{k}: {short(old[k], 30) if k in old else 'none'} → "
                 f"{short(new[k], 30) if k in new else 'none'}" for k in keys[:limit]]
        if len(keys) > limit:
            parts.append(f"and {len(keys) - limit} more")
        return "; ".join(parts) or "no change"
    if before is None and isinstance(after, dict) and "value" in after:
        return f"value: → {short(after['value'])}"
    if before is None and after is not None:
        return "created"
    if after is None and before is not None:
        return "removed"
    return ""


def target_link(target: str) -> str | None:
    kind, _, rest = target.partition("/")
    if kind == "member":
        return f"{PREFIX}/groups/{rest.partition('/')[0]}"
    if kind == "group":
        return f"{PREFIX}/groups/{rest}"
    if kind == "virtual_server":
        return f"{PREFIX}/virtual-servers/{rest}"
    if kind == "version" and rest.isdigit():
        return f"{PREFIX}/versions/diff?" + urlencode({"a": max(1, int(rest) - 1), "b": rest})
    return None


def parse_local_time(value: str) -> float | None:
    """``2024-05-01T12:30`` (a datetime-local input, the admin's local time) -> epoch."""
    value = value.strip()
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise Invalid("invalid time", [f"{value!r}: expected YYYY-MM-DDTHH:MM"]) from None


def source_text(group: dict[str, Any]) -> str:
    consul = group.get("consul")
    if consul:
        tag = f" (tag {consul['tag']})" if consul.get("tag") else ""
        return f"Consul service {consul['service']}{tag}"
    return "static list"
