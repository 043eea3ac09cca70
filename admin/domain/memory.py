"""Keeping the admin's RSS near what it uses: glibc's allocator, asked twice.

An activation at 10,000 groups x 10 members makes and drops well over 100 MB of short-lived
objects (the draft parsed, the members' views, the groups rebuilt, the PUT body). CPython
gives what it frees back to the C allocator, but glibc's ``malloc`` keeps freed pages for later
use, so the RSS stays at its peak; and each thread that allocates (the web server runs the
API's handlers in a thread pool) gets its own heap, up to 8 per core, each keeping its own
freed pages. Two calls into glibc, through ctypes (without glibc: musl, macOS, both do
nothing):

- ``limit_arenas`` (``mallopt(M_ARENA_MAX, 2)``, what ``MALLOC_ARENA_MAX=2`` in the
  environment does), once at start, before the threads: threads share two heaps, so memory
  one of them freed is reused by the next activation whichever thread runs it. Threads then
  wait for each other's ``malloc`` now and then: the admin's threads are a few, mostly idle.
- ``release_freed`` (``malloc_trim(0)``: free pages anywhere in the heaps go back to the
  system, not only at their top), after each whole publish, never per pool delta: it walks
  every heap and costs milliseconds at this size. In ``bench/admin_memory.py`` at 10,000
  groups it returned 35-47 MB that nothing used any more.

The collector (``collect_less``, once at start): CPython collects its youngest generation
each time 700 more container objects exist than at the last collection. A 100-group flip
holds a few thousand at once (the members' views, the groups rebuilt, the batch planned), so
the admin collected 9 times per flip, walking those objects and promoting the survivors to be
walked again by the older generations' collections (up to 180 ms for a full one, in the middle
of a flip). At ``YOUNG`` (10,000) a flip's objects are freed by their reference counts before a
collection is due: 0.02 collections per flip, 2-5 ms less CPU per flip (``bench/admin_batch.py
--nodes 50``). Only cyclic garbage waits longer to be freed: the admin makes little.

The versions' content, parsed (``SharedJson``): the active version is held parsed for good,
20,000 JSON objects at 10,000 groups, and ``json.loads`` makes every key and every value anew
in each object it parses: the same "passive_health" key and the same four default
timeouts in each of 10,000 groups, "site" in each of 10,000 routes. A ``SharedJson`` parses
a batch of texts (one read of the draft, one version) and hands out one object for equal
parts: keys are interned, equal strings are one string, and equal objects whose values are
all numbers, booleans or null (a group's ``timeouts``, ``retry``...) are one dict. Each
object parsed was 7.4 KB a group and its route, now 4.4 KB: 30 MB at 10,000 groups, for
8 % more parse time. The parts are shared: the content is read-only already (the draft and
the active version share their objects), and one change of a shared part would now change
other objects too. Only within a batch: the memo is dropped with it, so nothing
accumulates over the admin's life.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import sys
from typing import Any

M_ARENA_MAX = -8  # glibc's malloc.h
ARENAS = 2
YOUNG = 10_000  # container objects between two collections of the youngest generation


def _glibc() -> Any | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
    except (OSError, TypeError):
        return None
    glibc = hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt")
    return libc if glibc else None


_LIBC = _glibc()


def limit_arenas(count: int = ARENAS) -> bool:
    """At most ``count`` malloc heaps for all threads; whether glibc took it."""
    return _LIBC is not None and bool(_LIBC.mallopt(M_ARENA_MAX, count))


def collect_less(young: int = YOUNG) -> None:
    """The youngest generation collected every ``young`` more objects (the module docstring);
    the older generations' thresholds as they were."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, old)


def release_freed() -> bool:
    """Give the C heaps' free pages back to the system; whether it could ask."""
    if _LIBC is None:
        return False
    _LIBC.malloc_trim(0)
    return True


_FLAT = (int, float, bool, type(None))  # the values of an object that can be shared whole


class SharedJson:
    """``loads`` several texts; equal parts of what it returns are one object. Read only."""

    def __init__(self) -> None:
        self._strings: dict[str, str] = {}
        # (key, type, value) of each entry -> the one dict; the type keeps 1 apart from 1.0
        # and true, float.hex -0.0 apart from 0.0 (equal in Python, not in JSON)
        self._objects: dict[tuple[tuple[str, type, Any], ...], dict[str, Any]] = {}

    def loads(self, text: str | bytes) -> Any:
        return self.share(json.loads(text))

    def share(self, value: Any) -> Any:
        kind = type(value)
        if kind is str:
            return self._strings.setdefault(value, value)
        if kind is list:
            return [self.share(item) for item in value]
        if kind is not dict:
            return value
        out: dict[str, Any] = {}
        key: list[tuple[str, type, Any]] | None = []
        for name, item in value.items():
            name = sys.intern(name)
            kind = type(item)
            if kind in _FLAT:
                if key is not None:
                    key.append((name, kind, item.hex() if kind is float else item))
            else:
                item, key = self.share(item), None
            out[name] = item
        return self._objects.setdefault(tuple(key), out) if key else out
