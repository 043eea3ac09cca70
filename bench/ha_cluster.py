"""The processes and readings behind ``bench/ha_figures.py``: nodes and admins started as real
processes on 127.0.0.1 (``Run`` stops every one), the scenario's seed, and what is read off
them (node views, apply times from their logs, CPU and RSS from /proc).

Kept apart from the scenarios so that ``bench/admin_memory.py`` can use the same seed and
RSS reading without the scenarios.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from harness import (
    ROOT,
    TICKS,
    cpu_ticks,
    free_ports,
)

NODE_TOKEN = "ha-figures-node-token"


ADMIN_TOKEN = "ha-figures-admin-token-0123"


AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


PY = sys.executable


class Run:
    """The processes of one scenario, their files in ``directory``; all stopped by ``close``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.elsewhere: list[Path] = []  # directories outside ``directory``: removed by close
        directory.mkdir(parents=True, exist_ok=True)

    async def spawn(self, name: str, *argv: str) -> asyncio.subprocess.Process:
        log = open(self.directory / f"{name}.log", "ab")  # noqa: SIM115 (the child owns it)
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=str(ROOT), stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True, env={k: v for k, v in os.environ.items()
                                         if not k.startswith("CONSUL_HTTP_")})
        log.close()
        self.procs[name] = proc
        return proc

    def write(self, name: str, data: dict[str, Any]) -> Path:
        path = self.directory / name
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return path

    async def close(self) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGCONT)
                    os.killpg(proc.pid, signal.SIGTERM)
        try:
            for proc in self.procs.values():
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    await proc.wait()
        finally:
            for path in self.elsewhere:
                shutil.rmtree(path, ignore_errors=True)


async def until(what: str, check: Any, timeout: float, poll: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError):
            found = await check()
            if found:
                return found
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(poll)


async def start_nodes(run: Run, http: httpx.AsyncClient, count: int,
                      state_root: Path | None = None) -> list[dict[str, Any]]:
    """``count`` admin-managed nodes; their state files under ``state_root`` (default: the
    run's directory)."""
    nodes = []
    for i, port in enumerate(free_ports(count)):
        name = f"n{i:03d}"
        path = run.write(f"{name}.yaml", {
            "control": {"listen": f"127.0.0.1:{port}", "token": NODE_TOKEN},
            "state_dir": str((state_root or run.directory) / f"state-{name}")})
        proc = await run.spawn(name, PY, "-m", "slb", "proxy", "-c", str(path),
                               "--workers", "0")
        nodes.append({"name": name, "cluster": "c1", "token": NODE_TOKEN, "pid": proc.pid,
                      "control_url": f"http://127.0.0.1:{port}"})
    for node in nodes:
        url = node["control_url"]

        async def answers(url: str = url) -> bool:
            return (await http.get(f"{url}/healthz")).status_code == 200
        await until(f"{node['name']} to start", answers, 60)
    return nodes


def seed(nodes: list[dict[str, Any]], groups: int, members: int, listen: str
         ) -> dict[str, Any]:
    return {
        "clusters": [{"name": "c1"}],
        "nodes": [{k: n[k] for k in ("name", "cluster", "token", "control_url")}
                  for n in nodes],
        "groups": [{"name": f"g{g:05d}", "members": [
            {"address": f"10.{g // 256 % 256}.{g % 256}.{m + 1}:80"} for m in range(members)]}
            for g in range(groups)],
        "virtual_servers": [{"name": "site", "cluster": "c1", "listen": listen,
                             "domains": ["site.test"], "default": True}],
        "routes": [{"name": f"r{g:05d}", "virtual_server": "site", "path": f"/g{g:05d}/",
                    "group": f"g{g:05d}"} for g in range(groups)],
    }


async def start_admin(run: Run, http: httpx.AsyncClient, name: str, store: str,
                      data: dict[str, Any], timeout: float = 600) -> tuple[str, int]:
    port = free_ports(1)[0]
    path = run.write(f"{name}.yaml", {"name": name, "listen": f"127.0.0.1:{port}",
                                      "store": {"url": store}, "reconcile_interval": 30.0,
                                      "tokens": [{"name": "bench", "token": ADMIN_TOKEN,
                                                  "role": "admin"}], **data})
    proc = await run.spawn(name, PY, "-m", "admin", "-c", str(path))
    url = f"http://127.0.0.1:{port}"

    async def answers() -> bool:
        if proc.returncode is not None:
            raise SystemExit(f"{name} exited: see {run.directory / (name + '.log')}")
        return (await http.get(f"{url}/healthz")).status_code == 200
    await until(f"{name} to answer", answers, timeout, 0.2)
    return url, proc.pid


async def node_rows(http: httpx.AsyncClient, admin: str) -> list[dict[str, Any]]:
    reply = await http.get(f"{admin}/api/v1/nodes", headers=AUTH)
    reply.raise_for_status()  # (a busy admin may answer 5xx: ``until`` asks again)
    return list(reply.json()["items"])


async def in_sync(http: httpx.AsyncClient, admin: str) -> bool:
    rows = await node_rows(http, admin)
    return bool(rows) and all(r["in_sync"] for r in rows)


async def node_view(http: httpx.AsyncClient, node: dict[str, Any]) -> tuple[str, float]:
    reply = await http.get(f"{node['control_url']}/v1/config", params={"summary": 1},
                           headers={"Authorization": f"Bearer {NODE_TOKEN}"})
    reply.raise_for_status()
    return node["name"], float(reply.json()["applied_at"])


def apply_durations(directory: Path, names: list[str]) -> list[float]:
    """Seconds each node took to apply each delta batch, from its log (``slb.node`` logs
    "applied N groups: version a -> b in X ms", or "applied group NAME: ..." for one)."""
    found = re.compile(r'applied (?:\d+ groups|group \S+)[^"]* in ([0-9.]+) ms')
    durations = []
    for name in names:
        path = directory / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        durations += [float(m.group(1)) / 1e3 for m in found.finditer(text)]
    return durations


def cpu_seconds(*pids: int) -> float:
    """CPU of processes ``pids`` so far (harness.cpu_ticks: a process gone counts 0)."""
    return cpu_ticks(list(pids)) / TICKS


def run_queue_seconds(pid: int) -> float:
    """Seconds the main thread of process ``pid`` has waited, runnable, for a core so far
    (``/proc/PID/schedstat``'s second field; 0 if the kernel keeps no such count)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def set_cpu_priority(pid: int, nice: int) -> None:
    """Give process ``pid`` the CPU priority ``nice`` against the others of the box.

    Linux schedules each session as one group (autogroup, when enabled and the processes sit
    in the root cpu cgroup), and a process's own nice value only weighs within its group: the
    bench's processes each have a session of their own, so the group's nice
    (``/proc/PID/autogroup``) is the one that counts there. The process's own is set too: it
    is the one that counts without autogroups, and the process is alone in its session. A
    negative value needs CAP_SYS_NICE (root).
    """
    with contextlib.suppress(FileNotFoundError):  # (a kernel without autogroups)
        Path(f"/proc/{pid}/autogroup").write_text(str(nice))
    os.setpriority(os.PRIO_PROCESS, pid, nice)


def rss_mb(pid: int | str = "self") -> float:
    """VmRSS of process ``pid`` (this one by default), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
