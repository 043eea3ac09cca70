"""Where a proxy spends its time: a py-spy profile under wrk load and syscalls per request.

``bench/profile.sh`` (which installs py-spy into the venv and strace with apt-get) runs
``bench.py --profile``, which lands here:

1. py-spy. The proxy (``--target``, SLB with every feature as in config/slb.yaml by default, or
   the reference proxy) serves wrk at c=``--connections`` on ``--path``; ``py-spy record``
   samples its busiest process (SLB's worker) from the load CPU for ``--duration`` seconds,
   with C frames too under ``--native``. The speedscope file and collapsed stacks go to
   bench/out/, the top functions by own time, own time per line and total time are printed.
2. ``strace -c -f`` attached to the busiest process of SLB and of the reference proxy in
   turn, while openloop sends exactly ``--strace-requests`` requests at a low fixed rate over
   10 connections: the count of each system call divided by the requests. A syscall more per
   request than the reference is a finding to explain.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import openloop
from harness import (
    OUT_DIR,
    PY_SPY,
    Bench,
    BenchError,
    Service,
    check_target,
    cpu_ticks,
    pct,
    pinned,
    say,
)
from targets import Targets

STRACE_RATE = 1000.0  # requests/s: low enough that the traced proxy (ptrace stops) keeps up
STRACE_CONNECTIONS = 10
SETTLE_SECONDS = 6.0  # longer than the pool's idle timeout (timeouts.idle, 4 s)


def busiest_process(bench: Bench, svc: Service, port: int, path: str) -> int:
    """The pid of svc's tree that worked most during one second of wrk (SLB's worker)."""
    pids = svc.refresh()
    before = {pid: cpu_ticks([pid]) for pid in pids}
    bench.wrk(port, 1, bench.args.connections, path)
    return max(pids, key=lambda pid: cpu_ticks([pid]) - before[pid])


def profile(bench: Bench) -> dict[str, Any]:
    """py-spy of --target under wrk, then syscalls per request of SLB and of the reference."""
    a = bench.args
    if not PY_SPY.exists():
        raise BenchError(f"{PY_SPY} missing: run bench/profile.sh (it installs py-spy)")
    bench.backend_services = bench.start_backends()
    targets = Targets(bench)
    started = {name: targets.start(name) for name in ("slb", "ref")}
    for name, (_, port) in started.items():
        check_target(name, port, expect_spread=True, paths=(a.path,))
    result = {"target": a.target, "path": a.path, "py_spy": py_spy(bench, *started[a.target])}
    if a.strace_requests > 0:
        result["strace"] = {name: strace_count(bench, name, *started[name])
                            for name in ("slb", "ref")}
        print_strace(result["strace"])
    return result


def py_spy(bench: Bench, svc: Service, port: int) -> dict[str, Any]:
    """Record the busiest process of ``svc`` with `py-spy record` while wrk drives it; save
    speedscope and collapsed stacks and rank functions by own and total time."""
    a = bench.args
    busiest = busiest_process(bench, svc, port, a.path)
    speedscope = OUT_DIR / f"profile-{bench.stamp}.speedscope.json"
    # py-spy samples from the load CPU so that the proxy keeps CPU 1 to itself
    spy_argv = [str(PY_SPY), "record", "--pid", str(busiest), "--rate", str(a.rate),
                "--duration", str(int(a.duration) + 1), "--format", "speedscope",
                "--output", str(speedscope)]
    if a.nonblocking:
        spy_argv.append("--nonblocking")
    if a.native:
        spy_argv.append("--native")
    spy = Service("py-spy", pinned(spy_argv, bench.load_cpu), bench.work / "py-spy.log")
    bench.services.append(spy)
    spy.start()
    time.sleep(0.5)  # let it attach
    if not spy.alive():
        raise BenchError(f"py-spy failed to attach: see {spy.log}")
    say(f"  py-spy recording pid {busiest} of {svc.name} at {a.rate} Hz for {a.duration:g}s "
        f"of load on {a.path}")
    run = bench.measure(svc.name, svc, port, a.path)
    assert spy.popen is not None
    try:
        spy.popen.wait(timeout=30)
    except subprocess.TimeoutExpired:
        raise BenchError(f"py-spy did not finish: see {spy.log}") from None
    if not speedscope.exists():
        raise BenchError(f"py-spy wrote no profile: see {spy.log}")
    say(f"  under py-spy: {run['rps']:,.0f} req/s, p99 {run['p99_ms']:.2f} ms, "
        f"proxy CPU {pct(run['proxy_cpu_pct'])}")
    spy_summary = spy.log.read_text(errors="replace").strip().splitlines()
    samples, own, total, lines = aggregate_speedscope(json.loads(speedscope.read_text()),
                                               bench.work / "profile.collapsed")
    collapsed = OUT_DIR / f"profile-{bench.stamp}.collapsed.txt"
    (bench.work / "profile.collapsed").replace(collapsed)
    say("")
    if not samples:
        raise BenchError(f"py-spy recorded no samples: see {spy.log}")
    say(next((line for line in spy_summary if "Samples:" in line), ""))
    say(f"{samples} samples of {svc.name}'s busiest process (py-spy leaves out those it sees "
        "idle). "
        + ("Native frames included." if a.native else
           "Python frames only: a function's own time includes the C it calls (transport.write "
           "= the send() syscall); Runner.run's own time is uvloop's loop itself (epoll, recv, "
           "callback dispatch)."))
    # the event loop's own frames are in (nearly) every sample: they say nothing
    below_loop = Counter({f: n for f, n in total.items() if n < 0.95 * samples})
    for title, counts in (("own time (the function itself)", own),
                          ("own time, by source line", lines),
                          ("total time (the function and what it calls; frames in 95% or "
                           "more of the samples, the loop's, left out)", below_loop)):
        say("")
        say(f"top {a.top} by {title}:")
        say(f"{'%':>6}  {'samples':>7}  function")
        for func, n in counts.most_common(a.top):
            say(f"{100 * n / samples:6.1f}  {n:7d}  {func}")
    say("")
    say(f"speedscope file: {speedscope} (open in https://www.speedscope.app)")
    say(f"collapsed stacks: {collapsed} (flamegraph.pl or speedscope)")
    return {"run": run, "samples": samples, "speedscope": str(speedscope),
            "collapsed": str(collapsed),
            "own": [[f, n] for f, n in own.most_common(50)],
            "own_lines": [[f, n] for f, n in lines.most_common(50)],
            "total": [[f, n] for f, n in total.most_common(50)]}


def aggregate_speedscope(doc: dict[str, Any], collapsed_path: Path
                         ) -> tuple[int, Counter[str], Counter[str], Counter[str]]:
    """Sample counts over every thread: own time per function, inclusive time per function,
    own time per source line."""
    frames = doc["shared"]["frames"]
    names = []
    for fr in frames:
        where = Path(fr.get("file") or "?").name
        line = fr.get("line")
        names.append(f"{fr['name']} ({where}{f':{line}' if line else ''})")
    # own time grouped by function, not by line: strip the line for the key
    funcs = [f"{fr['name']} ({Path(fr.get('file') or '?').name})" for fr in frames]
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    stacks: Counter[str] = Counter()
    samples = 0
    for prof in doc["profiles"]:
        # stacks are root first; weights are seconds (1/rate each), so count samples instead
        for stack in prof["samples"]:
            if not stack:
                continue
            n = 1
            samples += n
            own[funcs[stack[-1]]] += n
            lines[names[stack[-1]]] += n
            for f in {funcs[i] for i in stack}:
                total[f] += n
            stacks[";".join(names[i] for i in stack)] += n
    with open(collapsed_path, "w") as f:
        for stack_key, n in stacks.most_common():
            f.write(f"{stack_key} {n}\n")
    return samples, own, total, lines



def strace_count(bench: Bench, name: str, svc: Service, port: int) -> dict[str, Any]:
    """`strace -c -f` on the busiest process of ``svc`` over exactly --strace-requests
    requests: every syscall's count and its count per request."""
    a = bench.args
    if shutil.which("strace") is None:
        raise BenchError("strace missing: run bench/profile.sh (it installs strace)")
    # Settle first at the traced load: SLB closes pooled upstream connections idle for 4 s
    # (config/slb.yaml), so after the py-spy run at c=50 it would close the extras under strace
    # and count those closes as per-request work. The busiest process is found meanwhile.
    pids = svc.refresh()
    before = {pid: cpu_ticks([pid]) for pid in pids}
    openloop.run(port, a.path, STRACE_RATE, STRACE_CONNECTIONS, SETTLE_SECONDS, 0,
                 bench.load_cpu, bench.work / "openloop.txt")
    pid = max(pids, key=lambda p: cpu_ticks([p]) - before[p])
    summary = bench.work / f"strace-{name}.txt"
    tracer = Service(f"strace-{name}", ["strace", "-c", "-f", "-p", str(pid), "-o", str(summary)],
                     bench.work / f"strace-{name}.log")
    bench.services.append(tracer)
    tracer.start()
    deadline = time.monotonic() + 10
    while "attached" not in tracer.log.read_text(errors="replace"):
        if time.monotonic() > deadline or not tracer.alive():
            raise BenchError(f"strace did not attach to {pid}: see {tracer.log}")
        time.sleep(0.05)
    seconds = a.strace_requests / STRACE_RATE
    res = openloop.run(port, a.path, STRACE_RATE, STRACE_CONNECTIONS, seconds, 0,
                       bench.load_cpu, bench.work / "openloop.txt")
    assert tracer.popen is not None
    tracer.popen.send_signal(signal.SIGINT)  # strace detaches and writes its summary
    try:
        tracer.popen.wait(timeout=15)
    except subprocess.TimeoutExpired:
        raise BenchError(f"strace did not stop: see {tracer.log}") from None
    requests = res["completed"]
    if requests != a.strace_requests or res["errors"]:
        raise BenchError(f"strace run of {name}: {requests} of {a.strace_requests} answered, "
                         f"{res['errors']} errors")
    calls = parse_strace_summary(summary.read_text())
    return {"pid": pid, "requests": requests, "calls": dict(calls.most_common()),
            "per_request": {k: round(v / requests, 3) for k, v in calls.most_common()},
            "total_per_request": round(sum(calls.values()) / requests, 2),
            "summary_file": str(summary)}


