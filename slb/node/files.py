"""A node's files: its configuration file, and the last applied snapshot kept on disk.

The configuration file is YAML (or JSON, a subset), read into a validated ``Config``. Every
failure becomes a ``ConfigError`` whose lines name the file and the place: ``file:line:column``
(for a YAML syntax error and a schema error alike) and, for a schema error, its path in the
document. Nothing is half loaded:
the caller gets a whole ``Config`` or an error. A file without ``virtual_servers`` makes an
admin-managed node, which reads only ``LOCAL_KEYS`` from it; ``ignored_keys`` names the rest, so
``slb check`` can warn instead of letting them pass in silence.

The snapshot (``state_dir/snapshot.json``) lets a node restarted without its admin still serve.
It is written atomically: a temporary file in the same directory, fsync, rename over the old one,
fsync of the directory. A reader sees the old snapshot or the new one, never half of one. A
corrupt or invalid file is reported and ignored, never half loaded.

The same file keeps the highest leader term the node has seen (``"term"``, beside the snapshot's
own fields, so the file is still the snapshot a reader expects): a restarted node goes on
refusing a deposed leader's pushes (fencing, ``slb.node.node``). A term seen before any snapshot
was applied is written with the empty version 0 configuration, which loads as no snapshot. A
file without the key (an older node's) loads with term 0.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from slb.errors import ConfigError
from slb.model import (
    Config,
    ConfigErrors,
    Control,
    Group,
    Location,
    copy_config,
    format_problem,
    parse_config,
    tls_problems,
)
from slb.model.identity import keep_json

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
        where = _locator(text)
        raise ConfigError([f"{path}{where(loc)}: {format_problem((loc, message))}"
                           for loc, message in exc.errors]) from None
    for line in certificate_warnings(config):
        log.warning("%s: %s", path, line)
    return with_control_token(config, path)


def _locator(text: str) -> Callable[[Location], str]:
    """Maps a problem's location to ``:line:column`` in the file ("" where it cannot tell).

    The document is composed again (the node tree keeps every position) and walked along the
    location; a location that goes past what the file has (a missing field) points at the
    deepest part that exists, which is where the field belongs.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        root = None

    def where(loc: Location) -> str:
        node = root
        if node is None:
            return ""
        for part in loc:
            child = _child(node, part)
            if child is None:
                break
            node = child
        mark = node.start_mark
        return f":{mark.line + 1}:{mark.column + 1}"

    return where


def _child(node: yaml.Node, part: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == part:
                return value  # type: ignore[no-any-return]
    elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) \
            and 0 <= part < len(node.value):
        return node.value[part]  # type: ignore[no-any-return]
    return None


# What an admin-managed node takes from its own file; everything else comes from its snapshot.
LOCAL_KEYS = frozenset({"control", "state_dir", "log"})


def is_file_managed(config: Config) -> bool:
    """A file with virtual servers manages its node; one without leaves it to the admin."""
    return bool(config.virtual_servers)


def ignored_keys(config: Config) -> list[str]:
    """Keys a file sets that its node will ignore, because the admin's snapshot sets them."""
    if is_file_managed(config):
        return []
    return sorted(set(config.model_fields_set) - LOCAL_KEYS)


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
TERM_KEY = "term"  # not a Config field: the highest leader term seen, kept beside the snapshot


class SnapshotEncoder:
    """The state file's bytes for a snapshot, reusing the JSON of the parts written before.

    A pool delta replaces a few ``Group`` objects and the version, and shares every other part
    with the config before (``slb.model.delta.apply_batch``); snapshot objects are immutable,
    so the JSON of an object written last time is still its JSON. Serialising is most of a
    write (1,000 groups x 10 members and a route each: 10 ms, with the GIL held even in a
    thread, so on the loop's time). Each group's JSON is kept with the group itself
    (``slb.model.identity.keep_json``; the node made it already for the groups a delta
    replaced, for their digests): a flip of 100 groups serialises nothing here, and a group
    gone from the snapshot takes its JSON with it. The rest of the snapshot's JSON is kept
    while its parts are the same objects. Not thread-safe: one writer at a time.
    """

    # spliced in by hand: the version changes with every delta, the control is the node's
    OWN = frozenset({"groups", "version", "control"})

    def __init__(self) -> None:
        self._rest: tuple[list[Any], bytes] | None = None  # (the field values, their JSON)

    def encode(self, config: Config, term: int = 0) -> bytes:
        values = [v for k, v in config.__dict__.items() if k not in self.OWN]
        if self._rest is None or len(self._rest[0]) != len(values) \
                or any(a is not b for a, b in zip(self._rest[0], values, strict=True)):
            self._rest = (values, config.model_dump_json(exclude=set(self.OWN)).encode())
        rest = self._rest[1]
        # (made once per group object: by ``StateWriter.soon`` for a delta's groups, or here)
        parts = [keep_json(group) for group in config.groups]
        # the control settings are the node file's, never the snapshot's: the token stays off
        # disk. The term is not a Config field: a key beside them (the file loads as the
        # snapshot).
        control = Control(listen=config.control.listen).model_dump_json().encode()
        head = b'{"%s":%d,' % (TERM_KEY.encode(), term) if term else b"{"
        own = b'%s"version":%d,"control":%s,"groups":[' % (head, config.version, control)
        # ONE join of every piece: a megabyte at 1,000 groups, copied once (joining the groups
        # first, then the whole, cost 1.0 ms a write against 0.09 ms)
        pieces = [own]
        for part in parts:
            pieces += (part, b",")
        if parts:
            pieces.pop()  # (the last comma)
        pieces += (b"]", b"," + rest[1:] if rest != b"{}" else b"}")
        return b"".join(pieces)


