"""When a change is published (``admin.domain.publisher.Publisher.schedule``): an isolated
change at once, a burst gathered into one publish per ``COALESCE``, never one per change."""

from __future__ import annotations

import asyncio

import pytest

from admin.domain import publisher as publisher_module
from admin.domain.publisher import Publisher


class Recorded:
    """The publishes a ``Publisher`` made: (loop time, groups), and an event per publish."""

    def __init__(self, publisher: Publisher) -> None:
        self.calls: list[tuple[float, set[str] | None]] = []
        self.made = asyncio.Event()
        publisher.publish_now = self.publish_now  # type: ignore[method-assign]

    def publish_now(self, groups: set[str] | None) -> None:
        self.calls.append((asyncio.get_running_loop().time(), groups))
        self.made.set()

    async def next(self, timeout: float = 10.0) -> tuple[float, set[str] | None]:
        async with asyncio.timeout(timeout):
            await self.made.wait()
        self.made.clear()
        return self.calls[-1]


def publisher() -> Publisher:
    # the store and the members are read by publish_now only, which is recorded instead
    return Publisher(store=None, members_for=lambda content: {})  # type: ignore[arg-type]


def recorded(monkeypatch: pytest.MonkeyPatch, coalesce: float) -> tuple[Publisher, Recorded]:
    """A publisher whose publishes are recorded, coalescing for ``coalesce`` seconds."""
    monkeypatch.setattr(publisher_module, "COALESCE", coalesce)
    pub = publisher()
    return pub, Recorded(pub)


async def test_an_isolated_change_is_published_without_waiting_for_company(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # an interval far longer than the deadline: a change that waited for it would time out
    pub, published = recorded(monkeypatch, 60.0)
    pub.schedule({"web"})
    pub.schedule({"api"})  # the same turn of the loop: the same publish
    _, groups = await published.next()
    assert groups == {"web", "api"}
    assert len(published.calls) == 1


async def test_a_burst_goes_out_as_one_publish_per_interval(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pub, published = recorded(monkeypatch, 60.0)
    before = asyncio.get_running_loop().time()  # (the first publish goes out after this)
    pub.schedule({"a"})
    _, groups = await published.next()
    assert groups == {"a"}
    for name in ("b", "c", "d"):  # within the interval after the first: gathered
        pub.schedule({name})
        await asyncio.sleep(0)
    assert len(published.calls) == 1
    # due the interval after the last publish, not before: at least 60 s after ``before``
    waiting = pub._flush_handle
    assert waiting is not None and waiting.when() >= before + 60.0 - 1e-6
    waiting.cancel()
    pub._flush()  # (its time come: the interval is not waited out here)
    assert published.calls[-1][1] == {"b", "c", "d"}
    assert len(published.calls) == 2


async def test_a_change_that_names_no_groups_publishes_everything(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pub, published = recorded(monkeypatch, 60.0)
    pub.schedule({"a"})
    pub.schedule(None)  # an activation, a node added: anything may have changed
    _, groups = await published.next()
    assert groups is None


async def test_changes_waiting_when_leadership_ends_are_not_carried_over(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pub, published = recorded(monkeypatch, 60.0)
    pub.schedule(None)  # (armed for the loop's next turn; close() comes first)
    await pub.close()  # not leading any more: start() publishes everything anyway
    pub.schedule({"x"})
    _, groups = await published.next()
    assert groups == {"x"}  # not a whole publish for what was left waiting
    assert len(published.calls) == 1


async def test_a_whole_publish_takes_the_waiting_changes_with_it() -> None:
    pub = publisher()
    calls: list[set[str] | None] = []
    publish_now = pub.publish_now  # the real one: not leading, it builds nothing
    pub.publish_now = calls.append  # type: ignore[method-assign]  # what the flush would do
    pub.schedule({"a"})  # waiting for the loop's next turn
    publish_now(None)  # an activation: everything stored goes out
    for _ in range(3):
        await asyncio.sleep(0)
    assert calls == []  # the change waiting went out with it: no second publish


def test_outside_an_event_loop_a_change_is_published_at_once() -> None:
    pub = publisher()
    calls: list[set[str] | None] = []
    pub.publish_now = calls.append  # type: ignore[method-assign]
    pub.schedule({"a"})
    assert calls == [{"a"}]
