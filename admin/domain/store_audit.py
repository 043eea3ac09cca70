"""Reading the audit log, and audit rows that record no change (a refused request).

A mixin of ``admin.domain.store.Store`` (its transactions and reads), beside ``store_sessions``:
the rows a *change* writes stay in ``Store`` (``_audit``, ``_audit_rows``), in the change's own
transaction, because they also advance the store's generation.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Connection, func, select

from admin.domain import tables as t


class AuditLog:
    """``record`` and ``audit``; ``_transaction``, ``_read`` and ``_audit`` come from the Store
    this is mixed into."""

    _transaction: Callable[[], AbstractContextManager[Connection]]
    _read: Callable[[], AbstractContextManager[Connection]]
    _audit: Callable[..., None]

    def record(self, who: str, action: str, target: str, reason: str, before: Any = None,
               after: Any = None, result: str = "ok") -> None:
        """An audit row for something that is not a store change (a refused request)."""
        with self._transaction() as conn:
            self._audit(conn, who, action, target, reason, before, after, result, change=False)

    def audit(self, target: str | None = None, who: str | None = None,
              since: float | None = None, until: float | None = None,
              limit: int = 200) -> list[dict[str, Any]]:
        a = t.audit.c
        query = select(t.audit)
        if target:
            # a literal, case-sensitive prefix (LIKE would fold case and treat _ as a wildcard)
            query = query.where(func.substr(a.target, 1, len(target)) == target)
        if who:
            query = query.where(a.who == who)
        if since is not None:
            query = query.where(a.at >= since)
        if until is not None:
            query = query.where(a.at <= until)
        with self._read() as conn:
            return [{"id": r.id, "at": r.at, "who": r.who, "action": r.action,
                     "target": r.target, "reason": r.reason,
                     "before": json.loads(r.before) if r.before else None,
                     "after": json.loads(r.after) if r.after else None,
                     "result": r.result}
                    for r in conn.execute(query.order_by(a.id.desc()).limit(limit))]
