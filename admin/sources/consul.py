"""Consul as a member source: one blocking watch per Consul-backed group.

Each watch long-polls ``/v1/health/service/<name>`` through py-consul's asyncio client and hands
the whole member set to the service after every answer. The rules of
``shared/reference/consul.md``, each of which a peer gets wrong somewhere:

- **Timeouts that fit the long poll.** Consul holds a query up to ``wait`` plus ``wait/16`` of
  jitter; the HTTP timeout is ``wait * 17/16 + 5`` s, so a poll can neither time out early (as
  py-consul's aio default of 300 s does against Consul's 5 min default wait) nor hang forever.
- **Index hygiene.** An index that goes backwards (snapshot restore, upgrade) resets the watch to
  0 so the next answer is taken whole; the index sent is never below 1 (0 busy-loops).
- **Rate limit that never holds back the last state.** A token bucket (``READS_PER_SECOND``,
  burst ``READ_BURST``) spaces the queries: a flapping service makes at most 10 reads a second
  per group instead of one per change, and a single change still goes through at once. Changes
  that arrive while a read waits for its token are coalesced into that read, and after a burst
  the loop always reads once more, so the final state is never more than one spacing (100 ms)
  late. (At 1 read a second, the first version, a flapping check reached the nodes at p99
  292 ms and a final state up to 1 s late; the goal is p99 under 200 ms.) A long poll that
  Consul holds costs it nothing, so only reads answered at once count.
- **Backoff that never gives up.** Errors back off exponentially with jitter up to 30 s and the
  watch keeps trying, however long Consul is away.
- **Watchdog.** A watch that has not had an answer for ``watchdog`` seconds is restarted with a
  fresh client.
- **Errors change nothing.** Consul unreachable, erroring or answering 403: the group keeps its
  last known members and is shown stale. Only an answer from Consul changes health (fabio lost
  routes on a failed call; we never do).
- **Token in the header** (``X-Consul-Token``), never in the URL.
- **An empty answer after members is not trusted.** Consul answers a read its ACLs filter with
  ``[]`` and status 200; the group keeps its last members and is shown stale until instances
  reappear.

Health policy: a member is ``passing``, ``warning`` or ``critical`` by its worst check; a
critical *node* check (``serfHealth``) makes it critical too; maintenance (a critical check with
ID ``_service_maintenance:<id>`` or ``_node_maintenance``) is reported apart so the UI can say
why. Weight follows ``Weights.Passing``, or ``Weights.Warning`` while warning (0 means drain).
The address falls back from ``Service.Address`` to ``Node.Address``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import consul
import consul.aio

from admin.domain.members import Discovered
from admin.sources import MemberSink

log = logging.getLogger("admin.consul")

STATUS_RANK = {"passing": 0, "warning": 1, "critical": 2}
MAINTENANCE_PREFIXES = ("_service_maintenance:", "_node_maintenance")
BACKOFF_START = 0.1
MAX_WEIGHT = 10000
BACKOFF_MAX = 30.0
READS_PER_SECOND = 10.0  # per group, while answers come back at once (a flapping service)
READ_BURST = 2


@dataclass(frozen=True, slots=True)
class WatchSpec:
    group: str
    service: str
    tag: str | None


def members_from_health(entries: list[dict[str, Any]]) -> list[Discovered]:
    """Consul's health entries as members, sorted by address (one per address)."""
    found: dict[str, Discovered] = {}
    for entry in entries:
        service, node = entry.get("Service") or {}, entry.get("Node") or {}
        host = service.get("Address") or node.get("Address") or ""
        port = service.get("Port") or 0
        if not host or not port:
            continue
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        health, details, maintenance, reason = "passing", [], False, ""
        for check in entry.get("Checks") or []:
            status = check.get("Status", "critical")
            check_id = check.get("CheckID", "")
            if check_id.startswith(MAINTENANCE_PREFIXES):
                maintenance, reason = True, check.get("Notes") or check.get("Name", "")
                continue
            if STATUS_RANK.get(status, 2) > STATUS_RANK[health]:
                health = status if status in STATUS_RANK else "critical"
            if status != "passing":
                details.append(f"{check.get('Name') or check_id}: {status}")
        weights = service.get("Weights") or {}
        weight = weights.get("Warning", 1) if health == "warning" else weights.get("Passing", 1)
        # the proxy's weight range is 0..10,000 (Consul's own Envoy path clamps to 1..128)
        member = Discovered(address, min(max(0, int(weight)), MAX_WEIGHT), health,
                            "; ".join(details),
                            maintenance, reason, "consul")
        old = found.get(address)
        if old is None or STATUS_RANK[member.health] > STATUS_RANK[old.health]:
            found[address] = member
    return [found[a] for a in sorted(found)]


class TokenBucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    async def take(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            await asyncio.sleep((1 - self.tokens) / self.rate)
            self.tokens = 1.0
            self.stamp = time.monotonic()
        self.tokens -= 1


class ConsulWatcher:
    """A ``MemberSource``: one blocking watch per Consul-backed group."""

    name = "consul"

    def __init__(self, address: str, token: str | None, sink: MemberSink, *,
                 scheme: str = "http", wait: float = 55.0, watchdog: float = 120.0,
                 rate: float = READS_PER_SECOND) -> None:
        host, _, port = address.rpartition(":")
        self.host, self.port = host or address, int(port or 8500)
        self.token = token
        self.scheme = scheme
        self.wait = wait
        self.watchdog = watchdog
        self.rate = rate
        self.sink = sink
        self.errors: dict[str, int] = {}
        self._watches: dict[str, tuple[WatchSpec, asyncio.Task[None]]] = {}

    def error_counts(self) -> dict[str, int]:
        return dict(self.errors)

    def sync(self, groups: list[dict[str, Any]]) -> None:
        """Watch exactly these Consul-backed groups."""
        wanted = {g["name"]: WatchSpec(g["name"], g["consul"]["service"], g["consul"].get("tag"))
                  for g in groups if g.get("consul")}
        for name in list(self._watches):
            spec, task = self._watches[name]
            if wanted.get(name) != spec:
                task.cancel()
                del self._watches[name]
        loop = asyncio.get_running_loop()
        for name, spec in wanted.items():
            if name not in self._watches:
                self._watches[name] = (spec, loop.create_task(self._watch(spec)))

    def _client(self) -> consul.aio.Consul:
        # total HTTP timeout above Consul's longest hold (wait + wait/16)
        return consul.aio.Consul(host=self.host, port=self.port, scheme=self.scheme,
                                 token=self.token,
                                 connections_timeout=self.wait * 17 / 16 + 5)

    async def _watch(self, spec: WatchSpec) -> None:
        bucket = TokenBucket(self.rate, burst=READ_BURST)
        backoff = BACKOFF_START
        index = 0
        client = self._client()
        last_answer = time.monotonic()
        had_members = self.sink.has_members(spec.group)
        try:
            while True:
                await bucket.take()
                if time.monotonic() - last_answer > self.watchdog:
                    log.warning("watch of %s silent for %.0f s: restarting it", spec.service,
                                time.monotonic() - last_answer)
                    await client.close()
                    client, index, last_answer = self._client(), 0, time.monotonic()
                try:
                    async with asyncio.timeout(self.wait * 17 / 16 + 10):
                        new_index, entries = await client.health.service(
                            spec.service, index=str(max(index, 1)) if index else None,
                            wait=f"{int(self.wait)}s", tag=spec.tag)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # every failure is the same to a watch: back off
                    self.errors[spec.group] = self.errors.get(spec.group, 0) + 1
                    message = _describe(exc)
                    self.sink.on_source_error(self.name, spec.group, message)
                    log.warning("watch of %s (group %s): %s; retrying in %.1f s", spec.service,
                                spec.group, message, backoff)
                    await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                    backoff = min(backoff * 2, BACKOFF_MAX)
                    # the next query must not block: an answer as soon as Consul is back
                    # clears the group's stale mark instead of waiting out a long poll
                    index = 0
                    continue
                backoff = BACKOFF_START
                last_answer = time.monotonic()
                try:
                    received = int(new_index)
                except (TypeError, ValueError):
                    received = 0
                if received < index:
                    log.info("Consul index for %s went back (%d < %d): starting over",
                             spec.service, received, index)
                    received = 0  # the next query fetches without blocking
                index = max(received, 0)
                members = members_from_health(entries or [])
                if not members and had_members:
                    # Consul answers an anonymous or under-privileged read with an empty list,
                    # not an error: an empty pool is far more often a token problem than a
                    # service scaled to zero. Keep the last members; say why.
                    self.sink.on_source_error(
                        self.name, spec.group, f"Consul lists no instance of {spec.service!r} "
                        "(ACL filtering or all deregistered): last known members kept")
                    continue
                had_members = bool(members)
                self.sink.on_members(self.name, spec.group, members)
        finally:
            with contextlib.suppress(Exception):
                await client.close()

    async def close(self) -> None:
        for _, task in self._watches.values():
            task.cancel()
        for _, task in self._watches.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._watches.clear()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, consul.ACLPermissionDenied):
        return "Consul refused the token (403)"
    if isinstance(exc, TimeoutError):
        return "Consul did not answer in time"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
