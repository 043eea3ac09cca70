"""The request-path cost of issue 13's features: requests per proxy CPU-second, by variant.

The set-up of the other benchmarks (``harness.py``: two nginx backends, the SLB proxy with one
worker, wrk -t1 on 127.0.0.1, CPU time of the proxy read from /proc), reused rather than copied;
only the SLB configuration and wrk's request fields change between variants:

    plain   one route, group ``wrr``                         (the reference)
    when    the winning route has ``when`` (a header and a cookie that hold), a plain route of
            the same path behind it
    split   a 10/90 ``split`` across two groups over the same backends, with ``sticky_cookie``
    hash    the group balances by ``hash`` on ``cookie:session``

``--micro`` measures instead, in this process and without sockets, what each feature adds to
one request's path: a condition's evaluation, a hash key's extraction and a hash pick against a
smooth WRR pick (microseconds per call, ``timeit``).

Variants run in interleaved rounds (plain, when, split, hash, plain, ...) so machine drift hits
all alike; medians are reported with each variant's cost relative to ``plain``. Results go to
``bench/out/traffic-<time>.json``.

    .venv/bin/python bench/traffic_bench.py [--rounds 3] [--duration 5] [--connections 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness as base  # bench/harness.py: the shared set-up

VARIANTS = ("plain", "when", "split", "hash")
FIELDS = {  # what wrk sends with every request, per variant
    "plain": [],
    "when": ["x-canary: 1", "Cookie: canary=yes; session=abc"],
    "split": ["Cookie: session=abc"],
    "hash": ["Cookie: session=abc"],
}


def slb_config(variant: str, listen: str, control: str, backends: list[str]
               ) -> dict[str, Any]:
    """One virtual server and one group of both backends, changed as ``variant`` says."""
    group: dict[str, Any] = {
        "name": "backends", "algorithm": "wrr", "members": [{"address": b} for b in backends],
        # 64 idle connections per member: `hash` on one cookie sends every request to one
        # member, and 50 wrk connections must not make it reconnect
        "keepalive": {"max_idle": 64, "max_requests": 1000000}}
    routes: list[dict[str, Any]] = [{"match": "prefix", "path": "/", "group": "backends"}]
    groups = [group]
    if variant == "when":
        routes.append({"match": "prefix", "path": "/", "group": "backends",
                       "when": {"headers": {"x-canary": "1"}, "cookies": {"canary": "*"}}})
    elif variant == "split":
        groups.append({**group, "name": "backends-b"})
        routes = [{"match": "prefix", "path": "/", "sticky_cookie": "slb_split",
                   "split": [{"group": "backends", "weight": 10},
                             {"group": "backends-b", "weight": 90}]}]
    elif variant == "hash":
        group.update(algorithm="hash", hash_key="cookie:session")
    return {
        "control": {"listen": control},
        "http": {"keepalive_requests": 1000000, "drain_timeout": 1},
        "access_log": {"enabled": False},
        "virtual_servers": [{"name": "bench", "listen": listen, "default": True,
                             "routes": routes}],
        "groups": groups,
    }


class TrafficBench(base.Bench):
    variant = "plain"

    def wrk(self, port: int, seconds: float, connections: int, path: str = base.PATH,
            cpu: str | bool | None = True) -> dict[str, Any]:
        """The harness's wrk run, with the variant's request fields (wrk -H)."""
        whole = max(1, round(seconds))
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{whole}s", "--latency",
                "--timeout", "5s", "-s", str(self.wrk_script)]
        for line in FIELDS[self.variant]:
            argv += ["-H", line]
        argv = base.pinned([*argv, f"http://{base.HOST}:{port}{path}"], self.load_cpu)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30,
                              check=False)
        if done.returncode != 0:
            raise base.BenchError(f"wrk exited {done.returncode}: {done.stderr.strip()}")
        for line in done.stdout.splitlines():
            if line.startswith("SLBBENCH "):
                return dict(json.loads(line[len("SLBBENCH "):]))
        raise base.BenchError(f"no result line in wrk's output:\n{done.stdout}")

    def one(self, variant: str) -> dict[str, Any]:
        """Start SLB with ``variant``'s config, check it, measure it, stop it."""
        self.variant = variant
        port, control = base.free_ports(2)
        backends = [f"{base.HOST}:{p}" for p in self.ports.backends]
        path = self.work / f"{variant}.yaml"
        path.write_text(yaml.safe_dump(slb_config(variant, f"{base.HOST}:{port}",
                                                  f"{base.HOST}:{control}", backends)))
        argv = [str(base.SLB_BIN), "proxy", "-c", str(path), "--log-level", "warning",
                "--workers", "1"]
        svc = self.launch(variant, argv, self.proxy_cpu, port)
        try:
            base.check_target(variant, port, expect_spread=variant != "hash")
            result = self.measure(variant, svc, port)
        finally:
            svc.stop()
            self.services.remove(svc)
        if result["non_2xx"] or result["socket_errors"]:
            raise base.BenchError(f"{variant}: {result['non_2xx']} non-2xx, "
                                  f"{result['socket_errors']} socket errors")
        return result


