"""`.venv/bin/python bench/admin_memory.py`: where the admin's memory goes at 10,000 groups.

The real admin (``admin.main.Admin``: store, service, sources, HTTP server, pushers) runs in
this process on a new SQLite file, seeded from its file's ``seed`` exactly as
``bench/ha_figures.py big`` seeds it (``--groups`` (10,000) groups x ``--members`` (10)
members on 3 nodes). The store's schema is made first by a child process, as
``slb-admin migrate`` before a deploy or any earlier run of the admin would have made it: an
admin that opens a store at its own revision never loads Alembic (8 MB with Mako and
Pygments, ``admin.domain.migrate``); ``--fresh-store`` leaves the migration to the admin, as
its very first start on an empty store does. The nodes' control URLs point at a closed port:
nothing is delivered (the ``big`` scenario measures delivery), but the pushers hold what they
would send: each cluster's desired snapshot. Its serialised PUT body is made here as the
first push would make it (its peak is in the figures) and let go as the pusher lets it go once
every node has applied it.

Phases, each with VmRSS: the imports; the admin started (seeded, activated, first publish);
``--rounds`` (5) activations as the bench makes them (a weight edit, then activate);
``--reads`` (200) one-group reads (``GET /api/v1/groups/{name}``'s service call, timed);
each of those two also as this thread's CPU time (``*_cpu_ms``: steadier than wall time on a
box shared with other work; the activation's publish runs on this thread too);
after ``gc.collect()``; after glibc's ``malloc_trim(0)`` (what glibc keeps of freed memory
shows as the difference).

``--trace``: tracemalloc from after the imports (``--frames`` (5) frames), and the ``--top``
(15) holders of the memory still allocated at the end, grouped by traceback. tracing costs
time and memory of its own: read RSS from a run without it. ``--groups 0`` measures the
baseline: Python, FastAPI, SQLAlchemy and an empty admin.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the admin, run from anywhere
from ha_cluster import rss_mb, seed  # the big scenario's (bench/ is on sys.path: this folder)
from harness import P99_MIN_SAMPLES, P99_NOTE, quantiles

from admin.main import Admin
from admin.settings import AdminConfig

CLOSED = "http://127.0.0.1:9"  # the discard port: refused at once on a machine without it


def malloc_trim() -> bool:
    """Give glibc's freed-but-kept memory back to the system; False without glibc."""
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def top_holders(snapshot: tracemalloc.Snapshot, count: int) -> list[dict[str, Any]]:
    """The ``count`` tracebacks holding the most, innermost frame last (as Python prints)."""
    skip = (tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"))
    stats = snapshot.filter_traces(skip).statistics("traceback")
    return [{"mb": round(s.size / 2**20, 1), "blocks": s.count,
             "where": [f"{Path(f.filename).name}:{f.lineno}" for f in s.traceback]}
            for s in stats[:count]]


async def run(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    phases: dict[str, float] = {"imports": rss_mb()}
    if args.trace:
        tracemalloc.start(args.frames)
    nodes = [{"name": f"n{i:03d}", "cluster": "c1", "token": "memory-bench-node-token",
              "control_url": CLOSED} for i in range(3)]
    data: dict[str, Any] = {
        "listen": "127.0.0.1:0", "store": {"url": str(directory / "admin.db")},
        "tokens": [{"name": "bench", "token": "memory-bench-admin-token", "role": "admin"}]}
    if args.groups:
        data["seed"] = seed(nodes, args.groups, args.members, "127.0.0.1:0")
    if not args.fresh_store:
        subprocess.run([sys.executable, "-c", "import sys; from admin.domain.migrate import "
                        "migrate, open_engine; migrate(open_engine(sys.argv[1]))",
                        data["store"]["url"]], check=True, cwd=Path(__file__).parents[1])
    admin = Admin(AdminConfig.model_validate(data))
    del data  # the admin's file, parsed: what the admin keeps of it is the admin's business
    started = time.monotonic()
    await admin.start()
    figures: dict[str, Any] = {"start_s": round(time.monotonic() - started, 1)}
    try:
        service = admin.service

        def bodies() -> None:  # what each pusher serialises for its first full PUT
            for pusher in service.publisher.pushers.values():
                desired = pusher._desired
                if desired is not None:
                    pusher._body_of(desired.config)
                    pusher._body = None  # every node applied it (Pusher._drop_body)

        bodies()
        phases["started"] = rss_mb()
        activations, activations_cpu = [], []
        for i in range(args.rounds if args.groups else 0):
            view = service.group_view("g00000")
            t, cpu = time.monotonic(), time.thread_time()
            service.set_weight("g00000", [view["members"][0]["address"]], 2 + i % 2,
                               view["row_version"], "bench", "bench")
            service.activate("bench", "bench")
            bodies()
            activations.append(time.monotonic() - t)
            activations_cpu.append(time.thread_time() - cpu)
            await asyncio.sleep(0)
        phases["activated"] = rss_mb()
        reads, reads_cpu = [], []
        for i in range(args.reads if args.groups else 0):
            t, cpu = time.monotonic(), time.thread_time()
            service.group_view(f"g{i * 7919 % args.groups:05d}")
            reads.append(time.monotonic() - t)
            reads_cpu.append(time.thread_time() - cpu)
        phases["read"] = rss_mb()
        gc.collect()
        phases["gc"] = rss_mb()
        if args.trace:
            figures["holders"] = top_holders(tracemalloc.take_snapshot(), args.top)
            figures["traced_mb"] = round(tracemalloc.get_traced_memory()[0] / 2**20, 1)
            tracemalloc.stop()
        if malloc_trim():
            phases["trimmed"] = rss_mb()
        figures["activation_ms"] = _ms(activations)
        figures["activation_cpu_ms"] = _ms(activations_cpu)
        figures["group_read_ms"] = _ms(reads)
        figures["group_read_cpu_ms"] = _ms(reads_cpu)
        figures["p99_note"] = P99_NOTE
    finally:
        await admin.close()
    figures["rss_mb"] = {k: round(v, 1) for k, v in phases.items()}
    return figures


def _ms(values: list[float]) -> dict[str, Any] | None:
    """n, p50, p99 (null below 100 samples), max of ``values`` (seconds) in ms; None if none."""
    return quantiles(values, 1e3, ndigits=1) if values else None


def show(figures: dict[str, Any]) -> None:
    print("VmRSS (MB): " + ", ".join(f"{k} {v:.0f}" for k, v in figures["rss_mb"].items()))
    print(f"admin start (seed, activation, first publish): {figures['start_s']} s")
    for key in ("activation_ms", "activation_cpu_ms", "group_read_ms", "group_read_cpu_ms"):
        if figures.get(key):
            note = (f" (p99 needs >= {P99_MIN_SAMPLES} samples)"
                    if figures[key]["p99"] is None else "")
            print(f"{key}: " + ", ".join(f"{k} {'-' if v is None else v}"
                                         for k, v in figures[key].items()) + note)
    if "holders" in figures:
        print(f"traced at the end: {figures['traced_mb']} MB; the largest holders:")
        for holder in figures["holders"]:
            print(f"  {holder['mb']:7.1f} MB {holder['blocks']:>9} blocks  "
                  + " <- ".join(reversed(holder["where"])))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=int, default=10_000)
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5, help="activations")
    parser.add_argument("--reads", type=int, default=200, help="one-group reads")
    parser.add_argument("--trace", action="store_true", help="tracemalloc's largest holders")
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--fresh-store", action="store_true",
                        help="the admin migrates the empty store itself (loads Alembic)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if args.groups < 0 or args.members < 1 or args.frames < 1:
        parser.error("--groups must be 0 or more, --members and --frames at least 1")
    with tempfile.TemporaryDirectory(prefix="admin-memory-") as directory:
        figures = asyncio.run(run(args, Path(directory)))
    show(figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
