"""The Consul double's catalog: nodes, services and checks, with Consul's index bookkeeping.

Every write that changes something takes the next raft-like index (one index per write, however
many objects it touches); a write that changes nothing takes none, as in Consul's state store.
Per-query indexes follow ``agent/consul/state``:

* ``/v1/health/service/<name>`` and ``/v1/catalog/service/<name>``: the index of the last change
  to that service's instances or to their checks, node checks included (a node check change
  touches every service on the node). For a service with no instances: the index of the last
  time any service lost its last instance, or the catalog's max index if that never happened.
* ``/v1/catalog/services``: the last change to the services table (registrations, tag changes,
  deregistrations), not to health.
* ``/v1/health/state/<state>``: the last change to the checks table.

The catalog never blocks; the HTTP layer waits on :attr:`Catalog.changed` (replaced after every
write) and on :attr:`Catalog.abandon_generation` (bumped by :meth:`Catalog.reset_index`, as a
snapshot restore wakes every blocking query at once).
"""

from __future__ import annotations

import asyncio
import ipaddress
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from .gotypes import format_duration

PASSING = "passing"
WARNING = "warning"
CRITICAL = "critical"
STATUSES = (PASSING, WARNING, CRITICAL)

SERF_CHECK_ID = "serfHealth"
SERF_CHECK_NAME = "Serf Health Status"
SERF_ALIVE_OUTPUT = "Agent alive and reachable"
SERF_DEAD_OUTPUT = "Agent not live or unreachable"
NODE_MAINT_CHECK_ID = "_node_maintenance"
SERVICE_MAINT_PREFIX = "_service_maintenance:"
NODE_MAINT_NAME = "Node Maintenance Mode"
SERVICE_MAINT_NAME = "Service Maintenance Mode"
DEFAULT_NODE_MAINT_REASON = (
    "Maintenance mode is enabled for this node, but no reason was provided. "
    "This is a default message."
)
DEFAULT_SERVICE_MAINT_REASON = (
    "Maintenance mode is enabled for this service, but no reason was provided. "
    "This is a default message."
)


def key_of(text: str) -> str:
    # memdb indexes on node names, service names and IDs are case-insensitive.
    return text.lower()


def node_uuid(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"consul-double.{name}"))


@dataclass
class Node:
    name: str
    address: str
    id: str = ""
    datacenter: str = "dc1"
    tagged_addresses: dict[str, str] | None = None
    meta: dict[str, str] | None = None
    create_index: int = 0
    modify_index: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "Node": self.name,
            "Address": self.address,
            "Datacenter": self.datacenter,
            "TaggedAddresses": dict(self.tagged_addresses) if self.tagged_addresses else None,
            "Meta": dict(self.meta) if self.meta is not None else None,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }


@dataclass
class Service:
    node: str
    id: str
    name: str
    tags: list[str] = field(default_factory=list)
    address: str = ""
    port: int = 0
    meta: dict[str, str] | None = None
    weights: dict[str, int] = field(default_factory=lambda: {"Passing": 1, "Warning": 1})
    tagged_addresses: dict[str, dict[str, Any]] = field(default_factory=dict)
    enable_tag_override: bool = False
    create_index: int = 0
    modify_index: int = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ID": self.id,
            "Service": self.name,
            "Tags": list(self.tags),
            "Address": self.address,
        }
        if self.tagged_addresses:  # `json:",omitempty"` in Consul
            out["TaggedAddresses"] = {k: dict(v) for k, v in self.tagged_addresses.items()}
        out.update({
            "Meta": dict(self.meta) if self.meta is not None else None,
            "Port": self.port,
            "Weights": {"Passing": self.weights["Passing"], "Warning": self.weights["Warning"]},
            "EnableTagOverride": self.enable_tag_override,
            "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
            "Connect": {},
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        })
        return out


