"""``slb.gcpause``: the collector kept out of bulk work and of the pushes that follow a delta."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import pytest

from slb import gcpause


@pytest.fixture
def collections() -> Iterator[list[int]]:
    """The generation of every collection made while the test runs; thresholds restored."""
    thresholds = gc.get_threshold()
    seen: list[int] = []

    def record(phase: str, info: dict[str, Any]) -> None:
        if phase == "stop":
            seen.append(info["generation"])

    gc.callbacks.append(record)
    try:
        yield seen
    finally:
        gc.callbacks.remove(record)
        gc.set_threshold(*thresholds)


async def test_the_young_generations_are_collected_once_on_the_next_turn(
        collections: list[int]) -> None:
    gc.collect(1)
    gc.collect(0)  # the middle generation's count at 1 (far from 10): a collection resets it
    assert gc.get_count()[1] >= 1
    collections.clear()
    loop = asyncio.get_running_loop()
    for _ in range(3):
        gcpause.collect_young_soon(loop)
    assert 1 not in collections  # not now: after whatever this turn still does (the answer)
    await asyncio.sleep(0)  # one turn of the loop
    assert collections.count(1) == 1 and gc.get_count()[1] == 0
    # one per delta counts towards a full collection: it waits for ten times as many
    assert gc.get_threshold()[2] == gcpause.OLD_THRESHOLD
    gcpause.collect_young_soon(loop)  # and it can be asked again
    await asyncio.sleep(0)
    assert collections.count(1) == 2
