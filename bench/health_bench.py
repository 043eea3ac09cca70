"""`.venv/bin/python bench/health_bench.py`: how long a Consul health change takes to reach
every proxy node.

The whole control path runs as processes on 127.0.0.1:

- the Consul double (``python -m tests.consul_double --port P``) with ``--groups`` services
  (``svc-000`` ...), each with two instances (synthetic ``10.x.y.z:8080`` addresses: nothing
  is ever sent to them, only the nodes' applied state is read);
- the admin (``slb-admin -c admin.yaml``): one Consul-backed group per service, all routed by
  one virtual server (``/gNNN/`` -> ``gNNN``), cluster ``c1`` with the nodes below;
- ``--nodes`` admin-managed nodes (``slb proxy -c nN.yaml --workers 1``, control API with a
  token, a ``state_dir`` each).

The admin and the nodes run as ``python -m slb`` from the repository root, so the bench measures
the code of the tree it is in.

Once every node serves all the members ``up``, a health change is made every ``--interval``
(100 ms) for ``--duration`` (20 s): one instance of a random group is flipped critical <->
passing through the double's control API (``PUT /_double/check/<id>?status=``), i.e. exactly
what a Consul check flip does to a blocking ``/v1/health/service`` query. An instance flipped
within the last ``--cooldown`` seconds is not picked again, so every change has one expected
outcome (critical -> member ``down``, passing -> ``up``). Beside them, with ``--flap`` (250 ms),
one check of group ``g000`` flips every ``--flap`` seconds, as a flapping health check does; its
flips are reported apart, each one that was not superseded (the next flip was sent before every
node showed it) counted against the same target (``health_summary``).

Each node is watched by its own thread over one keep-alive connection: ``GET
/v1/config?summary=1`` every ``--poll`` seconds (5 ms); when the version moves, ``GET
/v1/config`` (the applied snapshot, which a node updates only once its worker acknowledged the
change) gives every member's state, stamped with the time that answer arrived. A change's
latency on a node is the first such stamp, after the change was sent, showing the expected
state; the figure reported is the time until **all** nodes show it. Polling adds up to
``--poll`` plus one config fetch (about 1-3 ms) to each figure, so the numbers are an upper
bound. The target: p99 < 200 ms.

Output: the table on stdout, ``bench/out/health-<time>.json`` (every change with its per-node
latencies) and ``bench/out/health-latest.json``; configs and logs in
``bench/out/health-<time>/``. Every process started is stopped at the end (SIGTERM, then
SIGKILL of its session), also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import yaml
from harness import (
    OUT_DIR,
    ROOT,
    BenchError,
    Interrupted,
    Service,
    environment,
    free_ports,
    num,
    say,
)
from health_summary import print_table, summarize, summarize_flapping

NODE_TOKEN = "health-bench-node-token"
ADMIN_TOKEN = "health-bench-admin-token"
STATES = {"critical": "down", "passing": "up"}


# ------------------------------------------------------------------------------ HTTP helpers

class Http:
    """One keep-alive connection to 127.0.0.1:port (reopened after an error)."""

    def __init__(self, port: int, token: str | None = None, timeout: float = 10.0) -> None:
        self.port = port
        self.token = token
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                                       timeout=self.timeout)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                response = self.conn.getresponse()
                raw = response.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    raise
                continue
            try:
                return response.status, json.loads(raw) if raw else None
            except ValueError:
                return response.status, raw.decode("utf-8", "replace")
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


# ------------------------------------------------------------------------------ the model

def group_name(i: int) -> str:
    return f"g{i:03d}"


def service_name(i: int) -> str:
    return f"svc-{i:03d}"


def instance_id(i: int, j: int) -> str:
    return f"{service_name(i)}-{j}"


def instance_address(i: int, j: int) -> str:
    return f"10.{j + 1}.{i // 200}.{i % 200 + 1}:8080"


@dataclass
class Change:
    seq: int
    group: int
    instance: int
    status: str  # what the check was set to
    sent: float  # monotonic, just before the control request
    acked: float = 0.0  # the double answered (the change is in its catalog)
    seen: dict[str, float] = field(default_factory=dict)  # node -> first matching stamp
    flapping: bool = False  # a flip of the flapping instance (``--flap``)

    @property
    def address(self) -> str:
        return instance_address(self.group, self.instance)

    @property
    def expected(self) -> str:
        return STATES[self.status]

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "flapping": self.flapping,
                "group": group_name(self.group), "address": self.address,
                "status": self.status, "control_ms": round((self.acked - self.sent) * 1000, 2),
                "latency_ms": {n: round((t - self.sent) * 1000, 2)
                               for n, t in sorted(self.seen.items())}}


class Watcher(threading.Thread):
    """Polls one node; records, per change, when the node first shows its outcome."""

    def __init__(self, name: str, port: int, poll: float, pending: list[Change],
                 lock: threading.Lock, stop: threading.Event) -> None:
        super().__init__(name=f"watch-{name}", daemon=True)
        self.node = name
        self.http = Http(port, NODE_TOKEN, timeout=5.0)
        self.poll = poll
        self.pending = pending
        self.lock = lock
        self.stop_event = stop
        self.version = -1
        self.polls = 0
        self.fetches = 0
        self.errors = 0
        self.states: dict[str, str] = {}

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                started = time.monotonic()
                try:
                    self.check()
                except (OSError, http.client.HTTPException, ValueError, KeyError):
                    self.errors += 1
                delay = self.poll - (time.monotonic() - started)
                if delay > 0:
                    time.sleep(delay)
        finally:
            self.http.close()

    def check(self) -> None:
        self.polls += 1
        status, summary = self.http.request("GET", "/v1/config?summary=1")
        if status != 200 or summary["version"] == self.version:
            return
        status, view = self.http.request("GET", "/v1/config")
        stamp = time.monotonic()
        if status != 200:
            return
        self.fetches += 1
        self.version = view["version"]
        self.states = {m["address"]: m["state"] for g in view["snapshot"]["groups"]
                       for m in g["members"]}
        with self.lock:
            for change in self.pending:
                if self.node not in change.seen and change.sent < stamp \
                        and self.states.get(change.address) == change.expected:
                    change.seen[self.node] = stamp


# ------------------------------------------------------------------------------ the bench

class HealthBench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        self.work = OUT_DIR / f"health-{self.stamp}"
        self.work.mkdir(parents=True, exist_ok=True)
        self.services: list[Service] = []
        ports = free_ports(3 + 2 * args.nodes)
        self.double_port, self.admin_port, self.listen_port = ports[:3]
        self.control_ports = ports[3:3 + args.nodes]
        self.double = Http(self.double_port)
        self.rng = random.Random(args.seed)

    # -- processes
    def launch(self, name: str, argv: list[str], port: int) -> Service:
        svc = Service(name, argv, self.work / f"{name}.log")
        self.services.append(svc)
        svc.start()
        svc.wait_listening(port, timeout=30.0)
        say(f"  {name:8s} pid {svc.pid} on 127.0.0.1:{port}")
        return svc

    def stop_all(self) -> None:
        for svc in reversed(self.services):
            svc.stop()

    # -- set-up
    def start_double(self) -> None:
        self.launch("consul", [sys.executable, "-m", "tests.consul_double", "--port",
                               str(self.double_port)], self.double_port)
        for i in range(self.args.groups):
            for j in range(2):
                host, _, port = instance_address(i, j).rpartition(":")
                status, reply = self.double.request("PUT", "/_double/register", {
                    "service": service_name(i), "id": instance_id(i, j), "address": host,
                    "port": int(port)})
                if status != 200:
                    raise BenchError(f"registering {instance_id(i, j)}: {status} {reply}")

    def start_nodes(self) -> None:
        for n, port in enumerate(self.control_ports):
            name = f"n{n + 1}"
            path = self.work / f"{name}.yaml"
            path.write_text(yaml.safe_dump({
                "control": {"listen": f"127.0.0.1:{port}", "token": NODE_TOKEN},
                "state_dir": str(self.work / f"state-{name}"),
            }))
            self.launch(name, [sys.executable, "-m", "slb", "proxy", "-c", str(path),
                               "--workers", "1"], port)

    def start_admin(self) -> None:
        groups = self.args.groups
        config = {
            "listen": f"127.0.0.1:{self.admin_port}",
            "store": str(self.work / "admin.db"),
            "consul": {"address": f"127.0.0.1:{self.double_port}", "wait": self.args.wait},
            "tokens": [{"name": "bench", "token": ADMIN_TOKEN, "role": "admin"}],
            "seed": {
                "clusters": [{"name": "c1"}],
                "nodes": [{"name": f"n{n + 1}", "cluster": "c1", "token": NODE_TOKEN,
                           "control_url": f"http://127.0.0.1:{port}"}
                          for n, port in enumerate(self.control_ports)],
                "groups": [{"name": group_name(i), "consul": {"service": service_name(i)}}
                           for i in range(groups)],
                "virtual_servers": [{"name": "site", "cluster": "c1", "default": True,
                                     "listen": f"127.0.0.1:{self.listen_port}"}],
                "routes": [{"name": f"r{i:03d}", "virtual_server": "site",
                            "path": f"/{group_name(i)}/", "group": group_name(i)}
                           for i in range(groups)],
            },
        }
        path = self.work / "admin.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.launch("admin", [sys.executable, "-m", "admin", "-c", str(path)],
                    self.admin_port)

    def wait_all_up(self, timeout: float = 60.0) -> None:
        """Every node applied every member of every group as ``up``."""
        wanted = {instance_address(i, j) for i in range(self.args.groups) for j in range(2)}
        deadline = time.monotonic() + timeout
        for port in self.control_ports:
            node = Http(port, NODE_TOKEN)
            try:
                while True:
                    with contextlib.suppress(OSError, http.client.HTTPException):
                        status, view = node.request("GET", "/v1/config")
                        if status == 200 and view.get("snapshot"):
                            states = {m["address"]: m["state"]
                                      for g in view["snapshot"]["groups"] for m in g["members"]}
                            if all(states.get(a) == "up" for a in wanted):
                                break
                    if time.monotonic() > deadline:
                        raise BenchError(f"node on {port} never served every member up; see "
                                         f"{self.work}")
                    time.sleep(0.1)
            finally:
                node.close()

    # -- the measurement
    def run_changes(self) -> tuple[list[Change], list[Watcher]]:
        args = self.args
        pending: list[Change] = []
        lock = threading.Lock()
        stop = threading.Event()
        watchers = [Watcher(f"n{n + 1}", port, args.poll, pending, lock, stop)
                    for n, port in enumerate(self.control_ports)]
        for watcher in watchers:
            watcher.start()
        time.sleep(0.5)  # every watcher knows the current version
        status: dict[tuple[int, int], str] = {}
        last_flip: dict[tuple[int, int], float] = {}
        changes: list[Change] = []
        start = time.monotonic()
        count = int(args.duration / args.interval)
        # the flapping instance (group 0, instance 0) flips every --flap seconds between the
        # steady changes, which leave group 0 alone
        flap_due = start + args.flap / 2 if args.flap else math.inf
        first = 1 if args.flap else 0

        def flip(seq: int, i: int, j: int, flapping: bool) -> None:
            new = "critical" if status.get((i, j), "passing") == "passing" else "passing"
            change = Change(seq, i, j, new, time.monotonic(), flapping=flapping)
            with lock:
                pending.append(change)
            code, reply = self.double.request(
                "PUT", f"/_double/check/{instance_id(i, j)}?status={new}")
            change.acked = time.monotonic()
            if code != 200:
                raise BenchError(f"flipping {instance_id(i, j)}: {code} {reply}")
            status[(i, j)] = new
            last_flip[(i, j)] = change.sent
            changes.append(change)

        try:
            for seq in range(count):
                due = start + seq * args.interval
                while flap_due <= due:
                    time.sleep(max(0.0, flap_due - time.monotonic()))
                    flip(len(changes), 0, 0, flapping=True)
                    flap_due += args.flap
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                now = time.monotonic()
                choices = [(i, j) for i in range(first, args.groups) for j in range(2)
                           if now - last_flip.get((i, j), -1e9) >= args.cooldown]
                flip(len(changes), *self.rng.choice(choices), flapping=False)
            # let the last changes land (bounded)
            deadline = time.monotonic() + args.settle
            while time.monotonic() < deadline:
                with lock:
                    if all(len(c.seen) == len(watchers) for c in changes):
                        break
                time.sleep(0.05)
        finally:
            stop.set()
            for watcher in watchers:
                watcher.join(5)
        return changes, watchers

    def admin_figures(self) -> dict[str, Any]:
        """The admin's view of its nodes, and its push durations (sum, count) per node."""
        admin = Http(self.admin_port, ADMIN_TOKEN)
        try:
            _, nodes = admin.request("GET", "/api/v1/nodes")
            _, metrics = admin.request("GET", "/metrics")
        finally:
            admin.close()
        pushes: dict[str, dict[str, float]] = {}
        for line in str(metrics).splitlines():
            for suffix in ("sum", "count"):
                prefix = f"slb_admin_push_duration_seconds_{suffix}{{"
                if line.startswith(prefix):
                    labels, _, value = line[len(prefix):].partition("} ")
                    node = dict(part.split("=", 1) for part in labels.split(","))["node"]
                    pushes.setdefault(node.strip('"'), {})[suffix] = float(value)
        return {"nodes": [{k: n.get(k) for k in ("name", "in_sync", "lag", "pushes",
                                                   "full_pushes", "delta_pushes", "failures",
                                                   "last_error")}
                          for n in (nodes or {}).get("items", [])],
                "push_durations": pushes}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--nodes", type=int, default=3, help="admin-managed proxy nodes")
    parser.add_argument("--groups", type=int, default=100,
                        help="Consul-backed groups (one service of 2 instances each)")
    parser.add_argument("--interval", type=float, default=0.1,
                        help="seconds between health changes")
    parser.add_argument("--duration", type=float, default=20.0,
                        help="seconds of changes (at most 600)")
    parser.add_argument("--poll", type=float, default=0.005,
                        help="seconds between a watcher's polls of a node")
    parser.add_argument("--cooldown", type=float, default=2.0,
                        help="an instance flipped this recently is not picked again")
    parser.add_argument("--flap", type=float, default=0.25,
                        help="seconds between flips of one flapping check beside the steady "
                        "changes (0: none)")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="seconds to wait for the last changes to land")
    parser.add_argument("--wait", type=float, default=55.0,
                        help="the admin's Consul blocking wait (consul.wait)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the changes")
    parser.add_argument("--strict", action="store_true", help="exit 3 if the target is missed")
    args = parser.parse_args(argv)
    if not 0 < args.duration <= 600 or args.interval <= 0 or args.poll <= 0:
        parser.error("--duration must be in (0, 600], --interval and --poll positive")
    if args.flap < 0 or (args.flap and args.groups < 2):
        parser.error("--flap must be 0 or more, and needs --groups 2 or more")
    if (args.groups - (1 if args.flap else 0)) * 2 <= args.cooldown / args.interval:
        parser.error("too few instances for --cooldown at this --interval")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.chdir(ROOT)  # python -m tests.consul_double runs from the repository root
    for name in ("CONSUL_HTTP_TOKEN", "CONSUL_HTTP_ADDR"):
        os.environ.pop(name, None)  # the admin's file names the double; nothing overrides it

    def interrupted(signum: int, frame: Any) -> None:
        raise Interrupted(signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)
    bench = HealthBench(args)
    summary: dict[str, Any] = {"met": False}
    say(f"health bench: {args.nodes} nodes, {args.groups} Consul-backed groups x 2 instances, "
        f"a change every {args.interval * 1000:.0f} ms for {args.duration:.0f} s "
        f"(work dir {bench.work})")
    try:
        bench.start_double()
        bench.start_nodes()
        bench.start_admin()
        say("  waiting for every node to serve every member ...")
        bench.wait_all_up()
        before = bench.admin_figures()
        changes, watchers = bench.run_changes()
        names = [w.node for w in watchers]
        summary = summarize([c for c in changes if not c.flapping], names)
        say("steady (a change every --interval, each instance at most every --cooldown):")
        print_table(summary)
        if args.flap:
            flapping = summarize_flapping([c for c in changes if c.flapping], names)
            say(f"flapping (one check flipped every {args.flap * 1000:.0f} ms beside them; "
                "superseded flips left out):")
            print_table(flapping)
            summary = {**summary, "flapping": flapping,
                       "met": summary["met"] and flapping["met"]}
        for watcher in watchers:
            say(f"  {watcher.node}: {watcher.polls} polls, {watcher.fetches} snapshots read, "
                f"{watcher.errors} errors")
        admin = bench.admin_figures()
        for node in admin["nodes"]:
            old = next((n for n in before["nodes"] if n["name"] == node["name"]), {})
            durations = admin["push_durations"].get(node["name"], {})
            earlier = before["push_durations"].get(node["name"], {})
            count = durations.get("count", 0) - earlier.get("count", 0)
            spent = durations.get("sum", 0) - earlier.get("sum", 0)
            node["window"] = {
                "pushes": (node["pushes"] or 0) - (old.get("pushes") or 0),
                "delta_pushes": (node["delta_pushes"] or 0) - (old.get("delta_pushes") or 0),
                "full_pushes": (node["full_pushes"] or 0) - (old.get("full_pushes") or 0),
                "push_mean_ms": round(spent / count * 1000, 2) if count else None}
            window = node["window"]
            say(f"  admin -> {node['name']} during the changes: {window['pushes']} pushes "
                f"({window['delta_pushes']} PATCH deltas, {window['full_pushes']} full PUTs), "
                f"mean push {num(window['push_mean_ms'], '.1f')} ms, failures "
                f"{node['failures']}, in sync {node['in_sync']}")
        result = {"options": vars(args), "environment": environment(), "summary": summary,
                  "watchers": [{"node": w.node, "polls": w.polls, "fetches": w.fetches,
                                "errors": w.errors} for w in watchers],
                  "admin": admin, "changes": [c.to_json() for c in changes]}
        out = OUT_DIR / f"health-{bench.stamp}.json"
        out.write_text(json.dumps(result, indent=1))
        (OUT_DIR / "health-latest.json").write_text(json.dumps(result, indent=1))
        say(f"results: {out}")
    except Interrupted as exc:
        say(f"interrupted ({exc}): stopping")
        return 130
    except BenchError as exc:
        say(f"health bench failed: {exc}")
        return 1
    finally:
        bench.stop_all()
        bench.double.close()
    return 3 if args.strict and not summary["met"] else 0


if __name__ == "__main__":
    sys.exit(main())
