"""Hot reload with worker processes: ``python -m slb proxy -c FILE --workers 2``.

A supervisor owns the control API and hands each change to two workers sharing the listener with
SO_REUSEPORT. These tests drive it as an operator would: edit the file and send SIGHUP, or push
with the control API; kill a worker; stop and start the node; SIGTERM it mid-request. Backends
run on the test's event loop; requests go over several fresh connections so the kernel spreads
them over both workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from tests.e2e.conftest import REPO, exit_code, log_contains, node_config, slb_command, write_config
from tests.support.backends import Backend, ReceivedRequest, free_port, named_backends, response
from tests.support.client import Connection, build_request
from tests.support.control import ControlClient, ControlReply
from tests.support.proxy import member_entry as member

TOKEN = "t"
WORKER_NAME = re.compile(r"^worker-(\d+)\[(\d+)\]$")


class WorkersNode:
    """``slb proxy -c FILE --workers 2`` as a child process, its log in a file."""

    def __init__(self, config_path: Path, log_path: Path, control_port: int,
                 workers: int = 2) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.control = ControlClient(control_port, TOKEN)
        self.known_workers: set[int] = set()  # every worker pid seen, killed in stop()
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            slb_command("proxy", "-c", str(config_path), "--workers", str(workers)),
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def children(self) -> list[int]:
        """Pids of the supervisor's child processes (its workers)."""
        pids: list[int] = []
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
                pids += [int(p) for p in (task / "children").read_text().split()]
        self.known_workers.update(pids)
        return pids

    async def answers(self, path: str, status: int = 200, timeout: float = 15.0) -> None:
        """Wait until the control API answers ``path`` with ``status``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            assert self.proc.poll() is None, f"proxy exited early:\n{self.log()}"
            with contextlib.suppress(OSError, TimeoutError, ConnectionError):
                if (await self.control.get(path)).status == status:
                    return
            assert loop.time() < deadline, f"{path} never answered {status}:\n{self.log()}"
            await asyncio.sleep(0.02)

    async def applied(self, version: int, timeout: float = 10.0) -> dict[str, Any]:
        """Wait until every worker has applied ``version``; returns GET /v1/config."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            view = await self.control.config()
            if view["version"] == version and view["applied"] \
                    and set(view["workers"].values()) == {version}:
                return view  # type: ignore[no-any-return]
            assert loop.time() < deadline, f"version {version} not applied: {view}\n{self.log()}"
            await asyncio.sleep(0.02)

    async def exit_code(self, timeout: float) -> int | None:
        return await exit_code(self.proc, timeout)

    def stop(self) -> None:
        """Terminate the supervisor (then kill it if it lingers) and any worker left behind."""
        workers = set(self.children()) | self.known_workers
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for pid in workers:
            if is_running_worker(pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGCONT)
                    os.kill(pid, signal.SIGKILL)
        self._log.close()


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[Callable[..., WorkersNode]]:
    """``start_node(config_dict, name=...)`` writes the file and starts the node on it."""
    started: list[WorkersNode] = []

    def start(config: dict[str, Any], name: str = "slb") -> WorkersNode:
        path = write_config(tmp_path / f"{name}.yaml", config)
        control_port = int(config["control"]["listen"].rsplit(":", 1)[1])
        node = WorkersNode(path, tmp_path / f"{name}.log", control_port)
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


