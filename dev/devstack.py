"""``make run`` (``python -m dev.devstack``): the whole system on one machine, no Consul needed.

Starts two demo backends, one admin-managed proxy node (``config/node.yaml``) and the admin
(``config/admin.yaml``), whose seed routes the demo virtual server across both backends. With
``CONSUL_HTTP_ADDR`` set, the admin also watches Consul for the seed's Consul-backed group.

Life cycle, so that a stopped ``make run`` leaves nothing behind:

- Every port is checked before anything starts: a port in use (often a ``make run`` still
  running) is one line naming it, and exit status 1.
- Each process is started once the one before answers (its port accepts connections), not
  after a guess of a delay; one that exits while starting stops the rest, exit status 1.
- SIGTERM, SIGINT and SIGHUP (a service manager, Ctrl-C, a closed terminal) stop every child:
  SIGTERM to each, in reverse order, then SIGKILL to any still running after ``STOP_GRACE``.
  On Linux each child also gets SIGTERM from the kernel if this process dies without cleaning
  up (``PR_SET_PDEATHSIG``), even by SIGKILL.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
STOP_GRACE = 15.0  # seconds a child has to stop on SIGTERM (the proxy drains in-flight requests)
START_TIMEOUT = 20.0  # seconds a child has to open its port
# (name, command after the interpreter, the port it opens: the configuration files' ports)
SERVICES = [
    ("backend-1", ["-m", "dev.demo_backend", "demo-1", "9001"], 9001),
    ("backend-2", ["-m", "dev.demo_backend", "demo-2", "9002"], 9002),
    ("proxy", ["-m", "slb", "proxy", "-c", "config/node.yaml"], 9901),
    ("admin", ["-m", "admin", "-c", "config/admin.yaml"], 9800),
]
PORTS = {9001: "backend-1", 9002: "backend-2", 9901: "proxy control (config/node.yaml)",
         8080: "demo site (config/admin.yaml seed)", 9800: "admin (config/admin.yaml)"}


class Stop(Exception):
    """A signal asked everything to stop."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


def _die_with_parent() -> None:
    """SIGTERM to this process when its parent dies (Linux; elsewhere a no-op). Called in each
    child before exec, and by ``main`` for itself."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def port_taken(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def stop_all(processes: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    for _, process in reversed(processes):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    for name, process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"make run: {name} did not stop in {STOP_GRACE:g} s: killed", file=sys.stderr)
            process.kill()
            process.wait()


def start(processes: list[tuple[str, subprocess.Popen[bytes]]]) -> str | None:
    """Start every service, each once the previous one answers; why it failed, or None."""
    for name, arguments, port in SERVICES:
        process = subprocess.Popen([sys.executable, *arguments], cwd=ROOT,
                                   preexec_fn=_die_with_parent)
        processes.append((name, process))
        deadline = time.monotonic() + START_TIMEOUT
        while not answers(port):
            if process.poll() is not None:
                return f"{name} exited with status {process.returncode} while starting"
            if time.monotonic() > deadline:
                return f"{name} did not open port {port} in {START_TIMEOUT:g} s"
            time.sleep(0.05)
    return None


def main() -> int:
    _die_with_parent()  # ``make`` stopped by a service manager takes this process along
    taken = [f"127.0.0.1:{port} ({what})" for port, what in PORTS.items() if port_taken(port)]
    if taken:
        print(f"make run: in use: {', '.join(taken)}. Is another make run still running?",
              file=sys.stderr)
        return 1
    (ROOT / "var").mkdir(exist_ok=True)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _on_signal)
    processes: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        failed = start(processes)
        if failed is not None:
            print(f"make run: {failed}; stopping the rest", file=sys.stderr)
            return 1
        consul = os.environ.get("CONSUL_HTTP_ADDR")
        where = f"with Consul at {consul}" if consul else "(no Consul: CONSUL_HTTP_ADDR is unset)"
        print(f"""
SLB is running {where}:
  demo site through the proxy   http://127.0.0.1:8080/        (Host: demo.local or any)
  admin web UI and API          http://127.0.0.1:9800/        (token: see config/admin.yaml)
  admin API, e.g.               curl -H 'Authorization: Bearer demo-admin-token' \\
                                     http://127.0.0.1:9800/api/v1/groups/demo
  proxy node status             curl -H 'Authorization: Bearer demo-node-token' \\
                                     http://127.0.0.1:9901/v1/status
Ctrl-C (or SIGTERM, SIGHUP) stops everything.
""", flush=True)
        while all(p.poll() is None for _, p in processes):
            time.sleep(0.5)
        for name, process in processes:
            if process.poll() is not None:
                print(f"make run: {name} exited with status {process.returncode}; stopping "
                      "the rest", file=sys.stderr)
        return 1
    except (Stop, KeyboardInterrupt):
        return 0
    finally:
        # no second signal may interrupt the cleanup: the children must not be orphaned
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        stop_all(processes)


if __name__ == "__main__":
    sys.exit(main())
