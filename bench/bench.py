"""`make bench`: the SLB proxy against nginx on 127.0.0.1, measured by wrk in the same run.

Two nginx backends serve a 100-byte file with an ``X-Backend`` header. In front of them run, side
by side, the SLB proxy (``.venv/bin/slb proxy -c <generated yaml> --workers 1``) and nginx (one
worker, upstream keep-alive) configured alike: same upstream keep-alive pool, same client
keep-alive limit, the same forwarded headers. Both are checked first (exact body, both backends
used), then driven by ``wrk -t1`` in interleaved rounds (slb, nginx, slb, nginx, ...), so that
machine drift hits both alike. Reported per run and as medians: requests/s, p50/p99 latency and
requests per proxy CPU-second (utime+stime of the proxy's processes from /proc, i.e. the nginx
worker and the SLB process), plus SLB/nginx ratios.

With ``--profile`` it instead records the SLB proxy with py-spy while wrk drives it, writes a
speedscope file and collapsed stacks to bench/out/ and prints where the time goes.

Everything listens on 127.0.0.1, every load is bounded by --duration, and every process started
here is stopped at the end, also on errors and Ctrl-C.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "bench" / "out"
SLB_BIN = ROOT / ".venv" / "bin" / "slb"
PY_SPY = ROOT / ".venv" / "bin" / "py-spy"
HOST = "127.0.0.1"
TICKS = os.sysconf("SC_CLK_TCK")
BACKEND_NAMES = ("b1", "b2")
PATH = "/small"
# 100 bytes, the last one a newline; deterministic so the check can compare bytes.
BODY = (b"slb-bench-0123456789-abcdefghijklmnopqrstuvwxyz-" * 3)[:99] + b"\n"
TARGET_CPU_RATIO = 0.5  # SLB requests per CPU-second >= half of nginx's
TARGET_P99_MS = 2.0

# A done() hook only: no per-request Lua, so wrk stays as cheap as plain wrk.
WRK_SCRIPT = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('SLBBENCH {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""

NGINX_COMMON = """\
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
"""

NGINX_BACKEND = NGINX_COMMON + """\
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

# Mirrors what the generated SLB config does: client keep-alive limit, requests per upstream
# connection, the same forwarded headers and a request id. nginx's `keepalive` is one idle cache
# per worker for all members; at 64 (SLB's 2 x 32) nginx still reconnected ~300 times a second
# at c=50, so it gets --nginx-keepalive (256): the reference runs at its best.
NGINX_PROXY = NGINX_COMMON + """\
http {{
  access_log off;
  server_tokens off;
  keepalive_timeout 75s;
  keepalive_requests {client_requests};
  upstream backends {{
{servers}
    keepalive {idle_total};
    keepalive_requests {upstream_requests};
    keepalive_timeout 4s;
  }}
  server {{
    listen {host}:{port} backlog=4096;
    location / {{
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header X-Request-Id $request_id;
    }}
  }}
}}
"""


class Interrupted(Exception):
    """SIGINT/SIGTERM/SIGHUP arrived: stop everything and leave."""


SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class BenchError(Exception):
    """A setup or correctness problem; the message says what to look at."""


# ------------------------------------------------------------------------------ processes

def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()  # fields from 3 (state) on; comm may hold spaces


