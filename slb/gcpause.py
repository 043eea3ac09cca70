"""Garbage-collector pauses around bulk work.

Parsing and compiling a snapshot of 100,000 members allocates hundreds of thousands of objects,
and every few hundred allocations CPython's collector traverses the young ones, promoting and
re-traversing the survivors: half of the time of a large apply. None of that work creates
reference cycles, so the collector is paused for its duration. After an apply, ``freeze`` moves
what exists into the permanent generation, so the request path's collections no longer walk
the whole configuration.

``desynchronise`` gives each process its own middle-generation threshold. The collector's
pace is counted in allocations, and every node of a cluster (and every worker of a node)
makes the same allocations for the same pool deltas: with one threshold they all walked
their middle generation (2-4 ms each) during the same push, every ~10 deltas. On a box
that several of them share, that push took their sum: the 50-node flip's slowest flips were
those (``docs/scaling.md``). Drawn between 6 and 14 instead of 10, the collections spread
over different pushes; their number and cost stay what they were.
"""

from __future__ import annotations

import gc
import random
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


def desynchronise(rng: random.Random | None = None) -> tuple[int, int, int]:
    """This process's middle-generation threshold drawn within 40% of CPython's (see the
    module docstring); returns the thresholds now in force."""
    young, middle, old = gc.get_threshold()
    spread = max(1, middle * 2 // 5)
    middle = (rng or random).randint(middle - spread, middle + spread)
    gc.set_threshold(young, middle, old)
    return young, middle, old
