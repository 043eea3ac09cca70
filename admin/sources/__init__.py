"""Member sources: where the admin learns which members a group has and how healthy they are.

Two sources, one interface. A ``MemberSource`` follows a list of groups (``sync``, called with
the active groups after every activation) and reports to a ``MemberSink`` (the service):

- ``consul.ConsulWatcher`` (name ``consul``): one blocking watch per Consul-backed group; each
  answer is the group's whole member set with health, maintenance and weight.
- ``http_check.HttpChecker`` (name ``check``): the admin's own HTTP checks of static members of
  groups that ask for them; each report is the group's verdicts so far.

A report is always a whole set for its group (``on_members``), never a diff, so a lost or
repeated report cannot leave the admin wrong; the sink compares and publishes only changes.
A source that cannot reach its origin says so with ``on_source_error`` and changes nothing.
"""

from __future__ import annotations

from typing import Any, Protocol

from admin.domain.members import Discovered


class MemberSink(Protocol):
    """What a source reports to (``admin.domain.service.AdminService``)."""

    def on_members(self, source: str, group: str, members: list[Discovered]) -> None: ...

    def on_source_error(self, source: str, group: str, error: str) -> None: ...

    def has_members(self, group: str) -> bool:
        """Whether ``group`` has last known members (an empty answer is then suspect)."""
        ...


class MemberSource(Protocol):
    name: str  # reported with every answer: "consul" | "check"

    def sync(self, groups: list[dict[str, Any]]) -> None:
        """Follow exactly the groups (draft bodies) of this list that the source serves."""
        ...

    def error_counts(self) -> dict[str, int]:
        """Failed requests per group, for the admin's metrics."""
        ...

    async def close(self) -> None: ...
