"""The error log of the proxy's own answers: one line per 4xx/5xx the proxy writes itself.

A member's 502 is the member's business and shows in the access log; a 502 the *proxy* makes
(``UF`` connect failure, ``UPE`` a member that answered something not HTTP, ``UH`` no healthy
member, ``UT`` timeout, ``DPE`` a request that broke a rule, ``DT`` a request head or body too
slow, ``NR`` no route) is a failure an operator must be
able to explain without turning the access log on. Every answer written from a ``ProxyError``
goes through ``AnswerLog.answered``, which logs one structured line on ``slb.proxy.answers``:

    level=WARNING logger=slb.proxy.answers msg="proxy answered 503" status=503 flag=UH
    vs=shop group=api member=- id=9f2c01aa-1b client=203.0.113.7 request="GET /x" detail=...

5xx are WARNING (something behind the proxy is wrong), 4xx INFO (the client is wrong; nginx
logs client errors at info as well).

Rate limit, per reason: an attack that sends malformed requests by the thousand must not flood
the log. A reason is the pair (status, flag); each may write ``BURST`` lines per ``WINDOW``
seconds. What is held back is counted and reported as one line (``suppressed=N``) when the
window closes, either when the reason next occurs or when the sweeper calls ``roll`` (so the
last burst of an attack is reported too). The cost of a suppressed answer is a dict lookup and
an addition; nothing is formatted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from slb.errors import ProxyError
    from slb.proxy.exchange import Exchange

log = logging.getLogger("slb.proxy.answers")

WINDOW = 10.0  # seconds
BURST = 20  # lines per reason per window: enough to see a pattern, not enough to flood
MAX_TARGET = 200  # characters of the request target kept in a line


@dataclass(slots=True)
class _Budget:
    window_start: float
    written: int = 0
    suppressed: int = 0


class AnswerLog:
    """Logs the proxy's own answers, rate-limited per (status, flag); see the module docstring."""

    def __init__(self, clock: Callable[[], float], burst: int = BURST,
                 window: float = WINDOW) -> None:
        self._clock = clock
        self._burst = burst
        self._window = window
        self._budgets: dict[tuple[int, str], _Budget] = {}

    def answered(self, peer: bytes, ex: Exchange, error: ProxyError) -> None:
        reason = (error.status, error.flag)
        now = self._clock()
        budget = self._budgets.get(reason)
        if budget is None:
            budget = self._budgets[reason] = _Budget(now)
        elif now - budget.window_start >= self._window:
            self._close_window(reason, budget, now)
        if budget.written >= self._burst:
            budget.suppressed += 1
            return
        budget.written += 1
        level = logging.WARNING if error.status >= 500 else logging.INFO
        if not log.isEnabledFor(level):
            return
        target = ex.target
        url = ex.url.decode("latin-1")
        if len(url) > MAX_TARGET:
            url = url[:MAX_TARGET] + "..."
        method = ex.method.decode("latin-1") if ex.method else "-"
        log.log(level, "proxy answered %d", error.status, extra={"fields": {
            "status": error.status,
            "flag": error.flag,
            "vs": ex.vhost_name or "-",
            "group": target.pool.name if target is not None else "-",
            "member": ex.member_address or "-",
            "id": ex.request_id.decode("latin-1") if ex.request_id else "-",
            "client": peer.decode("latin-1"),
            "request": f"{method} {url}" if url else "-",
            "detail": error.detail or "-",
        }})

    def roll(self) -> None:
        """Close every window that has passed (the sweeper calls this now and then)."""
        now = self._clock()
        for reason, budget in list(self._budgets.items()):
            if now - budget.window_start >= self._window:
                self._close_window(reason, budget, now)
                del self._budgets[reason]  # a reason that stopped costs no memory

    def _close_window(self, reason: tuple[int, str], budget: _Budget, now: float) -> None:
        if budget.suppressed:
            status, flag = reason
            log.log(logging.WARNING if status >= 500 else logging.INFO,
                    "proxy answers not logged (rate limit)",
                    extra={"fields": {"status": status, "flag": flag,
                                      "suppressed": budget.suppressed,
                                      "window": self._window}})
        budget.window_start = now
        budget.written = budget.suppressed = 0
