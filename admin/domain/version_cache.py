"""The store's parsed versions, bounded: the most recently used few, any other one re-read.

A version never changes once written, so its parsed content can be shared by every reader. The
active version is read by every publish and every group read, and at 10,000 groups x 10
members it is about 50 MB of Python objects: parsing it per read was slow, and keeping every
version ever read parsed grew without bound. So the cache keeps ``size`` versions, least
recently used dropped first; one dropped is parsed from the store again when it is asked for (a
diff or a rollback to an old version works as before, a little slower).

The store puts only the active version here (``Store.version``): any other one (a diff, a
rollback's source) is parsed for its caller and dropped with it, so the admin never holds two
parsed versions for long, and an old version read does not push the active one out.

Entries are shared with the callers: read, never change them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

# the active version only: a second 50 MB copy at 10,000 groups was what issue 15 cut
CACHED_VERSIONS = 1


class VersionCache:
    def __init__(self, size: int = CACHED_VERSIONS) -> None:
        self.size = size
        # readers run on the event loop and in the web server's threads
        self._lock = threading.Lock()
        self._entries: OrderedDict[int, dict[str, Any]] = OrderedDict()

    def get(self, number: int) -> dict[str, Any] | None:
        with self._lock:
            found = self._entries.get(number)
            if found is not None:
                self._entries.move_to_end(number)
            return found

    def put(self, record: dict[str, Any]) -> int:
        """Keep ``record`` (a version: ``version``, ``content``, ...); its number."""
        number = int(record["version"])
        with self._lock:
            self._entries[number] = record
            self._entries.move_to_end(number)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return number

    def numbers(self) -> list[int]:
        """The versions held, least recently used first."""
        with self._lock:
            return list(self._entries)
