"""What a node pusher tells the rest of the admin: its status, whether it reached a version,
what it did about a change, and why it cannot take the admin's snapshots.

A node the admin cannot push to without a take-over is *held* (``holder``):

- ``other_store``: it runs a snapshot of another admin store (the admin's database was
  recreated while the node kept its ``state_dir``, or another admin pushed to it). Versions of
  two stores are unrelated, so the node refuses ours until taken over.
- ``ahead``: it runs a version of this store above the admin's (the database was restored from
  a backup, or someone PUT a snapshot by hand). Within one store a node refuses older versions,
  so a take-over raises the admin's counter above the node's first.

Both are shown as such (``needs_take_over`` in the status, a message saying what to do), never
as a bare error, and never reported as applied.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from admin.push.wire import dumps

if TYPE_CHECKING:
    from admin.push.pusher import Pusher
    from admin.push.targets import NodeTarget, Published
    from slb.model import Config


class NodeReport:
    """Mixed into the pusher of one node: reads its fields, changes nothing."""

    if TYPE_CHECKING:  # the node pusher's fields
        owner: Pusher
        known: Published | None
        target: NodeTarget
        applied_version: int | None
        applied_hash: str | None
        applied_store: str | None
        last_contact: float | None
        last_error: str | None
        last_push_seconds: float | None
        pushes: int
        full_pushes: int
        delta_pushes: int
        failures: int
        checks: int

    # (what status_json showed last, and its JSON)
    _shown: tuple[dict[str, Any], bytes] | None = None

    def desired_config(self) -> Config | None:
        desired = self.owner._desired
        return desired.config if desired is not None else None

    def running_configuration(self) -> int | None:
        """The configuration version the node runs: known when it runs a snapshot this admin
        published (the desired one or the one it is known to have applied)."""
        for published in (self.owner._desired, self.known):
            if published is not None and self.applied_hash == published.config.content_hash():
                return published.configuration
        return None

    def desired_configuration(self) -> int | None:
        desired = self.owner._desired
        return desired.configuration if desired is not None else None

    def holder(self) -> dict[str, Any] | None:
        """Why this node needs a take-over before it takes our snapshots; None if it does
        not."""
        desired = self.desired_config()
        if desired is None or self.applied_version is None:
            return None
        held = {"store": self.applied_store, "version": self.applied_version}
        if self.applied_store is not None and desired.store is not None \
                and self.applied_store != desired.store:
            return {"kind": "other_store", **held}
        if self.applied_version > desired.version:
            return {"kind": "ahead", **held}
        return None

    def _conflict_error(self) -> str | None:
        desired = self.desired_config()
        if desired is None or self.applied_version is None:
            return None
        wanted = desired.version
        held = self.holder()
        if held is not None and held["kind"] == "other_store":
            return (f"node runs version {self.applied_version} of another admin store "
                    f"({held['store']}); nothing pushed: take it over to replace it")
        if held is not None:
            return (f"node runs version {self.applied_version} of this store, ahead of the "
                    f"admin's {wanted} (a store restored from a backup, or a hand-made push); "
                    "nothing pushed: take it over to replace it")
        if self.applied_version == wanted and self.applied_hash is not None \
                and self.applied_hash != desired.content_hash():
            return (f"node has version {wanted} with other content than the desired snapshot: "
                    "a newer version is needed to replace it")
        return None

    def status(self) -> dict[str, Any]:
        desired = self.desired_config()
        desired_version = desired.version if desired is not None else None
        desired_hash = desired.content_hash() if desired is not None else None
        lag = None
        if desired_version is not None and self.applied_version is not None:
            lag = desired_version - self.applied_version
        return {
            "name": self.target.name,
            "control_url": self.target.control_url,
            # the operator's vocabulary: the configuration version it runs, and the one wanted
            "configuration_version": self.running_configuration(),
            "desired_configuration_version": self.desired_configuration(),
            # the snapshot counter (grows with every change, members included): internal
            "desired_version": desired_version,
            "desired_hash": desired_hash,
            "applied_version": self.applied_version,
            "applied_hash": self.applied_hash,
            "applied_store": self.applied_store,
            "needs_take_over": self.holder(),
            "in_sync": desired_hash is not None and self.applied_hash == desired_hash,
            "lag": lag,
            "last_contact": self.last_contact,
            "last_error": self.last_error,
            "last_push_seconds": self.last_push_seconds,
            "pushes": self.pushes,
            "full_pushes": self.full_pushes,
            "delta_pushes": self.delta_pushes,
            "failures": self.failures,
            "checks": self.checks,
        }

    def status_json(self) -> bytes:
        """``status()`` as JSON, encoded again only when what it shows changed: a node's row
        changes once or twice per flip and is read by every poll of the node view (50 rows
        encoded per poll, 6 polls per flip in the fan-out bench)."""
        shown = self.status()
        if self._shown is None or self._shown[0] != shown:
            self._shown = (shown, dumps(shown))
        return self._shown[1]

    def delivery(self, version: int) -> dict[str, Any]:
        """What this node did about a change published as ``version`` or later."""
        applied = self.reached(version)
        answer: dict[str, Any] = {"node": self.target.name, "applied": applied,
                                  "configuration_version": self.running_configuration(),
                                  "version": self.applied_version}
        if not applied:
            answer["error"] = self.last_error or (
                "not applied yet" if self.applied_version is not None else "no answer yet")
        return answer

    def reached(self, version: int) -> bool:
        """Applied ``version`` or later, and not a version the admin never published."""
        if self.applied_version is None or self.applied_version < version:
            return False
        desired = self.desired_config()
        if desired is None:
            return True
        if self.holder() is not None:
            return False
        return self.applied_version < desired.version \
            or self.applied_hash == desired.content_hash()
