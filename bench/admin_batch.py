"""`.venv/bin/python bench/admin_batch.py`: the admin's own cost of a health flip (issue 15).

An in-process ``AdminService`` on an SQLite file (``--store URL`` for PostgreSQL) holding
``--groups`` (1,000) groups x ``--members`` (10) static members, each group behind its own
route, activated; it leads, and its cluster's pusher is
``tests.support.pushers.RecordingPusher``, which keeps the snapshots (no node, no network:
``bench/ha_figures.py fanout`` measures the push). Then
``--rounds`` (20) batches of ``--operations`` (100) member operations, each pulling one member
out of (or back into) a different random group, as ``POST /api/v1/batch`` does.

Each round runs in the event loop as in the admin and times the ``AdminService.batch`` call
(validation, the store's transaction(s)), the publish it schedules alone
(``Publisher.publish_now``: members read, snapshot built, handed to the pusher), and the whole
from the call until that publish is done (including the ``COALESCE`` wait of 20 ms). The
figures (n, p50, p99 from 100 samples on, max in ms) are printed and written to
``bench/out/admin-batch-<time>.json``.

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
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import admin

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support, run from anywhere
from harness import P99_NOTE, quantiles  # bench/harness.py (this folder is on sys.path)

from admin.domain.service import AdminService
from admin.domain.store import Store
from tests.support.pushers import RecordingPusher

OUT_DIR = Path(__file__).resolve().parent / "out"



def seeded(target: str, groups: int, members: int) -> AdminService:
    service = AdminService(Store(target), pusher_factory=RecordingPusher)  # type: ignore[arg-type]
    service.create("cluster", {"name": "c1"}, "bench", "seed")
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


async def measure(service: AdminService, groups: int, operations: int, rounds: int
                  ) -> dict[str, Any]:
    """In the event loop, as in the admin: a batch's publish is scheduled (coalesced for
    ``publisher.COALESCE`` s), so a round ends when its publish is done."""
    publisher = service.publisher
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
    rng = random.Random(15)
    for _ in range(rounds):
        chosen = rng.sample(range(groups), operations)
        ops = [{"group": f"g{g:05d}", "address": address(g, 0),
                "op": "pull-in" if g in out else "pull-out"} for g in chosen]
        published.clear()
        started = time.perf_counter()
        service.batch(ops, "bench", "flip")
        batches.append(time.perf_counter() - started)
        await asyncio.wait_for(published.wait(), 600)
        totals.append(time.perf_counter() - started)
        out ^= set(chosen)
    return {"batch_ms": ms(batches), "publish_ms": ms(publishes),
            "batch_until_published_ms": ms(totals), "p99_note": P99_NOTE}


async def run(service: AdminService, args: argparse.Namespace) -> dict[str, Any]:
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
    parser.add_argument("--profile", metavar="FILE",
                        help="write a cProfile of the rounds to FILE (python -m pstats FILE)")
    args = parser.parse_args()
    if not 0 < args.operations <= args.groups:
        parser.error("--operations: between 1 and --groups")
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        service = seeded(args.store or f"{tmp}/admin.db", args.groups, args.members)
        seed_s = time.perf_counter() - started
        figures = {"code": str(Path(admin.__file__).parent), "groups": args.groups,
                   "members": args.members, "operations": args.operations,
                   "rounds": args.rounds, "seed_s": round(seed_s, 1),
                   **asyncio.run(run(service, args))}
        service.store.close()
    print(json.dumps(figures, indent=2))
    OUT_DIR.mkdir(exist_ok=True)
    path = OUT_DIR / f"admin-batch-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
