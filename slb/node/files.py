"""A node's files: its configuration file, and the last applied snapshot kept on disk.

The configuration file is YAML (or JSON, a subset), read into a validated ``Config``. Every
failure becomes a ``ConfigError`` whose lines name the file and the place: a YAML syntax error
with its line and column, a schema error with its path in the document. Nothing is half loaded:
the caller gets a whole ``Config`` or an error.

The snapshot (``state_dir/snapshot.json``) lets a node restarted without its admin still serve.
It is written atomically: a temporary file in the same directory, fsync, rename over the old one,
fsync of the directory. A reader sees the old snapshot or the new one, never half of one. A
corrupt or invalid file is reported and ignored, never half loaded.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import yaml

from slb.errors import ConfigError
from slb.model import (
    Config,
    ConfigErrors,
    Control,
    copy_config,
    format_problem,
    parse_config,
    tls_problems,
)

log = logging.getLogger("slb.state")


def certificate_warnings(config: Config) -> list[str]:
    """What does not stop a load but will: certificates expiring within 14 days."""
    return [format_problem(problem) for problem in tls_problems(config)[1]]


def load_config_file(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError([f"{where}: invalid YAML: {exc.problem or exc}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: invalid YAML: {exc}"]) from None
    if data is None:
        data = {}
    try:
        config = parse_config(data)
    except ConfigErrors as exc:
        raise ConfigError([f"{path}: {line}" for line in exc.lines()]) from None
    for line in certificate_warnings(config):
        log.warning("%s: %s", path, line)
    return with_control_token(config, path)


def with_control_token(config: Config, path: Path) -> Config:
    """``config`` with ``control.token`` read from ``token_file`` or ``token_env``.

    The secret is read once, at load, so a running node never depends on the file or the
    variable again; a missing or empty source is an error naming the field (a node whose
    token silently became None would turn its control API read-only).
    """
    control = config.control
    if control.token_file is not None:
        try:
            secret = Path(control.token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise ConfigError([f"{path}: control.token_file: cannot read "
                               f"{control.token_file}: {reason}"]) from None
        where = f"the file {control.token_file}"
    elif control.token_env is not None:
        secret = os.environ.get(control.token_env, "").strip()
        where = f"the environment variable {control.token_env}"
    else:
        return config
    if not secret:
        field = "token_file" if control.token_file is not None else "token_env"
        raise ConfigError([f"{path}: control.{field}: {where} is empty or unset"])
    # the sources are cleared: the copy holds the secret itself and stays valid if re-parsed
    resolved = control.model_copy(update={"token": secret, "token_file": None, "token_env": None})
    return copy_config(config, control=resolved)


def summary(config: Config) -> str:
    members = sum(len(g.members) for g in config.groups)
    routes = sum(len(v.routes) for v in config.virtual_servers)
    listeners = len({v.listen for v in config.virtual_servers})
    return (f"{len(config.virtual_servers)} virtual servers on {listeners} listeners, "
            f"{routes} routes, {len(config.groups)} groups, {members} members")


SNAPSHOT_FILE = "snapshot.json"


def save_snapshot(state_dir: str | Path, config: Config) -> Path:
    directory = Path(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / SNAPSHOT_FILE
    # the control settings are the node file's, never the snapshot's: the token stays off disk
    keep = Control(listen=config.control.listen)
    data = copy_config(config, control=keep).model_dump_json().encode()
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".snapshot-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target


def load_snapshot(state_dir: str | Path) -> Config | None:
    path = Path(state_dir) / SNAPSHOT_FILE
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.error("ignoring state file %s: unreadable: %s", path, exc)
        return None
    try:
        return parse_config(data)
    except ConfigErrors as exc:
        log.error("ignoring state file %s: invalid: %s", path, "; ".join(exc.lines()))
        return None
