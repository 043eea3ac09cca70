"""What the pusher pushes to: a node's address and token, and one published configuration."""

from __future__ import annotations

from dataclasses import dataclass

from slb.model import Config


@dataclass
class NodeTarget:
    name: str
    control_url: str  # e.g. "http://127.0.0.1:9901"
    token: str | None = None



@dataclass
class Published:
    seq: int
    config: Config
    changed: frozenset[str] | None  # None: anything may have changed since seq - 1
    configuration: int | None = None  # the configuration version it was built from
