"""The admin's own file (``config/admin.yaml``): where it listens, its store, Consul, tokens.

Consul's address and token may also come from ``CONSUL_HTTP_ADDR`` and ``CONSUL_HTTP_TOKEN``, as
Consul's own tools read them; the file wins when it sets them. ``seed`` fills an empty store
(clusters, nodes, virtual servers, routes, groups) and activates it, so a fresh admin serves at
once; a store that already has objects is never touched by the seed. The admin takes the seed
out of its configuration when it starts (``Seed.take``): it is not kept after.

Roles are ranked (``ROLE_RANK``): each may do what the ones below it may. The API's tokens and
the web UI's sessions are checked with the same ``may``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from admin.domain.errors import validation_errors
from admin.domain.migrate import check_url
from admin.domain.objects import Strict
from slb.errors import ConfigError
from slb.model import Address, LogSettings

SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # same documents, same types

Role = Literal["viewer", "operator", "admin"]
ROLE_RANK: dict[str, int] = {"viewer": 0, "operator": 1, "admin": 2}


def may(role: str, needed: str) -> bool:
    """Whether ``role`` may do what ``needed`` may: viewer reads, operator also acts on
    members and servers, admin also edits, activates and rolls back."""
    return ROLE_RANK[role] >= ROLE_RANK[needed]


class ApiToken(Strict):
    """One caller of the API and the UI. The secret is ``token`` itself, or read at load from
    ``token_file`` (a secrets mount) or ``token_env`` (an environment variable's name), so the
    admin's file need hold no secret. Only ``token`` is kept after loading."""

    name: str = Field(min_length=1, max_length=253)  # who the audit log names
    token: str = Field(min_length=8, max_length=4096)
    role: Role = "viewer"

    @model_validator(mode="before")
    @classmethod
    def _read_secret(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not ({"token_file", "token_env"} & data.keys()):
            return data
        data = dict(data)
        given = [k for k in ("token", "token_file", "token_env") if data.get(k) is not None]
        if len(given) != 1:
            raise ValueError(f"set exactly one of token, token_file, token_env (got "
                             f"{', '.join(given) or 'none'})")
        file, env = data.pop("token_file", None), data.pop("token_env", None)
        if file is not None:
            try:
                data["token"] = Path(str(file)).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or exc
                raise ValueError(f"token_file: cannot read {file}: {reason}") from None
        else:
            data["token"] = os.environ.get(str(env), "").strip()
            if not data["token"]:
                raise ValueError(f"token_env: the environment variable {env} is empty or unset")
        return data


class ConsulSettings(Strict):
    address: str | None = None  # host:port; default CONSUL_HTTP_ADDR, else none (no Consul)
    token: str | None = None  # default CONSUL_HTTP_TOKEN
    scheme: Literal["http", "https"] = "http"
    # Blocking query wait. Consul adds up to wait/16 of jitter; the HTTP timeout is set above
    # that so a long poll can neither time out early nor hang forever.
    wait: float = Field(55.0, ge=1, le=300)
    # No answer at all for this long (even an unchanged one): the watch is restarted.
    watchdog: float = Field(120.0, ge=5)


class StatsSettings(Strict):
    """The traffic window (``admin.traffic``): one sample of every node per ``interval``, kept
    for ``window`` seconds; memory is fixed by the two (about 52 KB per scope at 5 s / 1 h)."""

    interval: float = Field(5.0, ge=1, le=60)
    window: float = Field(3600.0, ge=60, le=86400)


class StoreSettings(Strict):
    """Where the admin keeps its state: an SQLite file (the default, one admin) or PostgreSQL
    (several admins sharing one store). ``store: path`` is short for ``store: {url: path}``."""

    # a database URL (sqlite:///path, postgresql://user:pass@host/db) or an SQLite file path
    url: str = Field("var/admin.db", min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _path_shorthand(cls, data: Any) -> Any:
        return {"url": data} if isinstance(data, str) else data

    @field_validator("url")
    @classmethod
    def _known_engine(cls, url: str) -> str:
        problem = check_url(url)
        if problem:
            raise ValueError(problem)
        return url


class ElectionSettings(Strict):
    """The leader election of several admins over Consul (``admin.ha``).

    Off (the default), the admin leads alone, and a Consul outage stops nothing but the
    watches. On (several admins sharing one store; Consul required), only the elected leader
    pushes, and a leader that loses Consul steps down: nodes keep serving what they have."""

    enabled: bool = False
    key: str = Field("slb/admin/leader", min_length=1, pattern=r"^[^/].*")  # the KV lock
    # the TTL of the health check the session is bound to, seconds, passed every check_ttl/3:
    # a killed leader's lock is free within check_ttl + lock_delay; 0 binds no check (the
    # session TTL alone, for a token without service:write)
    check_ttl: float = Field(3.0, ge=0, le=300)
    # the session TTL, seconds, the second line (Consul's agent refuses one below its
    # session_ttl_min, 10 s by default); without the check a killed leader's lock is free
    # within 2 x TTL + lock_delay
    ttl: float = Field(10.0, ge=1, le=86400)
    lock_delay: float = Field(1.0, ge=0, le=60)  # Consul's LockDelay after a lost session
    poll: float = Field(0.5, gt=0, le=60)  # how often the leader looks for others' changes

    @field_validator("check_ttl")
    @classmethod
    def _check_ttl_off_or_usable(cls, value: float) -> float:
        # passed every check_ttl/3: below half a second a busy admin would flap
        if 0 < value < 0.5:
            raise ValueError("must be 0 (no check) or at least 0.5 seconds")
        return value


class Seed(Strict):
    """The objects an empty store is filled with, handed over once (``take``).

    At 10,000 groups x 10 members the parsed seed is about 40 MB of dicts: kept in the
    configuration for the admin's whole life it was an eighth of its memory. So the seeding
    step takes the objects out and the configuration keeps empty lists (the frozen model
    forbids reassigning a field, not emptying a list)."""

    clusters: list[dict[str, Any]] = Field(default_factory=list)
    nodes: list[dict[str, Any]] = Field(default_factory=list)
    virtual_servers: list[dict[str, Any]] = Field(default_factory=list)
    routes: list[dict[str, Any]] = Field(default_factory=list)
    groups: list[dict[str, Any]] = Field(default_factory=list)

    def take(self) -> dict[str, list[dict[str, Any]]]:
        """Every object by field (``clusters``, ``nodes``, ...); the seed is empty after."""
        taken = {}
        for field in type(self).model_fields:
            held: list[dict[str, Any]] = getattr(self, field)
            taken[field] = held[:]
            held.clear()
        return taken


class AdminConfig(Strict):
    listen: Address = "127.0.0.1:9800"
    store: StoreSettings = StoreSettings()
    # this admin's name in the election, the audit log and GET /api/v1/leader
    # (default: host name and listen address)
    name: str | None = Field(None, min_length=1)
    election: ElectionSettings = ElectionSettings()
    consul: ConsulSettings = ConsulSettings()
    tokens: list[ApiToken] = Field(default_factory=list)
    seed: Seed | None = None
    # a node running another admin store's snapshot: wait for an operator's take-over
    # (manual), or take it over at once (automatic); a node ahead of this store always waits
    take_over: Literal["manual", "automatic"] = "manual"
    push_timeout: float = Field(5.0, gt=0)
    reconcile_interval: float = Field(10.0, gt=0)
    stats: StatsSettings = StatsSettings()
    log: LogSettings = LogSettings()  # the admin's own log lines: text (key=value) or json

    @model_validator(mode="after")
    def _election_needs_consul(self) -> AdminConfig:
        if self.election.enabled and not self.consul_address():
            raise ValueError("election.enabled needs consul.address (or CONSUL_HTTP_ADDR): "
                             "the admins elect their leader with a Consul lock")
        return self

    def consul_address(self) -> str | None:
        return self.consul.address or os.environ.get("CONSUL_HTTP_ADDR") or None

    def consul_token(self) -> str | None:
        return self.consul.token or os.environ.get("CONSUL_HTTP_TOKEN") or None


def load_admin_config(path: str | Path) -> AdminConfig:
    path = Path(path)
    try:
        # libyaml's parser when PyYAML has it: a 10,000-group seed (4 MB of YAML) peaked at
        # 320 MB with the pure-Python one (a node and two marks per scalar), 220 MB with it
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=SAFE_LOADER) or {}
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    try:
        return AdminConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_errors(exc, prefix=f"{path}: ")) from None
