"""A cluster's pusher that pushes nowhere, for the admin's own tests and benches.

``AdminService(store, pusher_factory=RecordingPusher)``: the publisher hands it each snapshot it
builds (with the groups it says changed), and it keeps them in ``published`` for the caller to
read; no node, no network.
"""

from __future__ import annotations

from typing import Any

from slb.model import Config


class RecordingPusher:
    """Stands in for a cluster's pusher: keeps what the publisher handed it."""

    def __init__(self) -> None:
        self.published: list[tuple[Config, frozenset[str] | None]] = []
        self.on_ahead: Any = None
        self.term: int | None = None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def set_nodes(self, targets: list[Any]) -> None:
        return None

    def publish(self, config: Config, changed: set[str] | None,
                configuration: int | None = None) -> None:
        self.published.append((config, None if changed is None else frozenset(changed)))
