"""Several admins, one leader: election over a Consul session and KV lock, and fencing terms.

Any number of admins share one store and one Consul; each serves the API and the UI, but only
the leader watches Consul, runs the admin's own health checks and pushes to nodes. The election
is Consul's documented recipe:

1. create a session (``TTL``, ``LockDelay``, ``Behavior: release``) and renew it every TTL/3;
2. ``PUT /v1/kv/<key>?acquire=<session>`` with this admin's name: true makes it the leader;
3. a follower blocks on the key (``?index=``) and tries again when the key has no ``Session``
   (released by a leader that stopped, or by Consul when the leader's session expired);
   Consul refuses the acquire for ``LockDelay`` after an expiry, so a leader that was only
   slow has that long to notice before anyone else leads.

Stepping down: a leader whose renew answers 404 (session gone) or that has had no successful
renew for a whole TTL stops leading at once. Consul keeps a session alive at least TTL after
its last renew, so the old leader stops before the session can expire and the lock pass on.
A leader that is cut off but does not know it yet (a long pause) is stopped by fencing: each
new leader takes a new **term** from the store (``Store.take_leadership``, one more than any
before, with who and since, shown by ``GET /api/v1/leader``); every push carries the term, and
a node refuses a push with a term lower than one it has seen.

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
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from admin.domain.errors import StoreUnavailable
from admin.domain.store import Store

log = logging.getLogger("admin.ha")

RETRY = 1.0  # seconds between attempts when Consul cannot be reached
ACQUIRE_RETRY = 0.25  # seconds between acquires of a free key (lock-delay may refuse them)


class _Lost(Exception):
    """The session is gone or could not be renewed for a TTL: stop leading."""


class Election:
    """One admin's part in the election; ``on_lead(term)`` and ``on_follow()`` switch its
    leader-only work on and off."""

    def __init__(self, *, consul_url: str, token: str | None, key: str, ttl: float,
                 lock_delay: float, name: str, address: str, store: Store,
                 on_lead: Callable[[int], Awaitable[None]],
                 on_follow: Callable[[], Awaitable[None]]) -> None:
        self.key, self.ttl, self.lock_delay = key, ttl, lock_delay
        self.name, self.address, self.store = name, address, store
        self._on_lead, self._on_follow = on_lead, on_follow
        headers = {"X-Consul-Token": token} if token else {}
        # a blocking read waits up to ttl; the timeout is above it
        self._http = httpx.AsyncClient(base_url=consul_url, headers=headers,
                                       timeout=httpx.Timeout(ttl + 5.0))
        self.leading = False
        self.term: int | None = None
        self.session: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop; a leader releases the lock, so a follower takes over without waiting for the
        session's TTL."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._step_down()
        await self._destroy_session()
        await self._http.aclose()

    async def _destroy_session(self) -> None:
        """Best effort: destroying the session releases the lock at once (a session that
        cannot be reached expires by itself)."""
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
        self.session = await self._create_session()
        self._lost.clear()
        renewer = asyncio.get_running_loop().create_task(self._renew())
        try:
            index, held = 0, False
            while not self._lost.is_set():
                if not held and await self._acquire():
                    leader = self.store.take_leadership(self.name, self.address)
                    self.leading, self.term = True, int(leader["term"])
                    log.info("leading (term %d)", self.term)
                    await self._on_lead(self.term)
                    await self._lost.wait()
                    break
                # block while another admin holds the key; while it is free but refused
                # (lock-delay), look again every ACQUIRE_RETRY instead
                index, held = await self._watch(index if held else 0)
                if not held:
                    await asyncio.sleep(ACQUIRE_RETRY)
            raise _Lost("the session was lost: stepping down")
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            await self._step_down()  # stop pushing before the lock can pass on
            await self._destroy_session()

    async def _step_down(self) -> None:
        if self.leading:
            self.leading = False
            log.warning("no longer leading (term %s)", self.term)
            await self._on_follow()

    async def _create_session(self) -> str:
        response = await self._http.put("/v1/session/create", json={
            "Name": f"slb-admin {self.name}", "TTL": f"{self.ttl:g}s",
            "LockDelay": f"{self.lock_delay:g}s", "Behavior": "release"})
        response.raise_for_status()
        return str(response.json()["ID"])

    async def _acquire(self) -> bool:
        body = json.dumps({"admin": self.name, "address": self.address})
        response = await self._http.put(f"/v1/kv/{self.key}", content=body,
                                        params={"acquire": self.session})
        response.raise_for_status()
        return response.json() is True

    async def _watch(self, index: int) -> tuple[int, bool]:
        """Block until the key changes (or a TTL passes); (index, whether it is held)."""
        params: dict[str, Any] = {"wait": f"{self.ttl:g}s"}
        if index:
            params["index"] = index
        response = await self._http.get(f"/v1/kv/{self.key}", params=params)
        new_index = int(response.headers.get("X-Consul-Index", "0"))
        if new_index < index:
            new_index = 0  # the index went back (a snapshot restore): start over
        if response.status_code == 404:
            return new_index, False
        response.raise_for_status()
        entries = response.json()
        return new_index, bool(entries and entries[0].get("Session"))

    async def _renew(self) -> None:
        """Renew every TTL/3; set ``_lost`` on a 404 or after a TTL without a renew."""
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                response = await self._http.put(f"/v1/session/renew/{self.session}",
                                                 timeout=self.ttl / 3)
                if response.status_code == 404:
                    log.warning("session %s is gone", self.session)
                    self._lost.set()
                    return
                response.raise_for_status()
                last_ok = time.monotonic()
            except httpx.HTTPError as exc:
                log.warning("session renew failed: %s", exc or type(exc).__name__)
                if time.monotonic() - last_ok >= self.ttl:
                    self._lost.set()
                    return


def leader_view(store: Store, election: Election | None, name: str, leading: bool
                ) -> dict[str, Any]:
    """``GET /api/v1/leader``: who leads, since when, under which term (the store's record of
    the last admin that took the lead), and this admin's name and part."""
    return {"leader": store.leader(), "this_admin": name, "leading": leading,
            "election": "consul" if election is not None else "none"}

