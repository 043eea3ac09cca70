"""``make run`` (``python -m dev.devstack``): the whole system on one machine, no Consul needed.

Starts two demo backends, one admin-managed proxy node (``config/node.yaml``) and the admin
(``config/admin.yaml``), whose seed routes the demo virtual server across both backends. With
``CONSUL_HTTP_ADDR`` set, the admin also watches Consul for the seed's Consul-backed group.
Ctrl-C (or SIGTERM) stops everything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    python = sys.executable
    (ROOT / "var").mkdir(exist_ok=True)
    commands = [
        ("backend-1", [python, "-m", "dev.demo_backend", "demo-1", "9001"]),
        ("backend-2", [python, "-m", "dev.demo_backend", "demo-2", "9002"]),
        ("proxy", [python, "-m", "slb", "proxy", "-c", "config/node.yaml"]),
        ("admin", [python, "-m", "admin", "-c", "config/admin.yaml"]),
    ]
    processes: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        for name, command in commands:
            processes.append((name, subprocess.Popen(command, cwd=ROOT)))
            time.sleep(0.3)
        consul = os.environ.get("CONSUL_HTTP_ADDR")
        where = f"with Consul at {consul}" if consul else "(no Consul: CONSUL_HTTP_ADDR is unset)"
        print(f"""
SLB is running {where}:
  demo site through the proxy   http://127.0.0.1:8080/        (Host: demo.local or any)
  admin web UI and API          http://127.0.0.1:9800/        (token: see config/admin.yaml)
  admin API, e.g.               curl -H 'Authorization: Bearer demo-admin-token' \\
                                     http://127.0.0.1:9800/api/v1/groups/demo
  proxy node status             http://127.0.0.1:9901/v1/status  /metrics
Ctrl-C stops everything.
""", flush=True)
        while all(p.poll() is None for _, p in processes):
            time.sleep(0.5)
        for name, process in processes:
            if process.poll() is not None:
                print(f"{name} exited with status {process.returncode}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for _, process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for _, process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    sys.exit(main())
