"""The double's sessions, with Consul's semantics (``agent/session_endpoint.go``,
``agent/consul/session_endpoint.go``, ``agent/consul/state/session.go``, ``session_ttl.go``).

A session belongs to a node and may depend on health checks (``NodeChecks``, by default the
node's ``serfHealth``; ``ServiceChecks``). It is *invalidated* when it is destroyed, when its
TTL runs out without a renew, when one of its checks goes critical or is deregistered, or when
its node is deregistered. Invalidation removes the session and, in the same write, releases
(``Behavior: release``, the default) or deletes (``delete``) every key it holds, then arms
lock-delay on those keys (see kv.py).

* **Create** validates as Consul's server does, answering 500 with Consul's message: an unknown
  ``Behavior``; a ``TTL`` that is not a Go duration or not 0 and outside
  ``[session_ttl_min, 24h]`` (``session_ttl_min`` defaults to 10s, as the agent option of that
  name); a node that is not registered; a check that does not exist or is critical.
* **LockDelay** defaults to 15s; a JSON number below 1000 is read as seconds (Consul's
  ``lockDelayMinThreshold``), a larger one as nanoseconds, a string as a Go duration. It is
  capped at 60s when applied.
* **TTL expiry**: Consul's leader arms a timer of TTL x 2 (``SessionTTLMultiplier``) at create
  and at every renew, so a session lives at least TTL and at most 2 x TTL after its last renew.
  The double does exactly that by default (``ttl_multiplier=2``); ``ttl_multiplier=1`` makes a
  test face the earliest expiry Consul allows. Timers run on the double's :mod:`clock`.
* **Renew** restarts the timer and answers the session; an unknown or expired session is a 404.
  The TTL returned is the one asked for (Consul may return a longer one under load).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .clock import Clock, Timer
from .gotypes import format_duration, parse_duration
from .kv import DELETE, RELEASE, KVStore, RaftLog
from .state import CRITICAL, SERF_CHECK_ID, Catalog, Check, key_of

DEFAULT_LOCK_DELAY = 15.0
LOCK_DELAY_SECONDS_THRESHOLD = 1000  # a bare number below this is seconds, not nanoseconds
DEFAULT_TTL_MIN = 10.0
TTL_MAX = 86400.0
TTL_MULTIPLIER = 2.0


class SessionError(Exception):
    """A refused session request: ``status`` and Consul's ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Session:
    id: str
    node: str
    name: str = ""
    lock_delay: float = DEFAULT_LOCK_DELAY
    behavior: str = RELEASE
    ttl: str = ""
    node_checks: list[str] = field(default_factory=list)
    # (check ID, namespace) pairs.
    service_checks: list[tuple[str, str]] = field(default_factory=list)
    create_index: int = 0
    modify_index: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "Name": self.name,
            "Node": self.node,
            # time.Duration marshals as integer nanoseconds.
            "LockDelay": round(self.lock_delay * 1e9),
            "Behavior": self.behavior,
            "TTL": self.ttl,
            "NodeChecks": list(self.node_checks),
            "ServiceChecks": ([{"ID": cid, "Namespace": ns} for cid, ns in self.service_checks]
                              if self.service_checks else None),
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }

    def depends_on(self, node: str, check_id: str) -> bool:
        if key_of(node) != key_of(self.node):
            return False
        wanted = key_of(check_id)
        return (any(key_of(c) == wanted for c in self.node_checks)
                or any(key_of(c) == wanted for c, _ in self.service_checks))


def lock_delay_field(value: object) -> float:
    """``LockDelay`` from a request body, in seconds (see the module docstring)."""
    if isinstance(value, bool):
        raise ValueError(f"invalid LockDelay {value!r}")
    if isinstance(value, int | float):
        return float(value) if value < LOCK_DELAY_SECONDS_THRESHOLD else value / 1e9
    if isinstance(value, str):
        return parse_duration(value)
    raise ValueError(f"invalid LockDelay {value!r}")


