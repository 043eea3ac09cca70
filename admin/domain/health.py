"""Health changes: logged once at INFO, written to the audit log, and dated for the group page.

Consul answers a long poll with the whole member set whenever anything in the service changes,
and the admin's checker probes every few seconds: most answers repeat what is already known.
``HealthHistory`` keeps each member's last health and since when, so only a *change* (passing
→ critical, critical → passing, ...) is logged at INFO and audited (who: ``consul`` or
``checker``; what: before and after; why: the check's output); a repeat is logged at DEBUG.

A member seen for the first time is not a change (except a checked static member, served as
passing until its first verdict). Members persisted from an earlier run
(``Store.discovered``) seed the history without a date, so a change that happened while the
admin was down is still audited when the first answer arrives, while "since" stays unknown
rather than wrong.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from admin.domain.members import Discovered
from admin.domain.store import Store

log = logging.getLogger("admin.health")

WHO = {"consul": "consul", "check": "checker"}  # source name -> who, in the audit log
# what a member is taken to be before its source's first word: a static member is served as
# passing until the checker says otherwise, so its first "critical" is a change
BASELINE = {"check": "passing"}


class HealthHistory:
    """Each member's last health and since when (see the module docstring)."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        # group -> address -> (health, since); since is None when not seen changing. By
        # group first: an answer for one group touches only its own members (a flat map
        # was scanned whole on every answer: 100,000 keys at 10,000 groups)
        self._known: dict[str, dict[str, tuple[str, float | None]]] = {}

    def seed(self, group: str, members: Iterable[Discovered]) -> None:
        """Health known from an earlier run: a baseline, without a date."""
        known = self._known.setdefault(group, {})
        for member in members:
            known[member.address] = (member.health, None)

    def observe(self, source: str, group: str, members: list[Discovered]) -> None:
        """A source's answer for ``group``: the whole member set (or the checker's verdicts)."""
        now = self.clock()
        who = WHO.get(source, source)
        history = self._known.setdefault(group, {})
        present = set()
        for member in members:
            present.add(member.address)
            known = history.get(member.address)
            if known is None:
                history[member.address] = (member.health, now)
                baseline = BASELINE.get(source)
                if baseline is not None and baseline != member.health:
                    self._changed(who, group, member, baseline)
                else:
                    log.debug("member %s of %s first seen %s (%s)", member.address, group,
                              member.health, who)
            elif known[0] != member.health:
                history[member.address] = (member.health, now)
                self._changed(who, group, member, known[0])
            else:
                log.debug("member %s of %s still %s (%s)", member.address, group,
                          member.health, who)
        for address in [a for a in history if a not in present]:
            del history[address]  # gone from the source: its history goes with it
        if not history:
            del self._known[group]

    def knows(self, group: str) -> bool:
        """Whether some member of ``group`` has a health history (else ``since`` is None)."""
        return group in self._known

    def since(self, group: str, address: str) -> float | None:
        known = self._known.get(group, {}).get(address)
        return known[1] if known else None

    def _changed(self, who: str, group: str, member: Discovered, before: str) -> None:
        why = member.health_detail or f"reported {member.health}"
        log.info("health of %s in %s: %s -> %s (%s): %s", member.address, group, before,
                 member.health, who, why)
        self.store.record(who, "health change", f"member/{group}/{member.address}", why,
                          before={"health": before}, after={"health": member.health})
