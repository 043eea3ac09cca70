"""The schema's own value types: durations (plain seconds, or a number with ms, s, m or h)."""

from __future__ import annotations

import pytest

from slb.model import ConfigErrors, parse_config


@pytest.mark.parametrize(("written", "seconds"), [
    (5, 5.0), (0.5, 0.5), ("250ms", 0.25), ("5s", 5.0), ("2m", 120.0), ("1h", 3600.0),
    ("1.5s", 1.5), ("10", 10.0),
])
def test_a_duration_is_read_as_seconds(written: object, seconds: float) -> None:
    config = parse_config({"http": {"header_timeout": written},
                           "groups": [{"name": "g", "timeouts": {"connect": written}}]})
    assert config.http.header_timeout == seconds
    assert config.groups[0].timeouts.connect == seconds


@pytest.mark.parametrize("written", ["5x", "fast", "-1s", "5 minutes", "s"])
def test_a_malformed_duration_is_refused_with_the_accepted_forms(written: str) -> None:
    with pytest.raises(ConfigErrors) as raised:
        parse_config({"http": {"header_timeout": written}})
    [line] = raised.value.lines()
    assert line.startswith("http.header_timeout: ")
    assert "250ms, 5s, 2m" in line or "greater than 0" in line


def test_a_duration_keeps_its_bounds() -> None:
    with pytest.raises(ConfigErrors, match="greater than 0"):
        parse_config({"http": {"header_timeout": "0ms"}})
    with pytest.raises(ConfigErrors, match="less than or equal to 86400"):
        parse_config({"groups": [{"name": "g", "timeouts": {"read": "25h"}}]})


def test_member_addresses_are_checked_alike_the_first_time_and_after(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # valid addresses are remembered (a node sees the same ones in every delta); the memory
    # must change no answer, and stays bounded however many addresses come by
    from slb.model import schema

    # a memory of its own: earlier tests validated some of these addresses already
    monkeypatch.setattr(schema, "_VALID_MEMBER_ADDRESSES", set())
    def verdict(address: str) -> str:
        try:
            return schema.Member(address=address).address
        except ValueError as exc:
            return f"refused: {exc.errors()[0]['msg']}"  # type: ignore[attr-defined]

    for address in ("10.0.0.1:80", "[::1]:8080", "backend.local:443", "10.0.0.1:0",
                    "10.0.0.1", "300.1.1.1:80", "[zz]:80", "10.0.0.1:65536"):
        first = verdict(address)
        assert verdict(address) == first
        assert first.startswith("refused") == (address in {
            "10.0.0.1:0", "10.0.0.1", "300.1.1.1:80", "[zz]:80", "10.0.0.1:65536"})
    for i in range(schema._VALID_MEMBER_ADDRESSES_MAX + 10):
        schema.Member(address=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}:80")
    assert len(schema._VALID_MEMBER_ADDRESSES) <= schema._VALID_MEMBER_ADDRESSES_MAX
