"""Kernel time per request: SLB against the reference proxy, and what the kernel does for each.

    .venv/bin/python bench/kernel_cost.py [--rounds 3] [--duration 5] [--cases small,16k]
                                          [--workers 1] [--syscalls] [--no-netns]
                                          [--ref-burn US] [--before DIR]

Theory of operation. The set-up of ``bench.py`` (two nginx backends and wrk on CPU 0, each proxy
pinned to CPU 1, ``harness.py`` and ``targets.py``), for two targets only: ``slb`` (every
feature of config/slb.yaml) and ``ref`` (reference_proxy.py). For each round, case and target,
one ``wrk -t1 -c50`` run; around it, for every process of the proxy's tree, from /proc:

- ``utime`` and ``stime`` (clock ticks: 10 ms, i.e. about 0.2 us per request over a 5 s run at
  10,000 req/s): user and kernel microseconds per request, and requests per CPU-second;
- minor page faults (``minflt``) and context switches (voluntary, involuntary; every thread):
  per request;
- TCP segments sent and received (``/proc/net/snmp`` ``OutSegs``, ``InSegs``), per request:
  every hop of the request counted (client -> proxy -> backend and back, ACKs included);
- the peers' sleeps: voluntary context switches of wrk (``RUSAGE_CHILDREN``) and of the nginx
  backends, per request. A peer that sleeps is woken by the proxy's next write to it, and on
  loopback that wake-up is paid in the proxy's system call: on a loaded machine, most of the
  difference between SLB and the reference (bench/README.md, "Kernel time per request").

``--ref-burn US`` adds ``ref-burn``: the reference proxy spinning US microseconds of user CPU
per request (``reference_proxy.py --burn-us``): a proxy as slow as SLB in user space and as
plain as the reference in everything it asks of the kernel.

``--before DIR`` adds a target, ``slb-before``: the same SLB from the ``slb`` package in
DIR (e.g. ``git archive main slb | tar -x -C DIR``), run with this venv, for a before/after in
one session: interleaved in the same rounds, under the same load.

The segment counters are the network namespace's, so the script re-runs itself in a private
one (``unshare --net``, as root; ``--no-netns`` to stay) where only its own processes send
anything: on a shared machine other people's loopback traffic would otherwise be counted.

``--syscalls`` adds one run per case and target under ``perf stat`` (tracepoint counts of the
system calls that carry a request, per request at full load: a low-rate ``strace -c`` sees one
event-loop wake-up per request, a loaded proxy handles many per ``epoll_wait``). That run is not
used for the CPU figures: counting tracepoints costs kernel time itself.

Figures are medians over rounds; the ratio SLB/ref of each figure per round, then the median.
Output: a table on stdout and ``bench/out/kernel-<time>.json``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from harness import (
    HOST,
    TICKS,
    Bench,
    BenchError,
    Service,
    check_target,
    free_ports,
    interrupt_on_signals,
    ratio,
    run_reported,
    save_result,
    say,
    slb_missing,
    stat_fields,
)
from targets import REFERENCE, Targets, slb_config

CASES = {"small": "/small", "16k": "/16k"}
TARGETS = ("slb", "ref", "slb-before", "ref-burn")
NETNS_ENV = "SLB_KERNEL_COST_NETNS"
# The system calls that carry a request, counted by --syscalls (perf tracepoints).
SYSCALLS = ("epoll_wait", "epoll_pwait", "epoll_ctl", "read", "recvfrom", "write", "writev",
            "sendto", "sendmsg", "accept4", "close", "connect")
ROW = "{:<12} {:<5} {:>7} {:>7} {:>7} {:>9} {:>8} {:>7} {:>7} {:>7} {:>9} {:>10}"


def proc_counters(pids: list[int]) -> dict[str, int]:
    """utime, stime (ticks), minflt and context switches summed over ``pids`` (all threads)."""
    out = {"utime": 0, "stime": 0, "minflt": 0, "vcs": 0, "ivcs": 0}
    for pid in pids:
        fields = stat_fields(pid)  # (one read per pid: the counters of one moment)
        if fields is None:
            continue
        out["minflt"] += int(fields[7])  # fields from 3 (state) on: minflt is 10 (proc(5))
        out["utime"] += int(fields[11])
        out["stime"] += int(fields[12])
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    out["vcs"] += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    out["ivcs"] += int(line.split()[1])
    return out


def tcp_counters() -> dict[str, int]:
    """This network namespace's TCP counters (/proc/net/snmp): segments in and out."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()
             if line.startswith("Tcp:")]
    table = dict(zip(lines[0][1:], lines[1][1:], strict=True))
    return {"out_segs": int(table["OutSegs"]), "in_segs": int(table["InSegs"]),
            "retrans": int(table["RetransSegs"])}


