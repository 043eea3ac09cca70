"""Reading a configuration file: YAML (or JSON, a subset) into a validated ``Config``.

Every failure becomes a ``ConfigError`` whose lines name the file and the place: a YAML syntax
error with its line and column, a schema error with its path in the document. Nothing is half
loaded: the caller gets a whole ``Config`` or an error.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from slb.errors import ConfigError
from slb.model import Config, ConfigErrors, parse_config


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
        return parse_config(data)
    except ConfigErrors as exc:
        raise ConfigError([f"{path}: {line}" for line in exc.lines()]) from None


def summary(config: Config) -> str:
    members = sum(len(g.members) for g in config.groups)
    routes = sum(len(v.routes) for v in config.virtual_servers)
    listeners = len({v.listen for v in config.virtual_servers})
    return (f"{len(config.virtual_servers)} virtual servers on {listeners} listeners, "
            f"{routes} routes, {len(config.groups)} groups, {members} members")
