"""``admin.settings``: API tokens may come from a file or the environment, never silently
empty; the store and election settings, and their errors with field paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from admin.cli import main
from admin.domain.migrate import code_revision
from admin.settings import AdminConfig, load_admin_config
from slb.errors import ConfigError


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "admin.yaml"
    path.write_text(text, encoding="utf-8")
    return load_admin_config(path)


def errors(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, text)
    return refused.value.lines


def test_store_is_a_path_or_a_url(tmp_path: Path) -> None:
    assert load(tmp_path, "store: var/a.db\n").store.url == "var/a.db"  # type: ignore[attr-defined]
    url = "postgresql://slb@db.example/slb"
    assert load(tmp_path, f"store: {{url: '{url}'}}\n").store.url == url  # type: ignore[attr-defined]


@pytest.mark.parametrize(("text", "expected"), [
    ("store: {url: 'mysql://x/y'}\n",
     "store.url: unsupported database 'mysql': use sqlite or postgresql"),
    ("store: {uri: x}\n", "store.uri: unknown field"),
    ("election: {ttl: 0}\n", "election.ttl: Input should be greater than or equal to 1"),
    ("election: {check_ttl: 0.1}\n",
     "election.check_ttl: must be 0 (no check) or at least 0.5 seconds"),
    ("election: {enabled: true}\n", "election.enabled needs consul.address"),
])
def test_bad_store_and_election_settings_name_their_field(tmp_path: Path, text: str,
                                                          expected: str) -> None:
    assert any(expected in line for line in errors(tmp_path, text)), errors(tmp_path, text)


def test_migrate_command_migrates_once_then_says_so(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "admin.yaml"
    config.write_text(f"store: {tmp_path / 'store' / 'admin.db'}\n", encoding="utf-8")
    assert main(["-c", str(config), "migrate"]) == 0
    assert f"store migrated from revision (empty) to {code_revision()}" in capsys.readouterr().out
    assert main(["-c", str(config), "migrate"]) == 0
    assert f"store already at revision {code_revision()}" in capsys.readouterr().out


def test_migrate_of_an_unreachable_store_is_one_line_and_status_1(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "admin.yaml"
    config.write_text("store: {url: 'postgresql://x@/none?host=/nonexistent'}\n",
                      encoding="utf-8")
    assert main(["-c", str(config), "migrate"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("slb-admin: cannot migrate the store: ")
    assert "Traceback" not in err


def test_tokens_come_from_a_file_or_an_environment_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ada.token").write_text("from-a-file-0123\n")
    monkeypatch.setenv("SLB_TEST_OTTO", "from-the-env-0123")
    (tmp_path / "admin.yaml").write_text(
        f"tokens:\n  - {{name: ada, role: admin, token_file: {tmp_path / 'ada.token'}}}\n"
        "  - {name: otto, role: operator, token_env: SLB_TEST_OTTO}\n")
    tokens = load_admin_config(tmp_path / "admin.yaml").tokens
    assert [(t.name, t.token) for t in tokens] == [("ada", "from-a-file-0123"),
                                                    ("otto", "from-the-env-0123")]


@pytest.mark.parametrize(("entry", "error"), [
    ("{name: a, token_env: SLB_TEST_UNSET}",
     "tokens.0: token_env: the environment variable SLB_TEST_UNSET is empty or unset"),
    ("{name: a, token_file: /nonexistent/t}",
     "tokens.0: token_file: cannot read /nonexistent/t: No such file or directory"),
    ("{name: a, token: abcdefgh1, token_env: X}",
     "tokens.0: set exactly one of token, token_file, token_env (got token, token_env)"),
])
def test_a_token_source_that_gives_nothing_is_an_error_with_its_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry: str, error: str) -> None:
    monkeypatch.delenv("SLB_TEST_UNSET", raising=False)
    (tmp_path / "admin.yaml").write_text(f"tokens:\n  - {entry}\n")
    with pytest.raises(ConfigError) as caught:
        load_admin_config(tmp_path / "admin.yaml")
    assert caught.value.lines == [f"{tmp_path / 'admin.yaml'}: {error}"]


def test_admin_log_is_structured_in_the_format_its_file_names(capsys) -> None:
    import json
    import logging

    from admin.cli import setup_logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        setup_logging("json", "info")
        logging.getLogger("admin").info("node applied", extra={"fields": {"node": "n1"}})
        line = capsys.readouterr().err.strip().splitlines()[-1]
        event = json.loads(line)
        assert event["level"] == "INFO" and event["logger"] == "admin"
        assert event["msg"] == "node applied" and event["node"] == "n1" and "ts" in event
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_the_seed_is_handed_over_once_and_not_kept(tmp_path: Path) -> None:
    config = load(tmp_path, "seed:\n  clusters: [{name: c1}]\n"
                            "  groups: [{name: web, members: []}]\n")
    assert isinstance(config, AdminConfig) and config.seed is not None
    assert config.seed.take() == {"clusters": [{"name": "c1"}], "nodes": [],
                                  "virtual_servers": [], "routes": [],
                                  "groups": [{"name": "web", "members": []}]}
    assert config.seed.take() == {field: [] for field in (
        "clusters", "nodes", "virtual_servers", "routes", "groups")}  # nothing kept