def is_running_worker(pid: int) -> bool:
    """``pid`` is a live ``slb.node.worker`` process (not gone, not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"slb.node.worker" in cmdline and stat.rsplit(")", 1)[1].split()[0] != "Z"


def admin_local(state_dir: Path) -> dict[str, Any]:
    return {"control": {"listen": f"127.0.0.1:{free_port()}", "token": TOKEN},
            "state_dir": str(state_dir)}


def snapshot(version: int, port: int, members: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "version": version,
        "virtual_servers": [{"name": "vs", "listen": f"127.0.0.1:{port}",
                             "routes": [{"path": "/", "group": "g"}]}],
        "groups": [{"name": "g", "members": members}],
    }


async def file_node(start_node: Callable[..., WorkersNode], members: list[str], **http: Any
                    ) -> tuple[dict[str, Any], int, WorkersNode]:
    """A file-managed node on ``node_config(members, **http)``, ready: its config, data port
    and process."""
    config = node_config(members, **http)
    port = int(config["virtual_servers"][0]["listen"].rsplit(":", 1)[1])
    node = start_node(config)
    await node.answers("/ready")
    return config, port, node


async def admin_node_serving(start_node: Callable[..., WorkersNode], state_dir: Path,
                             backend: Backend) -> tuple[WorkersNode, int, ControlReply]:
    """An admin-managed node pushed version 1 with ``backend`` as the one member of g: the
    node, its data port and the push reply."""
    node = start_node(admin_local(state_dir))
    await node.answers("/healthz")
    port = free_port()
    reply = await node.control.push(snapshot(1, port, [member(backend)]))
    assert reply.status == 200, reply.body
    return node, port, reply


async def names_over_connections(port: int, connections: int, per_connection: int = 1
                                 ) -> list[str | None]:
    """X-Backend of requests over ``connections`` fresh connections, one after another."""
    names: list[str | None] = []
    for _ in range(connections):
        conn = await Connection.open(port)
        try:
            for _ in range(per_connection):
                reply = await conn.request("GET", "/")
                assert reply.status == 200, (reply.status, reply.body)
                names.append(reply.header("x-backend"))
        finally:
            await conn.close()
    return names


def worker_pids(view: dict[str, Any]) -> dict[int, tuple[int, int]]:
    """worker index -> (pid, applied version), from GET /v1/config's ``workers``."""
    found: dict[int, tuple[int, int]] = {}
    for name, version in view["workers"].items():
        match = WORKER_NAME.match(name)
        assert match, name
        found[int(match[1])] = (int(match[2]), version)
    return found


