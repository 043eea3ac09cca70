"""The command line as an operator uses it: ``slb check`` and ``slb proxy`` with signals."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import time
from pathlib import Path

import yaml

from tests.e2e.conftest import REPO, node_config, run_slb, write_config
from tests.support.backends import free_port, response
from tests.support.client import Connection, build_request, request

EXAMPLE = "config/slb.yaml"


def broken_config() -> dict:
    """Two errors in different places of an otherwise valid file."""
    config = node_config(["127.0.0.1:9001"])
    config["groups"][0]["members"].append({"address": "backend-without-port"})
    config["groups"][0]["algorithm"] = "fastest"
    return config


async def backend_names(port: int, count: int) -> list[str]:
    names = []
    conn = await Connection.open(port)
    try:
        for i in range(count):
            reply = await conn.request("GET", f"/{i}")
            assert reply.status == 200
            names.append(reply.header("x-backend") or "")
    finally:
        await conn.close()
    return names


async def wait_until_served_by(port: int, name: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (await request(port, "GET", "/probe")).header("x-backend") != name:
        assert loop.time() < deadline, f"traffic did not move to {name}"
        await asyncio.sleep(0.02)


# -- slb check ------------------------------------------------------------------------------


def test_check_accepts_the_example_file_with_a_one_line_summary() -> None:
    document = yaml.safe_load((REPO / EXAMPLE).read_text(encoding="utf-8"))
    result = run_slb("check", "-c", EXAMPLE)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{EXAMPLE}: configuration is valid")
    assert f"{len(document['groups'])} groups" in lines[0]
    members = sum(len(group["members"]) for group in document["groups"])
    assert f"{members} members" in lines[0]
    assert result.stderr == ""


def located(path: Path, problem: str) -> re.Pattern[str]:
    """``problem`` as printed for ``path``: ``file:line:column: problem`` (the exact place is
    checked by the unit tests of ``slb.node.files``, on files written by hand)."""
    return re.compile(rf"{re.escape(str(path))}:\d+:\d+: {re.escape(problem)}")


def test_check_prints_every_error_with_its_location_and_exits_1(tmp_path: Path) -> None:
    path = write_config(tmp_path / "bad.yaml", broken_config())
    result = run_slb("check", "-c", str(path))
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert located(path, "groups[0].members[1].address: expected host:port").search(output)
    assert located(path, "groups[0].algorithm: ").search(output)
    assert "2 errors" in output


def test_check_reports_yaml_syntax_error_with_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("groups:\n  - name: g\n     members: []\n", encoding="utf-8")
    result = run_slb("check", "-c", str(path))
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert f"{path}:3:" in result.stderr
    assert "invalid YAML" in result.stderr


def test_check_of_missing_file_exits_1_without_traceback(tmp_path: Path) -> None:
    result = run_slb("check", "-c", str(tmp_path / "absent.yaml"))
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert "no such file" in result.stderr


# -- slb proxy: refusing to start -----------------------------------------------------------


def test_proxy_with_invalid_file_exits_1_quickly_without_traceback(tmp_path: Path) -> None:
    path = write_config(tmp_path / "bad.yaml", broken_config())
    started = time.monotonic()
    result = run_slb("proxy", "-c", str(path), timeout=20)
    assert time.monotonic() - started < 10
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert located(path, "groups[0].members[1].address: expected host:port").search(output)
    assert located(path, "groups[0].algorithm: ").search(output)


def test_proxy_exits_1_when_its_listen_address_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = write_config(tmp_path / "slb.yaml", node_config(["127.0.0.1:9001"], port=port))
        result = run_slb("proxy", "-c", str(path), timeout=20)
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert f"cannot listen on 127.0.0.1:{port}" in output


def test_proxy_exits_1_when_its_control_address_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = write_config(tmp_path / "slb.yaml",
                            node_config(["127.0.0.1:9001"], control_port=port))
        result = run_slb("proxy", "-c", str(path), timeout=20)
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert f"127.0.0.1:{port}" in output


# -- slb proxy: serving, draining, reloading ------------------------------------------------


async def test_proxy_serves_and_exits_0_promptly_on_sigterm(backend_factory, slb_proxy):
    backend = await backend_factory(name="a")
    node = slb_proxy(node_config([backend.address], drain_timeout=10))
    await node.ready()
    idle = await Connection.open(node.port)  # a keep-alive client, idle after one request
    reply = await idle.request("GET", "/hello")
    assert (reply.status, reply.body) == (200, b"a GET /hello\n")

    node.signal(signal.SIGTERM)
    assert await idle.closed_by_peer(timeout=5)  # idle connections are closed at once
    await idle.close()
    assert await node.exit_code(timeout=5) == 0  # long before the 10 s drain timeout
    assert "Traceback" not in node.log()


async def test_sigterm_lets_the_request_in_flight_finish_while_ready_says_503(
        backend_factory, slb_proxy):
    release = asyncio.Event()
    first, rest = b"a" * 100_000, b"b" * 100_000

    async def handler(req, writer, backend):
        writer.write(response(200, b"", {"Content-Length": str(len(first) + len(rest))})
                     + first)
        await writer.drain()
        await release.wait()
        writer.write(rest)

    backend = await backend_factory(handler=handler)
    node = slb_proxy(node_config([backend.address], drain_timeout=10))
    await node.ready()
    conn = await Connection.open(node.port)
    conn.send(build_request("GET", "/slow"))
    await backend.request_arrived()
    loop = asyncio.get_running_loop()

    node.signal(signal.SIGTERM)
    deadline = loop.time() + 5
    while (await request(node.control_port, "GET", "/ready", host="127.0.0.1")).status != 503:
        assert loop.time() < deadline, "/ready did not turn 503 while draining"
        await asyncio.sleep(0.02)
    healthz = await request(node.control_port, "GET", "/healthz", host="127.0.0.1")
    assert healthz.status == 200  # alive, just not taking new work
    assert node.proc.poll() is None  # still running: a request is in flight

    release.set()
    reply = await conn.read_response(timeout=10)
    assert reply.status == 200
    assert reply.body == first + rest
    assert await conn.closed_by_peer(timeout=5)
    await conn.close()
    assert await node.exit_code(timeout=5) == 0


async def test_sigterm_exits_after_drain_timeout_when_a_request_never_finishes(
        backend_factory, slb_proxy):
    never = asyncio.Event()

    async def handler(req, writer, backend):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
        await writer.drain()
        await never.wait()

    backend = await backend_factory(handler=handler)
    node = slb_proxy(node_config([backend.address], drain_timeout=1))
    await node.ready()
    conn = await Connection.open(node.port)
    conn.send(build_request("GET", "/stuck"))
    await backend.request_arrived()
    loop = asyncio.get_running_loop()

    started = loop.time()
    node.signal(signal.SIGTERM)
    assert await node.exit_code(timeout=8) == 0
    assert 0.8 <= loop.time() - started < 5  # waited for the drain timeout, not forever
    assert await conn.closed_by_peer(timeout=5)
    await conn.close()
    never.set()


async def test_sighup_reload_moves_traffic_to_the_new_member(backend_factory, slb_proxy):
    a = await backend_factory(name="a")
    b = await backend_factory(name="b")
    config = node_config([a.address])
    node = slb_proxy(config)
    await node.ready()
    assert await backend_names(node.port, 3) == ["a", "a", "a"]

    config["groups"][0]["members"] = [{"address": b.address}]
    write_config(node.config_path, config)
    node.signal(signal.SIGHUP)
    await wait_until_served_by(node.port, "b")
    assert await backend_names(node.port, 5) == ["b"] * 5
    assert node.proc.poll() is None


async def test_sighup_reload_applies_new_weights(backend_factory, slb_proxy):
    a = await backend_factory(name="a")
    b = await backend_factory(name="b")
    config = node_config([{"address": a.address, "weight": 1},
                          {"address": b.address, "weight": 0}])
    node = slb_proxy(config)
    await node.ready()
    assert await backend_names(node.port, 4) == ["a"] * 4

    config["groups"][0]["members"] = [{"address": a.address, "weight": 0},
                                      {"address": b.address, "weight": 1}]
    write_config(node.config_path, config)
    node.signal(signal.SIGHUP)
    await wait_until_served_by(node.port, "b")
    assert await backend_names(node.port, 4) == ["b"] * 4


async def test_sighup_with_invalid_file_changes_nothing_and_logs_the_error(
        backend_factory, slb_proxy):
    a = await backend_factory(name="a")
    b = await backend_factory(name="b")
    config = node_config([a.address])
    node = slb_proxy(config)
    await node.ready()
    assert await backend_names(node.port, 2) == ["a", "a"]

    config["groups"][0]["members"] = [{"address": b.address, "weight": -1}]
    write_config(node.config_path, config)
    node.signal(signal.SIGHUP)
    assert await node.log_contains("groups[0].members[0].weight"), node.log()
    assert "refused" in node.log()
    assert await backend_names(node.port, 3) == ["a", "a", "a"]
    ready = await request(node.control_port, "GET", "/ready", host="127.0.0.1")
    assert ready.status == 200
    assert node.proc.poll() is None
    assert "Traceback" not in node.log()
    assert b.requests == []


async def test_sighup_with_unparsable_yaml_keeps_serving(backend_factory, slb_proxy,
                                                         tmp_path: Path):
    a = await backend_factory(name="a")
    node = slb_proxy(node_config([a.address], port=free_port()))
    await node.ready()
    node.config_path.write_text("groups: [\n", encoding="utf-8")
    node.signal(signal.SIGHUP)
    assert await node.log_contains("invalid YAML"), node.log()
    assert await backend_names(node.port, 2) == ["a", "a"]
    assert node.proc.poll() is None
