"""``slb.node.files``: the persisted snapshot survives restarts, and a bad one is ignored."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from slb.errors import ConfigError
from slb.model import Config, Control, apply_batch, copy_config, identity, parse_batch, parse_config
from slb.model.identity import GROUP_JSON, cache_of
from slb.node import files
from slb.node.files import (
    SNAPSHOT_FILE,
    SnapshotEncoder,
    StateWriter,
    load_config_file,
    load_snapshot,
    load_state,
    save_snapshot,
    summary,
)


def test_a_saved_snapshot_loads_back_equal(tmp_path: Path) -> None:
    config = parse_config({"version": 4, "groups": [{"name": "web", "members": [
        {"address": "10.0.0.1:80", "weight": 3}]}]})
    target = save_snapshot(tmp_path / "state", config)
    assert target.name == SNAPSHOT_FILE
    assert load_snapshot(tmp_path / "state") == config
    assert [p.name for p in (tmp_path / "state").iterdir()] == [SNAPSHOT_FILE]  # no temp left


def test_no_snapshot_yet_is_none(tmp_path: Path) -> None:
    assert load_snapshot(tmp_path) is None


@pytest.mark.parametrize(("content", "why"), [
    (b"{not json", "unreadable"),
    (b'{"groups": [{"name": ""}]}', "invalid"),
])
def test_a_bad_snapshot_is_reported_and_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                content: bytes, why: str) -> None:
    (tmp_path / SNAPSHOT_FILE).write_bytes(content)
    with caplog.at_level(logging.ERROR, logger="slb.state"):
        assert load_snapshot(tmp_path) is None
    assert f"ignoring state file {tmp_path / SNAPSHOT_FILE}: {why}" in caplog.text


def test_summary_counts_what_a_config_serves() -> None:
    config = parse_config({
        "groups": [{"name": "g", "members": [{"address": "10.0.0.1:80"}]}],
        "virtual_servers": [{"name": n, "listen": "127.0.0.1:80",
                             "routes": [{"path": "/", "group": "g"}]} for n in ("a", "b")]})
    assert summary(config) == ("2 virtual servers on 1 listeners, 2 routes, 1 groups, "
                               "1 members")


def test_a_schema_error_names_the_line_and_column_of_the_value(tmp_path: Path) -> None:
    path = tmp_path / "slb.yaml"
    path.write_text("groups:\n"
                    "  - name: web\n"
                    "    algorithm: nope\n"
                    "    members:\n"
                    "      - {address: 10.0.0.1:80}\n"
                    "      - {address: bad}\n"
                    "  - {name: api, colour: red}\n")
    with pytest.raises(ConfigError) as raised:
        load_config_file(path)
    lines = raised.value.lines
    assert lines[0].startswith(f"{path}:3:16: groups[0].algorithm: ")
    assert lines[1] == f"{path}:6:19: groups[0].members[1].address: expected host:port"
    assert lines[2] == f"{path}:7:25: groups[1].colour: unknown field"


def test_a_missing_field_points_at_the_mapping_it_belongs_to(tmp_path: Path) -> None:
    path = tmp_path / "slb.yaml"
    path.write_text("virtual_servers:\n  - name: vs\n    routes: []\n")
    with pytest.raises(ConfigError) as raised:
        load_config_file(path)
    assert raised.value.lines == [
        f"{path}:2:5: virtual_servers[0].listen: required field is missing"]


def test_the_control_token_comes_from_a_file_or_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token").write_text("from-a-file\n")
    (tmp_path / "a.yaml").write_text(f"control: {{token_file: {tmp_path / 'token'}}}\n")
    assert load_config_file(tmp_path / "a.yaml").control.token == "from-a-file"
    monkeypatch.setenv("SLB_TEST_TOKEN", "from-the-env")
    (tmp_path / "b.yaml").write_text("control: {token_env: SLB_TEST_TOKEN}\n")
    assert load_config_file(tmp_path / "b.yaml").control.token == "from-the-env"


@pytest.mark.parametrize(("control", "error"), [
    ("{token_file: /nonexistent/token}", "control.token_file: cannot read /nonexistent/token"),
    ("{token_env: SLB_TEST_UNSET}", "control.token_env: the environment variable SLB_TEST_UNSET"
                                    " is empty or unset"),
    ("{token: abcdefgh, token_env: X}", "control: set one of token, token_env, not several"),
])
def test_a_token_source_that_gives_nothing_is_an_error_naming_the_field(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, control: str, error: str) -> None:
    monkeypatch.delenv("SLB_TEST_UNSET", raising=False)
    (tmp_path / "c.yaml").write_text(f"control: {control}\n")
    with pytest.raises(ConfigError) as caught:
        load_config_file(tmp_path / "c.yaml")
    assert any(error in line for line in caught.value.lines), caught.value.lines


def test_the_persisted_snapshot_holds_no_token(tmp_path: Path) -> None:
    config = parse_config({"version": 2, "control": {"token": "never-on-disk"}})
    target = save_snapshot(tmp_path, config)
    assert b"never-on-disk" not in target.read_bytes()


def test_the_term_is_kept_beside_the_snapshot(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    config = parse_config({"version": 4})
    save_snapshot(tmp_path, config, term=12)
    saved = json.loads((tmp_path / SNAPSHOT_FILE).read_bytes())
    assert (saved["term"], saved["version"]) == (12, 4)  # still the snapshot a reader expects
    assert load_state(tmp_path) == (config, 12)
    save_snapshot(tmp_path, config)  # an older node's file: no term
    assert load_state(tmp_path) == (config, 0)
    save_snapshot(tmp_path, parse_config({}), term=3)  # a term before any snapshot
    assert load_state(tmp_path) == (None, 3)
    (tmp_path / SNAPSHOT_FILE).write_text('{"term": "x", "version": 4}')
    with caplog.at_level(logging.ERROR, logger="slb.state"):
        assert load_state(tmp_path) == (config, 0)
    assert "ignoring the term in state file" in caplog.text


def test_one_encoder_writes_each_state_whole_through_deltas_and_new_snapshots(
        tmp_path: Path) -> None:
    """The encoder reuses what it wrote before; every file still loads as exactly its state:
    after pool deltas (the groups changed, the rest shared), after a snapshot whose other
    parts changed, with and without a term, and never with the token."""
    encoder = SnapshotEncoder()

    def snapshot(version: int, domain: str) -> Config:
        return parse_config({
            "version": version, "control": {"token": "never-on-disk"},
            "groups": [{"name": f"g{i}", "members": [{"address": f"10.0.0.{i}:80"}]}
                       for i in range(1, 4)],
            "virtual_servers": [{"name": "vs", "listen": "127.0.0.1:8080", "domains": [domain],
                                 "routes": [{"path": "/", "group": "g1"}]}]})

    def saved(config: Config, term: int = 0) -> tuple[Config | None, int]:
        target = save_snapshot(tmp_path, config, term, encoder)
        assert b"never-on-disk" not in target.read_bytes()
        return load_state(tmp_path)

    first = snapshot(1, "a.example")
    assert saved(first, 7) == (copy_config(first, control=Control()), 7)
    delta = parse_batch({"base_version": 1, "version": 2, "groups": [
        {"name": "g2", "upsert": [{"address": "10.0.0.9:80", "weight": 5}],
         "remove": ["10.0.0.2:80"]}]})
    second, _ = apply_batch(first, delta)
    assert saved(second) == (copy_config(second, control=Control()), 0)
    third = snapshot(3, "b.example")  # every part new: nothing reused stays on disk
    assert saved(third, 8) == (copy_config(third, control=Control()), 8)
    assert load_state(tmp_path)[0].virtual_servers[0].domains == ["b.example"]


async def test_a_deltas_groups_get_their_json_once_for_the_write_and_the_hash(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A delta's apply makes no JSON (the traffic gets the change first); handing it to the
    writer makes each changed group's JSON, which the hash and the file then share."""
    first = parse_config({"version": 1, "groups": [
        {"name": f"g{i}", "members": [{"address": f"10.0.0.{i}:80"}]} for i in range(3)]})
    first.content_hash()
    writer = StateWriter(str(tmp_path), lambda: 0)
    writer.now(first)  # every group's JSON made and kept, as after a full snapshot
    made: list[str] = []  # the groups whose JSON was made from here on
    make = identity._made_json

    def counting(group: Any) -> bytes:
        made.append(group.name)
        return make(group)
    monkeypatch.setattr(identity, "_made_json", counting)
    second, changed = apply_batch(first, parse_batch({"base_version": 1, "version": 2, "groups": [
        {"name": "g1", "upsert": [{"address": "10.0.0.1:80", "state": "down"}]}]}))
    assert [GROUP_JSON in cache_of(group) for group in changed] == [False]
    writer.soon(second, changed)
    kept = cache_of(changed[0])[GROUP_JSON]
    assert kept == changed[0].model_dump_json().encode()
    digest = second.content_hash()
    writer.close()  # writes what waits
    assert made == ["g1"]  # once: neither the hash nor the write made it a second time
    assert digest == parse_config(second.to_json()).content_hash()
    assert load_state(tmp_path)[0] == copy_config(second, control=Control())


