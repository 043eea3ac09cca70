"""``slb.proxy.context``: one runtime reference per process, swapped whole on apply."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from slb.model import Config, parse_config
from slb.proxy.context import ProxyContext, Sweeper


def config(version: int = 1, weight: int = 1, **http: Any) -> Config:
    return parse_config({
        "version": version, "http": http,
        "groups": [{"name": "web", "members": [{"address": "10.0.0.1:80", "weight": weight}]}],
        "virtual_servers": [{"name": "site", "listen": "127.0.0.1:8080",
                             "routes": [{"path": "/", "group": "web"}]}]})


async def test_everything_the_protocol_reads_comes_from_the_one_runtime() -> None:
    ctx = ProxyContext(asyncio.get_running_loop(), config(request_id_header="X-Trace",
                                                          max_header_bytes=2048,
                                                          max_uri_bytes=1024))
    first = ctx.runtime
    assert ctx.settings is first.config.http
    assert ctx.head_limit == 3072
    assert ctx.request_id_field == b"X-Trace: "
    assert b"x-trace" in ctx.request_fields
    assert ctx.listen_hosts == {"127.0.0.1:8080": b"127.0.0.1:8080"}

    second = ctx.apply(config(version=2, request_id_header="X-Other"))
    assert ctx.runtime is second is not first
    assert ctx.request_id_field == b"X-Other: " and b"x-trace" not in ctx.request_fields
    assert first.request_id_field == b"X-Trace: "  # requests in flight keep theirs


async def test_a_surviving_member_keeps_its_state_and_takes_the_new_weight() -> None:
    ctx = ProxyContext(asyncio.get_running_loop(), config())
    before = ctx.runtime.pools["web"].members["10.0.0.1:80"]
    before.active = 2
    ctx.apply(config(version=2, weight=7))
    after = ctx.runtime.pools["web"].members["10.0.0.1:80"]
    assert after is before and (after.active, after.weight) == (2, 7)


async def test_a_pool_delta_swaps_the_runtime_with_the_new_config() -> None:
    ctx = ProxyContext(asyncio.get_running_loop(), config())
    base = ctx.runtime
    group = base.config.groups[0].model_copy(update={"members": []})
    new_config = base.config.with_groups({0: group}, version=2)
    ctx.apply_groups(new_config, [group])
    assert ctx.runtime is not base and ctx.runtime.config is new_config
    assert ctx.runtime.pools["web"].members == {}
    assert ctx.runtime.tables is base.tables


async def test_the_access_log_is_kept_while_its_file_is_and_closed_when_dropped(
        tmp_path: Path) -> None:
    path = str(tmp_path / "access.log")
    on = {"access_log": {"enabled": True, "path": path}}
    ctx = ProxyContext(asyncio.get_running_loop(),
                       parse_config({**config().to_json(), **on}))
    log = ctx.access_log
    assert log is not None and log.path == path
    ctx.apply(parse_config({**config(version=2).to_json(), **on}))
    assert ctx.access_log is log
    ctx.apply(config(version=3))
    assert ctx.access_log is None and log.fd == 2  # closed


async def test_the_sweeper_fires_due_deadlines_only() -> None:
    loop = asyncio.get_running_loop()
    ctx = ProxyContext(loop, config())
    fired = asyncio.Event()

    class Conn:
        def __init__(self, deadline: float) -> None:
            self.deadline = deadline
            self.transport: Any = None
            self.fired_at: float | None = None

        def on_deadline(self, now: float) -> None:
            self.fired_at = now
            fired.set()

        def close_if_idle(self) -> None:
            pass

    due, later = Conn(loop.time()), Conn(loop.time() + 3600)
    ctx.connections |= {due, later}
    sweeper = Sweeper(ctx)
    sweeper.start()
    try:
        async with asyncio.timeout(5):
            await fired.wait()
    finally:
        sweeper.stop()
    assert due.fired_at is not None and later.fired_at is None
