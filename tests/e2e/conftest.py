"""Running ``python -m slb`` as a real process: configuration files, readiness, signals, memory.

The proxy's output (its log) goes to a file, read by the tests. A process still running when a
test ends is killed and reaped, so no test leaves one behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import yaml

from tests.support.backends import free_port
from tests.support.client import request

REPO = Path(__file__).resolve().parents[2]


def slb_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "slb", *args]


def admin_command(*args: str) -> list[str]:
    """``slb-admin ARGS``, run as ``python -m admin`` (the same entry point, no PATH needed)."""
    return [sys.executable, "-m", "admin", *args]


def run_slb(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run ``slb ARGS`` to completion from the repository root."""
    return subprocess.run(slb_command(*args), cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False)


def node_config(members: list[str] | list[dict[str, Any]], port: int | None = None,
                control_port: int | None = None, **http: Any) -> dict[str, Any]:
    """A node with one virtual server routing everything to group ``g``, on free ports."""
    return {
        "control": {"listen": f"127.0.0.1:{control_port or free_port()}"},
        "http": http,
        "virtual_servers": [{"name": "vs", "listen": f"127.0.0.1:{port or free_port()}",
                             "routes": [{"path": "/", "group": "g"}]}],
        "groups": [{"name": "g",
                    "members": [{"address": m} if isinstance(m, str) else m for m in members]}],
    }


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _port_of(listen: str) -> int:
    return int(listen.rsplit(":", 1)[1])


async def exit_code(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """The exit status once ``proc`` has ended, None if it runs past ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while proc.poll() is None and loop.time() < deadline:
        await asyncio.sleep(0.02)
    return proc.poll()


async def log_contains(log: Callable[[], str], text: str, timeout: float = 5.0) -> bool:
    """Whether ``text`` shows up in ``log()`` within ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while text not in log():
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True


class SlbProcess:
    """``slb proxy -c FILE`` running as a child process."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.log_path = log_path
        config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        self.port = _port_of(config["virtual_servers"][0]["listen"])
        self.control_port = _port_of(config["control"]["listen"])
        self._log: IO[bytes] = open(log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            slb_command("proxy", "-c", str(config_path)), cwd=REPO, stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def rss_bytes(self) -> int:
        """Resident memory of the proxy process, from /proc/<pid>/status."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS line")

    # -- waiting, blocking (for tests whose backends run on threads) ------------------------

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"proxy exited early:\n{self.log()}"
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", self.control_port, timeout=2)
                try:
                    conn.request("GET", "/ready")
                    if conn.getresponse().status == 200:
                        return
                finally:
                    conn.close()
            assert time.monotonic() < deadline, f"proxy not ready in time:\n{self.log()}"
            time.sleep(0.02)

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    # -- waiting, asynchronous (for tests whose backends run on the test's loop) ------------

    async def ready(self, timeout: float = 15.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            assert self.proc.poll() is None, f"proxy exited early:\n{self.log()}"
            with contextlib.suppress(OSError, TimeoutError):
                reply = await request(self.control_port, "GET", "/ready", host="127.0.0.1",
                                      timeout=2)
                if reply.status == 200:
                    return
            assert loop.time() < deadline, f"proxy not ready in time:\n{self.log()}"
            await asyncio.sleep(0.02)

    async def exit_code(self, timeout: float) -> int | None:
        return await exit_code(self.proc, timeout)

    async def log_contains(self, text: str, timeout: float = 5.0) -> bool:
        return await log_contains(self.log, text, timeout)

    def stop(self) -> None:
        """SIGTERM (the node drains and stops its workers), SIGKILL if that takes too long."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait(10)
        self._log.close()


@pytest.fixture
def slb_proxy(tmp_path: Path) -> Iterator[Any]:
    """``slb_proxy(config_dict)`` writes the file and starts ``slb proxy -c`` on it."""
    started: list[SlbProcess] = []

    def start(config: dict[str, Any], name: str = "slb") -> SlbProcess:
        path = write_config(tmp_path / f"{name}.yaml", config)
        process = SlbProcess(path, tmp_path / f"{name}.log")
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
