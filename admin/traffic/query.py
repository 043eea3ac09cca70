"""The answer of ``GET /api/v1/stats`` (and of the UI's charts, which read the same).

    GET /api/v1/stats?scope=group/web&since=1764550000.5

``scope`` is ``site`` (default), ``cluster/<name>``, ``virtual_server/<name>``,
``group/<name>`` or ``member/<group>/<address>``; ``since`` (seconds since the epoch) keeps
only the points after it, so a live chart asks for what it has not seen. A group's answer also
carries each member's series (``members``), so one bad instance stands out. A scope with no
traffic yet answers empty series, not an error: it may simply be quiet.
"""

from __future__ import annotations

import math
from typing import Any

from admin.traffic.window import TrafficWindow

SCOPE_KINDS = ("cluster", "virtual_server", "group", "member")


class StatsQueryError(ValueError):
    """A malformed query: the message says what is expected."""


def parse_scope(scope: str) -> str:
    if scope == "site":
        return scope
    kind, sep, rest = scope.partition("/")
    if not sep or kind not in SCOPE_KINDS or not rest:
        raise StatsQueryError(
            f"scope {scope!r}: expected site, cluster/<name>, virtual_server/<name>, "
            "group/<name> or member/<group>/<address>")
    if kind == "member" and "/" not in rest:
        raise StatsQueryError(f"scope {scope!r}: expected member/<group>/<address>")
    return scope


def parse_since(since: str | None) -> float | None:
    if since is None or since == "":
        return None
    try:
        value = float(since)
    except ValueError:
        raise StatsQueryError(f"since {since!r}: expected seconds since the epoch") from None
    if not math.isfinite(value):
        raise StatsQueryError(f"since {since!r}: expected a finite number")
    return value


def stats_answer(window: TrafficWindow, scope: str = "site", since: str | None = None
                 ) -> dict[str, Any]:
    """The series of ``scope``; StatsQueryError for a malformed query."""
    scope = parse_scope(scope)
    after = parse_since(since)
    answer: dict[str, Any] = {"scope": scope, "interval": window.interval,
                              "window": window.window, **window.read(scope, after)}
    if scope.startswith("group/"):
        prefix = f"member/{scope[len('group/'):]}/"
        answer["members"] = {s[len(prefix):]: window.read(s, after)["series"]
                             for s in window.scopes(prefix)}
    return answer
