"""The double's fault plan: which requests get an error, a reset, a delay or no answer at all.

Each fault has a *scope*: every request (``client=None``), or only the requests of one named
client. A client gets a name by asking the double for its own port
(:meth:`ConsulDouble.client_port`): requests that arrive on that port belong to it. That is how
a test cuts one admin off from Consul while the others still reach it (all clients connect
from 127.0.0.1, so the source address cannot tell them apart). In real deployments each admin
talks to its own local agent, so "one client's port" plays the part of "one admin's agent".

* ``fail_with``: answer with an HTTP error, for ``count`` requests or until cleared, optionally
  only for paths under a prefix.
* ``hang``: read the request and never answer (a partition that drops packets); responses
  already being prepared, blocking queries included, are never sent either.
* ``disconnect``: close the connection instead of answering (a reset).
* ``latency``: delay every answer (global only).

A request is subject to the global faults and to those of its own client.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_BODIES = {500: "No cluster leader", 403: "ACL not found", 429: "Too Many Requests"}


@dataclass
class Fault:
    status: int
    body: str
    remaining: int | None
    path: str | None
    client: str | None = None


class FaultPlan:
    def __init__(self) -> None:
        self.faults: list[Fault] = []
        # Scopes that hang: None is every client.
        self.hanging: set[str | None] = set()
        # Scope -> requests left to reset (None: all of them).
        self.drops: dict[str | None, int | None] = {}
        self.latency = 0.0

    def fail_with(self, status: int, body: str | None, count: int | None, path: str | None,
                  client: str | None) -> None:
        if body is None:
            body = DEFAULT_BODIES.get(status, "")
        self.faults.append(Fault(status, body, count, path, client))

    def hang(self, enabled: bool, client: str | None) -> None:
        if enabled:
            self.hanging.add(client)
        elif client is None:
            self.hanging.clear()  # "stop hanging" without a client ends every hang
        else:
            self.hanging.discard(client)

    def disconnect(self, count: int | None, client: str | None) -> None:
        self.drops[client] = count

    def clear(self, client: str | None = None) -> None:
        """Errors, resets and latency: all of them (``client=None``), or only those scoped to
        ``client``. Hangs are ended by ``hang(False)`` alone."""
        if client is None:
            self.faults.clear()
            self.drops.clear()
            self.latency = 0.0
            return
        self.faults = [f for f in self.faults if f.client != client]
        self.drops.pop(client, None)

    # ---------------------------------------------------------------- per request
    def hangs(self, client: str | None) -> bool:
        return None in self.hanging or (client is not None and client in self.hanging)

    def take_drop(self, client: str | None) -> bool:
        for scope in (client, None) if client is not None else (None,):
            if scope not in self.drops:
                continue
            left = self.drops[scope]
            if left is None:
                return True
            if left > 0:
                self.drops[scope] = left - 1
                return True
        return False

    def take_fault(self, path: str, client: str | None) -> Fault | None:
        for fault in self.faults:
            if fault.client is not None and fault.client != client:
                continue
            if fault.path is None or path.startswith(fault.path):
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self.faults.remove(fault)
                return fault
        return None
