"""The release scenario: a rolling release through the admin under steady load, with trouble.

    .venv/bin/python loadtest/release.py [--outage 10] [--rate 100] [--flaps 10]

Everything runs as processes on 127.0.0.1, from the tree it is in: the Consul double, two demo
backends registered in it as service ``app``, the admin (group ``app`` from Consul), and two
admin-managed proxy nodes, each in its own cluster with its own listener (so traffic can be sent
through each). Then, while ``--threads`` clients send idempotent ``GET``s through both nodes at
``--rate`` requests a second in all (keep-alive, a fresh connection after any error):

1. every member in turn is pulled out with ``slb-admin ctl pull-out --wait`` (applied by both
   nodes and drained), its backend is killed and started again, and it is pulled back in;
2. a health check flaps ``--flaps`` times, 150 ms apart, and ends passing;
3. Consul goes away for ``--outage`` seconds (the double's outage: nothing answers);
4. the admin is killed (SIGKILL) and started again.

Printed: requests and failures (zero allowed: every request is idempotent and a member is only
ever taken out drained), and the propagation figures: how long each confirmed operation took
(pull-out until drained everywhere, pull-in until applied everywhere), and how long the flapping
check's final state took to reach both nodes. Exit status 0 when nothing failed, 1 when a request
failed or a step did not complete, 2 for a setup problem. ``tests/e2e/test_release.py`` runs a
shorter version (``--outage 2``) in ``make test``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "release-admin-token"
NODE_TOKEN = "release-node-token"


class SetupError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def call(port: int, method: str, path: str, body: Any = None, token: str | None = None,
         timeout: float = 10.0) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = json.dumps(body).encode() if body is not None else None
    try:
        conn.request(method, path, body=data, headers=headers)
        reply = conn.getresponse()
        raw = reply.read()
        try:
            return reply.status, json.loads(raw) if raw else None
        except ValueError:
            return reply.status, raw.decode("utf-8", "replace")
    finally:
        conn.close()


def until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, http.client.HTTPException):
            if check():
                return
        if time.monotonic() > deadline:
            raise SetupError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


class Processes:
    """Started processes, each in its own session, stopped by pid at the end."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], port: int) -> None:
        log = (self.work / f"{name}.log").open("ab")
        process = subprocess.Popen([sys.executable, *argv], cwd=ROOT, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.running[name] = process

        def answers() -> bool:
            if process.poll() is not None:
                raise SetupError(f"{name} exited ({process.returncode}); see {log.name}")
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True

        until(answers, 30, f"{name} on port {port}")

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        process = self.running.pop(name)
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop_all(self) -> None:
        for name in reversed(list(self.running)):
            self.stop(name)


class Load:
    """``threads`` clients, ``rate`` GETs a second in all, alternating the two nodes."""

    def __init__(self, ports: list[int], threads: int, rate: float) -> None:
        self.ports = ports
        self.interval = threads / rate
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.requests = 0
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(threads)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(15)

    def _run(self, index: int) -> None:
        port = self.ports[index % len(self.ports)]
        conn: http.client.HTTPConnection | None = None
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            next_at += self.interval
            problem = None
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", f"/release?n={index}", headers={"Host": "app.test"})
                reply = conn.getresponse()
                body = reply.read()
                if reply.status != 200:
                    problem = f"node :{port}: {reply.status} {body[:80]!r}"
                if reply.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                problem = f"node :{port}: {type(exc).__name__}: {exc}"
                if conn is not None:
                    conn.close()
                conn = None
            with self.lock:
                self.requests += 1
                if problem is not None:
                    self.failures.append(problem)
            self.stop_event.wait(max(0.0, next_at - time.monotonic()))
        if conn is not None:
            conn.close()


class Release:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.procs = Processes(work)
        self.consul, self.admin = free_port(), free_port()
        self.backends = {"b1": free_port(), "b2": free_port()}
        self.controls = {"n1": free_port(), "n2": free_port()}
        self.listens = {"n1": free_port(), "n2": free_port()}
        # the ctl figures include starting the client (a Python interpreter, ~0.3 s)
        self.figures: dict[str, list[float]] = {"ctl pull-out until drained (s)": [],
                                                "ctl pull-in until applied (s)": [],
                                                "flapping check's final state (s)": []}

    def address(self, backend: str) -> str:
        return f"127.0.0.1:{self.backends[backend]}"

    # -- set-up
    def start(self) -> None:
        self.procs.start("consul", ["-m", "tests.consul_double", "--port", str(self.consul)],
                         self.consul)
        for name, port in self.backends.items():
            self.start_backend(name)
            status, reply = call(self.consul, "PUT", "/_double/register", {
                "service": "app", "id": name, "address": "127.0.0.1", "port": port})
            if status != 200:
                raise SetupError(f"registering {name} in the double: {status} {reply}")
        for node, control in self.controls.items():
            path = self.work / f"{node}.yaml"
            path.write_text(yaml.safe_dump({
                "control": {"listen": f"127.0.0.1:{control}", "token": NODE_TOKEN},
                "state_dir": str(self.work / node)}))
            self.procs.start(node, ["-m", "slb", "proxy", "-c", str(path), "--workers", "1"],
                             control)
        clusters = [{"name": f"c-{node}"} for node in self.controls]
        (self.work / "admin.yaml").write_text(yaml.safe_dump({
            "listen": f"127.0.0.1:{self.admin}", "store": str(self.work / "admin.db"),
            "consul": {"address": f"127.0.0.1:{self.consul}", "wait": 30},
            "tokens": [{"name": "release", "token": ADMIN_TOKEN, "role": "admin"}],
            "seed": {
                "clusters": clusters,
                "nodes": [{"name": node, "cluster": f"c-{node}", "token": NODE_TOKEN,
                           "control_url": f"http://127.0.0.1:{port}"}
                          for node, port in self.controls.items()],
                "groups": [{"name": "app", "consul": {"service": "app"}}],
                "virtual_servers": [{"name": f"vs-{node}", "cluster": f"c-{node}",
                                     "listen": f"127.0.0.1:{port}", "default": True}
                                    for node, port in self.listens.items()],
                "routes": [{"name": f"r-{node}", "virtual_server": f"vs-{node}", "path": "/",
                            "group": "app"} for node in self.listens]}}))
        self.start_admin()
        until(lambda: self.states() == {"b1": "up", "b2": "up"}, 30, "both nodes serving")

    def start_backend(self, name: str) -> None:
        port = self.backends[name]
        self.procs.start(name, ["-m", "dev.demo_backend", name, str(port)], port)

    def start_admin(self) -> None:
        self.procs.start("admin", ["-m", "admin", "-c", str(self.work / "admin.yaml")],
                         self.admin)

    def states(self) -> dict[str, str] | None:
        """Each backend's state, when both nodes agree on all of them; else None."""
        seen = []
        for control in self.controls.values():
            status, view = call(control, "GET", "/v1/status", token=NODE_TOKEN)
            members = (view or {}).get("groups", {}).get("app", {}) if status == 200 else {}
            seen.append({name: members.get(self.address(name), {}).get("state")
                         for name in self.backends})
        return seen[0] if all(s == seen[0] for s in seen) else None

    # -- the steps
    def ctl(self, *argv: str) -> None:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "admin", "ctl", "--admin", f"http://127.0.0.1:{self.admin}",
             *argv, "--timeout", "30"], cwd=ROOT, capture_output=True, text=True,
            env={**os.environ, "SLB_ADMIN_TOKEN": ADMIN_TOKEN}, timeout=90)
        if done.returncode != 0:
            raise SetupError(f"slb-admin ctl {' '.join(argv)}: exit {done.returncode}: "
                             f"{done.stdout.strip()} {done.stderr.strip()}")
        key = "ctl pull-out until drained (s)" if argv[0] == "pull-out" \
            else "ctl pull-in until applied (s)"
        self.figures[key].append(time.monotonic() - started)

    def roll(self) -> None:
        for name in self.backends:
            say(f"  release of {name}: pull out (drain), restart, pull in")
            self.ctl("pull-out", "app", self.address(name), "--reason", "release", "--wait")
            self.procs.stop(name)
            self.start_backend(name)
            self.ctl("pull-in", "app", self.address(name), "--reason", "release", "--wait")

    def flap(self) -> None:
        say(f"  a health check flaps {self.args.flaps} times")
        status, last = "passing", time.monotonic()
        for flip in range(self.args.flaps + 1):
            if flip == self.args.flaps and status == "passing":
                break  # ended passing: that flip was the final state
            if flip:
                time.sleep(0.15)
            status = "critical" if status == "passing" else "passing"
            last = time.monotonic()
            call(self.consul, "PUT", f"/_double/check/b2?status={status}")
        until(lambda: self.states() == {"b1": "up", "b2": "up"}, 10, "the final state")
        self.figures["flapping check's final state (s)"].append(time.monotonic() - last)

    def outage(self) -> None:
        say(f"  Consul goes away for {self.args.outage:g} s")
        call(self.consul, "PUT", f"/_double/outage?seconds={self.args.outage}")
        time.sleep(self.args.outage + 0.5)

    def admin_restart(self) -> None:
        say("  the admin is killed (SIGKILL) and started again")
        self.procs.stop("admin", signal.SIGKILL)
        self.start_admin()
        until(lambda: self.states() == {"b1": "up", "b2": "up"}, 30, "the nodes after it")


