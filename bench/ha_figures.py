"""`.venv/bin/python bench/ha_figures.py [fanout|big|failover|all]`: the control plane's
figures at scale (issue 15), with every part a real process on 127.0.0.1.

- **fanout**: ``--nodes`` (50) nodes (``slb proxy --workers 0``) under one admin, ``--groups``
  (1,000) groups x ``--members`` (10) synthetic members (``10.x.y.z:80``: nothing is sent to
  them), one virtual server routing ``/gNNNNN/`` to each group. Figures: an activation (a
  weight edit + ``POST /api/v1/activate``, a full snapshot to every node) until each node
  applied it; a health flip (one ``POST /api/v1/batch`` pulling one member out of each of
  ``--flip-groups`` (100) random groups, the next one pulling them back in: every flip
  changes 100 groups, pool deltas) until each node applied it; the same flips with one node
  stopped by SIGSTOP, measured on the other nodes.
- **big**: ``--big-groups`` (10,000) groups x 10 members on 3 nodes: the activation time, the
  admin's RSS after the seed and at the end, and the latency of ``GET /api/v1/groups/{name}``
  (random groups). ``bench/admin_memory.py`` shows where that memory goes (tracemalloc).
- **failover**: two admins sharing one store, elected over the Consul double with a default
  agent's settings (``session_ttl_min`` 10 s) and the default election settings (a 10 s
  session TTL bound to a ``--check-ttl`` (3) s TTL check, 1 s of lock-delay): the leader is
  killed with SIGKILL ``--kills`` (10) times; the figure is the time from the kill until the
  other admin answers ``leading: true`` on ``GET /api/v1/leader``. ``--check-ttl 0`` measures
  the session TTL alone (up to 2 x TTL + lock-delay).

When a node applied a change: in **fanout**, each node's own ``applied_at`` (``GET
/v1/config?summary=1``: wall clock, one host), read once the admin knows every node applied
it: by default (``--confirm wait``) the change itself asks the admin to answer then
(``?wait=``, as a deploy tool does), so the bench sends nothing while the change travels; with
``--confirm poll`` (and always while one node is stopped) the admin's ``GET /api/v1/nodes``
is polled every ``--poll`` s (50 ms), which loads the admin it measures (4-6 reads of 50 rows
per flip). ``--stages`` also shows when the admin answered, when the first and the last node
applied, and when the admin knew of them all (polled changes only: a confirmed change's
answer is that moment), and the box's CPU while a confirmed change
travelled (``/proc/stat``, all cores, from the request to the admin's answer: a slow change is
slow because the box did more then, or because it sat idle), with the time the hypervisor
stole from the box's cores meanwhile and the five slowest changes (each change is in the
JSON's ``<phase>_series``: ms to the last node, the box's CPU, stolen, the wall clock it was
sent at, and how long the admin's event loop waited for a core meanwhile, from
``/proc/PID/schedstat``); the nodes' logs give how long each delta batch took to apply. In
**big**, the admin's view alone (polled: up to one poll late).
``--store URL`` runs the admin on PostgreSQL
(default: an SQLite file in the run's directory). ``--node-state DIR`` puts the nodes' state
files under DIR (``/dev/shm``: off the disk of the admin's store, as on machines of their own;
removed at the end), to tell the disk they share from the cores they share.
``--admin-nice N`` gives the admin the CPU priority N against the nodes (``-10``: the nodes
it wakes hold it off the cores less while it is still sending them the change). Both apply
to **fanout** only.

Output: the figures on stdout and ``bench/out/ha-<time>.json``; configs and logs in
``bench/out/ha-<time>/``. Every process started is stopped at the end, also on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import httpx
from ha_cluster import (
    AUTH,
    NODE_TOKEN,
    PY,
    Run,
    apply_durations,
    cpu_seconds,
    in_sync,
    node_rows,
    node_view,
    rss_mb,
    run_queue_seconds,
    seed,
    set_cpu_priority,
    start_admin,
    start_nodes,
    until,
)
from harness import (
    OUT_DIR,
    P99_MIN_SAMPLES,
    P99_NOTE,
    TICKS,
    cpu_times,
    free_ports,
    num,
    quantiles,
    say,
)


async def timed_change(http: httpx.AsyncClient, admin: str, change: Any, poll: float,
                       skip: set[str] = frozenset(), timeout: float = 120,
                       answered: list[float] | None = None,
                       nodes: list[dict[str, Any]] | None = None,
                       acknowledged: list[float] | None = None,
                       confirmed: bool = False) -> dict[str, float]:
    """Make ``change`` (a coroutine function); seconds until each node (but ``skip``) applied a
    version above the one it had. ``answered``, if given, gets the seconds the admin took to
    answer the change itself.

    ``confirmed``: ``change`` asked the admin to answer once every node applied it (``?wait=``,
    as a deploy tool does) and raised if one did not: nothing is polled, so the bench adds no
    load to the admin while the change travels (a 50 ms poll of 50 rows is 4-6 requests per
    flip). Otherwise the admin's node view is polled every ``poll`` s until it shows every
    node (but ``skip``). Without ``nodes``: the times are when that view acknowledged each node
    (up to one poll late). With ``nodes``: each node's own ``applied_at`` (``GET
    /v1/config?summary=1``, wall clock, same host) gives the moment it applied, exact whatever
    the poll; ``acknowledged``, if given, gets the seconds until the admin knew of every node
    (its confirmed answer, or its view).
    """
    before = {r["name"]: r["applied_version"] or 0 for r in await node_rows(http, admin)}
    wall, start = time.time(), time.monotonic()
    await change()
    if answered is not None:
        answered.append(time.monotonic() - start)
    reached: dict[str, float] = {}
    if confirmed:
        reached = dict.fromkeys(before, time.monotonic() - start)
    deadline = start + timeout
    while len(reached) < len(before) - len(skip):
        for row in await node_rows(http, admin):
            if row["name"] in skip or row["name"] in reached:
                continue
            if (row["applied_version"] or 0) > before[row["name"]] and row["in_sync"]:
                reached[row["name"]] = time.monotonic() - start
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(reached)} nodes applied the change in {timeout}s")
        await asyncio.sleep(poll)
    if acknowledged is not None:
        acknowledged.append(max(reached.values()))
    if nodes is None:
        return reached
    views = await asyncio.gather(*(node_view(http, n) for n in nodes if n["name"] in reached))
    return {name: applied_at - wall for name, applied_at in views}


WAIT = 60  # ?wait= of a confirmed change: seconds the admin waits for every node at most


class Travel(NamedTuple):
    """What happened while one confirmed change travelled (from the request until the admin
    confirmed every node), in seconds: what makes a slow one slow."""

    cpu: float  # the whole box's CPU
    wall: float
    stolen: float  # by the hypervisor, from the box's cores
    sent_at: float  # the wall clock of the request (to read the logs by)
    # the admin's event loop waiting for a core: a slow change with little CPU is either
    # that (50 processes on the box's cores) or a sleep (I/O, a lock)
    queued: float


def box_cpu() -> tuple[float, float]:
    """Seconds of CPU the whole box has done so far (every core's user, nice, system, irq and
    softirq time), and the seconds the hypervisor stole from its cores."""
    times = cpu_times().values()
    return (sum(f[0] + f[1] + f[2] + f[5] + f[6] for f in times) / TICKS,
            sum(f[7] for f in times) / TICKS)


def ms(values: list[float]) -> dict[str, Any]:
    """n, p50_ms, p99_ms (None below 100 samples), max_ms of ``values`` in seconds."""
    return quantiles(values, 1e3, "_ms")


def show(name: str, figures: dict[str, Any]) -> None:
    note = f"   (p99 needs >= {P99_MIN_SAMPLES} samples)" if figures["p99_ms"] is None else ""
    say(f"  {name:<44} n={figures['n']:<5} p50 {num(figures['p50_ms'], '.1f'):>8} ms   "
        f"p99 {num(figures['p99_ms'], '.1f'):>8} ms   max {num(figures['max_ms'], '.1f'):>8} ms"
        + note)


def delivered(reply: httpx.Response, wait: float) -> None:
    """The change was stored, and (``wait`` > 0) every node applied it: the admin answers 200
    once they all did, 202 when ``wait`` ran out first."""
    reply.raise_for_status()
    if wait > 0 and reply.status_code != 200:
        raise SystemExit(f"{reply.request.url.path}: not every node applied the change in "
                         f"{wait} s: {reply.text[:300]}")


async def activate(http: httpx.AsyncClient, admin: str, group: str, weight: int,
                   wait: float = 0) -> None:
    view = (await http.get(f"{admin}/api/v1/groups/{group}", headers=AUTH)).json()
    address = view["members"][0]["address"]
    reply = await http.post(f"{admin}/api/v1/groups/{group}/weight", headers=AUTH, json={
        "addresses": [address], "weight": weight, "row_version": view["row_version"],
        "reason": "bench"})
    reply.raise_for_status()
    # ?wait=0: answered once stored and published; ?wait=N: once delivered (timed_change)
    delivered(await http.post(f"{admin}/api/v1/activate", headers=AUTH,
                              params={"wait": wait}, json={"reason": "bench"}), wait)


async def flip(http: httpx.AsyncClient, admin: str, groups: int, count: int,
               pulled: list[int], wait: float = 0) -> None:
    """Pull one member out of ``count`` random groups, or (when ``pulled`` holds the groups
    the flip before pulled out) back in: every flip changes ``count`` groups. (A pull-in of
    random groups changed only the ~half of them that were out.)"""
    out = not pulled
    if out:
        pulled += random.sample(range(groups), count)
    picked = list(pulled)
    if not out:
        pulled.clear()
    operations = [{"group": f"g{g:05d}", "address": f"10.{g // 256 % 256}.{g % 256}.1:80",
                   "op": "pull-out" if out else "pull-in"} for g in picked]
    delivered(await http.post(f"{admin}/api/v1/batch", headers=AUTH, params={"wait": wait},
                              json={"operations": operations, "reason": "bench"}), wait)


async def fanout(args: argparse.Namespace, run: Run, http: httpx.AsyncClient,
                 store: str) -> dict[str, Any]:
    say(f"fanout: {args.nodes} nodes, {args.groups} groups x {args.members} members, load "
        "average " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    # (--node-state: the nodes' state files on another file system than the admin's store)
    state_root = Path(args.node_state) / f"slb-ha-{os.getpid()}" if args.node_state else None
    if state_root is not None:
        run.elsewhere.append(state_root)
    nodes = await start_nodes(run, http, args.nodes, state_root)
    listen = "127.0.0.1:0"  # each node's kernel picks its own port: nodes share the host
    # the traffic sampler scrapes every node's /metrics (10,000 member series each here) every
    # 5 s by default: on a shared 2-core box 50 nodes then spend their CPU on /metrics and a
    # push waits behind it. Once a minute (the most the setting allows) keeps it out of the way.
    admin, pid = await start_admin(run, http, "admin", store,
                                   {"seed": seed(nodes, args.groups, args.members, listen),
                                    "stats": {"interval": 60}})
    if args.admin_nice is not None:
        set_cpu_priority(pid, args.admin_nice)
    await until("every node in sync after the seed", lambda: in_sync(http, admin), 600, 0.5)
    # the bench's own heap (the seed, the clients) out of its collector's sight: a full
    # collection of it took up to 170 ms, between a change and the clock reading after it
    gc.collect()
    gc.freeze()
    out: dict[str, Any] = {}
    flip_label = f"flip of {args.flip_groups} groups"

    async def phase(key: str, label: str, change: Any, count: int, skip: set[str],
                    worst: bool) -> None:
        values: list[float] = []
        pushed: list[float] = []  # from the admin's answer to the change: the push alone
        # the stages of each change: admin answered, first and last node applied, the admin's
        # view showing every node (what the figures counted before they were read off nodes)
        stages: dict[str, list[float]] = {"answered": [], "first": [], "last": [], "seen": []}
        # CPU the admin and the nodes spent per change: what the box's load cannot blur
        cpu_before = cpu_seconds(pid), cpu_seconds(*(n["pid"] for n in nodes))
        # a stopped node never applies: the others are then watched through the poll
        wait = WAIT if args.confirm == "wait" and not skip else 0
        travel: list[Travel] = []  # each confirmed change's (only when confirmed)

        async def measured(i: int) -> None:
            (cpu, stolen), started = box_cpu(), time.monotonic()
            queue, sent_at = run_queue_seconds(pid), time.time()
            await change(i, wait)
            after = box_cpu()
            travel.append(Travel(after[0] - cpu, time.monotonic() - started,
                                 after[1] - stolen, sent_at, run_queue_seconds(pid) - queue))

        for i in range(count):
            answered: list[float] = []
            reached = await timed_change(http, admin, lambda i=i: measured(i), args.poll,
                                         skip=skip, timeout=1200, answered=answered,
                                         nodes=nodes, acknowledged=stages["seen"],
                                         confirmed=wait > 0)
            times = [max(reached.values())] if worst else list(reached.values())
            values += times
            pushed += [max(0.0, t - answered[0]) for t in times]
            stages["answered"] += answered
            stages["first"].append(min(reached.values()))
            stages["last"].append(max(reached.values()))
        out[key] = ms(values)
        out[key + "_after_answer"] = ms(pushed)
        out[key + "_stages"] = {name: ms(v) for name, v in stages.items()}
        admin_cpu = (cpu_seconds(pid) - cpu_before[0]) / count
        nodes_cpu = (cpu_seconds(*(n["pid"] for n in nodes)) - cpu_before[1]) / count
        out[key + "_cpu_ms"] = {"admin": admin_cpu * 1e3, "nodes": nodes_cpu * 1e3}
        show(label, out[key])  # at once: a long run shows its figures as it goes
        if not wait:  # (a confirmed change is answered after the last node applied it)
            show("  counted from the admin's answer", out[key + "_after_answer"])
        if args.stages:
            for name, text in (("answered", "the admin answered the change"
                                if not wait else "the admin confirmed every node"),
                               ("first", "the first node applied it"),
                               ("last", "the last node applied it"),
                               ("seen", "the admin's view showed every node")):
                if name == "seen" and wait:
                    continue  # (the confirmed answer is that moment: the line above)
                show(f"    {text}", out[key + "_stages"][name])
            say(f"      CPU per change: admin {admin_cpu * 1e3:.0f} ms, the {len(nodes)} nodes "
                f"{nodes_cpu * 1e3:.0f} ms together (the bench's reads included)")
        if wait:
            cores = os.cpu_count() or 1
            out[key + "_box"] = {"cpu": ms([t.cpu for t in travel]),
                                 "busy": quantiles([t.cpu / t.wall / cores for t in travel
                                                    if t.wall > 0]),
                                 "stolen": ms([t.stolen for t in travel])}
            # each change in order: its time to the last node, the box's CPU and the stolen
            # time meanwhile (ms), to tell a slow change made of work from one made of waiting;
            # the wall clock it was sent at, to find what else the logs show then; and the
            # admin's loop's wait for a core (ms)
            out[key + "_series"] = [[*(round(v * 1e3, 1) for v in (last, t.cpu, t.stolen)),
                                     round(t.sent_at, 3), round(t.queued * 1e3, 1)]
                                    for last, t in zip(stages["last"], travel, strict=True)]
            if args.stages:
                box = out[key + "_box"]
                say(f"      the box's CPU while a change travelled: p50 "
                    f"{num(box['cpu']['p50_ms'], '.0f')} ms, max "
                    f"{num(box['cpu']['max_ms'], '.0f')} ms; its {cores} cores "
                    f"{num(box['busy']['p50'], '.0%')} busy (p50), stolen by the "
                    f"hypervisor: max {num(box['stolen']['max_ms'], '.0f')} ms")
                slowest = sorted(out[key + "_series"], reverse=True)[:5]
                say("      the slowest changes (ms to the last node / the box's CPU / stolen / "
                    "the admin's loop waiting for a core): "
                    + ", ".join(f"{a:.0f}/{b:.0f}/{c:.0f}/{q:.0f}" for a, b, c, _, q in slowest))

    await phase("activation", "activation reaches a node",
                lambda i, wait: activate(http, admin, "g00000", 2 + i % 2, wait), args.rounds,
                set(), False)
    await phase("activation_all", f"activation reaches all {args.nodes}",
                lambda i, wait: activate(http, admin, "g00000", 2 + i % 2, wait), args.rounds,
                set(), True)

    pulled: list[int] = []  # the groups the last flip pulled a member out of

    def flipper(i: int, wait: float) -> Any:
        return flip(http, admin, args.groups, args.flip_groups, pulled, wait)
    await phase("flip", f"{flip_label} reaches a node", flipper, args.flips, set(), False)
    await phase("flip_all", f"{flip_label} reaches all {args.nodes}", flipper, args.flips,
                set(), True)
    stopped = nodes[0]
    os.kill(stopped["pid"], signal.SIGSTOP)
    try:
        await phase("stopped_flip", f"same, one SIGSTOPped (other {args.nodes - 1})", flipper,
                    args.flips, {stopped["name"]}, True)
    finally:
        os.kill(stopped["pid"], signal.SIGCONT)
    figures: dict[str, Any] = out
    applies = apply_durations(run.directory, [n["name"] for n in nodes])
    if applies:
        figures["node_delta_apply"] = ms(applies)
        show("a node applying one delta batch", figures["node_delta_apply"])
    figures["admin_rss_mb"] = rss_mb(pid)
    figures["load_average"] = os.getloadavg()
    say(f"  admin RSS {figures['admin_rss_mb']:.0f} MB, load average "
        + " ".join(f"{x:.2f}" for x in figures["load_average"]))
    return figures


async def big(args: argparse.Namespace, run: Run, http: httpx.AsyncClient,
              store: str) -> dict[str, Any]:
    say(f"big: 3 nodes, {args.big_groups} groups x {args.members} members")
    nodes = await start_nodes(run, http, 3)
    listen = "127.0.0.1:0"  # each node's kernel picks its own port: nodes share the host
    started = time.monotonic()
    admin, pid = await start_admin(run, http, "admin", store,
                                   {"seed": seed(nodes, args.big_groups, args.members, listen)},
                                   timeout=1800)
    await until("every node in sync after the seed", lambda: in_sync(http, admin), 1800, 0.5)
    seeded = time.monotonic() - started
    rss_seeded = rss_mb(pid)
    times = []
    for i in range(args.rounds):
        reached = await timed_change(http, admin, lambda i=i: activate(
            http, admin, "g00000", 2 + i % 2), args.poll, timeout=600)
        times.append(max(reached.values()))
    reads = []
    for _ in range(args.reads):
        name = f"g{random.randrange(args.big_groups):05d}"
        t = time.monotonic()
        (await http.get(f"{admin}/api/v1/groups/{name}", headers=AUTH)).raise_for_status()
        reads.append(time.monotonic() - t)
    # the nodes' control API while the admin samples their counters every stats interval
    summaries = []
    for i in range(args.reads):
        node = nodes[i % len(nodes)]
        t = time.monotonic()
        (await http.get(f"{node['control_url']}/v1/config?summary=1",
                        headers={"Authorization": f"Bearer {NODE_TOKEN}"})).raise_for_status()
        summaries.append(time.monotonic() - t)
    figures = {"seed_and_first_push_s": seeded, "activation_all": ms(times),
               "group_read": ms(reads), "node_summary": ms(summaries),
               "admin_rss_after_seed_mb": rss_seeded, "admin_rss_mb": rss_mb(pid),
               "load_average": os.getloadavg()}
    say(f"  seed + first push to 3 nodes: {seeded:.1f} s")
    show("activation reaches all 3 nodes", figures["activation_all"])
    show("GET /api/v1/groups/{name}", figures["group_read"])
    show("a node's GET /v1/config?summary=1", figures["node_summary"])
    say(f"  admin RSS {figures['admin_rss_mb']:.0f} MB at the end ({rss_seeded:.0f} MB after "
        "the seed), load average "
        + " ".join(f"{x:.2f}" for x in figures["load_average"]))
    return figures


async def failover(args: argparse.Namespace, run: Run, http: httpx.AsyncClient,
                   store: str) -> dict[str, Any]:
    say(f"failover: 2 admins, {args.kills} kills of the leader, check TTL {args.check_ttl:g} s")
    await run.spawn("consul", PY, "-m", "tests.consul_double", "--port",
                    str(free_ports(1)[0]))  # a default agent: session_ttl_min 10 s
    log = run.directory / "consul.log"
    # the double prints its address on its first line
    address = (await until("the Consul double", lambda: _first_line(log), 30)).strip()
    nodes = await start_nodes(run, http, 1)
    listen = "127.0.0.1:0"  # each node's kernel picks its own port: nodes share the host
    data = {"consul": {"address": address, "wait": 5},
            "election": {"enabled": True, "check_ttl": args.check_ttl, "poll": 0.1},
            "seed": seed(nodes, 10, 2, listen)}
    admins = {name: await start_admin(run, http, name, store, data)
              for name in ("admin-1", "admin-2")}

    async def leading(name: str) -> bool:
        url = admins[name][0]
        return bool((await http.get(f"{url}/api/v1/leader", headers=AUTH)).json()["leading"])
    times = []
    for kill in range(args.kills):
        leader = await until("a leader", lambda: _leader(admins, leading), 60, 0.05)
        other = next(n for n in admins if n != leader)
        os.kill(admins[leader][1], signal.SIGKILL)
        killed = time.monotonic()
        await until(f"{other} to lead", lambda o=other: leading(o), 60, 0.02)
        times.append(time.monotonic() - killed)
        say(f"  kill {kill + 1}: {other} leads after {times[-1]:.2f} s")
        # the killed admin comes back (a new process, its own log) and follows
        admins[leader] = await start_admin(run, http, f"{leader}-{kill}", store, data)
    figures = {"takeover": ms(times)}
    show("kill -9 of the leader until another leads", figures["takeover"])
    return figures


async def _first_line(path: Path) -> str | None:
    text = path.read_text() if path.exists() else ""
    return text.splitlines()[0] if "\n" in text else None


async def _leader(admins: dict[str, tuple[str, int]], leading: Any) -> str | None:
    for name in admins:
        with contextlib.suppress(httpx.HTTPError):
            if await leading(name):
                return name
    return None


async def main(args: argparse.Namespace) -> int:
    # SIGTERM or Ctrl-C cancels the run: the ``finally`` below then stops every process
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results: dict[str, Any] = {"args": vars(args), "p99_note": P99_NOTE}
    scenarios = ["fanout", "big", "failover"] if args.scenario == "all" else [args.scenario]
    async with httpx.AsyncClient(timeout=60) as http:
        for scenario in scenarios:
            run = Run(OUT_DIR / f"ha-{stamp}" / scenario)
            store = args.store or str(run.directory / "admin.db")
            try:
                results[scenario] = await globals()[scenario](args, run, http, store)
            finally:
                await run.close()
    path = OUT_DIR / f"ha-{stamp}.json"
    path.write_text(json.dumps(results, indent=1), encoding="utf-8")
    say(f"figures in {path}")
    return 0


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", nargs="?", default="all",
                        choices=["fanout", "big", "failover", "all"])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--flip-groups", type=int, default=100)
    parser.add_argument("--big-groups", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5, help="activations measured")
    parser.add_argument("--flips", type=int, default=20, help="health flips measured")
    parser.add_argument("--reads", type=int, default=500, help="group reads measured")
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--check-ttl", type=float, default=3.0,
                        help="failover: election.check_ttl (0: the session TTL alone)")
    parser.add_argument("--poll", type=float, default=0.05,
                        help="seconds between reads of the admin's node view")
    parser.add_argument("--confirm", choices=["wait", "poll"], default="wait",
                        help="fanout: learn that every node applied a change from the admin's "
                        "answer (?wait=, nothing polled; default) or by polling its node view")
    parser.add_argument("--stages", action="store_true",
                        help="fanout: also show each change's stages")
    parser.add_argument("--store", help="the admin store's URL (default: an SQLite file)")
    parser.add_argument("--admin-nice", type=int, metavar="N",
                        help="fanout: the admin's CPU priority against the nodes (-10: ahead "
                        "of them, as on a machine of its own; negative values need root)")
    parser.add_argument("--node-state", metavar="DIR",
                        help="fanout: the nodes' state files under DIR (/dev/shm: off the "
                        "admin store's disk, as on machines of their own; default: beside "
                        "the admin's store, in the run's directory)")
    args = parser.parse_args()
    if args.admin_nice is not None and not -20 <= args.admin_nice <= 19:
        parser.error("--admin-nice must be between -20 and 19")
    if args.admin_nice is not None and args.admin_nice < 0 and os.geteuid() != 0:
        parser.error("--admin-nice below 0 needs root (CAP_SYS_NICE)")
    if args.node_state:  # (resolved: the nodes run from the project's root, not from here)
        args.node_state = str(Path(args.node_state).resolve())
        if not os.path.isdir(args.node_state) or not os.access(args.node_state, os.W_OK):
            parser.error(f"--node-state: {args.node_state} is not a writable directory")
    if min(args.nodes, args.groups, args.members, args.kills) < 1 \
            or args.flip_groups > args.groups:
        parser.error("counts must be positive and --flip-groups at most --groups")
    return args


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main(parse())))
    except asyncio.CancelledError:
        sys.exit("interrupted: every process was stopped")
