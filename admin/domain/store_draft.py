"""Reading the whole draft, parsing only the objects that changed since the last read.

A mixin of ``admin.domain.store.Store`` (its reads), beside ``store_audit``. An activation
reads every draft object: at 10,000 groups x 10 members that is 20,000 JSON bodies, about
50 MB of Python objects, which become the new active version while the old version's 50 MB
are dropped; the admin's RSS kept the peak of both. Most objects did not change since the
last activation, so the last read's bodies are kept with the row version and update time
they were read at, and a row still at both is handed out as that same dict, unparsed: the
draft and the active version share every object they have in common.

The bodies parsed by one read share their equal parts (``admin.domain.memory.SharedJson``).

The dicts are shared with every reader (the active version's content among them): read,
never change them. A row deleted and created again restarts at row version 1 but has
another update time, so it is parsed again.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Connection, select

from admin.domain import tables as t
from admin.domain.memory import SharedJson

BY_NAME = 500  # up to this many changed objects, their bodies are read by name

Known = dict[tuple[str, str], tuple[int, float, dict[str, Any]]]


class DraftReader:
    """``draft``; ``_read`` comes from the Store this is mixed into."""

    _read: Callable[[], AbstractContextManager[Connection]]
    # (kind, name) -> (row version, updated at, body) of the last ``draft``
    _draft_bodies: Known = {}  # (replaced as a whole, never changed in place)

    def draft(self) -> dict[str, list[dict[str, Any]]]:
        """Every draft object by kind, as stored (no row metadata); shared: read only."""
        c = t.objects.c
        known = self._draft_bodies
        rows = []
        with self._read() as conn:
            for found in conn.execute(select(c.kind, c.name, c.row_version, c.updated_at)
                                      .order_by(c.kind, c.name)):
                key = (found.kind, found.name)
                had = known.get(key)
                same = had is not None and had[:2] == (found.row_version, found.updated_at)
                rows.append((key, found.row_version, found.updated_at, had if same else None))
            changed = {key[1] for key, _, _, had in rows if had is None}
            query = select(c.kind, c.name, c.body)
            if len(changed) <= BY_NAME:  # else every body: a query has a bounded parameter count
                query = query.where(c.name.in_(sorted(changed)))
            bodies = {(r.kind, r.name): r.body for r in conn.execute(query)} if changed else {}
        now: Known = {}
        out: dict[str, list[dict[str, Any]]] = {}
        parsed = SharedJson()
        for key, row_version, updated_at, had in rows:
            if had is None:
                if key not in bodies:
                    continue  # deleted between the two reads
                had = (row_version, updated_at, parsed.loads(bodies[key]))
            now[key] = had
            out.setdefault(key[0], []).append(had[2])
        self._draft_bodies = now
        return out
