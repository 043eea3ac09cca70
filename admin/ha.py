"""Several admins, one leader: election over a Consul session and KV lock, and fencing terms.

Any number of admins share one store and one Consul; each serves the API and the UI, but only
the leader watches Consul, runs the admin's own health checks and pushes to nodes. The election
is Consul's documented recipe, with the session bound to a health check the admin keeps alive:

1. register this admin with its local agent as service ``slb-admin`` (ID
   ``slb-admin-<name>``) carrying a TTL check (``check_ttl``, 3 s by default) registered
   ``passing``, and pass it (``PUT /v1/agent/check/pass/<id>``) every check_ttl/3;
2. create a session (``TTL``, ``LockDelay``, ``Behavior: release``) whose ``NodeChecks`` are
   ``serfHealth`` and whose ``ServiceChecks`` hold that check, and renew it every TTL/3;
3. ``PUT /v1/kv/<key>?acquire=<session>`` with this admin's name: true makes it the leader;
4. a follower blocks on the key (``?index=``) and tries again when the key has no ``Session``;
   Consul refuses the acquire for ``LockDelay`` after an invalidation.

Why a check: Consul refuses a session TTL below its agent's ``session_ttl_min`` (10 s by
default) and invalidates an unrenewed session only up to 2 x TTL after its last renew, so a
killed leader held the lock for up to 20 s. A session is also invalidated *at once* when one of
its checks goes critical, and a TTL check goes critical when it is not passed within its TTL,
which has no minimum. So a killed leader's lock is free within check_ttl (plus the agent's sync
to its servers) and the follower leads after LockDelay more: at most about 4.3 s measured with
the defaults, on an agent with its default settings. The session TTL stays as a second line: a
session nobody renews ends by itself whatever happens to its check. The check is a *service*
check rather than a node check on purpose: a critical node check marks every service of that
node critical, so a dead admin would take the backends registered on its machine out of every
health query; a service check touches only its own ``slb-admin`` entry
(``DeregisterCriticalServiceAfter`` reaps it a minute after its admin died; a clean shutdown
deregisters it at once).

Why a short lock-delay (1 s by default, where Consul's default is 15 s) is safe: lock-delay
exists so that a leader that did not yet notice its loss stops acting before anyone else can
lead. Here that is covered twice. The leader steps down at the latest when a check TTL passed
since it *sent* its last successful pass (or a session TTL since its last renew): Consul
restarted the check's timer when that pass *arrived*, later, so the leader stops first. And a
leader that stopped without knowing (a long pause) is stopped by fencing: each new leader takes
a new **term** from the store (``Store.take_leadership``, one more than any before, with who and
since, shown by ``GET /api/v1/leader``); every push carries the term, and a node refuses a push
with a term lower than one it has seen. So an old leader's late push cannot undo its
successor's, and lock-delay need only cover the step-down itself.

Stepping down: a leader whose pass or renew answers 404 (check or session gone), that has had
no successful pass for a check TTL or renew for a session TTL, or whose blocking read of the
key shows the lock is no longer its session's, stops leading at once.

Changes made on any admin reach the nodes through the leader: every change advances the
store's generation in its transaction, and the leader polls it (``poll``, 0.5 s by default) and
publishes everything when another admin changed something (``Store.foreign_changes``). A new
leader publishes everything when it takes over, so a change committed just before a leader
died is pushed by its successor. Why polling one row rather than PostgreSQL ``LISTEN/NOTIFY``:
it works the same on SQLite, it cannot miss a change while a connection is being re-made (a
notification sent then is lost, so a periodic re-read would be needed anyway), and one indexed
single-row read per admin twice a second costs the store nothing; the price is up to ``poll``
seconds of latency for a change made on a follower.

With ``election.enabled`` off (the default), the admin leads alone (one admin per store) and
still takes a term, so nodes that once followed an elected leader accept it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx

from admin.domain.errors import StoreUnavailable
from admin.domain.store import Store

log = logging.getLogger("admin.ha")
T = TypeVar("T")

RETRY = 1.0  # seconds between attempts when Consul cannot be reached
ACQUIRE_RETRY = 0.25  # seconds between acquires of a free key (lock-delay may refuse them)
SERVICE = "slb-admin"  # the Consul service each elected admin registers with its agent
REAP_AFTER = "1m"  # Consul's DeregisterCriticalServiceAfter (its minimum) for a dead admin


class _Lost(Exception):
    """The session or its check is gone, or could not be kept alive: stop leading."""


def service_id(name: str) -> str:
    """This admin's service ID: its name with what is not safe in a URL path replaced."""
    return f"{SERVICE}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}"


