"""The admin's own file (``config/admin.yaml``): where it listens, its store, Consul, tokens.

Consul's address and token may also come from ``CONSUL_HTTP_ADDR`` and ``CONSUL_HTTP_TOKEN``, as
Consul's own tools read them; the file wins when it sets them. ``seed`` fills an empty store
(clusters, nodes, virtual servers, routes, groups) and activates it, so a fresh admin serves at
once; a store that already has objects is never touched by the seed.

Roles are ranked (``ROLE_RANK``): each may do what the ones below it may. The API's tokens and
the web UI's sessions are checked with the same ``may``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError

from admin.domain.errors import validation_errors
from admin.domain.objects import Strict
from slb.errors import ConfigError
from slb.model import Address

Role = Literal["viewer", "operator", "admin"]
ROLE_RANK: dict[str, int] = {"viewer": 0, "operator": 1, "admin": 2}


def may(role: str, needed: str) -> bool:
    """Whether ``role`` may do what ``needed`` may: viewer reads, operator also acts on
    members and servers, admin also edits, activates and rolls back."""
    return ROLE_RANK[role] >= ROLE_RANK[needed]


class ApiToken(Strict):
    name: str = Field(min_length=1)  # who the audit log names
    token: str = Field(min_length=8)
    role: Role = "viewer"


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


class Seed(Strict):
    clusters: list[dict[str, Any]] = Field(default_factory=list)
    nodes: list[dict[str, Any]] = Field(default_factory=list)
    virtual_servers: list[dict[str, Any]] = Field(default_factory=list)
    routes: list[dict[str, Any]] = Field(default_factory=list)
    groups: list[dict[str, Any]] = Field(default_factory=list)


class AdminConfig(Strict):
    listen: Address = "127.0.0.1:9800"
    store: str = "var/admin.db"
    consul: ConsulSettings = ConsulSettings()
    tokens: list[ApiToken] = Field(default_factory=list)
    seed: Seed | None = None
    push_timeout: float = Field(5.0, gt=0)
    reconcile_interval: float = Field(10.0, gt=0)
    stats: StatsSettings = StatsSettings()

    def consul_address(self) -> str | None:
        return self.consul.address or os.environ.get("CONSUL_HTTP_ADDR") or None

    def consul_token(self) -> str | None:
        return self.consul.token or os.environ.get("CONSUL_HTTP_TOKEN") or None


def load_admin_config(path: str | Path) -> AdminConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    try:
        return AdminConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_errors(exc, prefix=f"{path}: ")) from None
