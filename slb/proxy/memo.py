"""Bounded memo tables for answers keyed by what a client or a member sends.

Some lookups on the request path are pure functions of a value from the network: a field
name's kind as it was spelled (``fields.learn``), a Host value that passed the check
(``head.prepare_request_head``), the virtual host a Host value routes to
(``router.RouteTable.lookup``), the routes a path may take (``router.VirtualHost.match``) and
a member's status line (``head.status_line``). The same few values come again and again, so
each answer is kept in a dict the hot path reads inline, and only a miss calls ``remember``.

The keys are client-controlled, so every table is capped. Once full it stops growing and a new
value is worked out each time, exactly as without the table. There is no eviction: the values
that filled the table first are the common ones, and a flood of made-up values cannot push them
out or cost more than the lookup it would have cost anyway.
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")

MEMO_LIMIT = 4096  # entries per table


def remember(table: dict[K, V], key: K, value: V, limit: int = MEMO_LIMIT) -> None:
    """Keep ``key -> value`` in ``table`` unless it already holds ``limit`` entries."""
    if len(table) < limit:
        table[key] = value
