"""The double's key/value store, with Consul's state-store semantics (``state/kvs.go``).

Entries are ``DirEntry`` records: ``Key``, ``Value`` (bytes; JSON shows base64, ``null`` for an
empty value), ``Flags``, ``Session``, ``LockIndex``, ``CreateIndex``, ``ModifyIndex``.

Writes take the next index of the double's one raft-like counter (shared with the catalog and
the sessions: Consul has one raft log), and only when they change something: a PUT of the same
value, flags and lock state is a no-op, as Consul's ``kvsSetTxn`` skips an ``Equal`` entry.

* **set** keeps the key's ``Session`` (a plain write to a locked key succeeds and the lock
  stays) but, as in Consul, takes the request's ``LockIndex``, which is 0.
* **cas** ``0`` writes only if the key is absent; ``N`` only if ``ModifyIndex == N``.
* **lock** (``?acquire``) succeeds when the key is free or already held by that session;
  taking a free key increments ``LockIndex``. The value in the request is written in both
  cases. Lock-delay, the session's existence and ACLs are checked by the caller.
* **unlock** (``?release``) succeeds only for the holder; it clears ``Session``, keeps
  ``LockIndex`` and writes the request's value.
* **delete** leaves a tombstone at the delete's index, so a prefix's index never goes back when
  a key under it goes away. ``delete_cas`` answers true for a key that does not exist (Consul's
  ``kvsDeleteCASTxn`` does so). Tombstones are never reaped here (Consul reaps them after
  ``tombstone_ttl``, 15 min).
* **invalidate** (a session destroyed or expired) releases or deletes the session's keys in
  one write and arms their lock-delay, capped at 60 s (``structs.MaxLockDelay``).

Query indexes (``X-Consul-Index``), as ``agent/consul/kvs_endpoint.go`` computes them: a key
that exists answers its ``ModifyIndex``; a missing key the whole table's index (so any KV
write wakes a blocking read on a missing key); a prefix listing the highest ``ModifyIndex``
or tombstone under the prefix, or the table's index when there is none or the prefix is "".
Every index is at least 1.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, replace
from typing import Any, Protocol

from .clock import Clock

MAX_LOCK_DELAY = 60.0  # structs.MaxLockDelay
RELEASE = "release"
DELETE = "delete"


class RaftLog(Protocol):
    """The double's shared index counter and its change notification (the catalog)."""

    def next_index(self) -> int: ...

    def notify_write(self) -> None: ...


@dataclass
class DirEntry:
    key: str
    value: bytes | None = None
    flags: int = 0
    session: str = ""
    lock_index: int = 0
    create_index: int = 0
    modify_index: int = 0

    def same(self, other: DirEntry) -> bool:
        """Consul's ``DirEntry.Equal``: everything but the create and modify indexes."""
        return (self.key, self.value or b"", self.flags, self.session, self.lock_index) == (
            other.key, other.value or b"", other.flags, other.session, other.lock_index)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "LockIndex": self.lock_index,
            "Key": self.key,
            "Flags": self.flags,
            # Go marshals a nil []byte as null: an empty PUT body reads back as null.
            "Value": base64.b64encode(self.value).decode("ascii") if self.value else None,
        }
        if self.session:  # `json:",omitempty"`: an unlocked entry has no Session field
            out["Session"] = self.session
        out["CreateIndex"] = self.create_index
        out["ModifyIndex"] = self.modify_index
        return out


