"""What the store hands out: object rows and member flags; and what the audit log never keeps
(secrets). Kept apart from ``admin.domain.store`` so the store stays one subject per module;
``store`` re-exports ``Row`` and ``Flag``.
"""

from __future__ import annotations

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
        return {k: ("(set)" if v is not None else None) if k in SECRET_KEYS
                else without_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_secrets(v) for v in value]
    return value