class Load:
    """Keep-alive clients requesting in a loop; failures and who answered are recorded.

    The test bumps ``started`` before it sends change k and ``epoch`` once change k is applied
    by every worker. Each record keeps ``epoch`` when its request was sent and ``started`` when
    its answer came back: the request saw one of the configurations between those two.
    """

    def __init__(self, port: int, connections: int) -> None:
        self.port = port
        self.epoch = 0
        self.started = 0
        self.records: list[tuple[int, int, str | None]] = []
        self.failures: list[str] = []
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run(i)) for i in range(connections)]

    async def _run(self, index: int) -> None:
        conn = await Connection.open(self.port)
        try:
            while not self._stop.is_set():
                sent = self.epoch
                try:
                    reply = await conn.request("GET", f"/load/{index}", timeout=5)
                except (OSError, TimeoutError) as exc:
                    self.failures.append(f"connection {index}: {exc!r}")
                    await conn.close()
                    conn = await Connection.open(self.port)
                    continue
                if reply.status != 200:
                    self.failures.append(f"connection {index}: {reply.status} {reply.body!r}")
                self.records.append((sent, self.started, reply.header("x-backend")))
                await asyncio.sleep(0.005)
        finally:
            await conn.close()

    async def after(self, epoch: int, count: int, timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while sum(1 for sent, _, _ in self.records if sent >= epoch) < count:
            assert loop.time() < deadline, f"load stalled after change {epoch}"
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._stop.set()
        ended = await asyncio.gather(*self._tasks, return_exceptions=True)
        assert [e for e in ended if e is not None] == []


# -- file-managed: SIGHUP ---------------------------------------------------------------------


async def test_sighup_reload_reaches_both_workers_and_bumps_the_version(backend_factory,
                                                                        start_node):
    a, b = await named_backends(backend_factory, "a", "b")
    config, port, node = await file_node(start_node, [a.address])
    view = await node.control.config()
    assert (view["managed_by"], view["version"], view["applied"]) == ("file", 0, True)
    assert len(view["workers"]) == 2
    assert await names_over_connections(port, 6) == ["a"] * 6

    config["groups"][0]["members"] = [{"address": b.address}]  # change the member
    write_config(node.config_path, config)
    node.proc.send_signal(signal.SIGHUP)
    await node.applied(1)
    assert await names_over_connections(port, 8) == ["b"] * 8

    config["groups"][0]["members"] = [{"address": a.address, "weight": 3},  # re-weight
                                      {"address": b.address, "weight": 1}]
    write_config(node.config_path, config)
    node.proc.send_signal(signal.SIGHUP)
    await node.applied(2)
    for _ in range(3):  # each connection stays on one worker: a whole WRR round there
        assert sorted(await names_over_connections(port, 1, 8)) == ["a"] * 6 + ["b"] * 2
    assert node.proc.poll() is None


async def test_sighup_with_an_invalid_file_changes_nothing_and_keeps_serving(backend_factory,
                                                                              start_node):
    a, b = await named_backends(backend_factory, "a", "b")
    config, port, node = await file_node(start_node, [a.address])
    before = await node.control.config()

    config["groups"][0]["members"] = [{"address": b.address, "weight": -1}]
    write_config(node.config_path, config)
    node.proc.send_signal(signal.SIGHUP)
    assert await log_contains(node.log, "refused"), node.log()
    assert "groups[0].members[0].weight" in node.log()

    after = await node.control.config()
    assert (after["version"], after["hash"]) == (before["version"], before["hash"])
    assert after["workers"] == before["workers"]
    assert await names_over_connections(port, 6) == ["a"] * 6
    assert (await node.control.get("/ready")).status == 200
    assert b.requests == []
    assert "Traceback" not in node.log()


async def test_two_sighup_reloads_under_load_fail_no_request(backend_factory, start_node):
    a, b = await named_backends(backend_factory, "a", "b")
    config, port, node = await file_node(start_node, [a.address])
    load = Load(port, connections=4)
    try:
        await load.after(0, 20)
        plans = [[b.address], [a.address, b.address]]
        for version, addresses in enumerate(plans, start=1):
            config["groups"][0]["members"] = [{"address": x} for x in addresses]
            write_config(node.config_path, config)
            load.started = version
            node.proc.send_signal(signal.SIGHUP)
            await node.applied(version)
            load.epoch = version
            await load.after(version, 40)
    finally:
        await load.stop()

    assert load.failures == []
    allowed = [{"a"}, {"b"}, {"a", "b"}]  # by epoch
    strays = [r for r in load.records
              if r[2] not in set().union(*allowed[r[0]:r[1] + 1])]
    assert strays == []
    assert {name for sent, _, name in load.records if sent == 2} == {"a", "b"}
    assert node.proc.poll() is None


# -- admin-managed: PUT and PATCH -------------------------------------------------------------


async def test_put_then_patch_reach_both_workers(backend_factory, start_node, tmp_path):
    a, b = await named_backends(backend_factory, "a", "b")
    node = start_node(admin_local(tmp_path))
    await node.answers("/healthz")
    assert (await node.control.get("/ready")).status == 503  # nothing pushed yet
    view = await node.control.config()
    assert (view["managed_by"], view["version"]) == ("admin", 0)

    port = free_port()
    reply = await node.control.push(snapshot(1, port, [member(a)]))
    assert reply.status == 200, reply.body
    view = await node.applied(1)
    assert view["hash"] == reply.json()["hash"]
    assert len(view["workers"]) == 2
    assert (await node.control.get("/ready")).status == 200
    assert await names_over_connections(port, 6) == ["a"] * 6

    reply = await node.control.patch_group("g", {"base_version": 1, "version": 2,
                                                 "upsert": [member(b)],
                                                 "remove": [a.address]})
    assert reply.status == 200, reply.body
    view = await node.applied(2)
    assert [m["address"] for m in view["snapshot"]["groups"][0]["members"]] == [b.address]
    assert await names_over_connections(port, 8) == ["b"] * 8


async def test_metrics_add_up_the_requests_of_both_workers(backend_factory, start_node,
                                                           tmp_path):
    a = await backend_factory(name="a")
    node, port, _ = await admin_node_serving(start_node, tmp_path, a)
    await node.applied(1)

    names = await names_over_connections(port, 16, per_connection=3)
    sent = len(names)
    # one request at a time: each worker opens one upstream connection and then reuses it
    assert a.connections == 2, "the kernel did not spread the connections over both workers"

    metrics = (await node.control.get("/metrics")).body.decode()
    counted = [float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("slb_requests_total{")]
    assert sum(counted) == sent, metrics
    status = await node.control.status()
    assert status["groups"]["g"][a.address]["requests"] == sent
    # the admin's sampler reads the same counters compactly, one message per worker
    stats = (await node.control.get("/v1/stats")).json()
    assert sum(row[-1] for row in stats["requests"]) == sent
    assert stats["active"] == []


# -- workers that die, nodes that restart -----------------------------------------------------


async def test_killed_worker_is_restarted_with_the_current_snapshot(backend_factory, start_node,
                                                                    tmp_path):
    a, b = await named_backends(backend_factory, "a", "b")
    node, port, _ = await admin_node_serving(start_node, tmp_path, a)
    reply = await node.control.patch_group("g", {"base_version": 1, "version": 2,
                                                 "upsert": [member(b)], "remove": [a.address]})
    assert reply.status == 200, reply.body
    before = worker_pids(await node.applied(2))
    assert sorted(before) == [0, 1]
    assert sorted(pid for pid, _ in before.values()) == sorted(node.children())

    victim = before[0][0]
    os.kill(victim, signal.SIGKILL)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        view = await node.control.config()
        now = worker_pids(view)
        if now[0][0] != victim and view["applied"] and now[0][1] == 2:
            break
        assert loop.time() < deadline, f"worker-0 not restarted at version 2: {view}"
        await asyncio.sleep(0.05)
    assert now[1] == before[1]  # the other worker was left alone
    assert now[0][0] in node.children()
    assert "Traceback" not in node.log()

    names = await names_over_connections(port, 12)
    assert names == ["b"] * 12  # both workers, the restarted one included, serve version 2
    assert len(a.requests) == 0


async def test_restarted_admin_node_serves_its_persisted_snapshot(backend_factory, start_node,
                                                                  tmp_path):
    a = await backend_factory(name="a")
    local = admin_local(tmp_path / "state")
    node = start_node(local, name="first")
    await node.answers("/healthz")
    port = free_port()
    reply = await node.control.push(snapshot(1, port, [member(a)]))
    assert reply.status == 200, reply.body
    await node.applied(1)
    assert (tmp_path / "state" / "snapshot.json").is_file()
    node.proc.send_signal(signal.SIGTERM)
    assert await node.exit_code(timeout=10) == 0, node.log()

    again = start_node(local, name="second")
    await again.answers("/ready")  # ready without any push
    view = await again.applied(1)
    assert view["hash"] == reply.json()["hash"]
    assert await names_over_connections(port, 6) == ["a"] * 6


async def test_sigterm_drains_the_request_in_flight_with_ready_503(backend_factory, start_node):
    release = asyncio.Event()
    first, rest = b"a" * 100_000, b"b" * 100_000

    async def slow(req: ReceivedRequest, writer: asyncio.StreamWriter, backend: Backend) -> None:
        writer.write(response(200, b"", {"Content-Length": str(len(first) + len(rest))})
                     + first)
        await writer.drain()
        async with asyncio.timeout(10):
            await release.wait()
        writer.write(rest)

    a = await backend_factory(name="a", handler=slow)
    _, port, node = await file_node(start_node, [a.address], drain_timeout=10)
    conn = await Connection.open(port)
    try:
        conn.send(build_request("GET", "/slow"))
        await a.request_arrived()
        loop = asyncio.get_running_loop()

        node.proc.send_signal(signal.SIGTERM)
        deadline = loop.time() + 5
        while (await node.control.get("/ready")).status != 503:
            assert loop.time() < deadline, "/ready did not turn 503 while draining"
            await asyncio.sleep(0.02)
        assert node.proc.poll() is None  # still running: a request is in flight
        release.set()
        reply = await conn.read_response(timeout=10)
        assert reply.status == 200
        assert reply.body == first + rest
    finally:
        release.set()
        await conn.close()
    assert await node.exit_code(timeout=10) == 0, node.log()
    assert "Traceback" not in node.log()



async def test_workers_exit_when_the_supervisor_dies_in_the_middle_of_a_push(backend_factory,
                                                                             start_node,
                                                                             tmp_path):
    """No orphan keeps serving the shared port with a configuration nobody manages any more.

    Worker 0 is stopped (SIGSTOP) while a push is on its way, so the push is queued on its
    channel when the supervisor is killed; it then wakes up, applies, and answers to no one.
    """
    a, b = await named_backends(backend_factory, "a", "b")
    node, port, _ = await admin_node_serving(start_node, tmp_path, a)
    pids = {index: pid for index, (pid, _) in worker_pids(await node.applied(1)).items()}
    node.known_workers.update(pids.values())
    loop = asyncio.get_running_loop()

    os.kill(pids[0], signal.SIGSTOP)
    try:
        push = loop.create_task(node.control.push(snapshot(2, port, [member(b)])))
        # worker 1 serving version 2 means the push was written to both channels
        deadline = loop.time() + 5
        while True:
            with contextlib.suppress(OSError, TimeoutError, ConnectionError):
                conn = await Connection.open(port)
                try:
                    if (await conn.request("GET", "/", timeout=0.3)).header("x-backend") == "b":
                        break
                finally:
                    await conn.close()
            assert loop.time() < deadline, "worker 1 never applied version 2"
        node.proc.kill()
        node.proc.wait(5)
    finally:
        os.kill(pids[0], signal.SIGCONT)
    with contextlib.suppress(OSError, ConnectionError, TimeoutError):
        await push

    deadline = loop.time() + 5
    while any(is_running_worker(pid) for pid in pids.values()) and loop.time() < deadline:
        await asyncio.sleep(0.05)
    left = {index: pid for index, pid in pids.items() if is_running_worker(pid)}
    assert left == {}, f"workers still running without a supervisor: {left}"