async def test_pool_deltas_are_written_once_they_pause_or_after_the_longest_delay(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deltas that keep coming are written at the latest ``PERSIST_MAX_DELAY`` after the
    first; a burst that stops is written once, with its last state."""
    monkeypatch.setattr(files, "PERSIST_QUIET", 30.0)  # never quiet long enough here
    monkeypatch.setattr(files, "PERSIST_MAX_DELAY", 0.2)
    writer = StateWriter(str(tmp_path), lambda: 0)
    writes = []
    save = files.save_snapshot

    def saving(*args: Any) -> Path:
        saved = save(*args)
        writes.append(args[1].version)  # once it is on disk
        return saved
    monkeypatch.setattr(files, "save_snapshot", saving)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    version = 1
    while not writes:  # a delta every 20 ms: the longest delay writes anyway
        assert loop.time() < deadline, "no write while deltas kept coming"
        writer.soon(parse_config({"version": version}))
        version += 1
        await asyncio.sleep(0.02)
    assert load_state(tmp_path)[0] is not None

    monkeypatch.setattr(files, "PERSIST_QUIET", 0.05)
    monkeypatch.setattr(files, "PERSIST_MAX_DELAY", 30.0)
    await asyncio.sleep(0)
    writes.clear()
    for last in range(version, version + 20):  # a burst, then nothing
        writer.soon(parse_config({"version": last}))
    while not writes:
        assert loop.time() < deadline, "the burst was never written"
        await asyncio.sleep(0.01)
    assert writes == [last]  # the burst: one write, of its last state
    snapshot = load_state(tmp_path)[0]
    assert snapshot is not None and snapshot.version == last
    writer.close()
