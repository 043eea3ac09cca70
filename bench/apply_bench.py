"""`bash bench/run.sh --apply`: how fast a node applies changes, and what changes cost traffic.

An *admin-managed* node (``.venv/bin/slb proxy -c FILE --workers N``, the file holding only
``control`` and ``state_dir``) is changed through its control API, and each change is timed as
the HTTP round trip of the PUT or PATCH: the API answers once every worker has applied it.

1. Per worker count (1 and 2) and snapshot size (1,000 and 10,000 groups of 10 members):
   - ``PUT /v1/config`` of the snapshot onto what the node serves (the first: the previous size
     or nothing), then ``--replaces`` further PUTs of the same size (one weight changed, the
     version bumped): what an admin's full resync costs;
   - ``--patches`` pool deltas ``PATCH /v1/groups/{name}`` (in turn: re-weight a member, add a
     member, remove the member added), median and p95; a series stops early at
     ``--series-seconds`` (slow deltas get fewer samples, marked ``*``, never minutes);
   - a check: ``GET /v1/config`` shows the last version applied by every worker and the
     touched groups exactly as the deltas left them.
2. Under load: wrk (keep-alive, ``-t1``, ``--connections``) drives the snapshot's real group
   (two nginx backends, 100-byte responses) on the 1-worker node; rounds of wrk without changes
   and wrk while PATCH deltas arrive ``--rate`` times a second (re-weights, adds and removes on
   random groups, every 4th a re-weight of the real group itself). Reported: req/s of both,
   the drop in % (target: at most 10 %), failed requests (non-2xx and socket errors).

The synthetic groups' members are unroutable addresses (10.x.y.z:80): each group has its own
virtual server (domain ``gNNNNN.bench.test``) on the one listener, but no request is ever sent
to them; the real group is the listener's default virtual server, which wrk's requests reach.

Everything runs on 127.0.0.1; the backends, the wrk helpers and the process handling come from
bench.py. Every process started here is stopped at the end, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import yaml
from harness import (
    HOST,
    OUT_DIR,
    ROOT,
    SLB_BIN,
    Bench,
    BenchError,
    Service,
    check_target,
    free_ports,
    interrupt_on_signals,
    num,
    pct,
    run_reported,
    save_result,
    say,
    slb_missing,
)

TOKEN = "apply-bench-token"
TARGET_DROP_PCT = 10.0
REAL_GROUP = "real"
HTTP_TIMEOUT = 120.0  # one PUT of 100,000 members; far above what it should take


# ------------------------------------------------------------------------------ the model

class Snapshot:
    """The snapshot the node should hold, kept here to build deltas and check the node."""

    def __init__(self, groups: int, members: int, listen: str, backends: list[str],
                 upstream_idle: int) -> None:
        self.listen = listen
        self.backends = backends
        self.upstream_idle = upstream_idle
        self.version = 0
        # group name -> {address: weight}; insertion order is the node's member order
        self.groups: dict[str, dict[str, int]] = {
            group_name(i): {synthetic_address(i, j): 1 for j in range(members)}
            for i in range(groups)
        }
        self.real: dict[str, int] = dict.fromkeys(backends, 1)
        self.added: list[tuple[str, str]] = []  # members added by deltas, to remove next
        self._next_added = 0

    @property
    def member_count(self) -> int:
        return sum(len(m) for m in self.groups.values()) + len(self.real)

    def document(self) -> dict[str, Any]:
        servers: list[dict[str, Any]] = [{
            "name": "real", "listen": self.listen, "default": True,
            "routes": [{"path": "/", "group": REAL_GROUP}],
        }]
        servers += [{"name": f"vs-{name}", "listen": self.listen,
                     "domains": [f"{name}.bench.test"],
                     "routes": [{"path": "/", "group": name}]} for name in self.groups]
        groups: list[dict[str, Any]] = [{
            "name": REAL_GROUP,
            "members": [{"address": a, "weight": w} for a, w in self.real.items()],
            "keepalive": {"max_idle": self.upstream_idle, "max_requests": 1000},
        }]
        groups += [{"name": name, "members": [{"address": a, "weight": w}
                                              for a, w in members.items()]}
                   for name, members in self.groups.items()]
        return {
            "version": self.version,
            "http": {"keepalive_requests": 1000, "drain_timeout": 1},
            "access_log": {"enabled": False},
            "virtual_servers": servers,
            "groups": groups,
        }

    def next_delta(self, kind: str, rng: random.Random) -> tuple[str, dict[str, Any]]:
        """A delta on a random synthetic group (or the real one: ``kind == 'real'``), already
        recorded in the model; the caller bumps ``version`` once the node accepted it."""
        base, version = self.version, self.version + 1
        if kind == "remove" and not self.added:
            kind = "reweight"
        if kind == "real":
            address = rng.choice(list(self.real))
            self.real[address] = 1 + (self.real[address] % 3)  # 1..3, never 0
            return REAL_GROUP, {"base_version": base, "version": version,
                                "upsert": [{"address": address, "weight": self.real[address]}]}
        if kind == "remove":
            name, address = self.added.pop(0)
            del self.groups[name][address]
            return name, {"base_version": base, "version": version, "remove": [address]}
        name = group_name(rng.randrange(len(self.groups)))
        if kind == "add":
            address = f"10.{200 + self._next_added // 65536}.{(self._next_added >> 8) & 255}." \
                      f"{self._next_added & 255}:80"
            self._next_added += 1
            self.groups[name][address] = 1
            self.added.append((name, address))
            return name, {"base_version": base, "version": version,
                          "upsert": [{"address": address, "weight": 1}]}
        address = rng.choice(list(self.groups[name]))
        weight = rng.randint(1, 100)
        self.groups[name][address] = weight
        return name, {"base_version": base, "version": version,
                      "upsert": [{"address": address, "weight": weight}]}


def group_name(i: int) -> str:
    return f"g{i:05d}"


def synthetic_address(group: int, member: int) -> str:
    # unique per member, never contacted: no request is routed to these groups
    return f"10.{10 + (group >> 16)}.{(group >> 8) & 255}.{group & 255}:{80 + member}"


# ------------------------------------------------------------------------------ the client

class Control:
    """A keep-alive client for one node's control API."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def call(self, method: str, path: str, body: bytes | None = None,
             extra: dict[str, str] | None = None) -> tuple[int, bytes, float]:
        """(status, body, seconds of the round trip: request sent to response read)."""
        headers = {"Authorization": f"Bearer {TOKEN}", **(extra or {})}
        if body is not None:
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(HOST, self.port, timeout=HTTP_TIMEOUT)
                self.conn.connect()
            try:
                t0 = time.perf_counter()
                self.conn.request(method, path, body=body, headers=headers)
                resp = self.conn.getresponse()
                data = resp.read()
                elapsed = time.perf_counter() - t0
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if attempt == 2 or isinstance(exc, TimeoutError):
                    raise BenchError(f"{method} {path}: {type(exc).__name__}: {exc}") from None
                continue  # the keep-alive connection was closed under us: once more
            if resp.getheader("Connection", "").lower() == "close":
                self.close()
            return resp.status, data, elapsed
        raise AssertionError("unreachable")

    def wait_up(self, check_alive: Callable[[], Any], timeout: float = 60.0) -> None:
        """Until ``/healthz`` says 200: the control port opens before the data plane (and
        its workers) is up, and a loaded box takes seconds to start them."""
        deadline = time.monotonic() + timeout
        while self.call("GET", "/healthz")[0] != 200:
            if time.monotonic() > deadline:
                raise BenchError(f"the node on port {self.port} is not up after {timeout} s")
            check_alive()
            time.sleep(0.05)

    def change(self, method: str, path: str, doc: dict[str, Any]) -> float:
        status, data, elapsed = self.call(method, path, json.dumps(doc).encode())
        if status != 200:
            raise BenchError(f"{method} {path} answered {status}: {data[:500]!r}")
        return elapsed

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def summarize_times(seconds: list[float]) -> dict[str, Any]:
    ms = sorted(s * 1e3 for s in seconds)
    if not ms:
        return {"n": 0, "median_ms": None, "p95_ms": None, "max_ms": None, "all_ms": []}
    # nearest-rank p95: with 50 samples the 48th
    p95 = ms[min(len(ms) - 1, max(0, -(-95 * len(ms) // 100) - 1))]
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 2),
            "p95_ms": round(p95, 2), "max_ms": round(ms[-1], 2),
            "all_ms": [round(x, 2) for x in ms]}


# ------------------------------------------------------------------------------ the bench

class ApplyBench(Bench):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        work = OUT_DIR / f"apply-{self.stamp}"
        self.work.rename(work)
        self.work = work
        self.wrk_script = work / "report.lua"
        self.rng = random.Random(args.seed)
        self.rows: list[dict[str, Any]] = []

    # -- the node
    def start_node(self, workers: int, cpu: str | None) -> tuple[Service, Control, int]:
        control_port, proxy_port = free_ports(2)
        state = self.work / f"state-w{workers}"
        local = {"control": {"listen": f"{HOST}:{control_port}", "token": TOKEN},
                 "state_dir": str(state)}
        path = self.work / f"slb-w{workers}.yaml"
        path.write_text(yaml.safe_dump(local, sort_keys=False))
        argv = [str(SLB_BIN), "proxy", "-c", str(path), "--workers", str(workers),
                "--log-level", "warning"]
        svc = self.launch(f"slb-w{workers}", argv, cpu, control_port)
        control = Control(control_port)
        control.wait_up(svc.check_alive)
        return svc, control, proxy_port

    def verify(self, control: Control, snap: Snapshot, workers: int,
               touched: set[str]) -> float:
        """GET /v1/config: the last version, applied by every worker; touched groups as the
        model has them. Returns the seconds the GET took."""
        status, data, elapsed = control.call("GET", "/v1/config")
        if status != 200:
            raise BenchError(f"GET /v1/config answered {status}")
        view = json.loads(data)
        versions = view.get("workers", {})
        if view.get("version") != snap.version or not view.get("applied") \
                or len(versions) != workers or set(versions.values()) != {snap.version}:
            raise BenchError(f"node not at version {snap.version} on {workers} workers: "
                             f"version {view.get('version')}, applied {view.get('applied')}, "
                             f"workers {versions}")
        held = {g["name"]: {m["address"]: m["weight"] for m in g["members"]}
                for g in view["snapshot"]["groups"]}
        expected = {REAL_GROUP: snap.real} | {name: snap.groups[name] for name in touched
                                               if name != REAL_GROUP}
        for name, members in expected.items():
            if held.get(name) != members:
                raise BenchError(f"group {name} on the node: {held.get(name)}, expected "
                                 f"{members}")
        if len(held) != len(snap.groups) + 1:
            raise BenchError(f"the node holds {len(held)} groups, expected "
                             f"{len(snap.groups) + 1}")
        return elapsed

    def put(self, control: Control, snap: Snapshot) -> tuple[float, int]:
        snap.version += 1
        body = json.dumps(snap.document(), separators=(",", ":")).encode()
        status, data, elapsed = control.call("PUT", "/v1/config", body)
        if status != 200:
            raise BenchError(f"PUT /v1/config of version {snap.version} answered {status}: "
                             f"{data[:500]!r}")
        return elapsed, len(body)

    def patch(self, control: Control, snap: Snapshot, kind: str) -> tuple[str, float]:
        name, delta = snap.next_delta(kind, self.rng)
        elapsed = control.change("PATCH", f"/v1/groups/{name}", delta)
        snap.version += 1
        return name, elapsed

    def record(self, workers: int, snap: Snapshot, change: str, seconds: list[float],
               **extra: Any) -> dict[str, Any]:
        row = {"workers": workers, "groups": len(snap.groups) + 1,
               "members": snap.member_count, "change": change, **summarize_times(seconds),
               **extra}
        self.rows.append(row)
        count = f"{row['n']}*" if extra.get("cut_by_budget") else row["n"]
        say(TABLE_FMT.format(workers, f"{row['groups']:,}", f"{row['members']:,}", change,
                             count, num(row["median_ms"], ",.1f"), num(row["p95_ms"], ",.1f"),
                             num(row["max_ms"], ",.1f")))
        return row

    def node_run(self, workers: int, cpu: str | None, load: bool) -> dict[str, Any] | None:
        a = self.args
        svc, control, proxy_port = self.start_node(workers, cpu)
        listen = f"{HOST}:{proxy_port}"
        backends = [f"{HOST}:{p}" for p in self.ports.backends]
        load_result = None
        previous, previous_groups = 0, 0
        try:
            for groups in a.groups:
                snap = Snapshot(groups, a.members, listen, backends, a.upstream_idle)
                snap.version = previous
                first, size = self.put(control, snap)
                was = f"{previous_groups:,} groups" if previous_groups else "empty"
                self.record(workers, snap, f"PUT snapshot (onto {was})", [first],
                            body_bytes=size)
                svc.check_alive()
                kinds = ("reweight", "add", "remove")
                touched: set[str] = set()
                times = []
                deadline = time.monotonic() + a.series_seconds
                for i in range(a.patches):
                    name, elapsed = self.patch(control, snap, kinds[i % 3])
                    touched.add(name)
                    times.append(elapsed)
                    if time.monotonic() > deadline:
                        break  # bounded: slow deltas get fewer samples, never minutes
                self.record(workers, snap, "PATCH delta (1 member)", times,
                            kinds=list(kinds), cut_by_budget=len(times) < a.patches)
                self.record(workers, snap, "GET /v1/config (read back)",
                            [self.verify(control, snap, workers, touched)])
                times = []
                for _ in range(a.replaces):
                    name = group_name(self.rng.randrange(groups))
                    address = next(iter(snap.groups[name]))
                    snap.groups[name][address] = self.rng.randint(1, 100)
                    touched.add(name)
                    times.append(self.put(control, snap)[0])
                if times:
                    self.record(workers, snap, "PUT snapshot (same size)", times,
                                body_bytes=size)
                    self.verify(control, snap, workers, touched)
                previous, previous_groups = snap.version, groups + 1
                if load and groups == a.load_groups:
                    load_result = self.load_run(svc, workers, control, snap, proxy_port)
        finally:
            control.close()
            svc.stop()
            self.services.remove(svc)
        return load_result

    # -- under load
    def load_run(self, svc: Service, workers: int, control: Control, snap: Snapshot,
                 port: int) -> dict[str, Any]:
        a = self.args
        say("")
        say(f"Under load: wrk -t1 -c{a.connections} keep-alive to the real group, "
            f"{a.rounds} rounds x {a.duration:g}s without / with PATCH deltas at {a.rate:g}/s; "
            f"node: {svc.name}, {len(snap.groups) + 1:,} groups, {snap.member_count:,} members")
        check_target("slb", port, expect_spread=True)
        if a.warmup > 0:
            self.wrk(port, a.warmup, a.connections)
        say(LOAD_FMT.format("round", "run", "req/s", "p99 ms", "proxy CPU", "failed",
                            "changes/s", "PATCH p50", "PATCH p95"))
        runs: list[dict[str, Any]] = []
        for rnd in range(1, a.rounds + 1):
            for with_changes in (False, True):
                svc.check_alive()
                sender = ChangeSender(self, control, snap, a.rate) if with_changes else None
                if sender is not None:
                    sender.start()
                try:
                    run = self.measure("changes" if with_changes else "steady", svc, port)
                finally:
                    if sender is not None:
                        sender.stop()
                run["round"] = rnd
                run["failed"] = run["socket_errors"] + run["non_2xx"]
                if sender is not None:
                    if sender.error is not None:
                        raise BenchError(f"PATCH under load failed: {sender.error}")
                    run["changes"] = sender.count
                    run["changes_per_s"] = sender.count / sender.elapsed
                    run["patch"] = summarize_times(sender.times)
                runs.append(run)
                patch = run.get("patch", {})
                say(LOAD_FMT.format(
                    rnd, run["target"], f"{run['rps']:,.0f}", f"{run['p99_ms']:.2f}",
                    pct(run["proxy_cpu_pct"]), run["failed"],
                    num(run.get("changes_per_s"), ".1f"), num(patch.get("median_ms"), ",.1f"),
                    num(patch.get("p95_ms"), ",.1f")))
        self.verify(control, snap, workers, set())
        drops = []
        for rnd in range(1, a.rounds + 1):
            steady = next(r for r in runs if r["round"] == rnd and r["target"] == "steady")
            changed = next(r for r in runs if r["round"] == rnd and r["target"] == "changes")
            drops.append(100 * (steady["rps"] - changed["rps"]) / steady["rps"])
        steady_rps = statistics.median(r["rps"] for r in runs if r["target"] == "steady")
        changes_rps = statistics.median(r["rps"] for r in runs if r["target"] == "changes")
        failed = sum(r["failed"] for r in runs)
        all_patch = [t / 1e3 for r in runs for t in r.get("patch", {}).get("all_ms", [])]
        return {
            "node": svc.name, "groups": len(snap.groups) + 1, "members": snap.member_count,
            "rate": a.rate, "connections": a.connections, "runs": runs,
            "steady_rps": steady_rps, "changes_rps": changes_rps,
            "drop_pct_per_round": [round(d, 2) for d in drops],
            "drop_pct": round(statistics.median(drops), 2),
            "changes_per_s": statistics.median(r["changes_per_s"] for r in runs
                                               if r["target"] == "changes"),
            "patch_under_load": summarize_times(all_patch),
            "failed_requests": failed,
            "failed_steady": sum(r["failed"] for r in runs if r["target"] == "steady"),
            "failed_changes": sum(r["failed"] for r in runs if r["target"] == "changes"),
        }

    def run(self) -> dict[str, Any]:
        a = self.args
        say(f"Applying changes on an admin-managed node ({HOST}): round trip of each PUT/PATCH "
            f"(the API answers once every worker has applied)")
        say(f"output: {self.work}")
        self.backend_services = self.start_backends()
        load: dict[str, Any] | None = None
        for workers in a.workers:
            say("")
            # the node that takes the load sits on the proxy CPU like bench.py's; another
            # worker count spreads over the CPUs (2 workers pinned to one CPU would measure
            # the pinning)
            wants_load = a.load_groups > 0 and workers == a.load_workers and load is None
            cpu = self.proxy_cpu if workers == 1 else None
            say(TABLE_FMT.format("workers", "groups", "members", "change", "n", "median ms",
                                 "p95 ms", "max ms"))
            result = self.node_run(workers, cpu, wants_load)
            load = load or result
        return {"apply": self.rows, "load": load}


class ChangeSender:
    """PATCH deltas at a steady rate from a thread while wrk runs; a late one goes at once."""

    KINDS = ("reweight", "add", "real", "remove")

    def __init__(self, bench: ApplyBench, control: Control, snap: Snapshot, rate: float
                 ) -> None:
        self.bench, self.control, self.snap = bench, control, snap
        self.interval = 1.0 / rate
        self.times: list[float] = []
        self.count = 0
        self.elapsed = 0.0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="patch-sender", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(HTTP_TIMEOUT + 5)

    def _run(self) -> None:
        start = time.monotonic()
        try:
            while not self._stop.is_set():
                due = start + self.count * self.interval
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    break
                kind = self.KINDS[self.count % len(self.KINDS)]
                self.times.append(self.bench.patch(self.control, self.snap, kind)[1])
                self.count += 1
        except (BenchError, OSError) as exc:
            self.error = str(exc)
        self.elapsed = time.monotonic() - start


TABLE_FMT = "{:>7}  {:>7}  {:>8}  {:<32}  {:>3}  {:>9}  {:>8}  {:>8}"
LOAD_FMT = "{:>5}  {:<8}  {:>8}  {:>6}  {:>9}  {:>6}  {:>9}  {:>9}  {:>9}"


def print_summary(result: dict[str, Any], args: argparse.Namespace) -> bool:
    """The summary table; True when the under-load target was met (or not measured)."""
    say("")
    say("Summary (ms; PUT = full snapshot, PATCH = pool delta of one member):")
    fmt = "{:>7}  {:>7}  {:>18}  {:>18}  {:>18}"
    say(fmt.format("workers", "groups", "PUT first", "PUT same size p50", "PATCH p50 / p95"))
    for workers in args.workers:
        for groups in args.groups:
            rows = [r for r in result["apply"]
                    if r["workers"] == workers and r["groups"] == groups + 1]
            if not rows:
                continue
            first = next((r for r in rows if r["change"].startswith("PUT snapshot (onto")), {})
            same = next((r for r in rows if r["change"] == "PUT snapshot (same size)"), {})
            patch = next((r for r in rows if r["change"].startswith("PATCH")), {})
            say(fmt.format(workers, f"{groups:,}", num(first.get("median_ms"), ",.1f"),
                           num(same.get("median_ms"), ",.1f"),
                           f"{num(patch.get('median_ms'), ',.1f')} / "
                           f"{num(patch.get('p95_ms'), ',.1f')}"))
    if any(r.get("cut_by_budget") for r in result["apply"]):
        say(f"* the PATCH series stopped at its time budget (--series-seconds "
            f"{args.series_seconds:g}) before {args.patches} deltas")
    load = result.get("load")
    if not load:
        return True
    met = load["drop_pct"] <= TARGET_DROP_PCT and load["failed_requests"] == 0
    say("")
    say(f"Under load ({load['node']}, {load['groups']:,} groups): {load['steady_rps']:,.0f} req/s "
        f"steady, {load['changes_rps']:,.0f} req/s with {load['changes_per_s']:.1f} changes/s "
        f"(asked {load['rate']:g}/s); drop {load['drop_pct']:.1f}% (per round: "
        f"{', '.join(f'{d:.1f}' for d in load['drop_pct_per_round'])}); "
        f"PATCH under load p50 {num(load['patch_under_load']['median_ms'], ',.1f')} ms, "
        f"p95 {num(load['patch_under_load']['p95_ms'], ',.1f')} ms")
    say(f"target: drop <= {TARGET_DROP_PCT:g}% and no failed request: "
        f"{'MET' if met else 'MISSED'} (drop {load['drop_pct']:.1f}%, failed requests "
        f"{load['failed_requests']}: {load['failed_steady']} steady, "
        f"{load['failed_changes']} with changes)")
    return met


# ------------------------------------------------------------------------------ main

def int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("expected positive integers")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="bench/run.sh --apply-only", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int_list, default=[1, 2],
                    help="worker counts, one node each (default 1,2)")
    ap.add_argument("--groups", type=int_list, default=[1000, 10000],
                    help="snapshot sizes in groups, applied in this order (default 1000,10000)")
    ap.add_argument("--members", type=int, default=10, help="members per group (default 10)")
    ap.add_argument("--patches", type=int, default=50,
                    help="timed pool deltas per node and size (default 50)")
    ap.add_argument("--series-seconds", type=float, default=10.0,
                    help="time budget of one PATCH series: it stops there even if fewer than "
                         "--patches were sent (default 10)")
    ap.add_argument("--replaces", type=int, default=2,
                    help="timed same-size snapshot PUTs per node and size (default 2)")
    load = ap.add_argument_group("under load")
    load.add_argument("--load-groups", type=int, default=10000,
                      help="snapshot size (one of --groups) of the load run; 0 = no load run "
                           "(default 10000)")
    load.add_argument("--load-workers", type=int, default=1,
                      help="which node (worker count) takes the load (default 1, pinned like "
                           "bench.py)")
    load.add_argument("--rate", type=float, default=10.0,
                      help="PATCH deltas per second during the loaded runs (default 10)")
    load.add_argument("--rounds", type=int, default=2,
                      help="rounds of (steady, with changes) wrk runs (default 2)")
    load.add_argument("--duration", type=float, default=5.0,
                      help="seconds per wrk run (default 5)")
    load.add_argument("--connections", type=int, default=20,
                      help="wrk keep-alive connections (default 20)")
    load.add_argument("--warmup", type=float, default=1.0, help="unrecorded seconds first")
    load.add_argument("--upstream-idle", type=int, default=32,
                      help="real group's keepalive.max_idle (default 32)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes with taskset")
    ap.add_argument("--seed", type=int, default=1, help="seed of the random deltas")
    ap.add_argument("--strict", action="store_true",
                    help="exit 3 when the under-load target (drop <= 10%%, no failure) is missed")
    args = ap.parse_args(argv)
    if args.members < 1 or args.patches < 0 or args.replaces < 0 or args.rounds < 1 \
            or args.series_seconds <= 0:
        ap.error("--members, --rounds and --series-seconds must be positive, --patches and "
                 "--replaces >= 0")
    if args.load_groups and args.load_groups not in args.groups:
        ap.error("--load-groups must be one of --groups (or 0)")
    if args.load_groups and args.load_workers not in args.workers:
        ap.error("--load-workers must be one of --workers")
    if not 0 < args.duration <= 600 or not 0 < args.rate <= 1000:
        ap.error("--duration must be in (0, 600] and --rate in (0, 1000]")
    if max(args.groups) * args.members > 1_000_000:
        ap.error("at most 1,000,000 members per snapshot")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if slb_missing():
        return 2
    interrupt_on_signals()
    started = time.monotonic()
    bench = ApplyBench(args)
    result = bench.result_head({"1-worker node": bench.proxy_cpu,
                                "wrk_and_backends": bench.load_cpu})

    def body() -> int:
        result.update(bench.run())
        met = print_summary(result, args)
        result["target_met"] = met
        return 3 if args.strict and not met else 0

    status = run_reported("apply bench", bench, result, body)
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    out = save_result("apply", bench.stamp, result)
    say(f"elapsed: {result['elapsed_s']:.0f}s; result: {out.relative_to(ROOT)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
