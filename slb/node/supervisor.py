"""N worker processes behind one node: the supervisor's side (``ProcessPlane``).

Each worker (``slb.node.worker``) runs one ``ProxyServer`` and opens the listeners itself with
SO_REUSEPORT, so the kernel spreads connections across them (per 4-tuple: a keep-alive client
stays on one worker). The supervisor talks to each worker over a socketpair (``slb.node.ipc``).

The supervisor process holds the applied config once, in ``ProcessPlane.config`` (the node
reads it from there): it restarts a dead worker with it and rolls back to it.

A full snapshot is pickled to each worker; a pool delta sends one group. A worker that dies is
restarted with the current configuration. A change reaches the workers concurrently and counts
as applied when every worker has acknowledged it; if one worker cannot apply a snapshot (a
listener that will not bind), the others are rolled back to the previous one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import sys
from typing import Any

from slb.errors import ConfigError
from slb.metrics import Stats
from slb.model import Config, Group
from slb.node.ipc import encode, read_message, send_message

log = logging.getLogger("slb.workers")

REPLY_TIMEOUT = 30.0  # a snapshot of 100,000 members takes seconds to compile on a busy box


class WorkerHandle:
    """One worker process and its channel."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: asyncio.subprocess.Process | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.version = -1
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader_task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        pid = self.process.pid if self.process is not None else 0
        return f"worker-{self.index}[{pid}]"

    async def spawn(self) -> None:
        parent, child = socket.socketpair()
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "slb.node.worker", str(child.fileno()),
                pass_fds=(child.fileno(),), stdin=asyncio.subprocess.DEVNULL)
        finally:
            child.close()
        self.reader, self.writer = await asyncio.open_unix_connection(sock=parent)
        self.version = -1
        self._reader_task = asyncio.get_running_loop().create_task(self._read_replies())

    async def _read_replies(self) -> None:
        assert self.reader is not None
        while True:
            received = await read_message(self.reader)
            if received is None:
                break
            request_id, message = received
            future = self._pending.pop(request_id, None)
            if future is not None and not future.done():
                future.set_result(message)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError(f"{self.name} went away"))
        self._pending.clear()

    async def call(self, message: dict[str, Any] | bytes, timeout: float = REPLY_TIMEOUT
                   ) -> dict[str, Any]:
        if self.writer is None or self.writer.is_closing():
            raise ConnectionError(f"{self.name} is not running")
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        payload = message if isinstance(message, bytes) else encode(message)
        await send_message(self.writer, request_id, payload)
        async with asyncio.timeout(timeout):
            return await future

    async def close_channel(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader_task


class ProcessPlane:
    def __init__(self, workers: int) -> None:
        self.workers = [WorkerHandle(i) for i in range(workers)]
        self.config: Config | None = None
        self.draining = False
        self._monitors: list[asyncio.Task[None]] = []
        # active health results (slb.node.health), checked here once for every worker; a
        # restarted worker is told them all
        self.health: dict[tuple[str, str], bool] = {}

    async def start(self, config: Config) -> None:
        self.config = config
        results = await asyncio.gather(*(self._start_worker(w, config) for w in self.workers),
                                       return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self._kill_all()
            lines: list[str] = []
            for error in errors:
                lines += error.lines if isinstance(error, ConfigError) else [str(error)]
            raise ConfigError(sorted(set(lines)))
        loop = asyncio.get_running_loop()
        self._monitors = [loop.create_task(self._monitor(w)) for w in self.workers]
        log.info("%d workers started: %s", len(self.workers),
                 ", ".join(w.name for w in self.workers))

    async def _start_worker(self, worker: WorkerHandle, config: Config) -> None:
        await worker.spawn()
        reply = await worker.call({"op": "apply", "config": config})
        if not reply.get("ok"):
            raise ConfigError(reply.get("errors") or [f"{worker.name} could not start"])
        worker.version = reply["version"]
        if self.health:
            await worker.call({"op": "health", "down": dict(self.health)})

    async def _monitor(self, worker: WorkerHandle) -> None:
        """Restart a worker that dies, with the current configuration."""
        while not self.draining:
            assert worker.process is not None
            code = await worker.process.wait()
            await worker.close_channel()
            if self.draining:
                return
            log.error("%s exited with status %s: restarting it", worker.name, code)
            try:
                assert self.config is not None
                await self._start_worker(worker, self.config)
            except (ConfigError, ConnectionError, OSError, TimeoutError) as exc:
                log.error("restart of worker-%d failed: %s", worker.index, exc)
                await asyncio.sleep(1.0)

    async def _call_all(self, message: dict[str, Any]) -> list[dict[str, Any] | BaseException]:
        payload = encode(message)
        return await asyncio.gather(*(w.call(payload) for w in self.workers),
                                    return_exceptions=True)

    async def apply(self, config: Config) -> None:
        previous = self.config
        replies = await self._call_all({"op": "apply", "config": config})
        failed = [r for r in replies if isinstance(r, BaseException) or not r.get("ok")]
        if failed:
            errors: list[str] = []
            for r in failed:
                errors += [str(r)] if isinstance(r, BaseException) else r.get("errors", [])
            if previous is not None:
                await self._call_all({"op": "apply", "config": previous})  # roll back
            raise ConfigError(sorted(set(errors)))
        self.config = config
        self._record(replies)

    async def apply_groups(self, config: Config, groups: list[Group]) -> None:
        # one message per worker for the whole delta: a worker swaps every group at once
        replies = await self._call_all({"op": "groups", "groups": groups,
                                        "version": config.version})
        self.config = config
        self._record(replies)

    def _record(self, replies: list[dict[str, Any] | BaseException]) -> None:
        for worker, reply in zip(self.workers, replies, strict=True):
            if isinstance(reply, BaseException):
                log.error("%s did not acknowledge: %s", worker.name, reply)
            elif reply.get("ok"):
                worker.version = reply["version"]

    async def set_health(self, changes: dict[tuple[str, str], bool]) -> None:
        self.health.update(changes)
        for reply, worker in zip(await self._call_all({"op": "health", "down": changes}),
                                 self.workers, strict=True):
            if isinstance(reply, BaseException):
                log.error("%s did not take the health results: %s", worker.name, reply)

    async def _gather(self, op: str = "stats") -> list[dict[str, Any]]:
        replies = await self._call_all({"op": op})
        return [r for r in replies if not isinstance(r, BaseException) and r.get("ok")]

    async def counters(self) -> tuple[Stats, dict[str, dict[str, dict[str, int]]]]:
        """One message per worker: its counters and its members with requests in flight."""
        total = Stats()
        active: dict[str, dict[str, dict[str, int]]] = {}
        for reply in await self._gather("counters"):
            total.merge(reply["stats"])
            for group, members in reply["active"].items():
                into = active.setdefault(group, {})
                for address, figures in members.items():
                    into.setdefault(address, {"active": 0})["active"] += figures["active"]
        return total, active

    async def scrape(self) -> tuple[Stats, dict[str, dict[str, dict[str, Any]]]]:
        """The workers' counters and members' status, merged, from one message each."""
        replies = await self._gather()
        total = Stats()
        for reply in replies:
            total.merge(reply["stats"])
        return total, _merged_members(replies)

    async def member_status(self) -> dict[str, dict[str, dict[str, Any]]]:
        return _merged_members(await self._gather())

    def applied_versions(self) -> dict[str, int]:
        return {w.name: w.version for w in self.workers}

    async def drain(self) -> None:
        self.draining = True
        for task in self._monitors:
            task.cancel()
        timeout = (self.config.http.drain_timeout if self.config is not None else 30.0) + 5.0
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.terminate()  # SIGTERM: the worker drains itself
        for worker in self.workers:
            if worker.process is None:
                continue
            try:
                async with asyncio.timeout(timeout):
                    await worker.process.wait()
            except TimeoutError:
                log.error("%s did not drain in time: killing it", worker.name)
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
                await worker.process.wait()
            await worker.close_channel()

    async def _kill_all(self) -> None:
        self.draining = True
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
                await worker.process.wait()
            await worker.close_channel()


def _merged_members(replies: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """The workers' member status as one: counts added up, a member ejected or checked down
    in any worker shown so, the longest ejection."""
    merged: dict[str, dict[str, dict[str, Any]]] = {}
    for reply in replies:
        for group, members in reply["members"].items():
            into = merged.setdefault(group, {})
            for address, figures in members.items():
                if address not in into:
                    into[address] = dict(figures)
                    continue
                total = into[address]
                for key in ("active", "requests", "failures", "ejections", "idle_connections"):
                    total[key] += figures[key]
                total["ejected"] = total["ejected"] or figures["ejected"]
                total["checked_down"] = total["checked_down"] or figures["checked_down"]
                total["ejected_for"] = max(total["ejected_for"], figures["ejected_for"])
    return merged
