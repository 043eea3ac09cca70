"""A node's pool delta in process, stage by stage: what comes before the traffic has it, and after.

The node_flip bench's topology (``--groups`` (1,000) groups x ``--members`` (10), a route per
group) is compiled into a real ``ProxyContext``; then ``--flips`` (100) health flips as the
admin sends them (one member of each of ``--flip-groups`` (100) random groups turning
``down``, then the same ones back ``up``) go through a node's steps, each timed in CPU
microseconds (``time.process_time``):

- **validation**: ``parse_batch`` of the request body's bytes;
- **model**: ``apply_batch``, the new config sharing every unchanged part;
- **swap**: ``ProxyContext.apply_groups``, the pools the traffic reads: the traffic has the
  change once this returns;
- **after**: what the node's answer and state file need then: each changed group's JSON
  (``keep_json``, as ``StateWriter.soon`` makes it) and the content hash.

Then the state file is written ``--repeat`` times (``save_snapshot`` into a temporary
directory, with the node's reused encoder): a node writes it at most every few seconds while
deltas keep coming (``slb.node.files.StateWriter``), not per flip, so it is printed apart.

``--pause`` (0.1 s) sleeps between flips, so each starts with the caches as cold as on a box
of 50 nodes taking turns; ``--pause 0`` gives the warm figures. The series is run
``--repeat`` (3) times; the minimum and the median of each stage are printed. Run from
another tree's root (``cd OTHER && python /this/tree/bench/delta_stages.py``), it measures
that tree: a before/after in one session (on a tree whose ``apply_batch`` made the JSON and
the digests, they count in **model** and **after** finds them made).

    .venv/bin/python bench/delta_stages.py [--pause 0.1] [--flips 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path.cwd()
sys.path.insert(0, str(ROOT))

from apply_bench import Snapshot  # noqa: E402
from node_flip import flip_body, topology  # noqa: E402

from slb.model import parse_config  # noqa: E402
from slb.model.delta import apply_batch, parse_batch  # noqa: E402
from slb.model.identity import keep_json  # noqa: E402
from slb.node.files import SnapshotEncoder, save_snapshot  # noqa: E402
from slb.proxy.context import ProxyContext  # noqa: E402

STAGES = ("validation", "model", "swap", "after")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--flip-groups", type=int, default=100)
    parser.add_argument("--flips", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pause", type=float, default=0.1,
                        help="seconds between flips (0: warm caches)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    snap = Snapshot(args.groups, args.members, "127.0.0.1:18080", [], 0)
    config = parse_config(topology(snap))
    config.content_hash()
    for group in config.groups:
        keep_json(group)  # as the node's state file has them
    ctx = ProxyContext(asyncio.new_event_loop(), config)
    rng = random.Random(args.seed)
    out: list[int] = []
    gc.collect()
    gc.freeze()  # as the node freezes its snapshot
    clock = time.process_time
    runs: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for _ in range(args.repeat):
        spent = dict.fromkeys(STAGES, 0.0)
        for _ in range(args.flips):
            snap.version = config.version  # (the body's base; its version one more)
            body = flip_body(snap, rng, args.flip_groups, out)
            time.sleep(args.pause)
            t0 = clock()
            batch = parse_batch(body)
            t1 = clock()
            config, groups = apply_batch(config, batch)
            t2 = clock()
            ctx.apply_groups(config, groups)
            t3 = clock()
            for group in groups:
                keep_json(group)
            config.content_hash()
            t4 = clock()
            for stage, took in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                spent[stage] += took
        for stage in STAGES:
            runs[stage].append(spent[stage] / args.flips * 1e6)
    print(f"{ROOT.name}: us of CPU per {args.flip_groups}-group flip ({args.flips} flips x "
          f"{args.repeat}, {args.pause} s between flips): min / median")
    for stage in STAGES:
        print(f"  {stage:<11} {min(runs[stage]):7.0f} / {statistics.median(runs[stage]):7.0f}")
    before = [sum(r) for r in zip(*(runs[s] for s in STAGES[:3]), strict=True)]
    whole = [sum(r) for r in zip(*(runs[s] for s in STAGES), strict=True)]
    print(f"  {'before the traffic has it':<27} {min(before):7.0f} / "
          f"{statistics.median(before):7.0f}")
    print(f"  {'the whole flip':<27} {min(whole):7.0f} / {statistics.median(whole):7.0f}")
    encoder = SnapshotEncoder()
    writes = []
    with tempfile.TemporaryDirectory() as state_dir:
        save_snapshot(state_dir, config, 1, encoder)  # (what every later write reuses)
        for _ in range(args.repeat):
            time.sleep(args.pause)
            t0 = clock()
            save_snapshot(state_dir, config, 1, encoder)
            writes.append((clock() - t0) * 1e6)
    print(f"  {'a state file write':<27} {min(writes):7.0f} / {statistics.median(writes):7.0f}")


if __name__ == "__main__":
    main()
