"""`.venv/bin/python bench/admin_batch.py`: the admin's own cost of a health flip (issue 15).

An in-process ``AdminService`` on an SQLite file (``--store URL`` for PostgreSQL) holding
``--groups`` (1,000) groups x ``--members`` (10) static members, each group behind its own
route, activated; it leads, and its cluster's pusher is
``tests.support.pushers.RecordingPusher``, which keeps the snapshots (no node, no network:
``bench/ha_figures.py fanout`` measures the push with real nodes). Then
``--rounds`` (20) batches of ``--operations`` (100) member operations, each pulling one member
out of (or back into) a different random group, as ``POST /api/v1/batch`` does.

Each round runs in the event loop as in the admin and times the ``AdminService.batch`` call
(validation, the store's transaction(s)), the publish it schedules alone
(``Publisher.publish_now``: members read, snapshot built, handed to the pusher), and the whole
from the call until that publish is done (it goes out on the loop's next turn, or ``COALESCE``
after the one before when that was less than 20 ms ago), and the
CPU of the round (``time.process_time``). The figures (n, p50, p99 from 100 samples on, max
in ms) are printed and written to ``bench/out/admin-batch-<time>.json``.

``--nodes N`` pushes each flip for real, with the admin's own ``Pusher``, to N ``FakeNode``
servers in this process (each answers every request at once, as a node that applied it): the
admin's side of the fan-out (plan, body, N sends, N answers) in the round's CPU, and the time
from the publish until every node acknowledged it. The fake nodes run on the same thread, so
their small share (a search and an answer per request: a few percent of a flip's CPU) is in
that figure too: it is an upper bound of the admin's. ``--profile FILE`` writes a cProfile of the
rounds (``python -m pstats FILE``): where a flip's CPU goes, stage by stage.

The same script measures older code: put an older ``admin/`` tree first on ``PYTHONPATH``
(``git archive <commit> admin | tar -x -C DIR``; ``PYTHONPATH=DIR``); it uses only the
service's public operations.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import random
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import admin

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support, run from anywhere
from harness import P99_NOTE, quantiles  # bench/harness.py (this folder is on sys.path)

from admin.domain import memory
from admin.domain.service import AdminService
from admin.domain.store import Store
from admin.push.pusher import Pusher
from slb.model import Config
from tests.support.pushers import RecordingPusher

OUT_DIR = Path(__file__).resolve().parent / "out"



def seeded(target: str, groups: int, members: int, nodes: list[str] | None = None
           ) -> AdminService:
    """The service and its content; ``nodes`` (control URLs): the cluster's nodes, pushed to
    by the admin's own pusher (else a ``RecordingPusher``)."""
    service = AdminService(Store(target), **({} if nodes else {  # type: ignore[arg-type]
        "pusher_factory": RecordingPusher}))
    service.create("cluster", {"name": "c1"}, "bench", "seed")
    for i, url in enumerate(nodes or []):
        service.create("node", {"name": f"n{i:03d}", "cluster": "c1", "control_url": url},
                       "bench", "seed")
    service.create("virtual_server", {"name": "site", "cluster": "c1",
                                      "listen": "127.0.0.1:8080"}, "bench", "seed")
    for g in range(groups):
        service.create("group", {"name": f"g{g:05d}", "members": [
            {"address": address(g, m)} for m in range(members)]}, "bench", "seed")
        service.create("route", {"name": f"r{g:05d}", "virtual_server": "site",
                                 "path": f"/g{g:05d}/", "group": f"g{g:05d}"}, "bench", "seed")
    service.activate("bench", "seed")
    return service


def address(group: int, member: int) -> str:
    return f"10.{group // 256 % 256}.{group % 256}.{member + 1}:80"


def ms(values: list[float]) -> dict[str, Any]:
    """n, p50, p99 (null below 100 samples), max of ``values`` (seconds) in ms."""
    return quantiles(values, 1e3, ndigits=1)


class FakeNode(asyncio.Protocol):
    """A node's control API as far as a push needs it, in this process: every request is
    answered 200 with the version, hash and store of the snapshot the pusher wants (what a
    node that applied it answers). Only a request's length is read: its cost is the admin's
    side of a push, not a node's."""

    def __init__(self, desired: Callable[[], Config | None]) -> None:
        self.desired = desired
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            found = re.search(rb"(?i)\r\ncontent-length: *(\d+)", self.buffer[:end])
            size = end + 4 + (int(found.group(1)) if found else 0)
            if len(self.buffer) < size:
                return
            del self.buffer[:size]
            config = self.desired()
            body = json.dumps({"version": config.version if config else 0,
                               "hash": config.content_hash() if config else "",
                               "store": config.store if config else None}).encode()
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


