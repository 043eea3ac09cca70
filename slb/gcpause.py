"""Garbage-collector pauses around bulk work.

Parsing and compiling a snapshot of 100,000 members allocates hundreds of thousands of objects,
and every few hundred allocations CPython's collector traverses the young ones, promoting and
re-traversing the survivors: half of the time of a large apply. None of that work creates
reference cycles, so the collector is paused for its duration. After an apply, ``freeze`` moves
what exists into the permanent generation, so the request path's collections no longer walk
the whole configuration.
"""

from __future__ import annotations

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