def descendants(root: int) -> list[int]:
    """root and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
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
        fields = _stat_fields(pid)
        if fields is not None:
            total += sum(int(x) for x in fields[11:15])
    return total


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


# ------------------------------------------------------------------------------ the setup

@dataclass
class Ports:
    backends: list[int]
    slb: int
    slb_control: int
    nginx: int


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.stamp = stamp
        self.work = OUT_DIR / f"run-{stamp}"
        self.work.mkdir(parents=True, exist_ok=True)
        pb = free_ports(5)
        self.ports = Ports(backends=pb[:2], slb=pb[2], slb_control=pb[3], nginx=pb[4])
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

    def nginx_argv(self, name: str, conf: str) -> list[str]:
        d = self.work / name
        d.mkdir(exist_ok=True)
        (d / "nginx.conf").write_text(conf)
        return ["nginx", "-p", str(d), "-e", str(d / "error.log"), "-c", str(d / "nginx.conf"),
                "-g", "daemon off;"]

    def start_backends(self) -> list[Service]:
        www = self.work / "www"
        www.mkdir(exist_ok=True)
        (www / PATH.lstrip("/")).write_bytes(BODY)
        started = []
        for name, port in zip(BACKEND_NAMES, self.ports.backends, strict=True):
            conf = NGINX_BACKEND.format(d=self.work / name, host=HOST, port=port, www=www,
                                        name=name)
            started.append(self.launch(name, self.nginx_argv(name, conf), self.load_cpu, port))
        return started

    def slb_config(self) -> dict[str, Any]:
        a = self.args
        return {
            "control": {"listen": f"{HOST}:{self.ports.slb_control}"},
            "http": {"keepalive_requests": a.keepalive_requests, "drain_timeout": 1},
            "access_log": {"enabled": False},
            "virtual_servers": [{
                "name": "bench", "listen": f"{HOST}:{self.ports.slb}", "default": True,
                "routes": [{"match": "prefix", "path": "/", "group": "backends"}],
            }],
            "groups": [{
                "name": "backends", "algorithm": "wrr",
                "members": [{"address": f"{HOST}:{p}"} for p in self.ports.backends],
                "keepalive": {"max_idle": a.upstream_idle, "max_requests": a.upstream_requests},
            }],
        }

    def start_slb(self) -> Service:
        path = self.work / "slb.yaml"
        path.write_text(yaml.safe_dump(self.slb_config(), sort_keys=False))
        argv = [str(SLB_BIN), "proxy", "-c", str(path), "--log-level", "warning"]
        if slb_has_workers_option():
            argv += ["--workers", str(self.args.slb_workers)]
        return self.launch("slb", argv, self.proxy_cpu, self.ports.slb)

    def start_nginx_proxy(self) -> Service:
        a = self.args
        servers = "\n".join(f"    server {HOST}:{p};" for p in self.ports.backends)
        conf = NGINX_PROXY.format(
            d=self.work / "nginx", host=HOST, port=self.ports.nginx, servers=servers,
            idle_total=a.nginx_keepalive,
            upstream_requests=a.upstream_requests, client_requests=a.keepalive_requests)
        return self.launch("nginx", self.nginx_argv("nginx", conf), self.proxy_cpu,
                           self.ports.nginx)

    # -- load
    def wrk(self, port: int, seconds: float, connections: int) -> dict[str, Any]:
        argv = pinned(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency",
                       "--timeout", "5s", "-s", str(self.wrk_script),
                       f"http://{HOST}:{port}{PATH}"], self.load_cpu)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30,
                              check=False)
        with open(self.work / "wrk.txt", "a") as f:
            f.write(f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}\n")
        if done.returncode != 0:
            raise BenchError(f"wrk exited {done.returncode}: {done.stderr.strip()}")
        for line in done.stdout.splitlines():
            if line.startswith("SLBBENCH "):
                return dict(json.loads(line[len("SLBBENCH "):]))
        raise BenchError(f"no result line in wrk's output:\n{done.stdout}")

    def measure(self, target: str, svc: Service | None, port: int) -> dict[str, Any]:
        a = self.args
        pids = svc.refresh() if svc is not None else []
        load_pids = [p for b in self.backend_services for p in b.pids]
        a0 = sum(accepted(p) for p in self.ports.backends)
        ru0, s0 = resource.getrusage(resource.RUSAGE_CHILDREN), cpu_times()
        c0, l0, t0 = cpu_ticks(pids), cpu_ticks(load_pids), time.monotonic()
        res = self.wrk(port, a.duration, a.connections)
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

    # -- the run
    def run(self) -> dict[str, Any]:
        a = self.args
        say(f"SLB vs nginx on {HOST}: {a.rounds} rounds x {a.duration:g}s, wrk -t1 "
            f"-c{a.connections}, {len(BODY)}-byte body, keep-alive; "
            + ("proxy on CPU 1, wrk and backends on CPU 0" if self.pin else "no CPU pinning"))
        say(f"output: {self.work}")
        self.backend_services = self.start_backends()
        targets: dict[str, tuple[Service | None, int]] = {
            "slb": (self.start_slb(), self.ports.slb),
            "nginx": (self.start_nginx_proxy(), self.ports.nginx),
        }
        if a.direct:
            targets["direct"] = (None, self.ports.backends[0])
        for name, (svc, port) in targets.items():
            check_target(name, port, expect_spread=svc is not None)
        if a.warmup > 0:
            for _, port in targets.values():
                self.wrk(port, a.warmup, a.connections)
            say(f"  warm-up: {a.warmup:g}s per target")
        runs: list[dict[str, Any]] = []
        say("")
        say(ROW_FMT.format("round", "target", "req/s", "p50 ms", "p99 ms", "proxy CPU",
                           "req/CPU-s", "errors"))
        for rnd in range(1, a.rounds + 1):
            for name, (svc, port) in targets.items():
                if svc is not None:
                    svc.check_alive()
                run = self.measure(name, svc, port)
                run["round"] = rnd
                runs.append(run)
                say(ROW_FMT.format(
                    rnd, name, f"{run['rps']:,.0f}", f"{run['p50_ms']:.2f}",
                    f"{run['p99_ms']:.2f}", pct(run["proxy_cpu_pct"]),
                    num(run["req_per_cpu_s"]), run["socket_errors"] + run["non_2xx"]))
        return {"runs": runs, "summary": summarize(runs, list(targets))}


ROW_FMT = "{:>5}  {:<6}  {:>9}  {:>6}  {:>6}  {:>9}  {:>9}  {:>6}"


def say(msg: str) -> None:
    print(msg, flush=True)


def num(x: float | None, spec: str = ",.0f") -> str:
    return "-" if x is None else format(x, spec)


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}%"


def check_target(name: str, port: int, expect_spread: bool, requests: int = 8) -> None:
    """Exact body on every response over one keep-alive connection, and both backends used."""
    seen: Counter[str] = Counter()
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        for i in range(requests):
            conn.request("GET", PATH, headers={"User-Agent": "slb-bench-check"})
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200 or body != BODY:
                raise BenchError(f"{name}: request {i + 1} got status {resp.status} and "
                                 f"{len(body)} bytes {body[:60]!r}, expected 200 and {BODY!r}")
            seen[resp.getheader("X-Backend") or "(none)"] += 1
    except (OSError, http.client.HTTPException) as exc:
        raise BenchError(f"{name}: request failed: {type(exc).__name__}: {exc}") from None
    finally:
        conn.close()
    if expect_spread and set(seen) != set(BACKEND_NAMES):
        raise BenchError(f"{name}: responses did not come from both backends: {dict(seen)}")
    spread = ", ".join(f"{k} {v}" for k, v in sorted(seen.items()))
    say(f"  check {name}: {requests} x 200 with the exact {len(BODY)}-byte body ({spread})")


def median(values: list[float | None]) -> float | None:
    xs = [v for v in values if v is not None]
    return statistics.median(xs) if xs else None


def summarize(runs: list[dict[str, Any]], order: list[str]) -> dict[str, Any]:
    per: dict[str, dict[str, Any]] = {}
    for name in order:
        rs = [r for r in runs if r["target"] == name]
        per[name] = {k: median([r[k] for r in rs]) for k in (
            "rps", "p50_ms", "p99_ms", "proxy_cpu_pct", "req_per_cpu_s", "backends_cpu_pct",
            "wrk_cpu_pct", "upstream_connects")}
        for cpu in sorted(rs[0]["cpus"]) if rs else ():
            per[name][f"{cpu}_busy_pct"] = median([r["cpus"][cpu]["busy"] for r in rs])
        per[name]["steal_pct"] = median([max(c["steal"] for c in r["cpus"].values()) for r in rs])
        per[name]["errors"] = sum(r["socket_errors"] + r["non_2xx"] for r in rs)
    by_round = {(r["round"], r["target"]): r for r in runs}
    rounds = sorted({r["round"] for r in runs})

    def ratio(key: str) -> float | None:
        vals: list[float | None] = []
        for rnd in rounds:
            s, n = by_round.get((rnd, "slb")), by_round.get((rnd, "nginx"))
            if s and n and s[key] and n[key]:
                vals.append(s[key] / n[key])
        return median(vals)

    ratios = {"rps": ratio("rps"), "req_per_cpu_s": ratio("req_per_cpu_s"),
              "p99_ms": ratio("p99_ms")}
    slb = per.get("slb", {})
    verdict = {
        "req_per_cpu_s_ratio_ok": ratios["req_per_cpu_s"] is not None
        and ratios["req_per_cpu_s"] >= TARGET_CPU_RATIO,
        "p99_ok": slb.get("p99_ms") is not None and slb["p99_ms"] < TARGET_P99_MS,
        "no_errors": slb.get("errors", 1) == 0,
    }
    return {"targets": per, "slb_over_nginx": ratios, "target": verdict}


def print_summary(summary: dict[str, Any], rounds: int, proxy_cpu: str | None) -> None:
    say("")
    say(f"Medians over {rounds} rounds:")
    fmt = "{:<6}  {:>9}  {:>6}  {:>6}  {:>9}  {:>9}  {:>6}"
    say(fmt.format("target", "req/s", "p50 ms", "p99 ms", "proxy CPU", "req/CPU-s", "errors"))
    for name, m in summary["targets"].items():
        say(fmt.format(name, num(m["rps"]), num(m["p50_ms"], ".2f"), num(m["p99_ms"], ".2f"),
                       pct(m["proxy_cpu_pct"]), num(m["req_per_cpu_s"]), m["errors"]))
    say("")
    say("Where the CPU went (medians, % of one CPU; upstream connects = connections the backends "
        "accepted per run):")
    fmt = "{:<6}  {:>9}  {:>8}  {:>6}  {:>9}  {:>9}  {:>6}  {:>17}"
    say(fmt.format("target", "proxy", "backends", "wrk", "CPU0 busy", "CPU1 busy", "steal",
                   "upstream connects"))
    for name, m in summary["targets"].items():
        say(fmt.format(name, pct(m["proxy_cpu_pct"]), pct(m["backends_cpu_pct"]),
                       pct(m["wrk_cpu_pct"]), pct(m.get("cpu0_busy_pct")),
                       pct(m.get("cpu1_busy_pct")), pct(m["steal_pct"]),
                       num(m["upstream_connects"])))
    if proxy_cpu is not None:
        others = [m[f"cpu{proxy_cpu}_busy_pct"] - m["proxy_cpu_pct"]
                  for m in summary["targets"].values()
                  if m.get(f"cpu{proxy_cpu}_busy_pct") is not None and m["proxy_cpu_pct"]]
        if others and max(others) > 10:
            say(f"note: something else kept CPU {proxy_cpu} up to {max(others):.0f}% busy "
                "beside the proxy (other processes, or loopback work for wrk/backends): "
                "absolute figures and p99 are noisy; the same-round ratios hold better.")
    r = summary["slb_over_nginx"]
    say("")
    say(f"SLB / nginx (median of per-round ratios): req/s {num(r['rps'], '.2f')}, "
        f"req per CPU-s {num(r['req_per_cpu_s'], '.2f')}, p99 {num(r['p99_ms'], '.2f')}")
    v = summary["target"]
    slb = summary["targets"]["slb"]
    say(f"target: req/CPU-s >= {TARGET_CPU_RATIO:.2f} x nginx: "
        f"{'MET' if v['req_per_cpu_s_ratio_ok'] else 'MISSED'} "
        f"({num(r['req_per_cpu_s'], '.2f')}); p99 < {TARGET_P99_MS:g} ms: "
        f"{'MET' if v['p99_ok'] else 'MISSED'} ({num(slb['p99_ms'], '.2f')} ms); "
        f"errors: {slb['errors']}")


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


# ------------------------------------------------------------------------------ profile

def profile(bench: Bench) -> dict[str, Any]:
    """Record the busiest SLB process (the worker; the process itself with --slb-workers 0)
    with `py-spy record` while wrk drives it; save speedscope and collapsed stacks and rank
    functions by own and total time."""
    a = bench.args
    if not PY_SPY.exists():
        raise BenchError(f"{PY_SPY} missing: run bench/profile.sh (it installs py-spy)")
    bench.backend_services = bench.start_backends()
    slb = bench.start_slb()
    check_target("slb", bench.ports.slb, expect_spread=True)
    pids = slb.refresh()
    before = {pid: cpu_ticks([pid]) for pid in pids}
    bench.wrk(bench.ports.slb, 1, a.connections)  # warm-up, and find who does the work
    busiest = max(pids, key=lambda pid: cpu_ticks([pid]) - before[pid])
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
    say(f"  py-spy recording pid {busiest} (of {pids}) at {a.rate} Hz for {a.duration:g}s of load")
    run = bench.measure("slb", slb, bench.ports.slb)
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
    say(f"{samples} samples of SLB's busiest process (py-spy leaves out those it sees idle). "
        + ("Native frames included." if a.native else
           "Python frames only: a function's own time includes the C it calls (transport.write "
           "= the send() syscall); Runner.run's own time is uvloop's loop itself (epoll, recv, "
           "callback dispatch)."))
    for title, counts in (("own time (the function itself)", own),
                          ("own time, by source line", lines),
                          ("total time (the function and what it calls)", total)):
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="bench/run.sh", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--duration", type=float, default=10.0,
                    help="seconds of load per wrk run (default 10)")
    ap.add_argument("--connections", type=int, default=50,
                    help="wrk keep-alive connections (default 50)")
    ap.add_argument("--warmup", type=float, default=1.0,
                    help="unrecorded seconds of load per target first (default 1; 0 = none)")
    ap.add_argument("--direct", action="store_true",
                    help="also run wrk straight at one backend (the no-proxy limit)")
    ap.add_argument("--slb-workers", type=int, default=1,
                    help="slb proxy --workers (default 1: one worker process under its "
                         "supervisor, like nginx's master and 1 worker; 0 = all in one "
                         "process). More than 1 only makes sense with --no-pin")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes with taskset")
    ap.add_argument("--upstream-idle", type=int, default=32,
                    help="SLB keepalive.max_idle: idle connections per member (default 32)")
    ap.add_argument("--nginx-keepalive", type=int, default=256,
                    help="nginx upstream `keepalive` (one idle cache per worker; default 256)")
    ap.add_argument("--upstream-requests", type=int, default=1000,
                    help="requests per upstream connection, both proxies (default 1000)")
    ap.add_argument("--keepalive-requests", type=int, default=1000,
                    help="requests per client connection, both proxies (default 1000)")
    ap.add_argument("--strict", action="store_true",
                    help="exit 3 when the target (req/CPU-s ratio, p99) is missed")
    prof = ap.add_argument_group("profile (bench/profile.sh)")
    prof.add_argument("--profile", action="store_true",
                      help="record SLB with py-spy under wrk load instead of comparing")
    prof.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    prof.add_argument("--nonblocking", action="store_true",
                      help="py-spy --nonblocking: no pause per sample, but some torn stacks")
    prof.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    prof.add_argument("--top", type=int, default=15, help="functions to list")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0 or args.connections < 1:
        ap.error("--rounds, --duration and --connections must be positive")
    if args.duration > 600:
        ap.error("--duration is limited to 600 s")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            print(f"{tool} not found: apt-get install -y wrk nginx", file=sys.stderr)
            return 2
    if slb_missing():
        return 2
    interrupt_on_signals()
    bench = Bench(args)
    result = bench.result_head({"proxy": bench.proxy_cpu, "wrk_and_backends": bench.load_cpu})

    def body() -> int:
        if args.profile:
            result["profile"] = profile(bench)
            return 0
        result.update(bench.run())
        print_summary(result["summary"], args.rounds, bench.proxy_cpu)
        return 3 if args.strict and not all(result["summary"]["target"].values()) else 0

    status = run_reported("bench", bench, result, body)
    out = save_result("profile" if args.profile else "bench", bench.stamp, result)
    say(f"result: {out.relative_to(ROOT)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
