"""The double's clock for session TTLs and lock-delay: the event loop's, or one a test moves.

Session expiry and lock-delay are about time passing (a 10 s minimum TTL, a 15 s default
lock-delay). A test that waited for them would be slow and, on a busy machine, flaky; so the
session store never reads the time or arms a timer itself, it asks a :class:`Clock`:

* :class:`LoopClock` (the default) is the running event loop's monotonic clock and
  ``call_at``: what a test that talks to the double as a process, or a real agent, sees.
* :class:`ManualClock` stands still until the test calls :meth:`ManualClock.advance`, which runs
  the timers that fall due, in time order, each with ``now()`` set to its own deadline. A test
  can so say "21 s later the session has expired" and check it at once.

Blocking-query waits (``?wait=``) stay on the event loop's clock in both cases: they are about
the client's patience, not about Consul's state.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale (only differences matter)."""
        ...

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback`` once ``now()`` reaches ``when``; the result can cancel it."""
        ...


class LoopClock:
    """The running event loop's clock (``loop.time()`` and ``loop.call_at``)."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_at(when, callback)


class _ManualTimer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock that moves only when told to: ``advance(seconds)`` runs what falls due."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        # (deadline, sequence, timer): the sequence keeps timers with one deadline in order.
        self._heap: list[tuple[float, int, _ManualTimer]] = []
        self._sequence = itertools.count()

    def now(self) -> float:
        return self._now

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        timer = _ManualTimer(when, callback)
        heapq.heappush(self._heap, (when, next(self._sequence), timer))
        return timer

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, running each timer due on the way at its own
        deadline (a callback may arm new timers; those run too if they fall due)."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        target = self._now + seconds
        while self._heap and self._heap[0][0] <= target:
            when, _, timer = heapq.heappop(self._heap)
            if timer.cancelled:
                continue
            self._now = max(self._now, when)
            timer.callback()
        self._now = target

    @property
    def pending(self) -> int:
        """Timers armed and not cancelled (sessions with a TTL, for instance)."""
        return sum(1 for _, _, timer in self._heap if not timer.cancelled)
