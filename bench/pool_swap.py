"""A node's pool swap on a health flip, in process: CPU microseconds per ``apply_groups``.

The node_flip bench's topology (``--groups`` (1,000) groups x ``--members`` (10), a route per
group) is compiled into a real ``ProxyContext``; ``--flips`` (200) flips as the admin sends
them (one member of each of ``--flip-groups`` (100) random groups turning ``down``, then the
same ones back ``up``) are parsed and applied to the model first, so what is timed is
``ProxyContext.apply_groups`` alone: carrying the member states over, rebuilding the balancers,
closing the idle connections of members that stop taking traffic. An even number of flips
leaves every member as it started, so the series is run ``--repeat`` (7) times over the same
context; CPU time (``time.process_time``) is what is measured, the minimum and median.

    .venv/bin/python bench/pool_swap.py [--algorithm wrr] [--stages] [--profile]

``--stages`` then times each stage of the swap (a clock read between the calls: the figures
of the breakdown); ``--profile`` runs the series once more under cProfile and prints, per
flip, the time spent in each function of the swap (inclusive; cProfile's own overhead
inflates every figure, so read them as shares). Run from another tree's root (``cd OTHER &&
python /this/tree/bench/pool_swap.py``), it measures that tree: a before/after in one session.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import random
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path.cwd()
sys.path.insert(0, str(ROOT))

from apply_bench import Snapshot  # noqa: E402
from node_flip import flip_body, topology  # noqa: E402

from slb.model import Config, Group, parse_config  # noqa: E402
from slb.model.delta import apply_batch, parse_batch  # noqa: E402
from slb.proxy.compile import carry_members, close_idle_of_leaving  # noqa: E402
from slb.proxy.context import ProxyContext  # noqa: E402

# the swap's functions, as cProfile names them (file suffix, function), for --profile
STAGES = (("context.py", "apply_groups"), ("compile.py", "carry_members"),
          ("compile.py", "close_idle_of_leaving"), ("pool.py", "set_members"),
          ("pool.py", "_install"), ("balancer.py", "make_balancer"),
          ("outlier.py", "ejection_horizon"), ("balancer.py", "__init__"),
          ("hashing.py", "__init__"), ("hashing.py", "build_table"))


def flips(args: argparse.Namespace) -> tuple[ProxyContext, list[tuple[Config, list[Group]]]]:
    """The context holding the snapshot, and each flip as (new config, changed groups)."""
    snap = Snapshot(args.groups, args.members, "127.0.0.1:18080", [], 0)
    doc = topology(snap)
    for group in doc["groups"]:
        group["algorithm"] = args.algorithm
        if args.algorithm == "hash":
            group["hash_key"] = "path"
    config = parse_config(doc)
    ctx = ProxyContext(asyncio.new_event_loop(), config)
    rng = random.Random(args.seed)
    out: list[int] = []
    series = []
    for _ in range(args.flips):
        config, groups = apply_batch(config, parse_batch(flip_body(snap, rng, args.flip_groups,
                                                                   out)))
        snap.version += 1
        series.append((config, groups))
    return ctx, series


def run(ctx: ProxyContext, series: list[tuple[Config, list[Group]]]) -> float:
    """CPU seconds for the whole series."""
    apply = ctx.apply_groups
    start = time.process_time()
    for config, groups in series:
        apply(config, groups)
    return time.process_time() - start


def stages(ctx: ProxyContext, series: list[tuple[Config, list[Group]]]) -> dict[str, float]:
    """Wall seconds per stage of the swap over the series, by a copy of ``apply_groups``' loop
    with a clock read between its calls (the clock's own cost taken off). What
    ``set_members`` does inside (the balancer, and the ejection horizon only when the members
    dict changed) is ``--profile``'s to show: timed again alone here, it would be timed as the
    swap does not run it (a hash group's balancer is no ``make_balancer``'s)."""
    clock = time.perf_counter
    spent = dict.fromkeys(("carry_members", "set_members", "close_idle_of_leaving"), 0.0)
    calls = 0
    for config, groups in series:
        pools = ctx.runtime.pools
        leaving = []
        for group in groups:
            pool = pools[group.name]
            old = pool.members
            t0 = clock()
            members = carry_members(group, old)
            t1 = clock()
            pool.set_members(members)
            t2 = clock()
            spent["carry_members"] += t1 - t0
            spent["set_members"] += t2 - t1
            leaving.append((old, members))
        ctx.runtime = replace(ctx.runtime, config=config, settings=config.http)
        for old, members in leaving:
            t0 = clock()
            close_idle_of_leaving(old, members)
            spent["close_idle_of_leaving"] += clock() - t0
            calls += 1
    empty = min(-clock() + clock() for _ in range(1000))  # one clock read's cost
    return {name: value - empty * calls for name, value in spent.items()}


def profile(ctx: ProxyContext, series: list[tuple[Config, list[Group]]]) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    run(ctx, series)
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    print("under cProfile, us per flip (inclusive, own):")
    for (path, _, name), (_, _, own, inclusive, _) in sorted(
            stats.items(), key=lambda item: -item[1][3]):
        if any(path.endswith(suffix) and name == func for suffix, func in STAGES):
            print(f"  {Path(path).name}:{name:<24} {inclusive / len(series) * 1e6:7.0f} "
                  f"{own / len(series) * 1e6:7.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--flip-groups", type=int, default=100)
    parser.add_argument("--flips", type=int, default=200, help="even: the series returns home")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--algorithm", default="wrr",
                        choices=("wrr", "least_conn", "random2", "hash"))
    parser.add_argument("--stages", action="store_true", help="time each stage (below)")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if args.flips % 2:
        parser.error("--flips must be even (each down flip is undone by the next)")
    ctx, series = flips(args)
    run(ctx, series)  # warm-up: the first pass allocates what later ones reuse
    gc.collect()
    per_flip = [run(ctx, series) / len(series) * 1e6 for _ in range(args.repeat)]
    print(f"apply_groups ({args.algorithm}, {args.flip_groups} of {args.groups} groups x "
          f"{args.members} members): {min(per_flip):.0f} us/flip min, "
          f"{statistics.median(per_flip):.0f} median over {args.repeat} x {len(series)} flips")
    if args.stages:
        rounds = [stages(ctx, series) for _ in range(args.repeat)]
        print("stages, us per flip (the least of each over the repeats):")
        for name in rounds[0]:
            print(f"  {name:<26} {min(r[name] for r in rounds) / len(series) * 1e6:6.0f}")
    if args.profile:
        profile(ctx, series)


if __name__ == "__main__":
    main()