def micro(calls: int = 200_000) -> dict[str, float]:
    """Microseconds per call of the pieces each variant adds (see the module docstring)."""
    import timeit

    from slb.balancing.balancer import WeightedRoundRobin
    from slb.balancing.hashing import ConsistentHash
    from slb.balancing.member import MemberState
    from slb.balancing.pool import KEY_COOKIE
    from slb.model.conditions import compile_when
    from slb.model.traffic import When
    from slb.proxy.actions import ExchangeView, hash_key
    from slb.proxy.exchange import Exchange
    from slb.proxy.fields import COLON, CRLF

    ex = Exchange(0.0)
    ex.url = base.PATH.encode()
    for name, value in ((b"Host", b"bench"), (b"User-Agent", b"wrk"), (b"x-canary", b"1"),
                        (b"Cookie", b"canary=yes; session=abc")):
        ex.parts += (name, COLON, value, CRLF)
    members = tuple(MemberState(f"10.0.0.{i}:80", f"10.0.0.{i}", 80) for i in range(2))
    wrr, ring = WeightedRoundRobin(members), ConsistentHash(members)
    when = compile_when(When(headers={"x-canary": "1"}, cookies={"canary": "*"}))
    assert when is not None
    pieces = {
        "wrr pick": lambda: wrr.pick((), 0.0, False),
        "hash pick": lambda: ring.pick_key(b"abc", (), 0.0, False),
        "hash key cookie:session": lambda: hash_key(ex, b"127.0.0.1", (KEY_COOKIE, b"session")),
        "when header+cookie": lambda: when.holds(ExchangeView(ex, b"127.0.0.1")),
    }
    return {name: timeit.timeit(call, number=calls) / calls * 1e6
            for name, call in pieces.items()}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    p.add_argument("--micro", action="store_true",
                   help="only the in-process cost of each piece, microseconds per call")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.micro:
        for name, us in micro().items():
            base.say(f"{name:24s} {us:6.2f} us")
        return 0
    if base.slb_missing():
        return 2
    bench = TrafficBench(args)
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    try:
        bench.backend_services = bench.start_backends()
        for round_ in range(args.rounds):
            for variant in VARIANTS:
                result = bench.one(variant)
                runs[variant].append(result)
                base.say(f"round {round_ + 1} {variant:6s} {result['rps']:9,.0f} req/s  "
                         f"{result['req_per_cpu_s'] or 0:9,.0f} req/CPU-s  "
                         f"p99 {result['p99_ms']:.2f} ms")
    except (base.BenchError, KeyboardInterrupt) as exc:
        base.say(f"traffic bench: {exc}")
        return 1
    finally:
        bench.stop_all()
    summary = {}
    reference = statistics.median(r["req_per_cpu_s"] for r in runs["plain"])
    base.say("\nvariant   req/CPU-s (median)   vs plain   extra us/request")
    for variant in VARIANTS:
        value = statistics.median(r["req_per_cpu_s"] for r in runs[variant])
        extra_us = 1e6 / value - 1e6 / reference
        summary[variant] = {"req_per_cpu_s": value, "ratio": value / reference,
                            "extra_us_per_request": extra_us}
        base.say(f"{variant:8s}  {value:18,.0f}   {value / reference:7.1%}   {extra_us:+8.1f}")
    out = base.OUT_DIR / f"traffic-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"options": vars(args), "summary": summary, "runs": runs},
                              indent=2))
    base.say(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
