"""The error log of the proxy's own answers: one line each, with its reason, rate-limited."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from slb.proxy.answers import BURST, WINDOW
from tests.support.fake_proxy import FakeClient, one_group_config

ANSWERS = "slb.proxy.answers"


def routes_only_a() -> dict[str, Any]:
    config = one_group_config()
    config["virtual_servers"][0]["routes"][0]["path"] = "/a"  # anything else: 404 NR
    return config


@pytest.fixture
def client() -> Iterator[FakeClient]:
    fake = FakeClient(routes_only_a())
    yield fake
    fake.close()


def answer_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.fields for r in caplog.records if r.name == ANSWERS]  # type: ignore[attr-defined]


def test_no_route_answer_logs_flag_virtual_server_and_request_id(
        client: FakeClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, ANSWERS)
    client.send(b"GET /x HTTP/1.1\r\nHost: example.com\r\nX-Request-Id: abc-1\r\n\r\n")
    assert client.statuses() == [404]
    [line] = answer_lines(caplog)
    assert line["status"] == 404 and line["flag"] == "NR"
    assert line["id"] == "abc-1"
    assert line["request"] == "GET /x"
    assert line["client"] == "203.0.113.7"


def test_no_healthy_member_is_a_warning_naming_group_and_virtual_server(
        caplog: pytest.LogCaptureFixture) -> None:
    config = one_group_config()
    config["groups"][0]["members"][0]["state"] = "down"
    fake = FakeClient(config)
    try:
        caplog.set_level(logging.INFO, ANSWERS)
        fake.send(b"GET /a HTTP/1.1\r\nHost: example.com\r\n\r\n")
        assert fake.statuses() == [503]
        [record] = [r for r in caplog.records if r.name == ANSWERS]
        assert record.levelno == logging.WARNING
        fields = record.fields  # type: ignore[attr-defined]
        assert (fields["flag"], fields["vs"], fields["group"]) == ("UH", "vs", "g")
        assert fields["id"] != "-"  # the id the proxy added is the one the line names
    finally:
        fake.close()


def test_header_timeout_and_bad_request_are_logged_with_their_flags(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, ANSWERS)
    slow = FakeClient()
    bad = FakeClient()
    try:
        slow.send(b"GET / HTTP/1.1\r\nHo")
        slow.advance(slow.ctx.settings.header_timeout + 1)
        bad.send(b"GET / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 1\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")
        assert (slow.statuses(), bad.statuses()) == ([408], [400])
        assert [(f["status"], f["flag"]) for f in answer_lines(caplog)] == [
            (408, "DT"), (400, "DPE")]
    finally:
        slow.close()
        bad.close()


def test_a_flood_of_one_reason_is_cut_to_the_burst_then_summed_up(
        client: FakeClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, ANSWERS)
    answers = client.ctx.answers
    floods = BURST + 30
    for _ in range(floods):
        client.send(b"GET /x HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert client.statuses() == [404] * floods
    assert len(answer_lines(caplog)) == BURST
    client.loop.now += WINDOW
    answers.roll()
    summary = answer_lines(caplog)[-1]
    assert summary == {"status": 404, "flag": "NR", "suppressed": 30, "window": WINDOW}
    # the next window logs again
    client.send(b"GET /y HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert answer_lines(caplog)[-1]["request"] == "GET /y"


def test_the_limit_is_per_reason(client: FakeClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, ANSWERS)
    for _ in range(BURST + 5):
        client.send(b"GET /x HTTP/1.1\r\nHost: example.com\r\n\r\n")
    other = FakeClient()
    other.ctx.answers = client.ctx.answers  # one proxy process, one limiter
    try:
        # a flood of 404s leaves the first 400 its line
        other.send(b"GET / HTTP/1.1\r\nHost: example.com\r\nHost: example.com\r\n\r\n")
        assert other.statuses() == [400]
        assert answer_lines(caplog)[-1]["status"] == 400
    finally:
        other.close()
