"""What every benchmark here shares: processes, CPU accounting, nginx backends, wrk runs.

``bench.py`` (the proxy comparison), ``apply_bench.py`` and ``health_bench.py`` are scripts in
this folder; they import this module. A benchmark is a ``Bench``: it owns a work folder in
bench/out/, starts ``Service``s (each in its own session, so that stopping it stops its
children too), checks targets and drives them with wrk. CPU is counted from /proc
(utime+stime of a process tree between two readings), so a proxy that is not CPU-bound still
shows its cost per request. Every process a Bench started is stopped by ``run_reported``, also
on errors and on SIGINT/SIGTERM/SIGHUP (turned into ``Interrupted``).

The two nginx backends serve ``/small`` (100 bytes) and ``/16k`` (16 KiB) with an
``X-Backend: b1|b2`` header, and ``/bench-status`` (stub_status: connections accepted, to see
whether a proxy reuses its upstream connections).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "bench" / "out"
SLB_BIN = ROOT / ".venv" / "bin" / "slb"
PY_SPY = ROOT / ".venv" / "bin" / "py-spy"
HOST = "127.0.0.1"
TICKS = os.sysconf("SC_CLK_TCK")
BACKEND_NAMES = ("b1", "b2")
# The response bodies, by URL path: deterministic so that a check can compare bytes, the last
# byte a newline.
BODIES = {
    "/small": (b"slb-bench-0123456789-abcdefghijklmnopqrstuvwxyz-" * 3)[:99] + b"\n",
    "/16k": (b"slb-bench-16k-0123456789-abcdefghijklmnopqrstuvwxyz-" * 400)[:16383] + b"\n",
}
PATH = "/small"
BODY = BODIES[PATH]

# A done() hook only: no per-request Lua, so wrk stays as cheap as plain wrk.
WRK_SCRIPT = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('SLBBENCH {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
"""

# The head of every nginx.conf here (backends, targets, the TLS bench): {workers} processes.
NGINX_HEAD = """\
worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 16384; }}
"""

NGINX_BACKEND = NGINX_HEAD + """\
http {{
  access_log off;
  server_tokens off;
  sendfile on;
  open_file_cache max=16 inactive=600s;
  keepalive_timeout 300s;
  keepalive_requests 1000000;
  default_type text/plain;
  server {{
    listen {host}:{port} backlog=4096;
    root {www};
    location / {{ add_header X-Backend {name} always; }}
    location = /bench-status {{ stub_status; }}
  }}
}}
"""

class Interrupted(Exception):
    """SIGINT/SIGTERM/SIGHUP arrived: stop everything and leave."""


SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class BenchError(Exception):
    """A setup or correctness problem; the message says what to look at."""


# ------------------------------------------------------------------------------ processes

def stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()  # fields from 3 (state) on; comm may hold spaces


def nginx_argv(d: Path, conf: str) -> list[str]:
    """nginx in the foreground on ``conf``, written to d/nginx.conf (``d``, its prefix, made
    if missing: pid file and error log go there)."""
    d.mkdir(exist_ok=True)
    (d / "nginx.conf").write_text(conf)
    return ["nginx", "-p", str(d), "-e", str(d / "error.log"), "-c", str(d / "nginx.conf"),
            "-g", "daemon off;"]


def descendants(root: int) -> list[int]:
    """root and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = stat_fields(int(entry))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def cpu_ticks(pids: list[int]) -> int:
    """utime+stime+cutime+cstime summed over pids (clock ticks)."""
    total = 0
    for pid in pids:
        fields = stat_fields(pid)
        if fields is not None:
            total += sum(int(x) for x in fields[11:15])
    return total


def user_system(pids: list[int]) -> tuple[int, int]:
    """(utime, stime) of ``pids`` in clock ticks: Python's work, and the kernel's for it."""
    user = system = 0
    for pid in pids:
        fields = stat_fields(pid)
        if fields is not None:
            user, system = user + int(fields[11]), system + int(fields[12])
    return user, system


def cpu_times() -> dict[str, list[int]]:
    """Per-CPU jiffies from /proc/stat: {'cpu0': [user, nice, system, idle, iowait, irq,
    softirq, steal], ...}."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            f = line.split()
            out[f[0]] = [int(x) for x in f[1:9]]
    return out


