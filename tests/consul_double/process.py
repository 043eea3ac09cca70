"""Run the double as a separate process (for e2e tests whose admin runs as a process too)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class DoubleProcess:
    def __init__(self, proc: asyncio.subprocess.Process, address: str) -> None:
        self.proc = proc
        self.address = address
        self.host, _, port = address.rpartition(":")
        self.port = int(port)

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    async def terminate(self, timeout: float = 5.0) -> int:
        """SIGTERM, wait (SIGKILL after ``timeout``); returns the exit code."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode if self.proc.returncode is not None else -1

    async def __aenter__(self) -> DoubleProcess:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.terminate()


async def start_process(*args: str, port: int = 0, timeout: float = 10.0) -> DoubleProcess:
    """``python -m tests.consul_double --port <port> *args``; returns once it prints its
    address. Extra ``args``: e.g. ``"--acl-token", "secret"``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.consul_double", "--port", str(port), *args,
        cwd=str(ROOT), stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL)
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    address = line.decode().strip()
    if not address:
        await proc.wait()
        raise RuntimeError(f"consul double exited with {proc.returncode} before listening")
    return DoubleProcess(proc, address)
