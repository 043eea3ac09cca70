"""Handing freed memory back to the system after a whole-configuration publish.

An activation at 10,000 groups x 10 members makes and drops well over 100 MB of short-lived
objects (the draft parsed, the members' views, the groups rebuilt, the PUT body). CPython gives
what it frees back to the C allocator, but glibc's ``malloc`` keeps freed pages in its heaps for
later use, so the admin's RSS stays at its peak: in ``bench/admin_memory.py`` at 10,000 groups,
``malloc_trim(0)`` after the activations returned 37-47 MB that nothing used any more.

``release_freed`` calls glibc's ``malloc_trim(0)`` (it returns free pages anywhere in the heaps,
not only at their top), once per whole publish, never per pool delta: it walks every heap and
costs milliseconds at this size. Without glibc (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


def _trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        function: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None  # not glibc: its allocator keeps no such pages, or cannot be asked
    return function


_MALLOC_TRIM = _trim()


def release_freed() -> bool:
    """Give the C heap's free pages back to the system; whether it could ask."""
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True
