"""Writes held until the end of the event loop's round of callbacks, then made back to back.

Why (issue 11, ``bench/kernel_cost.py``). On loopback a ``write()`` runs the receiver's TCP
input in the writer's system call, and wakes the receiver if it sleeps in ``epoll_wait``: on
this VM that wake-up (an inter-processor interrupt to the other CPU) is the most expensive part
of the call. A peer much faster than the proxy (wrk, nginx) handles what it got and sleeps again
before the proxy's next write, so a proxy that writes each answer as soon as it is made, 20 us
apart, wakes its peer for nearly every write: wrk went to sleep 0.3-0.6 times per request
behind SLB and 0.08 behind the reference proxy, whose writes are 5 us apart, and SLB's kernel
time per request was 5-8 us higher for that reason alone (``perf``: ``sock_def_readable``, the
wake-up, 7.2 us per request against 2.9 us). Written together at the end of the round, the
writes of one ``epoll_wait``'s worth of events reach a peer that is still awake from the first
one: wrk then sleeps 0.05 times per request.

How. A writer (a client connection with response bytes in ``out``, a member connection with a
request held) is ``hold``-ed once per round; the first hold of a round schedules ``flush`` with
``call_soon``, which runs after every I/O callback of the round and before the loop polls again
(uvloop's ready queue). A held write never waits for another event: at most for the rest of the
round that produced it.

What a writer promises: anything else it does to its transport (another write, a close, EOF)
first writes what it holds (``ClientProtocol.upstream_flush``, ``UpstreamConnection``'s
``write_held``), so bytes keep their order and a close never loses them; a writer whose
transport was closed under it (the peer left, an abort) drops what it held.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class HeldWriter(Protocol):
    def write_held(self) -> None: ...


class WriteBatch:
    """The writers holding bytes this round (see the module docstring)."""

    __slots__ = ("_call_soon", "_flush", "held")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.held: list[HeldWriter] = []
        self._call_soon = loop.call_soon
        self._flush = self.flush  # (bound once: not a bound method per round)

    def hold(self, writer: HeldWriter) -> None:
        """``writer`` holds bytes: its ``write_held`` runs at the end of this round."""
        held = self.held
        if not held:
            self._call_soon(self._flush)
        held.append(writer)

    def flush(self) -> None:
        held = self.held
        self.held = []
        for writer in held:  # (a writer held twice writes once: the second call finds nothing)
            writer.write_held()
