"""``slb.cli``: ``slb check`` explains a bad file without a traceback; no admin command."""

from __future__ import annotations

from pathlib import Path

import pytest

from slb.cli import main


def test_check_accepts_a_valid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "slb.yaml"
    path.write_text("groups: [{name: web}]\n")
    assert main(["check", "-c", str(path)]) == 0
    assert "configuration is valid: 0 virtual servers" in capsys.readouterr().out


def test_check_lists_every_error_and_fails(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "slb.yaml"
    path.write_text("groups: [{name: web, algorithm: nope}, {name: ''}]\n")
    assert main(["check", "-c", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:1:33: groups[0].algorithm:" in err and f"{path}:1:47: groups[1].name:" in err
    assert "configuration is invalid (2 errors)" in err and "Traceback" not in err


def test_the_admin_is_not_a_command_of_the_data_plane(capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["admin", "-c", "admin.yaml"])
    assert exited.value.code == 2 and "invalid choice: 'admin'" in capsys.readouterr().err


def test_check_warns_about_keys_an_admin_managed_node_ignores(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "slb.yaml"
    path.write_text("control: {listen: '127.0.0.1:9901'}\nstate_dir: /tmp/x\n"
                    "log: {format: json}\naccess_log: {enabled: true}\ngroups: [{name: web}]\n")
    assert main(["check", "-c", str(path)]) == 0  # a warning, not an error
    err = capsys.readouterr().err
    assert f"{path}: access_log: warning: ignored" in err
    assert f"{path}: groups: warning: ignored" in err
    assert {line.split(": ")[1] for line in err.splitlines()} == {"access_log", "groups"}


def test_check_does_not_warn_for_a_file_managed_node(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "slb.yaml"
    path.write_text("access_log: {enabled: true}\nvirtual_servers:\n"
                    "  - {name: vs, listen: '127.0.0.1:8080', routes: [{path: /, group: web}]}\n"
                    "groups: [{name: web}]\n")
    assert main(["check", "-c", str(path)]) == 0
    assert "warning" not in capsys.readouterr().err
