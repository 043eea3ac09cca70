"""A worker process: one ProxyServer driven by its supervisor (see ``slb.node.supervisor``).

Started as ``python -m slb.node.worker FD`` with FD one end of a socketpair. SIGTERM drains and
exits; SIGINT and SIGHUP belong to the supervisor (a terminal's Ctrl-C reaches the whole process
group, and the supervisor decides). If the supervisor goes away, the worker drains and exits too.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import signal
import socket
import sys
from typing import Any

import uvloop

from slb.errors import ConfigError
from slb.gcpause import desynchronise
from slb.logs import setup_from_environment
from slb.model import Config, Group
from slb.node.ipc import encode, read_message, send_message
from slb.node.server import ProxyServer

log = logging.getLogger("slb.worker")
PR_SET_PDEATHSIG = 1


class Worker:
    def __init__(self) -> None:
        self.server: ProxyServer | None = None

    async def handle(self, message: dict[str, Any]) -> dict[str, Any]:
        op = message["op"]
        if op == "apply":
            return await self._apply(message["config"])
        if op == "groups":
            return self._apply_groups(message["groups"], message["version"])
        if op == "health":
            assert self.server is not None
            self.server.ctx.set_health(message["down"])
            return {"ok": True}
        if op == "stats":
            assert self.server is not None
            return {"ok": True, "stats": self.server.ctx.stats.export(),
                    "members": self.server.member_status()}
        if op == "counters":  # /v1/stats: the members with requests in flight only
            assert self.server is not None
            return {"ok": True, "stats": self.server.ctx.stats.export(),
                    "active": self.server.active_members()}
        return {"ok": False, "errors": [f"unknown operation {op!r}"]}

    async def _apply(self, config: Config) -> dict[str, Any]:
        try:
            if self.server is None:
                server = ProxyServer(config, reuse_port=True)
                await server.start()  # a listener that will not bind: no server yet
                self.server = server
            else:
                await self.server.apply(config)
        except ConfigError as exc:
            return {"ok": False, "errors": exc.lines}
        return {"ok": True, "version": config.version}

    def _apply_groups(self, groups: list[Group], version: int) -> dict[str, Any]:
        """A pool delta of one or more groups, applied together (no await in between)."""
        assert self.server is not None
        config = self.server.config  # the applied config lives in the runtime, once
        positions = [config.group_position(group.name) for group in groups]
        unknown = [g.name for g, p in zip(groups, positions, strict=True) if p is None]
        if unknown:
            return {"ok": False, "errors": [f"no group named {name!r}" for name in unknown]}
        # one copy of the config for the whole delta, as the node's own apply_batch makes
        config = config.with_groups({p: g for p, g in zip(positions, groups, strict=True)
                                     if p is not None}, version)
        self.server.apply_groups(config, groups)
        return {"ok": True, "version": version}

    async def drain(self) -> None:
        if self.server is not None:
            await self.server.drain()


def exit_with_parent() -> None:
    """Ask Linux for SIGTERM when the supervisor dies, however it dies (even SIGKILL)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the closed channel still ends the worker


async def serve(fd: int) -> None:
    exit_with_parent()
    loop = asyncio.get_running_loop()
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    worker = Worker()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)

    async def commands() -> None:
        try:
            while True:
                received = await read_message(reader)
                if received is None:
                    return  # the supervisor is gone
                request_id, message = received
                reply = await worker.handle(message)
                await send_message(writer, request_id, encode(reply))
        except ConnectionError:
            return  # the supervisor went away while we answered
        except Exception:
            log.exception("worker failed to handle a command")
        finally:
            stop.set()  # whatever ended the channel, nobody manages this worker any more

    task = loop.create_task(commands())
    await stop.wait()
    task.cancel()
    await worker.drain()
    writer.close()


def main() -> None:
    setup_from_environment()  # the supervisor's format and level
    desynchronise()  # not in step with its siblings' collections (slb.gcpause)
    uvloop.run(serve(int(sys.argv[1])))


if __name__ == "__main__":
    main()
