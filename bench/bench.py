"""`make bench`: SLB against a featureless Python proxy and nginx, on 127.0.0.1, in one run.

Theory of operation. Two nginx backends serve ``/small`` (100 bytes) and ``/16k`` (16 KiB). In
front of them, side by side and all pinned to CPU 1 (wrk, the generator and the backends on
CPU 0): SLB with every feature of config/slb.yaml (access log off: ``slb``, then on:
``slb-log``), the reference proxy (bench/reference_proxy.py: ``ref``), nginx at its best
(``nginx-best``) and nginx doing SLB's work (``nginx-same``); see targets.py. Each is checked
first (exact bodies, both backends used). Then, in this order:

1. Throughput: interleaved rounds (for each round, each case, each target) of
   ``wrk -t1 -c50``; per run requests/s, p50/p99/p99.9 and requests per proxy CPU-second
   (utime+stime of the proxy's process tree from /proc). Medians per target and case, and the
   median of the same-round ratios SLB/ref, SLB/nginx-best, SLB/nginx-same.
2. Open-loop latency: openloop.c at half of each target's median peak (small case), latency
   counted from each request's scheduled send: p99 and p99.9 without coordinated omission.
   Its own limit: the same generator straight at a backend at the highest rate used and
   twice that.
3. Memory: proxy RSS with ``--idle`` (10,000) idle keep-alive client connections over the
   baseline, in KB per connection (memory.py), for SLB, the reference and nginx.
4. Multi-core: SLB ``--workers 2`` against nginx-best with 2 workers, nothing pinned.

Results: a table on stdout, bench/out/bench-<time>.json (and bench-latest.json). With
``--profile``: profiling.py instead. Every process started is stopped at the end, also on
errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import memory
import openloop
import profiling
from harness import (
    BACKEND_NAMES,
    BODIES,
    ROOT,
    Bench,
    Service,
    check_target,
    interrupt_on_signals,
    median,
    num,
    pct,
    ratio,
    run_reported,
    save_result,
    say,
    slb_missing,
)
from targets import Targets

TARGETS = ("slb", "slb-log", "ref", "nginx-best", "nginx-same")
CASES = {"small": "/small", "16k": "/16k"}
# The targets (a benchmark, not a timed test).
TARGET_REF_RATIO = 0.9          # SLB req/CPU-s >= 0.9 x the reference proxy's
TARGET_NGINX_RATIO = 0.6        # SLB req/CPU-s >= 0.6 x nginx at its best
TARGET_P99_MS = 2.0             # wrk, c=50
TARGET_P999_MS = 3.0            # open loop at half of the peak rate
TARGET_IDLE_MB_PER_10K = 40.0   # RSS for 10,000 idle keep-alive connections
GENERATOR_LAG_MS = 0.5          # above this the open-loop generator, not the proxy, was late
ROW = "{:>5}  {:<5}  {:<10}  {:>8}  {:>6}  {:>6}  {:>7}  {:>9}  {:>9}  {:>6}"


# ------------------------------------------------------------------------------ phases

def throughput(bench: Bench, started: dict[str, tuple[Service, int]]) -> list[dict[str, Any]]:
    a = bench.args
    say("")
    say(ROW.format("round", "case", "target", "req/s", "p50 ms", "p99 ms", "p99.9ms",
                   "proxy CPU", "req/CPU-s", "errors"))
    runs = []
    for rnd in range(1, a.rounds + 1):
        for case, path in CASES.items():
            for name, (svc, port) in started.items():
                if svc is not None:
                    svc.check_alive()
                run = bench.measure(name, svc, port, path)
                run.update(round=rnd, case=case)
                runs.append(run)
                say(ROW.format(rnd, case, name, f"{run['rps']:,.0f}", f"{run['p50_ms']:.2f}",
                               f"{run['p99_ms']:.2f}", f"{run['p999_ms']:.2f}",
                               pct(run["proxy_cpu_pct"]), num(run["req_per_cpu_s"]),
                               run["socket_errors"] + run["non_2xx"]))
    return runs


def open_loop(bench: Bench, started: dict[str, tuple[Service, int]],
              peaks: dict[str, float]) -> dict[str, Any]:
    """Each target at half of its peak; then the generator alone against a backend."""
    a = bench.args
    log = bench.work / "openloop.txt"
    say("")
    say(f"Open loop (openloop.c): {a.ol_duration:g}s at half of each target's peak (small), "
        f"{a.connections} connections, latency from the scheduled send")
    fmt = "{:<10}  {:>8}  {:>9}  {:>6}  {:>6}  {:>7}  {:>7}  {:>9}  {:>7}"
    say(fmt.format("target", "rate/s", "achieved", "p50 ms", "p99 ms", "p99.9ms", "max ms",
                   "gen lag99", "kept up"))
    out: dict[str, Any] = {"targets": {}, "generator": []}

    def show(label: str, r: dict[str, Any]) -> None:
        say(fmt.format(label, f"{r['rate']:,.0f}", f"{r['achieved_rps']:,.0f}",
                       f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", f"{r['p999_ms']:.2f}",
                       f"{r['max_ms']:.2f}", f"{r['send_lag_p99_ms']:.2f}",
                       "yes" if r["kept_up"] else "NO"))

    for name, (_, port) in started.items():
        if name not in peaks:
            continue
        r = openloop.run(port, CASES["small"], peaks[name] / 2, a.connections, a.ol_duration,
                         a.warmup, bench.load_cpu, log)
        out["targets"][name] = r
        show(name, r)
    top = max(peaks.values()) / 2
    for rate in (top, 2 * top):
        r = openloop.run(bench.ports.backends[0], CASES["small"], rate, a.connections,
                         min(a.ol_duration, 5), a.warmup, bench.load_cpu, log)
        out["generator"].append(r)
        show(f"direct {BACKEND_NAMES[0]}", r)
    return out


def idle_memory(bench: Bench, started: dict[str, tuple[Service, int]]) -> dict[str, Any]:
    a = bench.args
    say("")
    say(f"Memory: RSS of {a.idle:,} idle keep-alive client connections over the baseline")
    out = {}
    for name in ("slb", "ref", "nginx-best"):
        svc, port = started[name]
        r = memory.idle_connections(port, a.idle, svc.refresh())
        out[name] = r
        say(f"  {name:<10} {r['rss_before_kb'] / 1024:7.1f} MB -> {r['rss_after_kb'] / 1024:7.1f}"
            f" MB: {r['kb_per_connection']:.2f} KB per connection "
            f"({r['mb_total'] * 10_000 / a.idle:.1f} MB per 10,000)")
    return out


def two_workers(bench: Bench, targets: Targets) -> dict[str, Any]:
    """SLB --workers 2 against nginx-best with 2 workers, nothing pinned (backends too)."""
    a = bench.args
    say("")
    say("Multi-core: 2 workers each, nothing pinned (wrk and backends share both CPUs)")
    for svc in bench.backend_services:
        for pid in svc.refresh():  # let the backends use both CPUs from now on
            subprocess.run(["taskset", "-a", "-p", "-c", "0-1", str(pid)], capture_output=True,
                           timeout=10, check=False)
    started = {name: targets.start(name, workers=2, cpu=False) for name in ("slb", "nginx-best")}
    for label, (_, port) in started.items():
        check_target(label, port, expect_spread=True)
        bench.wrk(port, a.warmup, a.connections, cpu=False)
    runs = []
    for rnd in range(1, a.rounds + 1):
        for name, (svc, port) in started.items():
            run = bench.measure(name, svc, port, CASES["small"], cpu=False)
            run["round"] = rnd
            runs.append(run)
            say(f"  round {rnd} {name:<10} {run['rps']:>9,.0f} req/s  p99 {run['p99_ms']:.2f} ms"
                f"  proxy CPU {pct(run['proxy_cpu_pct'])}  {num(run['req_per_cpu_s'])} req/CPU-s")
    return {"runs": runs, "ratio_rps": ratio(runs, "slb", "nginx-best", "rps"),
            "ratio_req_per_cpu_s": ratio(runs, "slb", "nginx-best", "req_per_cpu_s")}


# ------------------------------------------------------------------------------ figures

def summarize(runs: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    per: dict[str, Any] = {}
    for case in CASES:
        for name in names:
            rs = [r for r in runs if r["target"] == name and r["case"] == case]
            m = {k: median([r[k] for r in rs]) for k in (
                "rps", "p50_ms", "p99_ms", "p999_ms", "proxy_cpu_pct", "req_per_cpu_s",
                "upstream_connects", "backends_cpu_pct", "wrk_cpu_pct")}
            m["errors"] = sum(r["socket_errors"] + r["non_2xx"] for r in rs)
            m["cpu1_busy_pct"] = median([r["cpus"].get("cpu1", {}).get("busy") for r in rs])
            per[f"{case}/{name}"] = m
    ratios = {case: {f"{n}/{d}": ratio(runs, n, d, "req_per_cpu_s", case)
                     for n in ("slb", "slb-log")
                     for d in ("ref", "nginx-best", "nginx-same") if n in names and d in names}
              for case in CASES}
    return {"medians": per, "req_per_cpu_s_ratios": ratios}


def verdict(result: dict[str, Any]) -> dict[str, bool | None]:
    s, ol, mem = result["summary"], result.get("open_loop", {}), result.get("memory", {})
    r = s["req_per_cpu_s_ratios"]

    def at_least(key: str, bar: float) -> bool | None:
        vals = [r[c].get(key) for c in CASES]
        return None if None in vals else all(v >= bar for v in vals)  # type: ignore[operator]

    slb_ol = ol.get("targets", {}).get("slb")
    return {
        "slb/ref >= 0.9 (both cases)": at_least("slb/ref", TARGET_REF_RATIO),
        "slb/nginx-best >= 0.6 (both cases)": at_least("slb/nginx-best", TARGET_NGINX_RATIO),
        "slb p99 <= 2 ms at c=50 (both cases)": all(
            s["medians"][f"{c}/slb"]["p99_ms"] <= TARGET_P99_MS for c in CASES),
        "slb open-loop p99.9 <= 3 ms at half peak": None if slb_ol is None
        else slb_ol["p999_ms"] <= TARGET_P999_MS and slb_ol["kept_up"],
        "slb idle memory <= 40 MB per 10,000": None if "slb" not in mem
        else mem["slb"]["mb_total"] * 10_000 / mem["slb"]["connections"]
        <= TARGET_IDLE_MB_PER_10K,
        "slb no errors": all(s["medians"][f"{c}/slb"]["errors"] == 0 for c in CASES),
    }


def print_summary(result: dict[str, Any]) -> None:
    s = result["summary"]
    say("")
    say(f"Medians over {result['options']['rounds']} rounds (wrk -t1 -c"
        f"{result['options']['connections']}):")
    fmt = "{:<5}  {:<10}  {:>8}  {:>6}  {:>6}  {:>7}  {:>9}  {:>9}  {:>9}  {:>6}"
    say(fmt.format("case", "target", "req/s", "p50 ms", "p99 ms", "p99.9ms", "proxy CPU",
                   "req/CPU-s", "upstr.con", "errors"))
    for key, m in s["medians"].items():
        case, name = key.split("/")
        say(fmt.format(case, name, num(m["rps"]), num(m["p50_ms"], ".2f"),
                       num(m["p99_ms"], ".2f"), num(m["p999_ms"], ".2f"),
                       pct(m["proxy_cpu_pct"]), num(m["req_per_cpu_s"]),
                       num(m["upstream_connects"]), m["errors"]))
    others = [m["cpu1_busy_pct"] - m["proxy_cpu_pct"] for m in s["medians"].values()
              if m["cpu1_busy_pct"] is not None and m["proxy_cpu_pct"] is not None]
    if result["pinning"]["proxy"] == "1" and others and max(others) > 10:
        say(f"note: something else kept CPU 1 up to {max(others):.0f}% busy beside the proxy "
            "(other processes, or loopback work of wrk/backends): absolute figures and latencies "
            "are noisy; the same-round ratios hold better")
    lags = [r["send_lag_p99_ms"] for r in result.get("open_loop", {}).get("targets", {}).values()]
    if lags and max(lags) > GENERATOR_LAG_MS:
        say(f"note: the open-loop generator itself sent late (lag p99 up to {max(lags):.2f} ms): "
            "CPU 0 was contended and the open-loop latencies are upper bounds")
    say("")
    say("Requests per proxy CPU-second, ratios (median of same-round ratios):")
    for case, rs in s["req_per_cpu_s_ratios"].items():
        say(f"  {case:<5}  " + "   ".join(f"{k} {num(v, '.2f')}" for k, v in rs.items()))
    if "two_workers" in result:
        w = result["two_workers"]
        say(f"  2 workers (small, unpinned): slb/nginx-best req/s {num(w['ratio_rps'], '.2f')}, "
            f"req/CPU-s {num(w['ratio_req_per_cpu_s'], '.2f')}")
    say("")
    say("Targets (issue 11):")
    for what, ok in result["verdict"].items():
        say(f"  {what}: {'-' if ok is None else 'MET' if ok else 'MISSED'}")


# ------------------------------------------------------------------------------ main

def compare(bench: Bench) -> dict[str, Any]:
    a = bench.args
    say(f"SLB vs reference proxy vs nginx on 127.0.0.1: {a.rounds} rounds x {a.duration:g}s per "
        f"case ({', '.join(f'{c} {len(BODIES[p])} B' for c, p in CASES.items())}), wrk -t1 "
        f"-c{a.connections}; " + ("proxies on CPU 1, load on CPU 0" if bench.pin else "unpinned"))
    say(f"output: {bench.work}")
    openloop.build()
    bench.backend_services = bench.start_backends()
    targets = Targets(bench)
    started: dict[str, tuple[Any, int]] = {
        name: targets.start(name, workers=a.slb_workers if name.startswith("slb") else 1)
        for name in TARGETS}
    if a.direct:
        started["direct"] = (None, bench.ports.backends[0])
    for name, (svc, port) in started.items():
        check_target(name, port, expect_spread=svc is not None, paths=tuple(CASES.values()))
    if a.warmup > 0:
        for _, port in started.values():
            bench.wrk(port, a.warmup, a.connections)
    result: dict[str, Any] = {"runs": throughput(bench, started)}
    result["summary"] = summarize(result["runs"], list(started))
    peaks = {name: result["summary"]["medians"][f"small/{name}"]["rps"]
             for name, (svc, _) in started.items() if svc is not None}
    result["open_loop"] = open_loop(bench, started, peaks)
    if a.idle > 0:
        result["memory"] = idle_memory(bench, started)
    if not a.no_workers:
        result["two_workers"] = two_workers(bench, targets)
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="bench/run.sh", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="a 1-2 minute smoke run: 1 round x 3 s, 2,000 idle connections")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--duration", type=float, default=8.0,
                    help="seconds of wrk per run (default 8)")
    ap.add_argument("--ol-duration", type=float, default=8.0,
                    help="seconds of open-loop load per target (default 8)")
    ap.add_argument("--connections", type=int, default=50,
                    help="keep-alive connections, wrk and open loop (default 50)")
    ap.add_argument("--warmup", type=float, default=1.0,
                    help="unrecorded seconds of load per target first (default 1; 0 = none)")
    ap.add_argument("--idle", type=int, default=10_000,
                    help="idle connections for the memory figure (default 10000; 0 = skip)")
    ap.add_argument("--no-workers", action="store_true", help="skip the 2-worker comparison")
    ap.add_argument("--direct", action="store_true",
                    help="also run wrk straight at one backend (the no-proxy limit)")
    ap.add_argument("--slb-workers", type=int, default=1,
                    help="slb proxy --workers for the pinned targets (default 1: one worker "
                         "under its supervisor, like nginx's master and worker)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes with taskset")
    ap.add_argument("--nginx-keepalive", type=int, default=256,
                    help="nginx upstream `keepalive` (one idle cache per worker; default 256)")
    ap.add_argument("--upstream-requests", type=int, default=1000,
                    help="nginx-same: requests per upstream connection (default 1000, SLB's)")
    ap.add_argument("--keepalive-requests", type=int, default=1000,
                    help="nginx-same: requests per client connection (default 1000, SLB's)")
    ap.add_argument("--strict", action="store_true", help="exit 3 when a target is missed")
    prof = ap.add_argument_group("profile (bench/profile.sh)")
    prof.add_argument("--profile", action="store_true",
                      help="profile --target under wrk and count syscalls instead of comparing")
    prof.add_argument("--target", choices=("slb", "ref"), default="slb", help="what py-spy records")
    prof.add_argument("--path", choices=tuple(CASES.values()), default="/small",
                      help="the URL the load asks for (default /small)")
    prof.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    prof.add_argument("--nonblocking", action="store_true",
                      help="py-spy --nonblocking: no pause per sample, but some torn stacks")
    prof.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    prof.add_argument("--top", type=int, default=15, help="functions to list")
    prof.add_argument("--strace-requests", type=int, default=5000,
                      help="requests counted under strace -c, SLB and reference (0 = skip)")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.ol_duration = 1, 3.0, 3.0
        args.warmup, args.idle = 1.0, min(args.idle, 2000)
    if args.rounds < 1 or args.duration <= 0 or args.ol_duration <= 0 or args.connections < 1:
        ap.error("--rounds, --duration, --ol-duration and --connections must be positive")
    if args.duration > 600 or args.ol_duration > 600:
        ap.error("--duration and --ol-duration are limited to 600 s")
    if args.idle < 0 or args.strace_requests < 0:
        ap.error("--idle and --strace-requests cannot be negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            print(f"{tool} not found: bash bench/run.sh installs it", file=sys.stderr)
            return 2
    if slb_missing():
        return 2
    limit = memory.raise_fd_limit(args.idle + 2048)  # before any proxy starts: they inherit it
    if args.idle + 100 > limit:
        print(f"bench: the fd limit is {limit}: --idle {args.idle} cannot fit", file=sys.stderr)
        return 2
    interrupt_on_signals()
    bench = Bench(args)
    result = bench.result_head({"proxy": bench.proxy_cpu, "load": bench.load_cpu})

    def body() -> int:
        if args.profile:
            result["profile"] = profiling.profile(bench)
            return 0
        result.update(compare(bench))
        result["verdict"] = verdict(result)
        print_summary(result)
        return 3 if args.strict and not all(result["verdict"].values()) else 0

    status = run_reported("bench", bench, result, body)
    end = Path("/proc/loadavg").read_text().split()[:3]
    result["loadavg_end"] = end
    say(f"load average (1, 5, 15 min): {' '.join(result['environment']['loadavg'])} at the "
        f"start, {' '.join(end)} at the end")
    out = save_result("profile" if args.profile else "bench", bench.stamp, result)
    say(f"result: {out.relative_to(ROOT)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
