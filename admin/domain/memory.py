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
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

M_ARENA_MAX = -8  # glibc's malloc.h
ARENAS = 2


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


def release_freed() -> bool:
    """Give the C heaps' free pages back to the system; whether it could ask."""
    if _LIBC is None:
        return False
    _LIBC.malloc_trim(0)
    return True
