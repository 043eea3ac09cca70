"""Member and server operations: pull-in/out, up/down, server up/down, and batches of them.

They change flags at once (no activation): the store records each with its audit row, and the
groups touched are re-published (``publisher.schedule``), so the pushers send pool deltas.

No silent no-ops: an unknown group, member or server IP is ``NotFound``. Taking the last member
that takes traffic out of a group (a pull-out, a down, a server down, or a batch of them
together) is a ``Conflict`` naming the groups and the effect (503s) unless ``force`` is given;
whether a group is emptied is computed from each member's flags after the change, so a batch
that pulls a member out and back in empties nothing.

``MemberOperations`` is a part of ``AdminService`` (a mixin): it uses the service's store,
publisher and member views.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from admin.domain.errors import Conflict, Invalid, NotFound, require_reason
from admin.domain.members import Discovered, MemberView, member_ip
from admin.domain.publisher import Publisher
from admin.domain.store import Store

MEMBER_OPS: dict[str, tuple[str, bool]] = {
    "pull-in": ("pull", True), "pull-out": ("pull", False),
    "up": ("ops", True), "down": ("ops", False),
}
LIST_MAX = 1000  # addresses of one weight edit, operations of one batch


def bounded_list(field: str, items: list[Any]) -> None:
    if len(items) > LIST_MAX:
        raise Invalid(f"too many {field}", [f"{field}: at most {LIST_MAX} items "
                                            f"({len(items)} given)"])


class MemberOperations:
    store: Store
    publisher: Publisher

    if TYPE_CHECKING:  # AdminService's, for the type checker
        def group_members(self, name: str) -> list[MemberView]: ...
        def groups_members(self, names: Iterable[str]) -> dict[str, list[MemberView]]: ...
        def sources(self, group: dict[str, Any]) -> list[Discovered]: ...
        def active_content(self) -> dict[str, list[dict[str, Any]]] | None: ...
        def draft_content(self) -> dict[str, list[dict[str, Any]]]: ...

    def member_op(self, group: str, addresses: list[str], op: str, who: str,
                  reason: str, force: bool = False) -> dict[str, Any]:
        if op not in MEMBER_OPS:
            raise NotFound(f"no member operation {op!r}: expected one of {sorted(MEMBER_OPS)}")
        reason = require_reason(reason)
        known = {m.address for m in self.group_members(group)}
        missing = [a for a in addresses if a not in known]
        if missing:
            raise NotFound(f"group {group!r} has no member " + ", ".join(missing))
        flag, value = MEMBER_OPS[op]
        if not value:
            self.refuse_emptying({group: {a: {flag: value} for a in addresses}}, force)
        done = self.store.set_member_flags([(group, a, flag, value) for a in addresses], who,
                                           reason, f"member {op}")
        self.publisher.schedule({group})
        return {"group": group, "changed": done}

    def server_op(self, ip: str, up: bool, who: str, reason: str, force: bool = False
                  ) -> dict[str, Any]:
        members = self._server_members(ip)
        reason = require_reason(reason)
        touched = set(members)
        if not up:
            self.refuse_emptying({g: {a: {"server": False} for a in members[g]}
                                  for g in touched}, force)
        self.store.set_server_flag(ip, up, who, reason)
        self.publisher.schedule(touched)
        return {"ip": ip, "up": up, "groups": sorted(touched)}

    def _server_members(self, ip: str) -> dict[str, set[str]]:
        """``members_with_ip`` of a server operation's ``ip``; Invalid if it is no IP address,
        NotFound if no group has a member on it and it has no flag (a typo must not answer
        "done"; an IP with a flag may still be set back up)."""
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise Invalid(f"{ip!r} is not an IP address", ["ip: expected an IPv4 or IPv6 "
                                                            "address"]) from None
        members = self.members_with_ip(ip)
        if not members and ip not in self.store.server_flags():
            raise NotFound(f"no group has a member with IP {ip}")
        return members

    def members_with_ip(self, ip: str) -> dict[str, set[str]]:
        """Group -> its members on ``ip`` (groups with none left out)."""
        content = self.active_content() or self.draft_content()
        found = {g["name"]: {m.address for m in self.sources(g) if member_ip(m.address) == ip}
                 for g in content.get("group", [])}
        return {group: addresses for group, addresses in found.items() if addresses}

    def refuse_emptying(self, changes: dict[str, dict[str, dict[str, bool]]],
                        force: bool, views: dict[str, list[MemberView]] | None = None) -> None:
        """Conflict when flag changes (group -> address -> flag -> value) leave a group that
        has a member taking traffic with none: every request to it would be a 503.
        ``views``: the groups' members if already read (else read here, in one query)."""
        if force:
            return
        if views is None:
            views = self.groups_members(changes)
        emptied = []
        for group, changed in sorted(changes.items()):
            members = views[group]
            if not any(m.state == "up" for m in members):
                continue  # nothing is served now: this change takes nothing away
            for view in members:
                held = set(view.held_by)
                for flag, value in changed.get(view.address, {}).items():
                    (held.discard if value else held.add)(flag)
                if not held:
                    break
            else:
                emptied.append(group)
        if emptied:
            raise Conflict(
                "this takes the last member taking traffic out of group "
                + ", ".join(emptied) + ": its requests would be answered 503; send "
                '"force": true to do it anyway',
                [f"{group}: no member would take traffic (503)" for group in emptied])

    def batch(self, operations: list[dict[str, Any]], who: str, reason: str,
              force: bool = False) -> dict[str, Any]:
        """Several member/server operations, all or nothing: every one is validated before
        any is applied, and they are applied in one store transaction (an audit row per flag
        changed). Each group's members are read once per batch, not once per operation."""
        reason = require_reason(reason)
        bounded_list("operations", operations)
        ops = [op if isinstance(op, dict) else {} for op in operations]
        views = self._views_of({str(op.get("group")) for op in ops
                                if "server" not in op and op.get("op") in MEMBER_OPS})
        on_ip: dict[str, dict[str, set[str]]] = {}  # server IP -> group -> its members there
        errors = []
        for i, op in enumerate(operations):
            if not isinstance(op, dict):
                errors.append(f"operations[{i}]: expected an object")
            elif "server" in op:
                if op.get("op") not in ("up", "down"):
                    errors.append(f"operations[{i}].op: expected up or down")
                errors += self._server_errors(i, str(op["server"]), on_ip)
            elif op.get("op") not in MEMBER_OPS:
                errors.append(f"operations[{i}].op: expected one of {sorted(MEMBER_OPS)}")
            elif views.get(str(op.get("group"))) is None:
                errors.append(f"operations[{i}].group: no group named {op.get('group')!r}")
            else:
                known = {m.address for m in views[str(op["group"])] or []}
                for address in op.get("addresses") or [op.get("address")]:
                    if address not in known:
                        errors.append(f"operations[{i}].address: {address!r} is not a member")
        if errors:
            raise Invalid("the batch was not applied", errors)
        # the batch's final flags together: two pull-outs may empty a group neither empties
        # alone, and a pull-out followed by a pull-in of the same member empties nothing
        changes: dict[str, dict[str, dict[str, bool]]] = {}
        rows: list[tuple[str, str, str, bool, str]] = []  # member flags, in operation order
        servers: list[tuple[str, bool]] = []
        for op in ops:
            if "server" in op:
                servers.append((str(op["server"]), op["op"] == "up"))
                for group, addresses in on_ip[str(op["server"])].items():
                    for address in addresses:
                        changes.setdefault(group, {}).setdefault(address, {})["server"] = \
                            op["op"] == "up"
                continue
            flag, value = MEMBER_OPS[op["op"]]
            for address in op.get("addresses") or [op["address"]]:
                changes.setdefault(op["group"], {}).setdefault(address, {})[flag] = value
                rows.append((op["group"], address, flag, value, f"member {op['op']}"))
        if not force:  # (every group named exists now: the errors above were empty)
            read = {group: members for group, members in views.items() if members is not None}
            # (groups only a server operation touches)
            read.update(self.groups_members(set(changes) - set(read)))
            self.refuse_emptying(changes, force, read)
        done = iter(self.store.set_flags(rows, servers, who, reason))
        results: list[dict[str, Any]] = []
        for op in ops:
            if "server" in op:
                ip = str(op["server"])
                results.append({"ip": ip, "up": op["op"] == "up",
                                "groups": sorted(on_ip[ip])})
            else:
                count = len(op.get("addresses") or [op["address"]])
                results.append({"group": op["group"],
                                "changed": [next(done) for _ in range(count)]})
        self.publisher.schedule(set(changes))
        return {"results": results}

    def _views_of(self, names: set[str]) -> dict[str, list[MemberView] | None]:
        """Members of each named group, read together; None for a group that does not
        exist (found one by one, only when the batch names one)."""
        try:
            return dict(self.groups_members(names))
        except NotFound:
            found: dict[str, list[MemberView] | None] = {}
            for name in names:
                try:
                    found[name] = self.group_members(name)
                except NotFound:
                    found[name] = None
            return found

    def _server_errors(self, i: int, ip: str, on_ip: dict[str, dict[str, set[str]]]
                       ) -> list[str]:
        """What is wrong with a batch's server operation on ``ip`` (its groups kept in
        ``on_ip``): the checks ``server_op`` makes, as the batch's errors."""
        if ip not in on_ip:
            try:
                on_ip[ip] = self._server_members(ip)
            except (Invalid, NotFound) as exc:
                return [f"operations[{i}].server: {exc}"]
        return []
