"""``admin.settings``: API tokens may come from a file or the environment, never silently
empty."""

from __future__ import annotations

from pathlib import Path

import pytest

from admin.settings import load_admin_config
from slb.errors import ConfigError


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