@dataclass
class Check:
    node: str
    check_id: str
    name: str
    status: str = CRITICAL
    notes: str = ""
    output: str = ""
    service_id: str = ""
    service_name: str = ""
    service_tags: list[str] = field(default_factory=list)
    type: str = ""
    interval: float = 0.0
    timeout: float = 0.0
    # Agent-side definition (not part of the catalog entry's identity).
    ttl: float = 0.0
    http: str = ""
    tcp: str = ""
    create_index: int = 0
    modify_index: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "Node": self.node,
            "CheckID": self.check_id,
            "Name": self.name,
            "Status": self.status,
            "Notes": self.notes,
            "Output": self.output,
            "ServiceID": self.service_id,
            "ServiceName": self.service_name,
            "ServiceTags": list(self.service_tags),
            "Type": self.type,
            "Interval": format_duration(self.interval) if self.interval else "",
            "Timeout": format_duration(self.timeout) if self.timeout else "",
            "ExposedPort": 0,
            "Definition": {},
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }


_INDEX_FIELDS = {"create_index", "modify_index"}


def _same(a: object, b: object) -> bool:
    """Equal apart from the raft indexes (Consul's ``IsSame``)."""
    return all(
        getattr(a, f.name) == getattr(b, f.name)
        for f in fields(a)  # type: ignore[arg-type]
        if f.name not in _INDEX_FIELDS
    )