def save_snapshot(state_dir: str | Path, config: Config, term: int = 0,
                  encoder: SnapshotEncoder | None = None) -> Path:
    """Write ``config`` (and ``term``, unless 0) atomically; ``encoder`` reuses what it
    encoded before (``SnapshotEncoder``)."""
    directory = Path(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / SNAPSHOT_FILE
    data = (encoder or SnapshotEncoder()).encode(config, term)
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
    return load_state(state_dir)[0]


def load_state(state_dir: str | Path) -> tuple[Config | None, int]:
    """The persisted snapshot (None: none, or only a term) and the highest term seen."""
    path = Path(state_dir) / SNAPSHOT_FILE
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None, 0
    except (OSError, ValueError) as exc:
        log.error("ignoring state file %s: unreadable: %s", path, exc)
        return None, 0
    term = data.pop(TERM_KEY, 0) if isinstance(data, dict) else 0
    if not isinstance(term, int) or isinstance(term, bool) or term < 0:
        log.error("ignoring the term in state file %s: %r is not a non-negative integer",
                  path, term)
        term = 0
    try:
        config = parse_config(data)
    except ConfigErrors as exc:
        # the term is kept even so: fencing must not depend on the snapshot being valid
        log.error("ignoring state file %s: invalid: %s", path, "; ".join(exc.lines()))
        return None, term
    return (config if config.version > 0 else None), term



PERSIST_QUIET = 2.0  # seconds without a pool delta before the snapshot is written
PERSIST_MAX_DELAY = 5.0  # seconds a delta waits at most for its write, however busy


class StateWriter:
    """The node's writes of ``state_dir/snapshot.json``, with the term read at write time.

    ``now`` writes before it returns (a full snapshot, or a term that rose, is on disk before
    the push is answered). ``soon`` writes pool deltas coalesced, in a thread: once no delta
    came for ``PERSIST_QUIET`` seconds, or ``PERSIST_MAX_DELAY`` after the first unsaved one
    when they keep coming. Why wait for quiet: a write costs CPU (the GIL, even in a thread)
    and a burst of health flips reaches 50 nodes sharing a few cores; a write after each
    flip landed in the middle of the next one on every node. The quiet is 2 s: flips a
    second or less apart (a burst, or a bench) were each written with 0.5 s, ~1.5 ms of CPU
    per node per flip at 1,000 groups (a megabyte encoded and fsynced), a third of a flip's.
    A node that dies between a delta and its write restarts some steps behind; the admin's
    reconcile sees the hash differ and pushes the current snapshot (the term, which fencing
    needs, never waits: ``now``). Writes
    are numbered and serialised, so a slow threaded write of an older state never lands over
    a newer one, and a large snapshot is written at most ~2% of the time.
    """

    def __init__(self, state_dir: str, term: Callable[[], int]) -> None:
        self.state_dir = state_dir
        self.term = term
        self.saved_term = 0  # the term the file holds
        self._unsaved: Config | None = None
        self._first_unsaved = 0.0  # loop time of the oldest delta not yet written
        self._last_delta = 0.0  # loop time of the newest one
        self._task: asyncio.Task[None] | None = None
        self._lock = threading.Lock()
        self._issued = 0
        self._written = 0
        self._encoder = SnapshotEncoder()  # used under ``_lock`` only

    def now(self, config: Config) -> None:
        self._unsaved = None  # superseded
        self._write(config, self._next())

    def soon(self, config: Config, changed: Iterable[Group] = ()) -> None:
        """Write ``config`` soon (coalesced: see the class); ``changed``: the groups a delta
        replaced, whose JSON is made now, once, for the write and for the digest the node's
        answer needs (after the delta reached the traffic: ``slb.model.identity``)."""
        for group in changed:
            keep_json(group)
        loop = asyncio.get_running_loop()
        if self._unsaved is None:
            self._first_unsaved = loop.time()
        self._unsaved, self._last_delta = config, loop.time()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._later())

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._unsaved is not None:
            self.now(self._unsaved)

    def _next(self) -> int:
        self._issued += 1
        return self._issued

    async def _later(self) -> None:
        loop = asyncio.get_running_loop()
        not_before = 0.0  # after a long write: keep writing under ~2% of the time
        while self._unsaved is not None:
            due = max(not_before, min(self._last_delta + PERSIST_QUIET,
                                      self._first_unsaved + PERSIST_MAX_DELAY))
            if loop.time() < due:
                await asyncio.sleep(due - loop.time())
                continue  # (a delta that came meanwhile moves ``due``)
            config, self._unsaved = self._unsaved, None
            started = loop.time()
            # in a thread: the write and its fsync must not stall the control API
            await asyncio.to_thread(self._write, config, self._next())
            not_before = loop.time() + 49 * (loop.time() - started)

    def _write(self, config: Config, number: int) -> None:
        term = self.term()
        with self._lock:
            if number < self._written:
                return  # a newer state is on disk already
            try:
                save_snapshot(self.state_dir, config, term, self._encoder)
            except OSError as exc:
                log.error("could not persist version %d to %s: %s", config.version,
                          self.state_dir, exc)
                return
            self._written = number
            self.saved_term = term
