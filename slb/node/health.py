"""Active health checks: the node asks each member of a group with ``health_check`` itself.

Checks run once per node, in the node's process (the supervisor when there are workers), never
in each worker: N workers checking alone would multiply the load on members by N and could
disagree. A result that changes a member's state goes to the data plane
(``DataPlane.set_health``: in process, or to every worker, and to a restarted one), where the
member leaves its pool's balancer (``MemberState.checked_down``) or rejoins it; requests never
pay for it.

One task per checked member: every ``interval`` seconds a ``GET path`` with ``Connection:
close``, passed when the status is in ``expect_status`` before ``timeout``. A member is taken
out after ``fall`` consecutive failures and brought back after ``rise`` consecutive passes
(HAProxy's rise/fall, defaults 2 and 3); it starts in, as HAProxy's servers do. Only a change is
logged; every result is kept for ``/v1/status`` (state, consecutive count, last result and
when) and the ``slb_member_health_up`` gauge.

Who checks: file-managed nodes only. On an admin-managed node the admin's view of health
(Consul or its own checks) is the source, and a pushed ``health_check`` is not acted on here.
``update`` is called with every applied configuration: checks start for new members, stop for
members that left, restart when a group's ``health_check`` changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from slb.model import Config, HealthCheck, split_host_port

log = logging.getLogger("slb.health")

Report = Callable[[dict[tuple[str, str], bool]], Awaitable[None]]
READ_LIMIT = 4096  # bytes read for the status line


@dataclass
class MemberHealth:
    group: str
    address: str
    check: HealthCheck
    up: bool = True
    streak: int = 0  # consecutive results against the current state
    last: str = "not checked yet"
    checked_at: float | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def view(self) -> dict[str, Any]:
        return {"state": "up" if self.up else "down", "last_result": self.last,
                "checked_at": self.checked_at, "streak": self.streak}


async def probe(address: str, check: HealthCheck) -> tuple[bool, str]:
    """One check: (passed, what happened, for the status and the log)."""
    host, port = split_host_port(address)
    writer = None
    try:
        async with asyncio.timeout(check.timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(f"GET {check.path} HTTP/1.1\r\nHost: {address}\r\n"
                         "User-Agent: slb-health-check\r\nConnection: close\r\n\r\n".encode())
            line = await reader.readline()
    except TimeoutError:
        return False, f"no answer in {check.timeout:g}s"
    except OSError as exc:
        return False, exc.strerror or str(exc) or type(exc).__name__
    finally:
        if writer is not None:
            writer.close()
    parts = line[:READ_LIMIT].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        return False, "not an HTTP response"
    status = int(parts[1])
    return status in check.expect_status, f"status {status}"


class ActiveHealth:
    """The checks of one node (see the module docstring)."""

    def __init__(self, report: Report,
                 prober: Callable[[str, HealthCheck], Awaitable[tuple[bool, str]]] = probe
                 ) -> None:
        self.report = report
        self.prober = prober
        self.members: dict[tuple[str, str], MemberHealth] = {}

    async def update(self, config: Config) -> None:
        wanted = {(g.name, m.address): g.health_check for g in config.groups
                  if g.health_check is not None for m in g.members}
        back: dict[tuple[str, str], bool] = {}
        for key, state in list(self.members.items()):
            if wanted.get(key) != state.check:
                self._stop(state)
                del self.members[key]
                if not state.up:
                    back[key] = False  # no longer checked (or checked afresh): back in
        if back:
            await self.report(back)
        loop = asyncio.get_running_loop()
        for (group, address), check in wanted.items():
            if (group, address) not in self.members:
                assert check is not None
                state = self.members[group, address] = MemberHealth(group, address, check)
                state.task = loop.create_task(self._run(state))

    def stop(self) -> None:
        for state in self.members.values():
            self._stop(state)
        self.members.clear()

    @staticmethod
    def _stop(state: MemberHealth) -> None:
        if state.task is not None:
            state.task.cancel()

    async def _run(self, state: MemberHealth) -> None:
        check = state.check
        while True:
            passed, what = await self.prober(state.address, check)
            await self.record(state, passed, what)
            await asyncio.sleep(check.interval)

    async def record(self, state: MemberHealth, passed: bool, what: str) -> None:
        state.last = what
        state.checked_at = time.time()
        if passed == state.up:
            state.streak = 0  # (the streak counts results against the current state)
            return
        state.streak += 1
        if state.streak < (state.check.rise if passed else state.check.fall):
            return
        state.up = passed
        state.streak = 0
        log.warning("member %s of group %s is %s: %d checks %s, last %s", state.address,
                    state.group, "up again" if passed else "down",
                    state.check.rise if passed else state.check.fall,
                    "passed" if passed else "failed", what)
        with contextlib.suppress(ConnectionError, TimeoutError):
            await self.report({(state.group, state.address): not passed})

    def status(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Per group and member, for /v1/status."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for (group, address), state in self.members.items():
            out.setdefault(group, {})[address] = state.view()
        return out

    def metrics(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily("slb_member_health_up",
                                  "Active health of a member: 1 up, 0 down",
                                  labels=["group", "member"])
        for (group, address), state in sorted(self.members.items()):
            gauge.add_metric([group, address], 1 if state.up else 0)
        yield gauge