def say(text: str) -> None:
    print(text, flush=True)


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    work = ROOT / "bench" / "out" / f"release-{time.strftime('%Y%m%d-%H%M%S')}"
    work.mkdir(parents=True, exist_ok=True)
    yield work


def run(args: argparse.Namespace) -> int:
    with workdir() as work:
        release = Release(args, work)
        say(f"release scenario (work dir {work})")
        try:
            release.start()
            with Load(list(release.listens.values()), args.threads, args.rate) as load:
                time.sleep(1.0)  # steady load before anything happens
                release.roll()
                release.flap()
                release.outage()
                release.admin_restart()
                time.sleep(1.0)
        except SetupError as exc:
            say(f"release scenario failed: {exc}")
            return 1
        finally:
            release.procs.stop_all()
        say(f"requests: {load.requests}, failures: {len(load.failures)}")
        for failure in load.failures[:10]:
            say(f"  {failure}")
        for name, values in release.figures.items():
            shown = ", ".join(f"{v:.3f}" for v in values)
            say(f"{name}: {shown}")
        return 0 if not load.failures and load.requests > 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outage", type=float, default=10.0, help="seconds without Consul")
    parser.add_argument("--rate", type=float, default=100.0, help="requests a second in all")
    parser.add_argument("--threads", type=int, default=4, help="clients (keep-alive each)")
    parser.add_argument("--flaps", type=int, default=10, help="flips of the flapping check")
    args = parser.parse_args(argv)
    if args.outage < 0 or args.rate <= 0 or args.threads < 1 or args.flaps < 0:
        parser.error("--outage >= 0, --rate > 0, --threads >= 1, --flaps >= 0")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
