"""The last applied snapshot on disk, so a node restarted without its admin still serves.

Written atomically: a temporary file in the same directory, fsync, rename over the old one, fsync
of the directory. A reader sees the old snapshot or the new one, never half of one. A corrupt or
invalid file is reported and ignored, never half loaded.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from slb.model import Config, ConfigErrors, parse_config

log = logging.getLogger("slb.state")
SNAPSHOT_FILE = "snapshot.json"


def save_snapshot(state_dir: str | Path, config: Config) -> Path:
    directory = Path(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / SNAPSHOT_FILE
    data = config.model_dump_json().encode()
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