def parse_strace_summary(text: str) -> Counter[str]:
    """{syscall: calls} from `strace -c` output (the 'total' row left out)."""
    calls: Counter[str] = Counter()
    for line in text.splitlines():
        parts = line.split()
        # "% time  seconds  usecs/call  calls  [errors]  syscall"
        if len(parts) in (5, 6) and parts[3].isdigit() and parts[-1] != "total":
            calls[parts[-1]] += int(parts[3])
    return calls


def print_strace(counts: dict[str, dict[str, Any]]) -> None:
    say("")
    names = list(counts)
    say(f"System calls per request (strace -c -f over {counts[names[0]]['requests']} requests, "
        f"busiest process; {STRACE_CONNECTIONS} keep-alive connections at "
        f"{STRACE_RATE:.0f}/s):")
    syscalls = sorted({k for c in counts.values() for k in c["per_request"]},
                      key=lambda k: -max(c["per_request"].get(k, 0) for c in counts.values()))
    say(f"{'syscall':<18}" + "".join(f"{n:>10}" for n in names))
    for sc in syscalls:
        say(f"{sc:<18}" + "".join(f"{counts[n]['per_request'].get(sc, 0):>10.3f}"
                                  for n in names))
    say(f"{'total':<18}" + "".join(f"{counts[n]['total_per_request']:>10.2f}" for n in names))