class Election:
    """One admin's part in the election; ``on_lead(term)`` and ``on_follow()`` switch its
    leader-only work on and off. ``check_ttl`` 0 leaves the check out (session TTL alone)."""

    def __init__(self, *, consul_url: str, token: str | None, key: str, ttl: float,
                 check_ttl: float, lock_delay: float, name: str, address: str, store: Store,
                 on_lead: Callable[[int], Awaitable[None]],
                 on_follow: Callable[[], Awaitable[None]]) -> None:
        self.key, self.ttl, self.check_ttl = key, ttl, check_ttl
        self.lock_delay = lock_delay
        self.name, self.address, self.store = name, address, store
        self.service_id = service_id(name)
        self.check_id = f"service:{self.service_id}"
        self._on_lead, self._on_follow = on_lead, on_follow
        headers = {"X-Consul-Token": token} if token else {}
        # a blocking read waits up to ttl; the timeout is above it
        self._http = httpx.AsyncClient(base_url=consul_url, headers=headers,
                                       timeout=httpx.Timeout(ttl + 5.0))
        self.leading = False
        self.term: int | None = None
        self.session: str | None = None
        self._registered = False
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop; a leader releases the lock, so a follower takes over without waiting for a
        TTL, and the admin's check leaves its agent."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._step_down()
        await self._destroy_session()
        if self._registered:
            self._registered = False
            with contextlib.suppress(httpx.HTTPError):
                await self._http.put(f"/v1/agent/service/deregister/{self.service_id}",
                                     timeout=2.0)
        await self._http.aclose()

    async def _destroy_session(self) -> None:
        """Best effort: destroying the session releases the lock at once (a session that
        cannot be reached is invalidated by its check or its TTL)."""
        session, self.session = self.session, None
        if session is not None:
            with contextlib.suppress(httpx.HTTPError):
                await self._http.put(f"/v1/session/destroy/{session}", timeout=2.0)

    async def _run(self) -> None:
        while True:
            try:
                await self._campaign()
            except (httpx.HTTPError, _Lost, ValueError, StoreUnavailable) as exc:
                # ValueError: an answer that is not Consul's JSON; StoreUnavailable: the term
                # could not be taken, so this admin must not lead
                log.warning("leader election: %s", exc or type(exc).__name__)
            await self._step_down()
            await asyncio.sleep(RETRY)

    async def _campaign(self) -> None:
        started = asyncio.get_running_loop().time()
        if self.check_ttl:
            await self._register_check()
        self.session = await self._create_session()
        self._lost.clear()
        keeper = asyncio.get_running_loop().create_task(self._keep_alive(started))
        try:
            index, held = 0, False
            while not self._lost.is_set():
                if not held and await self._acquire():
                    leader = self.store.take_leadership(self.name, self.address)
                    self.leading, self.term = True, int(leader["term"])
                    log.info("leading (term %d)", self.term)
                    await self._on_lead(self.term)
                    await self._hold()
                    break
                # block while another admin holds the key; while it is free but refused
                # (lock-delay), look again every ACQUIRE_RETRY instead
                seen = await self._unless_lost(self._watch(index if held else 0))
                if seen is None:
                    break
                index, holder = seen
                held = holder is not None
                if not held:
                    await asyncio.sleep(ACQUIRE_RETRY)
            raise _Lost("the session was lost: stepping down")
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await self._step_down()  # stop pushing before the lock can pass on
            await self._destroy_session()

    async def _hold(self) -> None:
        """While leading: block on the key, and return as soon as the lock is no longer this
        session's (invalidated by Consul) or the keep-alive reports a loss. A failed read is
        tried again: whether Consul is gone is the keep-alive's call, by its deadlines."""
        index = 0
        while True:
            try:
                seen = await self._unless_lost(self._watch(index))
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("reading the leader key: %s", exc or type(exc).__name__)
                if await self._unless_lost(asyncio.sleep(RETRY, result=True)) is None:
                    return
                continue
            if seen is None:
                return
            index, holder = seen
            if holder != self.session:
                log.warning("the lock is no longer held by this admin's session")
                return

    async def _unless_lost(self, work: Awaitable[T]) -> T | None:
        """``work``'s result, or None (``work`` cancelled) once the keep-alive reports a loss:
        a blocking read must not keep a lost admin waiting for a whole TTL."""
        task = asyncio.ensure_future(work)
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            done, _ = await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return task.result() if task in done else None

    async def _step_down(self) -> None:
        if self.leading:
            self.leading = False
            log.warning("no longer leading (term %s)", self.term)
            await self._on_follow()

    async def _register_check(self) -> None:
        """(Re-)register this admin's service and its TTL check, passing from the start (a
        check registered without a status is critical, and Consul refuses a session bound to
        a critical check)."""
        response = await self._http.put("/v1/agent/service/register", json={
            "ID": self.service_id, "Name": SERVICE, "Meta": {"admin": self.name[:512]},
            "Check": {"CheckID": self.check_id, "Name": "slb-admin leader election",
                      "TTL": f"{self.check_ttl:g}s", "Status": "passing",
                      "DeregisterCriticalServiceAfter": REAP_AFTER}})
        response.raise_for_status()
        self._registered = True

    async def _create_session(self) -> str:
        body: dict[str, Any] = {
            "Name": f"slb-admin {self.name}", "TTL": f"{self.ttl:g}s",
            "LockDelay": f"{self.lock_delay:g}s", "Behavior": "release"}
        if self.check_ttl:
            body["NodeChecks"] = ["serfHealth"]
            body["ServiceChecks"] = [{"ID": self.check_id}]
        response = await self._http.put("/v1/session/create", json=body)
        response.raise_for_status()
        return str(response.json()["ID"])

    async def _acquire(self) -> bool:
        body = json.dumps({"admin": self.name, "address": self.address})
        response = await self._http.put(f"/v1/kv/{self.key}", content=body,
                                        params={"acquire": self.session})
        response.raise_for_status()
        return response.json() is True

    async def _watch(self, index: int) -> tuple[int, str | None]:
        """Block until the key changes (or a TTL passes); (index, the holding session)."""
        params: dict[str, Any] = {"wait": f"{self.ttl:g}s"}
        if index:
            params["index"] = index
        response = await self._http.get(f"/v1/kv/{self.key}", params=params)
        new_index = int(response.headers.get("X-Consul-Index", "0"))
        if new_index < index:
            new_index = 0  # the index went back (a snapshot restore): start over
        if response.status_code == 404:
            return new_index, None
        response.raise_for_status()
        entries = response.json()
        holder = entries[0].get("Session") if entries else None
        return new_index, str(holder) if holder else None

    async def _keep_alive(self, since: float) -> None:
        """Pass the check every check_ttl/3 and renew the session every TTL/3; set ``_lost``
        on a 404 or once a deadline passes without an answer: a check TTL after the last pass
        was *sent*, or a session TTL after the last renew was sent."""
        loop = asyncio.get_running_loop()
        passed = renewed = since
        beat = min(self.check_ttl or math.inf, self.ttl) / 3
        while True:
            deadline = min(renewed + self.ttl,
                           passed + self.check_ttl if self.check_ttl else math.inf)
            await asyncio.sleep(max(0.0, min(beat, deadline - loop.time())))
            sent = loop.time()
            try:
                async with asyncio.timeout_at(deadline):
                    if self.check_ttl:
                        await self._put_or_lost(f"/v1/agent/check/pass/{self.check_id}",
                                                "check")
                        passed = sent
                    if sent - renewed >= self.ttl / 3:
                        await self._put_or_lost(f"/v1/session/renew/{self.session}",
                                                "session")
                        renewed = sent
            except _Lost as exc:
                log.warning("%s", exc)
                self._lost.set()
                return
            except (TimeoutError, httpx.HTTPError) as exc:
                if loop.time() >= deadline:
                    log.warning("Consul did not answer in time: %s", exc or type(exc).__name__)
                    self._lost.set()
                    return
                log.warning("keeping the session alive: %s", exc or type(exc).__name__)

    async def _put_or_lost(self, path: str, what: str) -> None:
        response = await self._http.put(path)
        if response.status_code == 404:
            raise _Lost(f"the {what} is gone ({path})")
        response.raise_for_status()


def leader_view(store: Store, election: Election | None, name: str, leading: bool
                ) -> dict[str, Any]:
    """``GET /api/v1/leader``: who leads, since when, under which term (the store's record of
    the last admin that took the lead), and this admin's name and part."""
    return {"leader": store.leader(), "this_admin": name, "leading": leading,
            "election": "consul" if election is not None else "none"}