def cpu_busy(before: dict[str, list[int]], after: dict[str, list[int]]) -> dict[str, Any]:
    """{'cpu0': {'busy': %, 'steal': %}, ...} between two cpu_times()."""
    res = {}
    for cpu, b in after.items():
        d = [y - x for x, y in zip(before.get(cpu, b), b, strict=True)]
        total = sum(d) or 1
        res[cpu] = {"busy": round(100 * (total - d[3] - d[4] - d[7]) / total, 1),
                    "steal": round(100 * d[7] / total, 1)}
    return res


def accepted(port: int) -> int:
    """Connections an nginx backend has accepted so far (stub_status), this query excluded."""
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", "/bench-status")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    # "Active connections: N \nserver accepts handled requests\n A H R \n..."
    return int(text.splitlines()[2].split()[0]) - 1


def free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((HOST, port)) == 0


def pinned(argv: list[str], cpu: str | None) -> list[str]:
    return ["taskset", "-c", cpu, *argv] if cpu else argv


@dataclass
class Service:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    pids: list[int] = field(default_factory=list)

    def start(self) -> None:
        with open(self.log, "ab") as logf:
            # own session: Ctrl-C reaches only us, and we stop it in order
            self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=logf,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        self.pids = [self.popen.pid]

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise BenchError(f"{self.name} died: see {self.log}")

    def refresh(self) -> list[int]:
        self.pids = descendants(self.pid)
        return self.pids

    def wait_listening(self, port: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if port_accepts(port):
                return
            if not self.alive():
                raise BenchError(f"{self.name} exited before listening on {port}: see {self.log}")
            time.sleep(0.05)
        raise BenchError(f"{self.name} not listening on {port} after {timeout:.0f}s: "
                         f"see {self.log}")

    def stop(self) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(5)
        # whatever is left in the session we created for it (nginx workers, py-spy's child)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)


def slb_has_workers_option() -> bool:
    done = subprocess.run([str(SLB_BIN), "proxy", "--help"], capture_output=True, text=True,
                          timeout=30, check=False)
    return "--workers" in done.stdout


# ------------------------------------------------------------------------------ a benchmark

@dataclass
class Ports:
    backends: list[int]


class Bench:
    """One benchmark run: its work folder, the services it started, pinning, wrk runs."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.stamp = stamp
        self.work = OUT_DIR / f"run-{stamp}"
        self.work.mkdir(parents=True, exist_ok=True)
        self.ports = Ports(backends=free_ports(len(BACKEND_NAMES)))
        self.services: list[Service] = []
        self.backend_services: list[Service] = []
        self.wrk_script = self.work / "report.lua"
        self.wrk_script.write_text(WRK_SCRIPT)
        have_taskset = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
        self.pin = have_taskset and not args.no_pin
        self.proxy_cpu = "1" if self.pin else None
        self.load_cpu = "0" if self.pin else None  # wrk and backends

    # -- services
    def launch(self, name: str, argv: list[str], cpu: str | None, port: int) -> Service:
        if port_accepts(port):
            raise BenchError(f"port {port} is taken; run again")
        svc = Service(name, pinned(argv, cpu), self.work / f"{name}.log")
        self.services.append(svc)
        svc.start()
        svc.wait_listening(port)
        time.sleep(0.2)  # nginx forks its worker after binding
        svc.refresh()
        say(f"  {name:8s} pid {svc.pid} on {HOST}:{port} cpu {cpu or 'any'}")
        return svc

    def stop_all(self) -> None:
        for svc in reversed(self.services):
            svc.stop()
        self.services.clear()

    def result_head(self, pinning: dict[str, str | None]) -> dict[str, Any]:
        """The start of the result file: when, with which options, on what, pinned how."""
        return {"started": self.stamp, "options": vars(self.args),
                "environment": environment(), "pinning": pinning}

    def start_backends(self) -> list[Service]:
        www = self.work / "www"
        www.mkdir(exist_ok=True)
        for path, body in BODIES.items():
            (www / path.lstrip("/")).write_bytes(body)
        started = []
        for name, port in zip(BACKEND_NAMES, self.ports.backends, strict=True):
            conf = NGINX_BACKEND.format(d=self.work / name, workers=1, host=HOST, port=port,
                                        www=www, name=name)
            started.append(self.launch(name, nginx_argv(self.work / name, conf), self.load_cpu,
                                       port))
        return started

    # -- load
    def wrk(self, port: int, seconds: float, connections: int, path: str = PATH,
            cpu: str | bool | None = True) -> dict[str, Any]:
        """One wrk run (pinned to the load CPU unless ``cpu`` says otherwise): its JSON line."""
        if cpu is True:
            cpu = self.load_cpu
        whole = max(1, round(seconds))  # wrk takes whole seconds only
        argv = pinned(["wrk", "-t1", f"-c{connections}", f"-d{whole}s", "--latency",
                       "--timeout", "5s", "-s", str(self.wrk_script),
                       f"http://{HOST}:{port}{path}"], cpu or None)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30,
                              check=False)
        with open(self.work / "wrk.txt", "a") as f:
            f.write(f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}\n")
        if done.returncode != 0:
            raise BenchError(f"wrk exited {done.returncode}: "
                             f"{(done.stderr or done.stdout).strip()[:500]}")
        for line in done.stdout.splitlines():
            if line.startswith("SLBBENCH "):
                return dict(json.loads(line[len("SLBBENCH "):]))
        raise BenchError(f"no result line in wrk's output:\n{done.stdout}")

    def measure(self, target: str, svc: Service | None, port: int, path: str = PATH,
                cpu: str | bool | None = True) -> dict[str, Any]:
        """wrk at ``port`` for --duration: its figures with the CPU used by ``svc``'s process
        tree, by the backends, by wrk and by each CPU meanwhile."""
        a = self.args
        pids = svc.refresh() if svc is not None else []
        load_pids = [p for b in self.backend_services for p in b.pids]
        a0 = sum(accepted(p) for p in self.ports.backends)
        ru0, s0 = resource.getrusage(resource.RUSAGE_CHILDREN), cpu_times()
        c0, l0, t0 = cpu_ticks(pids), cpu_ticks(load_pids), time.monotonic()
        res = self.wrk(port, a.duration, a.connections, path, cpu)
        c1, l1, t1 = cpu_ticks(pids), cpu_ticks(load_pids), time.monotonic()
        ru1, s1 = resource.getrusage(resource.RUSAGE_CHILDREN), cpu_times()
        a1 = sum(accepted(p) for p in self.ports.backends)
        wall = t1 - t0
        errors = sum(res[k] for k in ("connect", "read", "write", "timeout"))
        proxy_cpu = (c1 - c0) / TICKS if svc is not None else None
        return {
            "target": target,
            "requests": res["requests"],
            "rps": res["requests"] / (res["duration_us"] / 1e6),
            "p50_ms": res["p50_us"] / 1e3,
            "p90_ms": res["p90_us"] / 1e3,
            "p99_ms": res["p99_us"] / 1e3,
            "p999_ms": res["p999_us"] / 1e3,
            "max_ms": res["max_us"] / 1e3,
            "socket_errors": errors,
            "non_2xx": res["status"],
            "wall_s": round(wall, 3),
            "proxy_cpu_s": proxy_cpu,
            # CPU time spans wrk's whole life (connect and teardown too): a slight underestimate
            "req_per_cpu_s": res["requests"] / proxy_cpu if proxy_cpu else None,
            "proxy_cpu_pct": 100 * proxy_cpu / wall if proxy_cpu is not None else None,
            "backends_cpu_pct": 100 * (l1 - l0) / TICKS / wall,
            "wrk_cpu_pct": 100 * (ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime) / wall,
            # connections the backends accepted: about 2 x --upstream-idle at best; far more
            # means the proxy does not reuse upstream connections
            "upstream_connects": a1 - a0,
            "cpus": cpu_busy(s0, s1),
        }


def say(msg: str) -> None:
    print(msg, flush=True)


def num(x: float | None, spec: str = ",.0f") -> str:
    return "-" if x is None else format(x, spec)


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}%"


def check_target(name: str, port: int, expect_spread: bool, requests: int = 8,
                 paths: tuple[str, ...] = (PATH,)) -> None:
    """Exact body on every response over one keep-alive connection (``paths`` in turn), and
    both backends used."""
    seen: Counter[str] = Counter()
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        for i in range(requests):
            path = paths[i % len(paths)]
            conn.request("GET", path, headers={"User-Agent": "slb-bench-check"})
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200 or body != BODIES[path]:
                raise BenchError(f"{name}: GET {path} (request {i + 1}) got status "
                                 f"{resp.status} and {len(body)} bytes {body[:60]!r}, expected "
                                 f"200 and the {len(BODIES[path])}-byte body")
            seen[resp.getheader("X-Backend") or "(none)"] += 1
    except (OSError, http.client.HTTPException) as exc:
        raise BenchError(f"{name}: request failed: {type(exc).__name__}: {exc}") from None
    finally:
        conn.close()
    if expect_spread and set(seen) != set(BACKEND_NAMES):
        raise BenchError(f"{name}: responses did not come from both backends: {dict(seen)}")
    spread = ", ".join(f"{k} {v}" for k, v in sorted(seen.items()))
    say(f"  check {name}: {requests} x 200 with the exact body of {', '.join(paths)} "
        f"({spread})")


def median(values: list[float | None]) -> float | None:
    xs = [v for v in values if v is not None]
    return statistics.median(xs) if xs else None


# The 99th percentile of fewer samples is their maximum (or next to it): not a figure of its own.
P99_MIN_SAMPLES = 100
P99_NOTE = (f"p99 is null (printed -) below {P99_MIN_SAMPLES} samples: the 99th percentile of "
            "fewer is their maximum")


def quantiles(values: Iterable[float], scale: float = 1.0, suffix: str = "",
              ndigits: int | None = None) -> dict[str, Any]:
    """``n``, ``p50`` (statistics.median), ``p99`` (nearest rank; None below P99_MIN_SAMPLES
    samples) and ``max`` of ``values``, each times ``scale`` (1e3: seconds to ms), rounded to
    ``ndigits`` if given; the keys but ``n`` end in ``suffix`` (``"_ms"``: ``p50_ms``)."""
    xs = sorted(values)
    n = len(xs)

    def fig(x: float | None) -> float | None:
        if x is None:
            return None
        return x * scale if ndigits is None else round(x * scale, ndigits)
    p99 = xs[(99 * n + 99) // 100 - 1] if n >= P99_MIN_SAMPLES else None
    return {"n": n, f"p50{suffix}": fig(statistics.median(xs) if xs else None),
            f"p99{suffix}": fig(p99), f"max{suffix}": fig(xs[-1] if xs else None)}


def ratio(runs: list[dict[str, Any]], num_target: str, den_target: str, key: str,
          case: str | None = None) -> float | None:
    """Median over rounds of num/den, each from the same round (and case); a round whose
    figure is missing (None) or whose denominator is 0 is left out, not counted as 0."""
    by = {(r["round"], r["target"]): r for r in runs if case is None or r.get("case") == case}
    vals: list[float | None] = []
    for rnd in sorted({r["round"] for r in runs}):
        n, d = by.get((rnd, num_target)), by.get((rnd, den_target))
        if n and d and n.get(key) is not None and d.get(key):
            vals.append(n[key] / d[key])
    return median(vals)


def environment() -> dict[str, Any]:
    def first_line(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        except OSError as exc:
            return str(exc)
        return (done.stdout + done.stderr).strip().splitlines()[0] if done.stdout + done.stderr \
            else ""

    return {
        "nginx": first_line(["nginx", "-v"]),
        "wrk": first_line(["wrk", "-v"]),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }


# ------------------------------------------------------------------------------ main

def slb_missing() -> bool:
    if SLB_BIN.exists():
        return False
    print(f"{SLB_BIN} not found: run `make` targets from the repository root", file=sys.stderr)
    return True


def interrupt_on_signals() -> None:
    """From now on SIGINT, SIGTERM and SIGHUP raise Interrupted, which ``run_reported`` handles."""
    def interrupt(signum: int, _frame: object) -> None:
        raise Interrupted(signal.Signals(signum).name)

    for sig in SIGNALS:
        signal.signal(sig, interrupt)


def run_reported(label: str, bench: Bench, result: dict[str, Any], body: Callable[[], int]
                 ) -> int:
    """``body()``'s exit status, 1 after a BenchError, 130 when interrupted (either printed
    under ``label`` and kept in ``result["error"]``); every process ``bench`` started is
    stopped at the end."""
    try:
        return body()
    except BenchError as exc:
        print(f"{label}: {exc}", file=sys.stderr)
        result["error"] = str(exc)
        return 1
    except Interrupted as exc:
        print(f"\n{label}: interrupted ({exc}), stopping", file=sys.stderr)
        result["error"] = f"interrupted by {exc}"
        return 130
    finally:
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
        bench.stop_all()


def save_result(kind: str, stamp: str, result: dict[str, Any]) -> Path:
    """bench/out/<kind>-<stamp>.json, copied to <kind>-latest.json."""
    out = OUT_DIR / f"{kind}-{stamp}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    (OUT_DIR / f"{kind}-latest.json").write_text(out.read_text())
    return out