class KVStore:
    def __init__(self, raft: RaftLog, clock: Clock) -> None:
        self._raft = raft
        self._clock = clock
        self.entries: dict[str, DirEntry] = {}
        self.tombstones: dict[str, int] = {}
        # The kvs + tombstones tables' index: the last KV write's.
        self.table_index = 0
        # key -> the clock time until which a new acquire is refused.
        self.lock_delays: dict[str, float] = {}

    # ---------------------------------------------------------------- reads
    def get(self, key: str) -> tuple[int, DirEntry | None]:
        entry = self.entries.get(key)
        if entry is not None:
            return entry.modify_index, entry
        return max(self.table_index, 1), None

    def _under(self, prefix: str) -> list[DirEntry]:
        # Consul's radix tree iterates in byte order.
        return [self.entries[k] for k in sorted(self.entries, key=str.encode)
                if k.startswith(prefix)]

    def _prefix_index(self, prefix: str, entries: list[DirEntry]) -> int:
        if not prefix:
            return max(self.table_index, 1)
        index = max((e.modify_index for e in entries), default=0)
        index = max([index, *(i for k, i in self.tombstones.items() if k.startswith(prefix))])
        return max(index or self.table_index, 1)

    def list(self, prefix: str) -> tuple[int, list[DirEntry]]:
        entries = self._under(prefix)
        return self._prefix_index(prefix, entries), entries

    def keys(self, prefix: str, separator: str = "") -> tuple[int, list[str]]:
        """Keys under ``prefix``; with a separator, each key is cut after the first separator
        that follows the prefix, and repeats are folded (a directory listing)."""
        entries = self._under(prefix)
        out: list[str] = []
        for entry in entries:
            key = entry.key
            if separator:
                cut = key.find(separator, len(prefix))
                if cut >= 0:
                    key = key[:cut + len(separator)]
            if not out or out[-1] != key:
                out.append(key)
        return self._prefix_index(prefix, entries), out

    def lock_delay_remaining(self, key: str) -> float:
        """Seconds until an acquire of ``key`` is allowed again (0 when it is now)."""
        until = self.lock_delays.get(key)
        if until is None:
            return 0.0
        remaining = until - self._clock.now()
        if remaining <= 0:
            del self.lock_delays[key]
            return 0.0
        return remaining

    # ---------------------------------------------------------------- writes
    def _store(self, new: DirEntry, idx: int | None = None) -> int | None:
        """Write ``new`` unless it equals the stored entry; returns the index taken, if any."""
        existing = self.entries.get(new.key)
        new.create_index = existing.create_index if existing else 0
        if existing is not None and existing.same(new):
            return None
        idx = idx or self._raft.next_index()
        new.create_index = new.create_index or idx
        new.modify_index = idx
        self.entries[new.key] = new
        self.table_index = idx
        return idx

    def _commit(self, idx: int | None) -> None:
        if idx is not None:
            self._raft.notify_write()

    def set(self, key: str, value: bytes | None, flags: int = 0) -> bool:
        existing = self.entries.get(key)
        self._commit(self._store(DirEntry(key, value, flags,
                                          session=existing.session if existing else "")))
        return True

    def cas(self, key: str, value: bytes | None, flags: int, index: int) -> bool:
        existing = self.entries.get(key)
        if (existing is None) != (index == 0):
            return False
        if existing is not None and existing.modify_index != index:
            return False
        return self.set(key, value, flags)

    def lock(self, key: str, value: bytes | None, flags: int, session: str) -> bool:
        existing = self.entries.get(key)
        lock_index = 1
        if existing is not None:
            if existing.session and existing.session != session:
                return False
            lock_index = existing.lock_index + (0 if existing.session == session else 1)
        self._commit(self._store(DirEntry(key, value, flags, session, lock_index)))
        return True

    def unlock(self, key: str, value: bytes | None, flags: int, session: str) -> bool:
        existing = self.entries.get(key)
        if existing is None or existing.session != session:
            return False
        self._commit(self._store(DirEntry(key, value, flags, "", existing.lock_index)))
        return True

    def _delete(self, key: str, idx: int | None = None) -> int | None:
        if key not in self.entries:
            return idx
        idx = idx or self._raft.next_index()
        del self.entries[key]
        self.tombstones[key] = idx
        self.table_index = idx
        return idx

    def delete(self, key: str) -> bool:
        self._commit(self._delete(key))
        return True

    def delete_cas(self, key: str, index: int) -> bool:
        existing = self.entries.get(key)
        if existing is None:
            return True
        if existing.modify_index != index:
            return False
        return self.delete(key)

    def delete_tree(self, prefix: str) -> bool:
        idx = None
        for entry in self._under(prefix):
            idx = self._delete(entry.key, idx)
        self._commit(idx)
        return True

    def invalidate(self, session: str, behavior: str, lock_delay: float, idx: int) -> None:
        """A session ended (destroyed, expired, its check failed) in write ``idx``: release or
        delete the keys it holds and arm their lock-delay. The caller notifies the write."""
        delay = min(lock_delay, MAX_LOCK_DELAY)
        now = self._clock.now()
        for entry in [e for e in self.entries.values() if e.session == session]:
            if behavior == DELETE:
                self._delete(entry.key, idx)
            else:
                self._store(replace(entry, session=""), idx)
            if delay > 0:
                self.lock_delays[entry.key] = now + delay

    def reset_index(self, index: int) -> None:
        """Snapshot restore: clamp every index to ``index`` (see Catalog.reset_index)."""
        self.table_index = min(self.table_index, index)
        for entry in self.entries.values():
            entry.create_index = min(entry.create_index, index)
            entry.modify_index = min(entry.modify_index, index)
        for key, value in self.tombstones.items():
            self.tombstones[key] = min(value, index)