def default_service_tagged_addresses(address: str, port: int) -> dict[str, dict[str, Any]]:
    """The agent adds ``lan_ipv4``/``wan_ipv4`` (or ``_ipv6``) when the address is an IP."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return {}
    suffix = "ipv4" if ip.version == 4 else "ipv6"
    return {
        f"lan_{suffix}": {"Address": address, "Port": port},
        f"wan_{suffix}": {"Address": address, "Port": port},
    }


class CatalogError(Exception):
    """A refused write; the HTTP layer maps ``status`` and ``message`` to the response."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Write:
    """One write transaction: takes an index on the first actual change."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog
        self._idx: int | None = None
        self.touched: set[str] = set()
        self.services_table = False
        self.checks_table = False

    @property
    def idx(self) -> int:
        if self._idx is None:
            self._catalog.index += 1
            self._idx = self._catalog.index
        return self._idx

    @property
    def changed(self) -> bool:
        return self._idx is not None


class Catalog:
    def __init__(self, *, datacenter: str = "dc1", agent_node: str = "consul-double",
                 agent_address: str = "127.0.0.1") -> None:
        self.datacenter = datacenter
        self.agent_node = agent_node
        self.index = 0
        self.catalog_index = 0
        self.services_index = 0
        self.checks_index = 0
        self.extinction_index = 0
        self._service_index: dict[str, int] = {}
        self.nodes: dict[str, Node] = {}
        self.services: dict[tuple[str, str], Service] = {}
        self.checks: dict[tuple[str, str], Check] = {}
        self.changed = asyncio.Event()
        self.abandon_generation = 0
        self.listeners: list[Callable[[Check | None, str, str], None]] = []
        # A dev agent's catalog: its own node (with serfHealth) and the "consul" service.
        self.ensure_agent_node(agent_node, agent_address, tagged=True,
                               meta={"consul-network-segment": ""})
        self.register_service(agent_node, Service(node=agent_node, id="consul", name="consul",
                                                  port=8300))

    # ---------------------------------------------------------------- transactions
    def _begin(self) -> _Write:
        return _Write(self)

    def _commit(self, write: _Write) -> None:
        if not write.changed:
            return
        idx = write.idx
        for name in write.touched:
            if self._instances(name):
                self._service_index[key_of(name)] = idx
            else:
                self._service_index.pop(key_of(name), None)
                self.extinction_index = idx
        if write.services_table:
            self.services_index = idx
        if write.checks_table:
            self.checks_index = idx
        self.catalog_index = idx
        self._wake()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    # The raft log shared with the KV store and the sessions (Consul has one index for all).
    def next_index(self) -> int:
        """Take the next index for a write outside the catalog tables."""
        self.index += 1
        return self.index

    def notify_write(self) -> None:
        """Wake blocking queries after such a write (they re-run and compare their index)."""
        self._wake()

    # ---------------------------------------------------------------- reads
    def _instances(self, name: str) -> list[Service]:
        key = key_of(name)
        return [s for s in self.services.values() if key_of(s.name) == key]

    def service_names_on(self, node: str) -> set[str]:
        key = key_of(node)
        return {s.name for (n, _), s in self.services.items() if n == key}

    def service_query_index(self, name: str) -> int:
        idx = self._service_index.get(key_of(name))
        if idx is None:
            idx = self.extinction_index or self.catalog_index
        return max(idx, 1)

    def node(self, name: str) -> Node | None:
        return self.nodes.get(key_of(name))

    def service(self, node: str, service_id: str) -> Service | None:
        return self.services.get((key_of(node), key_of(service_id)))

    def check(self, node: str, check_id: str) -> Check | None:
        return self.checks.get((key_of(node), key_of(check_id)))

    def find_service(self, service_id: str, node: str | None = None) -> Service:
        """A service by ID, on ``node`` or on the only node that has that ID."""
        if node is not None:
            found = self.service(node, service_id)
            if found is None:
                raise KeyError(f"no service {service_id!r} on node {node!r}")
            return found
        matches = [s for (_, sid), s in self.services.items() if sid == key_of(service_id)]
        if len(matches) != 1:
            raise KeyError(f"{len(matches)} services with ID {service_id!r}; pass node=")
        return matches[0]

    def node_checks(self, node: str) -> list[Check]:
        key = key_of(node)
        found = [c for (n, _), c in self.checks.items() if n == key and not c.service_id]
        return sorted(found, key=lambda c: key_of(c.check_id))

    def service_checks(self, node: str, service_id: str) -> list[Check]:
        key, sid = key_of(node), key_of(service_id)
        found = [c for (n, _), c in self.checks.items()
                 if n == key and c.service_id and key_of(c.service_id) == sid]
        return sorted(found, key=lambda c: key_of(c.check_id))

    def health_service(self, name: str, tags: Iterable[str] = (),
                       node_meta: Iterable[tuple[str, str]] = ()) -> list[dict[str, Any]]:
        """``CheckServiceNodes``: entries sorted by node then service ID, node checks first."""
        wanted = [t.lower() for t in tags]
        meta = list(node_meta)
        out = []
        for svc in sorted(self._instances(name), key=lambda s: (key_of(s.node), key_of(s.id))):
            lowered = {t.lower() for t in svc.tags}
            if any(t not in lowered for t in wanted):
                continue
            node = self.nodes[key_of(svc.node)]
            if any((node.meta or {}).get(k) != v for k, v in meta):
                continue
            checks = self.node_checks(svc.node) + self.service_checks(svc.node, svc.id)
            out.append({
                "Node": node.to_json(),
                "Service": svc.to_json(),
                "Checks": [c.to_json() for c in checks],
            })
        return out

    def catalog_service(self, name: str, tags: Iterable[str] = ()) -> list[dict[str, Any]]:
        out = []
        for entry in self.health_service(name, tags):
            node, svc = entry["Node"], entry["Service"]
            out.append({
                "ID": node["ID"],
                "Node": node["Node"],
                "Address": node["Address"],
                "Datacenter": node["Datacenter"],
                "TaggedAddresses": node["TaggedAddresses"],
                "NodeMeta": node["Meta"],
                "ServiceKind": "",
                "ServiceID": svc["ID"],
                "ServiceName": svc["Service"],
                "ServiceTags": svc["Tags"],
                "ServiceAddress": svc["Address"],
                "ServiceTaggedAddresses": svc.get("TaggedAddresses"),
                "ServiceWeights": svc["Weights"],
                "ServiceMeta": svc["Meta"],
                "ServicePort": svc["Port"],
                "ServiceEnableTagOverride": svc["EnableTagOverride"],
                "CreateIndex": svc["CreateIndex"],
                "ModifyIndex": svc["ModifyIndex"],
            })
        return out

    def catalog_services(self) -> dict[str, list[str]]:
        out: dict[str, set[str]] = {}
        for svc in self.services.values():
            out.setdefault(svc.name, set()).update(svc.tags)
        return {name: sorted(tags) for name, tags in sorted(out.items())}

    def checks_in_state(self, state: str) -> list[dict[str, Any]]:
        found = [c for c in self.checks.values() if state == "any" or c.status == state]
        found.sort(key=lambda c: (key_of(c.node), key_of(c.check_id)))
        return [c.to_json() for c in found]

    # ---------------------------------------------------------------- writes
    def ensure_node(self, name: str, address: str, *, node_id: str | None = None,
                    tagged_addresses: dict[str, str] | None = None,
                    meta: dict[str, str] | None = None, write: _Write | None = None) -> Node:
        own = write is None
        write = write or self._begin()
        existing = self.nodes.get(key_of(name))
        node = Node(name=existing.name if existing else name, address=address,
                    id=node_id if node_id is not None else (existing.id if existing else ""),
                    datacenter=self.datacenter,
                    tagged_addresses=tagged_addresses if tagged_addresses is not None
                    else (existing.tagged_addresses if existing else None),
                    meta=meta if meta is not None else (existing.meta if existing else None))
        if existing is None or not _same(existing, node):
            node.create_index = existing.create_index if existing else write.idx
            node.modify_index = write.idx
            self.nodes[key_of(name)] = node
            write.touched.update(self.service_names_on(name))
        else:
            node = existing
        if own:
            self._commit(write)
        return node

    def ensure_agent_node(self, name: str, address: str, *, tagged: bool = False,
                          meta: dict[str, str] | None = None, write: _Write | None = None) -> Node:
        """A node that runs an agent: it has a ``serfHealth`` check (passing when created)."""
        own = write is None
        write = write or self._begin()
        tags = ({"lan": address, "lan_ipv4": address, "wan": address, "wan_ipv4": address}
                if tagged else None)
        existing = self.nodes.get(key_of(name))
        node = self.ensure_node(name, address, node_id=existing.id if existing else node_uuid(name),
                                tagged_addresses=tags, meta=meta, write=write)
        if self.check(name, SERF_CHECK_ID) is None:
            self.upsert_check(Check(node=node.name, check_id=SERF_CHECK_ID, name=SERF_CHECK_NAME,
                                    status=PASSING, output=SERF_ALIVE_OUTPUT), write=write)
        if own:
            self._commit(write)
        return node

    def register_service(self, node: str, svc: Service, *, checks: Iterable[Check] = (),
                         replace_existing_checks: bool = False, keep_check_state: bool = True,
                         write: _Write | None = None) -> None:
        """Agent-style registration: the service and its checks in one write.

        Re-registering keeps each existing check's status and output (the agent restores them
        from its snapshot), whatever ``Status`` the request carries.
        """
        own = write is None
        write = write or self._begin()
        if key_of(node) not in self.nodes:
            raise CatalogError(500, f"node {node!r} is not registered")
        svc.node = self.nodes[key_of(node)].name
        existing = self.service(node, svc.id)
        if existing is None or not _same(existing, svc):
            svc.create_index = existing.create_index if existing else write.idx
            svc.modify_index = write.idx
            self.services[(key_of(node), key_of(svc.id))] = svc
            write.touched.add(svc.name)
            if existing is not None:
                write.touched.add(existing.name)
            write.services_table = True
            # The service's checks carry its name and tags.
            for chk in self.service_checks(node, svc.id):
                if chk.service_name != svc.name or chk.service_tags != svc.tags:
                    updated = Check(**{f.name: getattr(chk, f.name) for f in fields(chk)})
                    updated.service_name = svc.name
                    updated.service_tags = list(svc.tags)
                    self.upsert_check(updated, write=write)
        new_ids = set()
        for chk in checks:
            chk.node = svc.node
            chk.service_id = svc.id
            chk.service_name = svc.name
            chk.service_tags = list(svc.tags)
            previous = self.check(node, chk.check_id)
            if keep_check_state and previous is not None:
                chk.status = previous.status
                chk.output = previous.output
            new_ids.add(key_of(chk.check_id))
            self.upsert_check(chk, write=write)
        if replace_existing_checks:
            for chk in self.service_checks(node, svc.id):
                if key_of(chk.check_id) not in new_ids:
                    self.remove_check(node, chk.check_id, write=write)
        if own:
            self._commit(write)

    def upsert_check(self, chk: Check, *, write: _Write | None = None) -> bool:
        own = write is None
        write = write or self._begin()
        if key_of(chk.node) not in self.nodes:
            raise CatalogError(500, f"node {chk.node!r} is not registered")
        chk.node = self.nodes[key_of(chk.node)].name
        if chk.service_id:
            svc = self.service(chk.node, chk.service_id)
            if svc is None:
                raise CatalogError(500, f"Missing service registration for {chk.service_id!r}")
            chk.service_id = svc.id
            chk.service_name = svc.name
            chk.service_tags = list(svc.tags)
        existing = self.check(chk.node, chk.check_id)
        changed = existing is None or not _same(existing, chk)
        if changed:
            chk.create_index = existing.create_index if existing else write.idx
            chk.modify_index = write.idx
            self.checks[(key_of(chk.node), key_of(chk.check_id))] = chk
            self._touch_for_check(chk, write)
            self._notify(chk, chk.node, chk.check_id)
        if own:
            self._commit(write)
        return changed

    def update_check(self, node: str, check_id: str, *, status: str | None = None,
                     output: str | None = None, notes: str | None = None) -> bool:
        existing = self.check(node, check_id)
        if existing is None:
            raise KeyError(check_id)
        updated = Check(**{f.name: getattr(existing, f.name) for f in fields(existing)})
        if status is not None:
            updated.status = status
        if output is not None:
            updated.output = output
        if notes is not None:
            updated.notes = notes
        return self.upsert_check(updated)

    def remove_check(self, node: str, check_id: str, *, write: _Write | None = None) -> bool:
        own = write is None
        write = write or self._begin()
        existing = self.checks.pop((key_of(node), key_of(check_id)), None)
        if existing is not None:
            write.idx  # noqa: B018 - takes the index
            self._touch_for_check(existing, write)
            self._notify(None, existing.node, existing.check_id)
        if own:
            self._commit(write)
        return existing is not None

    def remove_service(self, node: str, service_id: str, *, write: _Write | None = None) -> bool:
        own = write is None
        write = write or self._begin()
        existing = self.services.get((key_of(node), key_of(service_id)))
        if existing is not None:
            for chk in self.service_checks(node, service_id):
                self.remove_check(node, chk.check_id, write=write)
            del self.services[(key_of(node), key_of(service_id))]
            write.idx  # noqa: B018 - takes the index
            write.touched.add(existing.name)
            write.services_table = True
        if own:
            self._commit(write)
        return existing is not None

    def remove_node(self, node: str, *, write: _Write | None = None) -> bool:
        own = write is None
        write = write or self._begin()
        existing = self.nodes.get(key_of(node))
        if existing is not None:
            for (n, _), svc in list(self.services.items()):
                if n == key_of(node):
                    self.remove_service(node, svc.id, write=write)
            for chk in self.node_checks(node):
                self.remove_check(node, chk.check_id, write=write)
            del self.nodes[key_of(node)]
            write.idx  # noqa: B018 - takes the index
        if own:
            self._commit(write)
        return existing is not None

    def _touch_for_check(self, chk: Check, write: _Write) -> None:
        write.checks_table = True
        if chk.service_id:
            svc = self.service(chk.node, chk.service_id)
            write.touched.add(svc.name if svc else chk.service_name)
        else:
            write.touched.update(self.service_names_on(chk.node))

    def _notify(self, chk: Check | None, node: str, check_id: str) -> None:
        for listener in self.listeners:
            listener(chk, node, check_id)

    def reset_index(self, index: int) -> None:
        """Move every index back to at most ``index``, as a snapshot restore does, and wake
        the blocking queries in flight (they return at once with the lower index)."""
        index = max(int(index), 0)
        self.index = index
        for name in ("catalog_index", "services_index", "checks_index", "extinction_index"):
            setattr(self, name, min(getattr(self, name), index))
        for key, value in self._service_index.items():
            self._service_index[key] = min(value, index)
        for obj in [*self.nodes.values(), *self.services.values(), *self.checks.values()]:
            obj.create_index = min(obj.create_index, index)
            obj.modify_index = min(obj.modify_index, index)
        self.abandon_generation += 1
        self._wake()
