"""`.venv/bin/python bench/node_flip.py`: what ONE node spends on a health flip (issue 15).

One admin-managed node (``slb proxy --workers N``, its file holding only ``control`` and
``state_dir``) gets the fan-out bench's topology as a full snapshot (``--groups`` (1,000)
groups x ``--members`` (10), a route per group on one virtual server), then ``--flips`` (300)
health flips as an admin sends them: ``PATCH /v1/groups`` with ``X-SLB-Term``, one member of
each of ``--flip-groups`` (100) random groups turning ``down``, then the same ones back ``up``
(every flip changes that many groups), every member's three fields as the admin's delta
carries them. A flip goes every ``--interval`` (0.6) s, about the pace of
bench/ha_figures.py's flips at 50 nodes, so the node's coalesced state file writes fall
between flips as they do there, and are counted.

Figures: the node's CPU per flip (its processes' utime + stime from /proc over the whole
series, idle timers and state writes included: the figure the box's load cannot blur; user
and system apart), the
PATCH round trip p50/p99/max, and the apply time the node logs. ``--idle SECONDS`` first
measures the node's CPU while it has nothing to do (after the snapshot, before the flips), in
ms per second: what its timers cost. ``--py-spy FILE`` records
the node during the series (``py-spy record --nonblocking --gil --format raw``: collapsed
stacks, in FILE) for a per-stage breakdown; ``--top`` prints the heaviest frames of it.

Every process started here is stopped at the end, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from apply_bench import TOKEN, Control, Snapshot, group_name
from harness import (
    HOST,
    PY_SPY,
    SLB_BIN,
    TICKS,
    BenchError,
    Service,
    cpu_ticks,
    descendants,
    free_ports,
    quantiles,
    say,
    user_system,
)

from slb.node.files import PERSIST_QUIET

TERM = 7  # any leader term: the node persists it with the first push, then only compares


def start_node(work: Path, workers: int) -> tuple[Service, Control]:
    """The node, started (stop the Service when done, also when this raises)."""
    control_port, = free_ports(1)
    path = work / "node.yaml"
    path.write_text(yaml.safe_dump({
        "control": {"listen": f"{HOST}:{control_port}", "token": TOKEN},
        "state_dir": str(work / "state")}))
    node = Service("node", [str(SLB_BIN), "proxy", "-c", str(path), "--workers", str(workers)],
                   work / "node.log")
    node.start()
    node.wait_listening(control_port, timeout=30)
    control = Control(control_port)
    control.wait_up(node.check_alive)
    return node, control


def topology(snap: Snapshot) -> dict[str, Any]:
    """``snap`` as version 1 of this bench's snapshot: only its synthetic groups (no real
    group: nothing is routed here), a route per group on one virtual server."""
    doc = snap.document()
    doc["groups"] = doc["groups"][1:]
    doc["virtual_servers"] = [{"name": "site", "listen": snap.listen, "default": True,
                               "domains": ["site.test"],
                               "routes": [{"path": f"/{name}/", "group": name}
                                          for name in snap.groups]}]
    snap.version = doc["version"] = 1
    return doc


def flip_body(snap: Snapshot, rng: random.Random, count: int, out: list[int]) -> bytes:
    """One flip changing ``count`` groups: the first member of each of ``count`` random groups
    turns down, or (when ``out`` holds the groups the flip before took down) back up."""
    down = not out
    if down:
        out += sorted(rng.sample(range(len(snap.groups)), count))
    groups = [{"name": group_name(i), "upsert": [
        {"address": next(iter(snap.groups[group_name(i)])), "weight": 1,
         "state": "down" if down else "up"}], "remove": []} for i in out]
    if not down:
        out.clear()
    body = {"base_version": snap.version, "version": snap.version + 1, "groups": groups}
    return json.dumps(body, separators=(",", ":")).encode()


def top_frames(raw: Path, limit: int) -> list[tuple[float, str]]:
    """The frames with the most samples anywhere on the stack (inclusive), in %."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        for frame in set(stack.split(";")):
            inclusive[re.sub(r" \(.*/(?=[^/]*:\d+\))", " (", frame)] += int(count)
    return [(100 * n / max(total, 1), frame) for frame, n in inclusive.most_common(limit)]


