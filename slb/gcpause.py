"""Garbage-collector pauses around bulk work.

Parsing and compiling a snapshot of 100,000 members allocates hundreds of thousands of objects,
and every few hundred allocations CPython's collector traverses the young ones, promoting and
re-traversing the survivors: half of the time of a large apply. None of that work creates
reference cycles, so the collector is paused for its duration. After an apply, ``freeze`` moves
what exists into the permanent generation, so the request path's collections no longer walk
the whole configuration.

A pool delta is small, but its new groups survive into the collector's middle generation, and
every ~10 deltas the collector walked them all: 2-4 ms of a node's loop in the middle of some
later push. Every node of a cluster gets the same deltas, so every node collected during the
same push: on a box shared by 50 nodes, that push took ~150 ms more CPU than the others, and
those pushes were the 50-node flip's p99 (``docs/scaling.md``). ``collect_young_soon`` walks
them right after the delta instead, on the loop's next turn (after the push was answered),
while they are one delta's worth: the same work, spread evenly, outside any push. Each counts
towards the next full collection, so from the first one on, the process's full collection
waits for ``OLD_THRESHOLD`` of them (100, not CPython's 10): it keeps its pace in deltas.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def freeze() -> None:
    gc.freeze()


# the loop a young collection is due on (a loop closed before it ran does not hold up another)
_young_collection_due: asyncio.AbstractEventLoop | None = None
OLD_THRESHOLD = 100  # middle-generation collections before a full one (CPython's default: 10)


def collect_young_soon(loop: asyncio.AbstractEventLoop) -> None:
    """Collect the two young generations on ``loop``'s next turn (once, however many ask
    before it runs): see the module docstring."""
    global _young_collection_due
    if _young_collection_due is not loop:
        _young_collection_due = loop
        loop.call_soon(_collect_young)


def _collect_young() -> None:
    global _young_collection_due
    _young_collection_due = None
    young, middle, old = gc.get_threshold()
    if old < OLD_THRESHOLD:
        # each of these collections counts towards the next full one as an automatic one
        # would, but there is one per delta instead of one per ~10: the full collection keeps
        # its pace in deltas only if it waits for 10 times as many
        gc.set_threshold(young, middle, OLD_THRESHOLD)
    gc.collect(1)