def measure(bench: Bench, name: str, svc: Service, port: int, path: str) -> dict[str, Any]:
    """One wrk run against ``name``: per-request kernel figures of its process tree."""
    pids = svc.refresh()
    backends = [pid for b in bench.backend_services for pid in b.refresh()]
    per_pid0 = {pid: proc_counters([pid]) for pid in pids}
    p0, t0, b0 = proc_counters(pids), tcp_counters(), proc_counters(backends)
    wrk0 = resource.getrusage(resource.RUSAGE_CHILDREN).ru_nvcsw
    res = bench.wrk(port, bench.args.duration, bench.args.connections, path)
    wrk1 = resource.getrusage(resource.RUSAGE_CHILDREN).ru_nvcsw
    p1, t1, b1 = proc_counters(pids), tcp_counters(), proc_counters(backends)
    n = res["requests"]
    if not n:
        raise BenchError(f"{name}: wrk got no answer")
    errors = wrk_errors(bench, name, path, res)
    us = 1e6 / TICKS / n
    cpu_s = (p1["utime"] + p1["stime"] - p0["utime"] - p0["stime"]) / TICKS
    # (SLB with --workers >= 1 is a supervisor and workers: is the supervisor woken at all?)
    processes = {str(pid): round(
        (proc_counters([pid])["utime"] + proc_counters([pid])["stime"]
         - c["utime"] - c["stime"]) / TICKS, 2) for pid, c in per_pid0.items()}
    return {
        "target": name, "requests": n, "rps": n / (res["duration_us"] / 1e6),
        "errors": errors,
        "user_us": (p1["utime"] - p0["utime"]) * us,
        "sys_us": (p1["stime"] - p0["stime"]) * us,
        "req_per_cpu_s": n / cpu_s if cpu_s else None,
        "out_segs": (t1["out_segs"] - t0["out_segs"]) / n,
        "in_segs": (t1["in_segs"] - t0["in_segs"]) / n,
        "retrans": t1["retrans"] - t0["retrans"],
        "minflt": (p1["minflt"] - p0["minflt"]) / n,
        "vcs": (p1["vcs"] - p0["vcs"]) / n,
        "ivcs": (p1["ivcs"] - p0["ivcs"]) / n,
        "wrk_sleeps": (wrk1 - wrk0) / n,
        "backend_sleeps": (b1["vcs"] - b0["vcs"]) / n,
        "cpu_s_by_pid": processes,
    }


def wrk_errors(bench: Bench, name: str, path: str, res: dict[str, Any]) -> int:
    """0, or a BenchError: a target that answered errors is not measured, it is broken."""
    errors = {k: res[k] for k in ("connect", "read", "write", "timeout", "status") if res[k]}
    if errors:
        raise BenchError(f"{name}: errors from wrk on {path}: "
                         + ", ".join(f"{k} {v}" for k, v in errors.items())
                         + f" (status: non-2xx answers); see {bench.work / 'wrk.txt'} and "
                         f"{bench.work / (name + '.log')}")
    return 0