def idle_cpu(node: Service, seconds: float) -> float:
    """The node's CPU in ms per second over ``seconds`` with nothing to do: its timers'."""
    time.sleep(1.0)  # the snapshot's answer came after its state write: nothing is pending
    pids = descendants(node.pid)
    ticks, started = cpu_ticks(pids), time.monotonic()
    time.sleep(seconds)
    return (cpu_ticks(pids) - ticks) / TICKS * 1e3 / (time.monotonic() - started)


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    node: Service | None = None
    spy: subprocess.Popen[bytes] | None = None
    try:
        node, control = start_node(work, args.workers)
        snap = Snapshot(args.groups, args.members, f"{HOST}:{free_ports(1)[0]}", [], 0)
        control.change("PUT", "/v1/config", topology(snap))
        idle = idle_cpu(node, args.idle) if args.idle > 0 else None
        rng = random.Random(args.seed)
        out: list[int] = []  # the groups the last flip took down
        headers = {"X-SLB-Term": str(TERM)}
        for i in range(args.warmup + args.flips):
            if i == args.warmup:
                pids = descendants(node.pid)
                ticks, split = cpu_ticks(pids), user_system(pids)
                started = time.monotonic()
                walls: list[float] = []
                if args.py_spy:
                    spy = subprocess.Popen([str(PY_SPY), "record", "--pid", str(node.pid),
                                            "--nonblocking", "--gil", "--format", "raw",
                                            "--rate", "1000",
                                            "--subprocesses", "-o", args.py_spy],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    # py-spy prints nothing once attached: give it a second, then make sure
                    time.sleep(1.0)
                    if spy.poll() is not None:
                        raise BenchError("py-spy exited: is it allowed to trace (root)?")
            status, data, wall = control.call("PATCH", "/v1/groups",
                                              flip_body(snap, rng, args.flip_groups, out),
                                              headers)
            if status != 200:
                raise BenchError(f"PATCH /v1/groups answered {status}: {data[:300]!r}")
            snap.version += 1
            if i >= args.warmup:
                walls.append(wall)
            time.sleep(args.interval)
        # the last flip's coalesced write fires within PERSIST_QUIET: wait for it, counted
        time.sleep(PERSIST_QUIET + 1.0)
        cpu_ms = (cpu_ticks(pids) - ticks) / TICKS * 1e3 / args.flips
        user, system = (b - a for a, b in zip(split, user_system(pids), strict=True))
        elapsed = time.monotonic() - started
    finally:
        if spy is not None:
            spy.send_signal(2)
            spy.wait(30)
        if node is not None:
            node.stop()
    logged = [float(m) for m in re.findall(r"applied \d+ groups[^\n]* in ([0-9.]+) ms",
                                           (work / "node.log").read_text(errors="replace"))]
    # (the idle figure's resolution: one clock tick over the --idle seconds)
    return {**({"idle_cpu_ms_per_s": round(idle, 2),
                "idle_resolution_ms_per_s": round(1e3 / TICKS / args.idle, 2)}
               if idle is not None else {}),
            "cpu_ms_per_flip": round(cpu_ms, 2),
            "user_ms_per_flip": round(user / TICKS * 1e3 / args.flips, 2),
            "system_ms_per_flip": round(system / TICKS * 1e3 / args.flips, 2),
            "seconds": round(elapsed, 1),
            "round_trip": quantiles(walls, 1e3, "_ms", 2),
            "logged_apply": quantiles(logged[-args.flips:], 1.0, "_ms", 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--flip-groups", type=int, default=100)
    parser.add_argument("--flips", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.6)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--idle", type=float, default=0.0, metavar="SECONDS",
                        help="first measure the node's CPU this long with nothing to do")
    parser.add_argument("--py-spy", metavar="FILE", help="record the node (collapsed stacks)")
    parser.add_argument("--top", type=int, default=0, help="with --py-spy: the heaviest frames")
    args = parser.parse_args()
    if args.flip_groups > args.groups or min(args.groups, args.members, args.flips) < 1:
        parser.error("counts must be positive and --flip-groups at most --groups")
    with tempfile.TemporaryDirectory(prefix="node-flip-") as tmp:
        try:
            result = run(args, Path(tmp))
        except BenchError as exc:
            print(f"node_flip: {exc}", file=sys.stderr)
            return 1
    say(json.dumps(result))
    if args.py_spy and args.top:
        for share, frame in top_frames(Path(args.py_spy), args.top):
            say(f"{share:5.1f}%  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
