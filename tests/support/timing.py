"""Waiting on the test's own event loop, which is also the in-process proxy's clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


def now() -> float:
    """The proxy's clock: it runs in this loop and stamps ejections with ``loop.time()``."""
    return asyncio.get_running_loop().time()


async def wait_until(condition: Callable[[], bool], timeout: float = 2.0) -> bool:
    """Poll ``condition`` every 10 ms: True once it holds, False after ``timeout``."""
    deadline = now() + timeout
    while not condition():
        if now() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True