async def fake_nodes(count: int, desired: Callable[[], Config | None]
                     ) -> tuple[list[str], list[asyncio.Server]]:
    """``count`` FakeNodes on 127.0.0.1: their control URLs and servers."""
    loop = asyncio.get_running_loop()
    servers = [await loop.create_server(lambda: FakeNode(desired), "127.0.0.1", 0)
               for _ in range(count)]
    return [f"http://127.0.0.1:{s.sockets[0].getsockname()[1]}" for s in servers], servers


async def measure(service: AdminService, groups: int, operations: int, rounds: int
                  ) -> dict[str, Any]:
    """In the event loop, as in the admin: a batch's publish is scheduled (at most one per
    ``publisher.COALESCE`` s), so a round ends when its publish is done, and with nodes when
    every node acknowledged it."""
    publisher = service.publisher
    pusher = publisher.pushers.get("c1")
    nodes = pusher if isinstance(pusher, Pusher) and pusher.targets() else None
    publish_now = publisher.publish_now
    publishes: list[float] = []
    published = asyncio.Event()

    def timed_publish(changed: Any) -> None:
        started = time.perf_counter()
        publish_now(changed)
        publishes.append(time.perf_counter() - started)
        published.set()

    publisher.publish_now = timed_publish  # type: ignore[method-assign]
    out = set()  # groups whose member 0 is pulled out
    batches: list[float] = []
    totals: list[float] = []
    pushes: list[float] = []
    cpu: list[float] = []
    rng = random.Random(15)
    if nodes is not None:  # every node on the first snapshot before the first round
        await nodes.wait_in_sync(publisher.store.push_version(), 600)
    for _ in range(rounds):
        cpu_start = time.process_time()
        chosen = rng.sample(range(groups), operations)
        ops = [{"group": f"g{g:05d}", "address": address(g, 0),
                "op": "pull-in" if g in out else "pull-out"} for g in chosen]
        published.clear()
        started = time.perf_counter()
        service.batch(ops, "bench", "flip")
        batches.append(time.perf_counter() - started)
        await asyncio.wait_for(published.wait(), 600)
        totals.append(time.perf_counter() - started)
        if nodes is not None:
            pushed = time.perf_counter()
            if not await nodes.wait_in_sync(publisher.store.push_version(), 600):
                raise SystemExit("the nodes did not acknowledge a flip in 600 s")
            pushes.append(time.perf_counter() - pushed)
        cpu.append(time.process_time() - cpu_start)
        out ^= set(chosen)
    figures = {"batch_ms": ms(batches), "publish_ms": ms(publishes),
               "batch_until_published_ms": ms(totals), "cpu_per_round_ms": ms(cpu)}
    if nodes is not None:
        figures["push_to_all_nodes_ms"] = ms(pushes)
    return {**figures, "p99_note": P99_NOTE}


async def run(store: str, args: argparse.Namespace) -> dict[str, Any]:
    service: AdminService | None = None

    def desired() -> Config | None:
        pusher = service.publisher.pushers.get("c1") if service is not None else None
        published = pusher._desired if isinstance(pusher, Pusher) else None  # (no accessor)
        return published.config if published is not None else None
    urls, servers = await fake_nodes(args.nodes, desired)
    started = time.perf_counter()
    service = seeded(store, args.groups, args.members, urls)
    seed_s = round(time.perf_counter() - started, 1)
    try:
        return {"seed_s": seed_s, **await rounds(service, args)}
    finally:
        service.store.close()
        for server in servers:
            server.close()


async def rounds(service: AdminService, args: argparse.Namespace) -> dict[str, Any]:
    await service.start()  # it leads
    profiler = cProfile.Profile() if args.profile else None
    try:
        if profiler is not None:
            profiler.enable()  # the rounds alone: not the seed, not the first publish
        return await measure(service, args.groups, args.operations, args.rounds)
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
        await service.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--operations", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--store", help="a database URL (default: an SQLite file)")
    parser.add_argument("--nodes", type=int, default=0,
                        help="push to this many in-process fake nodes (FakeNode)")
    parser.add_argument("--profile", metavar="FILE",
                        help="write a cProfile of the rounds to FILE (python -m pstats FILE)")
    args = parser.parse_args()
    if not 0 < args.operations <= args.groups:
        parser.error("--operations: between 1 and --groups")
    # the collector as the admin sets it at start (an older tree without it: as it was then)
    getattr(memory, "collect_less", lambda: None)()
    with tempfile.TemporaryDirectory() as tmp:
        figures = {"code": str(Path(admin.__file__).parent), "groups": args.groups,
                   "members": args.members, "operations": args.operations,
                   "rounds": args.rounds, "nodes": args.nodes,
                   **asyncio.run(run(args.store or f"{tmp}/admin.db", args))}
    print(json.dumps(figures, indent=2))
    OUT_DIR.mkdir(exist_ok=True)
    path = OUT_DIR / f"admin-batch-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
