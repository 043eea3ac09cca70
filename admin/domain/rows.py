"""What the store hands out: object rows and member flags; what the audit log never keeps
(secrets), and how an audit row is made. Kept apart from ``admin.domain.store`` so the store
stays one subject per module; ``store`` re-exports ``Row`` and ``Flag``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Row:
    kind: str
    name: str
    body: dict[str, Any]
    row_version: int
    updated_at: float
    updated_by: str | None

    def to_json(self) -> dict[str, Any]:
        return {**self.body, "row_version": self.row_version, "updated_at": self.updated_at,
                "updated_by": self.updated_by}


@dataclass(frozen=True, slots=True)
class Flag:
    value: bool
    who: str
    at: float
    why: str

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "who": self.who, "at": self.at, "why": self.why}


SECRET_KEYS = frozenset({"token"})  # a node's control token: written, never shown


def without_secrets(value: Any) -> Any:
    """``value`` with every secret field replaced by ``"(set)"``: what the audit log keeps
    (it is read by every role; a changed secret still shows as a change)."""
    if isinstance(value, dict):
        # (a plain value kept without a call: a flag's audit row has three, 100 rows a flip)
        return {k: ("(set)" if v is not None else None) if k in SECRET_KEYS
                else without_secrets(v) if isinstance(v, dict | list) else v
                for k, v in value.items()}
    if isinstance(value, list):
        return [without_secrets(v) for v in value]
    return value


def dumps(value: Any) -> str:
    """JSON as the store keeps it: sorted keys, no spaces."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def audit_row(who: str, action: str, target: str, reason: str, before: Any, after: Any,
              result: str) -> dict[str, Any]:
    """The values of one audit row (its before and after without secrets)."""
    return {"at": time.time(), "who": who, "action": action, "target": target,
            "reason": reason, "result": result,
            "before": None if before is None else dumps(without_secrets(before)),
            "after": None if after is None else dumps(without_secrets(after))}


def flag_before(row: Any) -> dict[str, Any] | None:
    """A flag row (member or server) as the ``before`` of the audit row that replaces it."""
    return None if row is None else {"value": bool(row.value), "who": row.who, "why": row.why}


def replaced(stored: dict[Any, Any], changes: list[tuple[Any, bool]], who: str, why: str
             ) -> tuple[list[dict[str, Any] | None], dict[Any, bool]]:
    """Flag changes (key, value) applied in order over the ``stored`` rows: what each one
    replaced (the stored flag, or an earlier change of the same key), and each key's final
    value."""
    current = {key: flag_before(row) for key, row in stored.items()}
    before: list[dict[str, Any] | None] = []
    final: dict[Any, bool] = {}
    for key, value in changes:
        before.append(current.get(key))
        current[key] = {"value": value, "who": who, "why": why}
        final[key] = value
    return before, final