def syscall_counts(bench: Bench, name: str, svc: Service, port: int, path: str
                   ) -> dict[str, float]:
    """System calls per request at full load: ``perf stat`` tracepoint counts over a wrk run."""
    pids = svc.refresh()
    events = [f"syscalls:sys_enter_{call}" for call in SYSCALLS]
    out = bench.work / f"perf-{name}-{path.strip('/')}.csv"
    perf = subprocess.Popen(["perf", "stat", "-x", ",", "-o", str(out), "-e", ",".join(events),
                             "-p", ",".join(map(str, pids))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        time.sleep(0.5)  # perf attaches
        res = bench.wrk(port, bench.args.duration, bench.args.connections, path)
    finally:
        perf.send_signal(signal.SIGINT)  # perf prints its counts and leaves
        try:
            perf.wait(10)
        except subprocess.TimeoutExpired:
            perf.kill()
            perf.wait()
    counts: dict[str, float] = {}
    for line in out.read_text().splitlines():
        cols = line.split(",")
        if len(cols) > 2 and cols[2].startswith("syscalls:sys_enter_") and cols[0].isdigit():
            counts[cols[2].removeprefix("syscalls:sys_enter_")] = int(cols[0])
    wrk_errors(bench, name, path, res)
    n = res["requests"] or 1
    per_request = {call: count / n for call, count in counts.items() if count}
    per_request["total"] = sum(per_request.values())
    return per_request


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians per case and target, and the SLB/ref ratio of each figure (median of the
    same-round ratios)."""
    keys = ("rps", "user_us", "sys_us", "req_per_cpu_s", "out_segs", "in_segs", "minflt",
            "vcs", "ivcs", "wrk_sleeps", "backend_sleeps")
    out: dict[str, Any] = {}
    for case in CASES:
        here = [r for r in runs if r["case"] == case]
        if not here:
            continue
        per: dict[str, Any] = {}
        for name in TARGETS:
            mine = [r for r in here if r["target"] == name]
            if mine:
                per[name] = {k: statistics.median(r[k] for r in mine) for k in keys
                             if all(r[k] is not None for r in mine)}
        for label, den in (("slb/ref", "ref"), ("slb/before", "slb-before")):
            if den in per:  # (rounds without a figure or with a 0 denominator left out)
                ratios = {k: ratio(here, "slb", den, k, case) for k in keys}
                per[label] = {k: v for k, v in ratios.items() if v is not None}
        out[case] = per
    return out


def show(label: Any, case: str, r: dict[str, Any], ratios: bool = False) -> None:
    def f(key: str, spec: str) -> str:
        value = r.get(key)
        return "-" if value is None else format(value, ".2f" if ratios else spec)
    say(ROW.format(str(label), case, f("rps", ",.0f"), f("user_us", ".2f"), f("sys_us", ".2f"),
                   f("req_per_cpu_s", ",.0f"), f("out_segs", ".2f"), f("minflt", ".3f"),
                   f("vcs", ".3f"), f("ivcs", ".3f"), f("wrk_sleeps", ".3f"),
                   f("backend_sleeps", ".3f")))


def start_before(bench: Bench, tree: Path, workers: int) -> tuple[Service, int]:
    """SLB from the ``slb`` package in ``tree`` (``--before``), configured as ``slb``."""
    port, control = free_ports(2)
    backends = [f"{HOST}:{p}" for p in bench.ports.backends]
    path = bench.work / "slb-before.yaml"
    path.write_text(yaml.safe_dump(slb_config(f"{HOST}:{port}", f"{HOST}:{control}", backends,
                                              None), sort_keys=False))
    # (PYTHONPATH comes before the venv's editable install of this tree on sys.path)
    argv = ["env", f"PYTHONPATH={tree}", sys.executable, "-m", "slb", "proxy", "-c", str(path),
            "--log-level", "warning", "--workers", str(workers)]
    return bench.launch("slb-before", argv, bench.proxy_cpu, port), port


def run(bench: Bench, result: dict[str, Any]) -> int:
    a = bench.args
    cases = {c: CASES[c] for c in a.cases}
    say(f"kernel_cost: {a.rounds} rounds x {a.duration}s, wrk -t1 -c{a.connections}, "
        f"proxies on CPU {bench.proxy_cpu or 'any'}, "
        f"{'private network namespace' if os.environ.get(NETNS_ENV) else 'shared network'}, "
        f"load average {os.getloadavg()[0]:.2f}")
    bench.backend_services = bench.start_backends()
    targets = Targets(bench)
    started = {"slb": targets.start("slb", workers=a.workers), "ref": targets.start("ref")}
    if a.before:
        started["slb-before"] = start_before(bench, Path(a.before), a.workers)
    if a.ref_burn:
        (port,) = free_ports(1)
        argv = [sys.executable, str(REFERENCE), "--listen", f"{HOST}:{port}",
                "--burn-us", str(a.ref_burn)]
        for backend_port in bench.ports.backends:
            argv += ["--backend", f"{HOST}:{backend_port}"]
        started["ref-burn"] = bench.launch("ref-burn", argv, bench.proxy_cpu, port), port
    for name, (_, port) in started.items():
        check_target(name, port, True, paths=tuple(cases.values()))
    for _name, (_, port) in started.items():  # warm-up: pools filled, code paths taken
        bench.wrk(port, 1, a.connections)
    say(ROW.format("round", "case", "req/s", "user us", "sys us", "req/CPU-s", "segs/req",
                   "flt/req", "vcs/req", "ivcs/req", "wrk slp/r", "bknd slp/r"))
    runs = []
    for rnd in range(1, a.rounds + 1):
        for case, path in cases.items():
            for name, (svc, port) in started.items():
                svc.check_alive()
                r = measure(bench, name, svc, port, path)
                r.update(round=rnd, case=case)
                runs.append(r)
                show(f"{rnd} {name}", case, r)
    result["runs"] = runs
    result["summary"] = summary = summarise(runs)
    say("\nmedians")
    for case, per in summary.items():
        for name in (*TARGETS, "slb/ref", "slb/before"):
            if name in per:
                show(name, case, per[name], ratios="/" in name)
    if a.syscalls:
        if shutil.which("perf") is None:
            raise BenchError("--syscalls needs perf (linux-perf)")
        result["syscalls"] = calls = {}
        for case, path in cases.items():
            calls[case] = {name: syscall_counts(bench, name, svc, port, path)
                           for name, (svc, port) in started.items()}
            say(f"\nsystem calls per request at full load, {case} (perf stat)")
            names = sorted({c for per in calls[case].values() for c in per} - {"total"})
            for call in (*names, "total"):
                say(f"  {call:<11} " + "  ".join(
                    f"{name} {calls[case][name].get(call, 0):6.2f}" for name in started))
    result["load_average_end"] = os.getloadavg()
    say(f"load average at the end {os.getloadavg()[0]:.2f}; "
        f"{save_result('kernel', bench.stamp, result)}")
    return 0


def in_private_netns(argv: list[str]) -> None:
    """Re-run this script in a private network namespace with its loopback up (see the module
    docstring); returns only when it is already there or cannot be."""
    if os.environ.get(NETNS_ENV):
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        return
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        say("kernel_cost: not root: TCP segments are counted machine-wide (noisy)")
        return
    os.environ[NETNS_ENV] = "1"
    os.execvp("unshare", ["unshare", "--net", "--", sys.executable, __file__, *argv])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--cases", type=lambda s: s.split(","), default=list(CASES),
                    help="comma-separated: small,16k")
    ap.add_argument("--workers", type=int, default=1, help="SLB's --workers (0: no supervisor)")
    ap.add_argument("--syscalls", action="store_true",
                    help="also count system calls per request at full load (perf stat)")
    ap.add_argument("--no-netns", action="store_true",
                    help="stay in this network namespace (segments counted machine-wide)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    ap.add_argument("--ref-burn", type=float, default=0.0, metavar="US",
                    help="also run the reference proxy spinning US us per request (ref-burn)")
    ap.add_argument("--before", type=Path, metavar="DIR",
                    help="also run SLB from DIR/slb as slb-before (a before/after in one run)")
    args = ap.parse_args(argv)
    unknown = set(args.cases) - set(CASES)
    if (unknown or args.rounds < 1 or args.duration < 1 or args.workers < 0
            or not 0 <= args.ref_burn <= 1000):
        ap.error(f"bad option: cases must be among {', '.join(CASES)}, rounds >= 1, "
                 "duration >= 1, workers >= 0, ref-burn 0-1000 us")
    if args.before is not None:
        args.before = str(args.before.resolve())  # (kept in the result's JSON)
        if not (Path(args.before) / "slb" / "__init__.py").is_file():
            ap.error(f"--before {args.before}: no slb package there")
    if slb_missing():
        return 2
    if not args.no_netns:
        in_private_netns(argv)
    interrupt_on_signals()
    bench = Bench(args)
    result: dict[str, Any] = bench.result_head({"proxy": bench.proxy_cpu,
                                                "load": bench.load_cpu})
    return run_reported("kernel_cost", bench, result, lambda: run(bench, result))


if __name__ == "__main__":
    sys.exit(main())