class SessionStore:
    def __init__(self, catalog: Catalog, raft: RaftLog, kv: KVStore, clock: Clock, *,
                 ttl_min: float = DEFAULT_TTL_MIN, ttl_multiplier: float = TTL_MULTIPLIER
                 ) -> None:
        self._catalog = catalog
        self._raft = raft
        self._kv = kv
        self._clock = clock
        self.ttl_min = ttl_min
        self.ttl_multiplier = ttl_multiplier
        self.sessions: dict[str, Session] = {}
        self.table_index = 0
        self._timers: dict[str, Timer] = {}
        # Called with the session ID after each invalidation (tests, logs).
        self.on_invalidate: list[Callable[[str], None]] = []
        catalog.listeners.append(self._on_check_change)

    # ---------------------------------------------------------------- reads
    def get(self, session_id: str) -> Session | None:
        return self.sessions.get(session_id)

    def index(self) -> int:
        return max(self.table_index, 1)

    def listed(self, node: str | None = None) -> list[Session]:
        found = [s for s in self.sessions.values()
                 if node is None or key_of(s.node) == key_of(node)]
        return sorted(found, key=lambda s: s.id)

    # ---------------------------------------------------------------- writes
    def create(self, *, node: str, name: str = "", lock_delay: float = DEFAULT_LOCK_DELAY,
               behavior: str = "", ttl: str = "", node_checks: list[str] | None = None,
               service_checks: list[tuple[str, str]] | None = None) -> Session:
        behavior = behavior or RELEASE
        if behavior not in (RELEASE, DELETE):
            raise SessionError(500, f"Invalid Behavior setting '{behavior}'")
        ttl_seconds = self._parse_ttl(ttl)
        registered = self._catalog.node(node)
        if registered is None:
            raise SessionError(500, "Missing node registration")
        checks = list(node_checks if node_checks is not None else [SERF_CHECK_ID])
        for check_id in [*checks, *(cid for cid, _ in service_checks or [])]:
            self._usable_check(registered.name, check_id)
        idx = self._raft.next_index()
        session = Session(id=str(uuid.uuid4()), node=registered.name, name=name,
                          lock_delay=lock_delay, behavior=behavior, ttl=ttl,
                          node_checks=checks, service_checks=list(service_checks or []),
                          create_index=idx, modify_index=idx)
        self.sessions[session.id] = session
        self.table_index = idx
        if ttl_seconds:
            self._arm(session.id, ttl_seconds)
        self._raft.notify_write()
        return session

    def _parse_ttl(self, ttl: str) -> float:
        if not ttl:
            return 0.0
        try:
            seconds = parse_duration(ttl)
        except ValueError as exc:
            raise SessionError(500, f"Session TTL '{ttl}' invalid: {exc}") from None
        if seconds != 0 and not self.ttl_min <= seconds <= TTL_MAX:
            raise SessionError(500, f"Invalid Session TTL '{round(seconds * 1e9)}', must be "
                                    f"between [{format_duration(self.ttl_min)}="
                                    f"{format_duration(TTL_MAX)}]")
        return seconds

    def _usable_check(self, node: str, check_id: str) -> Check:
        chk = self._catalog.check(node, check_id)
        if chk is None:
            raise SessionError(500, f"Missing check '{check_id}' registration")
        if chk.status == CRITICAL:
            raise SessionError(500, f"Check '{check_id}' is in {chk.status} state")
        return chk

    def renew(self, session_id: str) -> Session | None:
        """Restart the session's TTL timer; None when there is no such session."""
        session = self.sessions.get(session_id)
        if session is None:
            return None
        ttl = parse_duration(session.ttl) if session.ttl else 0.0
        if ttl:
            self._arm(session_id, ttl)
        return session

    def destroy(self, session_id: str) -> bool:
        """Invalidate the session; False when there was none (Consul answers true anyway)."""
        session = self.sessions.pop(session_id, None)
        if session is None:
            return False
        timer = self._timers.pop(session_id, None)
        if timer is not None:
            timer.cancel()
        idx = self._raft.next_index()
        self.table_index = idx
        self._kv.invalidate(session_id, session.behavior, session.lock_delay, idx)
        self._raft.notify_write()
        for callback in self.on_invalidate:
            callback(session_id)
        return True

    def _arm(self, session_id: str, ttl: float) -> None:
        timer = self._timers.pop(session_id, None)
        if timer is not None:
            timer.cancel()
        deadline = self._clock.now() + ttl * self.ttl_multiplier
        self._timers[session_id] = self._clock.call_at(
            deadline, lambda: self._expire(session_id))

    def _expire(self, session_id: str) -> None:
        self._timers.pop(session_id, None)
        self.destroy(session_id)

    def _on_check_change(self, chk: Check | None, node: str, check_id: str) -> None:
        # A check a session depends on went critical or away: Consul invalidates the session.
        if chk is not None and chk.status != CRITICAL:
            return
        for session in [s for s in self.sessions.values() if s.depends_on(node, check_id)]:
            self.destroy(session.id)

    def cancel_timers(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def reset_index(self, index: int) -> None:
        self.table_index = min(self.table_index, index)
        for session in self.sessions.values():
            session.create_index = min(session.create_index, index)
            session.modify_index = min(session.modify_index, index)
