"""A Consul HTTP API double: a real HTTP server on 127.0.0.1 that answers like a Consul agent.

In-process, on the test's event loop::

    double = await ConsulDouble.start()          # acl_token="..." to enable ACLs
    double.register("web", "web-1", "10.0.0.1", 8080, tags=["v1"])
    ...  # consul.aio.Consul(host=double.host, port=double.port)
    await double.close()

As a process (e2e tests): ``python -m tests.consul_double --port 0`` prints ``127.0.0.1:PORT``;
the ``/_double/...`` control endpoints (see README.md) expose the same hooks over HTTP.

See README.md for the endpoints, what is modelled and what is not.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from .checks import CheckDefinition, CheckRunner
from .clock import Clock, LoopClock
from .faults import FaultPlan
from .fields import (
    HttpError,
    field_duration,
    field_int,
    field_str,
    field_str_list,
    field_str_map,
    lower_keys,
)
from .gotypes import parse_bool, parse_duration, parse_uint
from .http import HttpServer, Request, Response
from .kv import KVStore
from .kv_api import KVSessionAPI
from .sessions import DEFAULT_TTL_MIN, TTL_MULTIPLIER, SessionStore
from .state import (
    CRITICAL,
    DEFAULT_NODE_MAINT_REASON,
    DEFAULT_SERVICE_MAINT_REASON,
    NODE_MAINT_CHECK_ID,
    NODE_MAINT_NAME,
    PASSING,
    SERF_ALIVE_OUTPUT,
    SERF_CHECK_ID,
    SERF_CHECK_NAME,
    SERF_DEAD_OUTPUT,
    SERVICE_MAINT_NAME,
    SERVICE_MAINT_PREFIX,
    STATUSES,
    Catalog,
    CatalogError,
    Check,
    Service,
    default_service_tagged_addresses,
)

T = TypeVar("T")

DEFAULT_WAIT = 300.0  # Consul's default blocking wait (5m)
MAX_WAIT = 600.0  # and its cap (10m)
JITTER_FRACTION = 16
LEADER = "127.0.0.1:8300"
VERSION = "1.21.5"

JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"


@dataclass
class QueryOptions:
    min_index: int
    wait: float
    consistency: str
    cached: bool


def filter_non_passing(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consul's ``filterNonPassing``, including the way it reorders (swap with the last)."""
    out = list(entries)
    n = len(out)
    i = 0
    while i < n:
        if any(c["Status"] != PASSING for c in out[i]["Checks"]):
            out[i], out[n - 1] = out[n - 1], out[i]
            n -= 1
            continue
        i += 1
    return out[:n]


class ConsulDouble:
    """One Consul agent (a dev-mode server) with its catalog, over real HTTP."""

    def __init__(self, *, acl_token: str | None = None, read_tokens: Iterable[str] = (),
                 max_conns_per_client: int = 200, node_name: str = "consul-double",
                 datacenter: str = "dc1", jitter: bool = True, streaming: bool = False,
                 clock: Clock | None = None, session_ttl_min: float = DEFAULT_TTL_MIN,
                 session_ttl_multiplier: float = TTL_MULTIPLIER) -> None:
        self.acl_token = acl_token
        self.read_tokens = set(read_tokens)
        self.datacenter = datacenter
        self.node_name = node_name
        self.jitter = jitter
        self.streaming = streaming
        self.catalog = Catalog(datacenter=datacenter, agent_node=node_name)
        # Check and session TTLs and lock-delay run on this clock (a ManualClock lets a test
        # move time).
        self.clock: Clock = clock or LoopClock()
        self.checks = CheckRunner(self.catalog, self.clock)
        self.kv = KVStore(self.catalog, self.clock)
        self.sessions = SessionStore(self.catalog, self.catalog, self.kv, self.clock,
                                     ttl_min=session_ttl_min,
                                     ttl_multiplier=session_ttl_multiplier)
        self._http = HttpServer(self._handle, max_conns_per_client=max_conns_per_client)
        # Named clients' own listeners (see client_port), so faults can target one client.
        self._client_http: dict[str, HttpServer] = {}
        # Counters for tests.
        self.requests: collections.Counter[str] = collections.Counter()
        self.request_log: collections.deque[Request] = collections.deque(maxlen=2000)
        self.blocking_queries = 0
        self.hung_requests = 0
        # Fault injection.
        self.faults = FaultPlan()
        self._outage_task: asyncio.Task[None] | None = None
        self._routes = self._build_routes()

    # ================================================================ lifecycle
    @classmethod
    async def start(cls, *, port: int = 0, **kwargs: Any) -> ConsulDouble:
        double = cls(**kwargs)
        await double._http.listen(port)
        return double

    @property
    def host(self) -> str:
        return self._http.host

    @property
    def port(self) -> int:
        return self._http.port

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def index(self) -> int:
        """The global raft index (the last write's index)."""
        return self.catalog.index

    def _servers(self) -> list[HttpServer]:
        return [self._http, *self._client_http.values()]

    @property
    def connections(self) -> int:
        """Open client connections on every port (idle keep-alive ones included)."""
        return sum(len(server.connections) for server in self._servers())

    @property
    def rejected_connections(self) -> int:
        return sum(server.rejected_connections for server in self._servers())

    @property
    def max_conns_per_client(self) -> int:
        return self._http.max_conns_per_client

    @max_conns_per_client.setter
    def max_conns_per_client(self, value: int) -> None:
        self._http.max_conns_per_client = value

    async def client_port(self, client: str) -> int:
        """A port of the double's own for the client named ``client`` (made on first call):
        requests that arrive there are that client's, so ``fail_with``, ``hang``,
        ``disconnect``, ``stop`` and ``restart`` can target it alone."""
        server = self._client_http.get(client)
        if server is None:
            async def handle(request: Request) -> Response:
                return await self._handle(request, client)

            server = HttpServer(handle, max_conns_per_client=self.max_conns_per_client)
            await server.listen(0)
            self._client_http[client] = server
        return server.port

    def _scope(self, client: str | None) -> list[HttpServer]:
        if client is None:
            return self._servers()
        if client not in self._client_http:
            raise KeyError(f"no client {client!r}: call client_port({client!r}) first")
        return [self._client_http[client]]

    async def stop(self, client: str | None = None) -> None:
        """Consul goes down (for ``client`` alone if given: its port): stop listening
        (connection refused) and close every connection, blocking queries included. The
        state is kept for :meth:`restart`; sessions' TTLs keep running."""
        for server in self._scope(client):
            await server.shutdown()

    async def restart(self, client: str | None = None) -> None:
        """Listen again on the same port(s), with the same state and indexes."""
        for server in self._scope(client):
            if not server.listening:
                await server.listen(server.port)

    async def close(self) -> None:
        if self._outage_task is not None:
            self._outage_task.cancel()
            await asyncio.gather(self._outage_task, return_exceptions=True)
        for server in self._servers():
            await server.shutdown()
        await self.checks.close()
        self.sessions.cancel_timers()

    async def __aenter__(self) -> ConsulDouble:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ================================================================ test helpers
    def register(self, service: str, id: str | None = None, address: str = "",
                 port: int = 0, *, node: str | None = None, node_address: str | None = None,
                 tags: Iterable[str] = (), meta: dict[str, str] | None = None,
                 weights: dict[str, int] | None = None, status: str | None = PASSING,
                 output: str = "") -> str:
        """Register (or update) a service instance on ``node`` (default: the agent's node).

        A new node gets a passing ``serfHealth`` check, as a node running an agent has. With
        ``status`` (default passing) the instance has one check ``service:<id>``; pass
        ``status=None`` for an instance without checks. Returns the service ID.
        """
        service_id = id or service
        node_name = node or self.node_name
        existing = self.catalog.node(node_name)
        write = self.catalog._begin()
        if existing is None or (node_address is not None and node_address != existing.address):
            self.catalog.ensure_agent_node(
                node_name, node_address or (existing.address if existing else "127.0.0.1"),
                write=write)
        svc = Service(node=node_name, id=service_id, name=service, tags=list(tags),
                      address=address, port=port, meta=meta,
                      weights=dict(weights) if weights else {"Passing": 1, "Warning": 1},
                      tagged_addresses=default_service_tagged_addresses(address, port))
        checks = []
        if status is not None:
            self._check_status(status)
            checks.append(Check(node=node_name, check_id=f"service:{service_id}",
                                name=f"Service '{service}' check", status=status, output=output))
        self.catalog.register_service(node_name, svc, checks=checks, keep_check_state=False,
                                      write=write)
        self.catalog._commit(write)
        return service_id

    def set_check(self, service_id: str, status: str, output: str = "", *,
                  node: str | None = None, check_id: str | None = None) -> None:
        """Set the status (and output) of a service's check (default ``service:<id>``)."""
        self._check_status(status)
        svc = self.catalog.find_service(service_id, node)
        cid = check_id or f"service:{svc.id}"
        if self.catalog.check(svc.node, cid) is None:
            self.catalog.upsert_check(Check(node=svc.node, check_id=cid, service_id=svc.id,
                                            name=f"Service '{svc.name}' check", status=status,
                                            output=output))
        else:
            self.catalog.update_check(svc.node, cid, status=status, output=output)

    def set_node_health(self, node: str, status: str, output: str | None = None) -> None:
        """Set the node's ``serfHealth`` check (critical = the node's agent is unreachable)."""
        self._check_status(status)
        if self.catalog.node(node) is None:
            raise KeyError(f"no node {node!r}")
        if output is None:
            output = SERF_ALIVE_OUTPUT if status == PASSING else SERF_DEAD_OUTPUT
        self.catalog.upsert_check(Check(node=node, check_id=SERF_CHECK_ID, name=SERF_CHECK_NAME,
                                        status=status, output=output))

    def maintenance(self, service_id: str, enable: bool, reason: str = "", *,
                    node: str | None = None) -> None:
        """Service maintenance mode: a critical ``_service_maintenance:<id>`` check."""
        svc = self.catalog.find_service(service_id, node)
        self._service_maintenance(svc, enable, reason)

    def node_maintenance(self, node: str, enable: bool, reason: str = "") -> None:
        """Node maintenance mode: a critical ``_node_maintenance`` node check."""
        if self.catalog.node(node) is None:
            raise KeyError(f"no node {node!r}")
        self._node_maintenance(node, enable, reason)

    def deregister(self, service_id: str, *, node: str | None = None) -> None:
        svc = self.catalog.find_service(service_id, node)
        self.catalog.remove_service(svc.node, svc.id)

    def deregister_node(self, node: str) -> None:
        self.catalog.remove_node(node)

    def touch_service(self, name: str) -> None:
        """Bump a service's query index without changing its content: a spurious wake-up,
        as Consul produces for check output churn or an idempotent re-registration."""
        write = self.catalog._begin()
        write.idx  # noqa: B018 - takes an index
        write.touched.add(name)
        self.catalog._commit(write)

    def reset_index(self, index: int) -> None:
        """Move the indexes back to ``index`` (snapshot restore). Blocking queries in flight
        return at once with the lower index; a new query with the old, higher index blocks
        for its whole wait."""
        self.kv.reset_index(index)
        self.sessions.reset_index(index)
        self.catalog.reset_index(index)

    def service_index(self, name: str) -> int:
        """The ``X-Consul-Index`` a ``/v1/health/service/<name>`` read would return now."""
        return self.catalog.service_query_index(name)

    def health(self, name: str) -> list[dict[str, Any]]:
        """What ``/v1/health/service/<name>`` would return now (no filters)."""
        return self.catalog.health_service(name)

    # ---- fault injection (faults.py); ``client=``: only that client's port, see client_port
    def fail_with(self, status: int, body: str | None = None, *, count: int | None = None,
                  path: str | None = None, client: str | None = None) -> None:
        """Answer the next ``count`` requests (all until :meth:`clear_faults` when None) whose
        path starts with ``path`` with ``status`` and a text ``body``: 500 "No cluster leader",
        429, 403 "ACL not found"..."""
        self.faults.fail_with(status, body, count, path, client)

    def clear_faults(self, client: str | None = None) -> None:
        """End errors, disconnects and latency (only ``client``'s if given); not hangs."""
        self.faults.clear(client)

    def hang(self, enabled: bool = True, *, client: str | None = None) -> None:
        """While enabled, connections are accepted and requests read but never answered;
        responses not yet sent (blocking queries in flight) are never sent either. Requests
        caught by a hang stay unanswered until their connection closes. ``hang(False)``
        without a client ends every hang."""
        self.faults.hang(enabled, client)

    def disconnect(self, count: int | None = 1, *, client: str | None = None) -> None:
        """Close the connection instead of answering the next ``count`` requests (None: all,
        until :meth:`clear_faults`)."""
        self.faults.disconnect(count, client)

    def set_latency(self, seconds: float) -> None:
        """Delay every answer by ``seconds``."""
        self.faults.latency = seconds

    def outage(self, seconds: float) -> asyncio.Task[None]:
        """In the background: stop, stay down for ``seconds``, restart on the same port.
        Returns the task (await it to know the double is back)."""
        async def run() -> None:
            await self.stop()
            await asyncio.sleep(seconds)
            await self.restart()
        self._outage_task = asyncio.get_running_loop().create_task(run())
        return self._outage_task

    # ================================================================ HTTP dispatch
    def _build_routes(self) -> list[tuple[str, bool, tuple[str, ...], Any]]:
        # (path, is_prefix, methods, handler); longest prefixes first where they overlap.
        return [
            ("/v1/health/service/", True, ("GET",), self._health_service),
            ("/v1/health/checks/", True, ("GET",), self._health_checks),
            ("/v1/health/state/", True, ("GET",), self._health_state),
            ("/v1/catalog/services", False, ("GET",), self._catalog_services),
            ("/v1/catalog/service/", True, ("GET",), self._catalog_service),
            ("/v1/catalog/register", False, ("PUT",), self._catalog_register),
            ("/v1/catalog/deregister", False, ("PUT",), self._catalog_deregister),
            ("/v1/catalog/datacenters", False, ("GET",), self._catalog_datacenters),
            ("/v1/agent/service/register", False, ("PUT",), self._agent_service_register),
            ("/v1/agent/service/deregister/", True, ("PUT",), self._agent_service_deregister),
            ("/v1/agent/service/maintenance/", True, ("PUT",), self._agent_service_maintenance),
            ("/v1/agent/check/register", False, ("PUT",), self._agent_check_register),
            ("/v1/agent/check/deregister/", True, ("PUT",), self._agent_check_deregister),
            ("/v1/agent/check/pass/", True, ("PUT",), self._agent_check_pass),
            ("/v1/agent/check/warn/", True, ("PUT",), self._agent_check_warn),
            ("/v1/agent/check/fail/", True, ("PUT",), self._agent_check_fail),
            ("/v1/agent/check/update/", True, ("PUT",), self._agent_check_update),
            ("/v1/agent/maintenance", False, ("PUT",), self._agent_maintenance),
            ("/v1/agent/services", False, ("GET",), self._agent_services),
            ("/v1/agent/checks", False, ("GET",), self._agent_checks),
            ("/v1/agent/self", False, ("GET",), self._agent_self),
            ("/v1/status/leader", False, ("GET",), self._status_leader),
            ("/v1/status/peers", False, ("GET",), self._status_peers),
            *KVSessionAPI(self).routes(),
        ]

    async def _handle(self, request: Request, client: str | None = None) -> Response:
        if request.path.startswith("/_double/"):
            return await self._control(request)
        self.requests[request.path] += 1
        self.request_log.append(request)
        faults = self.faults
        if faults.hangs(client):
            await self._hold_forever()
        if faults.take_drop(client):
            return Response(0, drop=True)
        fault = faults.take_fault(request.path, client)
        if faults.latency:
            await asyncio.sleep(faults.latency)
        if fault is not None:
            response = self._text(fault.status, fault.body)
        else:
            try:
                response = await self._route(request)
            except HttpError as exc:
                response = self._text(exc.status, exc.message, exc.headers)
            except CatalogError as exc:
                response = self._text(exc.status, exc.message)
        if faults.hangs(client):
            await self._hold_forever()
        return response

    async def _hold_forever(self) -> None:
        self.hung_requests += 1
        await asyncio.get_running_loop().create_future()

    async def _route(self, request: Request) -> Response:
        for path, is_prefix, methods, handler in self._routes:
            if request.path == path or (is_prefix and request.path.startswith(path)):
                if request.method not in methods:
                    raise HttpError(405, f"method {request.method} not allowed",
                                    {"Allow": ", ".join(methods)})
                arg = request.path[len(path):] if is_prefix else None
                return await (handler(request, arg) if is_prefix else handler(request))
        raise HttpError(404, "404 page not found\n")

    @staticmethod
    def _text(status: int, body: str, headers: dict[str, str] | None = None) -> Response:
        return Response(status, body.encode(), {"Content-Type": TEXT_TYPE, **(headers or {})})

    @staticmethod
    def _json(request: Request, data: Any, headers: dict[str, str] | None = None) -> Response:
        if request.has("pretty"):
            body = json.dumps(data, indent=4) + "\n"
        else:
            body = json.dumps(data, separators=(",", ":"))
        return Response(200, body.encode(), {"Content-Type": JSON_TYPE,
                                             "Vary": "Accept-Encoding", **(headers or {})})

    @staticmethod
    def _empty() -> Response:
        return Response(200, b"", {"Vary": "Accept-Encoding"})

    # ================================================================ ACLs
    @staticmethod
    def _token(request: Request) -> str:
        # Consul's order: ?token= (deprecated), X-Consul-Token, Authorization: Bearer.
        token = request.param("token")
        if token:
            return token
        token = request.headers.get("x-consul-token", "")
        if token:
            return token
        auth = request.headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return ""

    def _authz(self, request: Request) -> str:
        """"management", "read" or "anonymous"; an unknown token is a 403 "ACL not found"."""
        if self.acl_token is None:
            return "management"
        token = self._token(request)
        if not token:
            return "anonymous"
        if token == self.acl_token:
            return "management"
        if token in self.read_tokens:
            return "read"
        raise HttpError(403, "ACL not found")

    def _require(self, request: Request, permission: str, resource: str) -> None:
        """403 unless the token may do ``permission`` ("service:write", "key:read"...): the
        management token may do anything, a read token any ``*:read``."""
        authz = self._authz(request)
        if authz == "management" or (authz == "read" and permission.endswith(":read")):
            return
        who = ("anonymous token" if authz == "anonymous" else
               f"token with AccessorID '{uuid.uuid5(uuid.NAMESPACE_OID, self._token(request))}'")
        raise HttpError(403, f"Permission denied: {who} lacks permission '{permission}' "
                             f"on {json.dumps(resource)}")

    def _can_read(self, request: Request) -> bool:
        # With default-deny ACLs the anonymous token sees nothing: reads are filtered, not
        # refused, and X-Consul-Results-Filtered-By-ACLs is masked for anonymous requests.
        return self._authz(request) != "anonymous"

    # ================================================================ reads
    def _query_options(self, request: Request) -> QueryOptions:
        wait = 0.0
        raw_wait = request.param("wait")
        if raw_wait:
            try:
                wait = parse_duration(raw_wait)
            except ValueError:
                raise HttpError(400, "Invalid wait time") from None
        min_index = 0
        raw_index = request.param("index")
        if raw_index:
            try:
                min_index = parse_uint(raw_index)
            except ValueError:
                raise HttpError(400, "Invalid index") from None
        dc = request.param("dc")
        if dc and dc != self.datacenter:
            raise HttpError(500, "No path to datacenter")
        stale, consistent = request.has("stale"), request.has("consistent")
        cached = request.has("cached")
        if stale and consistent:
            raise HttpError(400, "Cannot specify ?stale with ?consistent, conflicting semantics.")
        if cached and consistent:
            raise HttpError(400, "Cannot specify ?cached with ?consistent, conflicting semantics.")
        if request.param("filter"):
            raise HttpError(400, "the Consul double does not implement ?filter expressions")
        consistency = "stale" if stale else "consistent" if consistent else "leader"
        return QueryOptions(min_index, wait, consistency, cached)

    async def _blocking(self, opts: QueryOptions, run: Callable[[], tuple[int, T]]
                        ) -> tuple[int, T]:
        """Consul's ``blockingQuery``: answer at once unless ``index`` > 0 and the query's
        index is still <= it; then wait for a write that raises it, or for ``wait`` (+ jitter
        up to wait/16), or for a snapshot restore (abandon), and answer with the current data."""
        index, data = run()
        if opts.min_index == 0 or index > opts.min_index:
            return index, data
        timeout = opts.wait
        if timeout > MAX_WAIT:
            timeout = MAX_WAIT
        elif timeout <= 0:
            timeout = DEFAULT_WAIT
        if self.jitter:
            timeout += random.uniform(0, timeout / JITTER_FRACTION)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        generation = self.catalog.abandon_generation
        self.blocking_queries += 1
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(self.catalog.changed.wait(), remaining)
                except TimeoutError:
                    break
                index, data = run()
                if self.catalog.abandon_generation != generation or index > opts.min_index:
                    return index, data
        finally:
            self.blocking_queries -= 1
        return run()

    def _meta(self, index: int, opts: QueryOptions) -> dict[str, str]:
        headers = {"X-Consul-Index": str(index)}
        if not (self.streaming and (opts.min_index or opts.cached)):
            headers["X-Consul-KnownLeader"] = "true"
            headers["X-Consul-LastContact"] = "0"
        headers["X-Consul-Effective-Consistency"] = opts.consistency
        if opts.cached:
            headers["X-Cache"] = "MISS"
        return headers

    @staticmethod
    def _node_meta(request: Request) -> list[tuple[str, str]]:
        out = []
        for raw in request.query.get("node-meta", []):
            key, _, value = raw.partition(":")
            out.append((key, value))
        return out

    async def _health_service(self, request: Request, name: str) -> Response:
        if not name:
            raise HttpError(400, "Missing service name")
        opts = self._query_options(request)
        visible = self._can_read(request)
        tags = request.query.get("tag", [])
        node_meta = self._node_meta(request)

        def run() -> tuple[int, list[dict[str, Any]]]:
            entries = self.catalog.health_service(name, tags, node_meta) if visible else []
            return self.catalog.service_query_index(name), entries

        index, entries = await self._blocking(opts, run)
        headers = self._meta(index, opts)
        # Consul parses ?passing only after the (blocking) read: a bad value answers 400 with
        # the index headers, after the whole wait.
        if request.has("passing"):
            raw = request.param("passing") or ""
            try:
                passing = True if raw == "" else parse_bool(raw)
            except ValueError:
                raise HttpError(400, "Invalid value for ?passing", headers) from None
            if passing:
                entries = filter_non_passing(entries)
        return self._json(request, entries, headers)

    async def _health_checks(self, request: Request, name: str) -> Response:
        if not name:
            raise HttpError(400, "Missing service name")
        opts = self._query_options(request)
        visible = self._can_read(request)

        def run() -> tuple[int, list[dict[str, Any]]]:
            checks = []
            if visible:
                for entry in self.catalog.health_service(name):
                    checks += [c for c in entry["Checks"] if c["ServiceID"]]
            return self.catalog.service_query_index(name), checks

        index, checks = await self._blocking(opts, run)
        return self._json(request, checks, self._meta(index, opts))

    async def _health_state(self, request: Request, state: str) -> Response:
        if state not in (*STATUSES, "any"):
            raise HttpError(400, "Bad check state")
        opts = self._query_options(request)
        visible = self._can_read(request)

        def run() -> tuple[int, list[dict[str, Any]]]:
            checks = self.catalog.checks_in_state(state) if visible else []
            return max(self.catalog.checks_index, 1), checks

        index, checks = await self._blocking(opts, run)
        return self._json(request, checks, self._meta(index, opts))

    async def _catalog_services(self, request: Request) -> Response:
        opts = self._query_options(request)
        visible = self._can_read(request)

        def run() -> tuple[int, dict[str, list[str]]]:
            data = self.catalog.catalog_services() if visible else {}
            return max(self.catalog.services_index, 1), data

        index, data = await self._blocking(opts, run)
        return self._json(request, data, self._meta(index, opts))

    async def _catalog_service(self, request: Request, name: str) -> Response:
        if not name:
            raise HttpError(400, "Missing service name")
        opts = self._query_options(request)
        visible = self._can_read(request)
        tags = request.query.get("tag", [])

        def run() -> tuple[int, list[dict[str, Any]]]:
            data = self.catalog.catalog_service(name, tags) if visible else []
            return self.catalog.service_query_index(name), data

        index, data = await self._blocking(opts, run)
        return self._json(request, data, self._meta(index, opts))

    async def _catalog_datacenters(self, request: Request) -> Response:
        return self._json(request, [self.datacenter])

    async def _status_leader(self, request: Request) -> Response:
        return self._json(request, LEADER)

    async def _status_peers(self, request: Request) -> Response:
        return self._json(request, [LEADER])

    async def _agent_self(self, request: Request) -> Response:
        self._authz(request)
        node = self.catalog.node(self.node_name)
        address = node.address if node else "127.0.0.1"
        return self._json(request, {
            "Config": {"Datacenter": self.datacenter, "NodeName": self.node_name,
                       "NodeID": node.id if node else "", "Server": True,
                       "Revision": "consul-double", "Version": VERSION},
            "Member": {"Name": self.node_name, "Addr": address, "Port": 8301, "Status": 1,
                       "Tags": {"dc": self.datacenter, "role": "consul"}},
            "Meta": dict(node.meta or {}) if node else {},
        })

    async def _agent_services(self, request: Request) -> Response:
        out: dict[str, Any] = {}
        if self._can_read(request):
            for svc in self.catalog.services.values():
                if svc.node != self.node_name or svc.id == "consul":
                    continue
                data = svc.to_json()
                for key in ("CreateIndex", "ModifyIndex", "Proxy", "Connect"):
                    data.pop(key, None)
                data["Datacenter"] = self.datacenter
                out[svc.id] = data
        return self._json(request, out)

    async def _agent_checks(self, request: Request) -> Response:
        out: dict[str, Any] = {}
        if self._can_read(request):
            for chk in self.catalog.checks.values():
                if chk.node == self.node_name and chk.check_id != SERF_CHECK_ID:
                    data = chk.to_json()
                    data.pop("CreateIndex")
                    data.pop("ModifyIndex")
                    out[chk.check_id] = data
        return self._json(request, out)

    # ================================================================ agent writes
    def _json_body(self, request: Request) -> Any:
        if not request.body.strip():
            return {}
        try:
            return json.loads(request.body)
        except ValueError as exc:
            raise HttpError(400, f"Request decode failed: {exc}") from None

    @staticmethod
    def _check_status(status: str) -> None:
        if status not in STATUSES:
            raise ValueError(f"check status must be one of {STATUSES}, not {status!r}")

    def _parse_check_type(self, raw: Any) -> tuple[dict[str, Any], CheckDefinition]:
        """A ``CheckType`` (inside a service registration) or ``CheckDefinition``."""
        fields = lower_keys(raw, "check")
        definition = CheckDefinition(
            ttl=field_duration(fields, "ttl"),
            http=field_str(fields, "http"),
            method=field_str(fields, "method") or "GET",
            tcp=field_str(fields, "tcp"),
            interval=field_duration(fields, "interval"),
            timeout=field_duration(fields, "timeout") or 10.0,
            success_before_passing=field_int(fields, "successbeforepassing"),
            failures_before_critical=field_int(fields, "failuresbeforecritical"),
        )
        header = fields.get("header")
        if isinstance(header, dict):
            definition.header = {str(k): [str(v) for v in (vs if isinstance(vs, list) else [vs])]
                                 for k, vs in header.items()}
        unsupported = [k for k in ("args", "scriptargs", "script", "grpc", "h2ping", "udp",
                                   "dockercontainerid", "osservice", "aliasservice", "aliasnode")
                       if fields.get(k)]
        if unsupported:
            raise HttpError(400, f"the Consul double does not run {unsupported[0]} checks")
        interval_check = bool(definition.http or definition.tcp)
        if definition.interval > 0 and definition.ttl > 0:
            raise HttpError(400, "Invalid check: Interval and TTL cannot both be specified")
        if interval_check and definition.interval <= 0:
            raise HttpError(400, "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, "
                                 "TCP, UDP or GRPC checks")
        if not interval_check and definition.ttl <= 0:
            raise HttpError(400, "Invalid check: TTL must be > 0 for TTL checks")
        status = field_str(fields, "status")
        if status and status not in STATUSES:
            raise HttpError(400, "Status for checks must 'passing', 'warning', 'critical'")
        return fields, definition

    @staticmethod
    def _check_from(fields: dict[str, Any], definition: CheckDefinition, *, node: str,
                    check_id: str, name: str) -> Check:
        kind = "ttl" if definition.ttl else "http" if definition.http else "tcp"
        return Check(node=node, check_id=check_id, name=name,
                     status=field_str(fields, "status") or CRITICAL,
                     notes=field_str(fields, "notes"),
                     type=kind, interval=definition.interval,
                     timeout=0.0 if definition.ttl else definition.timeout,
                     ttl=definition.ttl, http=definition.http, tcp=definition.tcp)

    def _parse_weights(self, fields: dict[str, Any]) -> dict[str, int]:
        raw = fields.get("weights")
        if raw is None:
            return {"Passing": 1, "Warning": 1}
        weights = lower_keys(raw, "Weights")
        out = {"Passing": field_int(weights, "passing"), "Warning": field_int(weights, "warning")}
        if out["Passing"] < 1:
            raise HttpError(400, "Invalid Weights: Passing must be greater than 0")
        if out["Warning"] < 0:
            raise HttpError(400, "Invalid Weights: Warning must be greater or equal than 0")
        return out

    @staticmethod
    def _parse_tagged_addresses(fields: dict[str, Any]) -> dict[str, dict[str, Any]]:
        raw = fields.get("taggedaddresses") or {}
        if not isinstance(raw, dict):
            raise HttpError(400, "Request decode failed: TaggedAddresses must be an object")
        out = {}
        for tag, value in raw.items():
            entry = lower_keys(value, "TaggedAddresses")
            out[str(tag)] = {"Address": field_str(entry, "address"),
                             "Port": field_int(entry, "port")}
        return out

    async def _agent_service_register(self, request: Request) -> Response:
        fields = lower_keys(self._json_body(request))
        name = field_str(fields, "name") or field_str(fields, "service")
        self._require(request, "service:write", name)
        if not name:
            raise HttpError(400, "Missing service name")
        replace = False
        raw_replace = request.param("replace-existing-checks")
        if raw_replace:
            try:
                replace = parse_bool(raw_replace)
            except ValueError:
                raise HttpError(400, "Invalid value for replace-existing-checks") from None
        service_id = field_str(fields, "id") or name
        address = field_str(fields, "address")
        port = field_int(fields, "port")
        tagged = default_service_tagged_addresses(address, port)
        tagged.update(self._parse_tagged_addresses(fields))
        svc = Service(node=self.node_name, id=service_id, name=name,
                      tags=field_str_list(fields, "tags"), address=address, port=port,
                      meta=field_str_map(fields, "meta"), weights=self._parse_weights(fields),
                      tagged_addresses=tagged,
                      enable_tag_override=bool(fields.get("enabletagoverride", False)))
        raw_checks = []
        if fields.get("check"):
            raw_checks.append(fields["check"])
        extra = fields.get("checks") or []
        if not isinstance(extra, list):
            raise HttpError(400, "Request decode failed: Checks must be a list")
        raw_checks += [c for c in extra if c]
        parsed = [self._parse_check_type(raw) for raw in raw_checks]
        checks = []
        for i, (check_fields, definition) in enumerate(parsed):
            check_id = field_str(check_fields, "checkid") or field_str(check_fields, "id")
            if not check_id:
                check_id = f"service:{service_id}"
                if len(parsed) > 1:
                    check_id += f":{i + 1}"
            check_name = field_str(check_fields, "name") or f"Service '{name}' check"
            checks.append((self._check_from(check_fields, definition, node=self.node_name,
                                            check_id=check_id, name=check_name), definition))
        self.catalog.register_service(self.node_name, svc, checks=[c for c, _ in checks],
                                      replace_existing_checks=replace)
        for chk, definition in checks:
            stored = self.catalog.check(self.node_name, chk.check_id)
            if stored is not None:
                self.checks.start(stored, definition)
        return self._empty()

    def _agent_service(self, service_id: str) -> Service:
        svc = self.catalog.service(self.node_name, service_id)
        if svc is None:
            raise HttpError(404, f"Unknown service ID {json.dumps(service_id)}")
        return svc

    async def _agent_service_deregister(self, request: Request, service_id: str) -> Response:
        svc = self.catalog.service(self.node_name, service_id)
        self._require(request, "service:write", svc.name if svc else service_id)
        self._agent_service(service_id)
        self.catalog.remove_service(self.node_name, service_id)
        return self._empty()

    def _enable_param(self, request: Request) -> bool:
        if not request.has("enable"):
            raise HttpError(400, "Missing value for enable")
        raw = request.param("enable") or ""
        try:
            return parse_bool(raw)
        except ValueError:
            raise HttpError(400, f"Invalid value for enable: {json.dumps(raw)}") from None

    async def _agent_service_maintenance(self, request: Request, service_id: str) -> Response:
        if not service_id:
            raise HttpError(400, "Missing service ID")
        enable = self._enable_param(request)
        svc = self.catalog.service(self.node_name, service_id)
        self._require(request, "service:write", svc.name if svc else service_id)
        if svc is None:
            raise HttpError(404, f"No service registered with ID {json.dumps(service_id)}")
        self._service_maintenance(svc, enable, request.param("reason") or "")
        return self._empty()

    def _service_maintenance(self, svc: Service, enable: bool, reason: str) -> None:
        check_id = SERVICE_MAINT_PREFIX + svc.id
        present = self.catalog.check(svc.node, check_id) is not None
        if enable and not present:
            self.catalog.upsert_check(Check(
                node=svc.node, check_id=check_id, name=SERVICE_MAINT_NAME,
                notes=reason or DEFAULT_SERVICE_MAINT_REASON, service_id=svc.id,
                status=CRITICAL, type="maintenance"))
        elif not enable and present:
            self.catalog.remove_check(svc.node, check_id)

    async def _agent_maintenance(self, request: Request) -> Response:
        enable = self._enable_param(request)
        self._require(request, "node:write", self.node_name)
        self._node_maintenance(self.node_name, enable, request.param("reason") or "")
        return self._empty()

    def _node_maintenance(self, node: str, enable: bool, reason: str) -> None:
        present = self.catalog.check(node, NODE_MAINT_CHECK_ID) is not None
        if enable and not present:
            self.catalog.upsert_check(Check(
                node=node, check_id=NODE_MAINT_CHECK_ID, name=NODE_MAINT_NAME,
                notes=reason or DEFAULT_NODE_MAINT_REASON, status=CRITICAL, type="maintenance"))
        elif not enable and present:
            self.catalog.remove_check(node, NODE_MAINT_CHECK_ID)

    async def _agent_check_register(self, request: Request) -> Response:
        raw = self._json_body(request)
        fields = lower_keys(raw)
        name = field_str(fields, "name")
        service_id = field_str(fields, "serviceid")
        svc = self.catalog.service(self.node_name, service_id) if service_id else None
        self._require(request, "service:write" if service_id else "node:write",
                            svc.name if svc else (service_id or self.node_name))
        if not name:
            raise HttpError(400, "Missing check name")
        status = field_str(fields, "status")
        if status and status not in STATUSES:
            raise HttpError(400, "Bad check status")
        check_fields, definition = self._parse_check_type(raw)
        if service_id and svc is None:
            raise HttpError(400, f"ServiceID {json.dumps(service_id)} does not exist")
        check_id = field_str(fields, "id") or field_str(fields, "checkid") or name
        chk = self._check_from(check_fields, definition, node=self.node_name,
                               check_id=check_id, name=name)
        chk.service_id = svc.id if svc else ""
        previous = self.catalog.check(self.node_name, check_id)
        if previous is not None and not status:
            chk.status, chk.output = previous.status, previous.output
        self.catalog.upsert_check(chk)
        stored = self.catalog.check(self.node_name, check_id)
        if stored is not None:
            self.checks.start(stored, definition)
        return self._empty()

    def _agent_check(self, request: Request, check_id: str) -> Check:
        chk = self.catalog.check(self.node_name, check_id)
        if chk is None or chk.check_id == SERF_CHECK_ID:
            self._authz(request)
            raise HttpError(404, f"Unknown check ID {json.dumps(check_id)}")
        svc = self.catalog.service(self.node_name, chk.service_id) if chk.service_id else None
        self._require(request, "service:write" if svc else "node:write",
                            svc.name if svc else self.node_name)
        return chk

    async def _agent_check_deregister(self, request: Request, check_id: str) -> Response:
        chk = self._agent_check(request, check_id)
        self.catalog.remove_check(self.node_name, chk.check_id)
        return self._empty()

    def _ttl_update(self, request: Request, check_id: str, status: str, output: str) -> Response:
        chk = self._agent_check(request, check_id)
        if not self.checks.has_ttl(self.node_name, chk.check_id):
            raise HttpError(500, f"CheckID {json.dumps(chk.check_id)} does not have "
                                 "associated TTL")
        self.checks.ttl_update(self.node_name, chk.check_id, status, output)
        return self._empty()

    async def _agent_check_pass(self, request: Request, check_id: str) -> Response:
        return self._ttl_update(request, check_id, "passing", request.param("note") or "")

    async def _agent_check_warn(self, request: Request, check_id: str) -> Response:
        return self._ttl_update(request, check_id, "warning", request.param("note") or "")

    async def _agent_check_fail(self, request: Request, check_id: str) -> Response:
        return self._ttl_update(request, check_id, "critical", request.param("note") or "")

    async def _agent_check_update(self, request: Request, check_id: str) -> Response:
        fields = lower_keys(self._json_body(request))
        status = field_str(fields, "status")
        if status not in STATUSES:
            raise HttpError(400, f"Invalid check status: '{status}'")
        return self._ttl_update(request, check_id, status, field_str(fields, "output"))

    # ================================================================ catalog writes
    async def _catalog_register(self, request: Request) -> Response:
        fields = lower_keys(self._json_body(request))
        node = field_str(fields, "node")
        raw_service = fields.get("service")
        service_fields = lower_keys(raw_service, "Service") if raw_service else None
        self._require(request, "node:write", node)
        if service_fields is not None:
            self._require(request, "service:write", field_str(service_fields, "service"))
        if not node:
            raise HttpError(400, "Must provide node")
        skip_node_update = bool(fields.get("skipnodeupdate"))
        address = field_str(fields, "address")
        if not address and not skip_node_update:
            raise HttpError(400, "Must provide address")
        dc = field_str(fields, "datacenter")
        if dc and dc != self.datacenter:
            raise HttpError(500, "No path to datacenter")
        catalog = self.catalog
        write = catalog._begin()
        existing = catalog.node(node)
        if not skip_node_update or existing is None:
            tagged = fields.get("taggedaddresses")
            catalog.ensure_node(node, address or (existing.address if existing else ""),
                                node_id=field_str(fields, "id")
                                or (existing.id if existing else ""),
                                tagged_addresses=dict(tagged) if isinstance(tagged, dict)
                                else None,
                                meta=field_str_map(fields, "nodemeta") or {}, write=write)
        if service_fields is not None:
            name = field_str(service_fields, "service")
            if not name:
                raise HttpError(400, "Must provide service name")
            try:
                weights = self._parse_weights(service_fields)
            except HttpError:
                weights = {"Passing": 1, "Warning": 1}
            svc_address = field_str(service_fields, "address")
            svc_port = field_int(service_fields, "port")
            svc = Service(node=node, id=field_str(service_fields, "id") or name, name=name,
                          tags=field_str_list(service_fields, "tags"), address=svc_address,
                          port=svc_port, meta=field_str_map(service_fields, "meta"),
                          weights=weights,
                          tagged_addresses=self._parse_tagged_addresses(service_fields),
                          enable_tag_override=bool(service_fields.get("enabletagoverride")))
            catalog.register_service(node, svc, write=write)
        raw_checks = []
        if fields.get("check"):
            raw_checks.append(fields["check"])
        raw_checks += [c for c in (fields.get("checks") or []) if c]
        for raw in raw_checks:
            check_fields = lower_keys(raw, "Check")
            check_node = field_str(check_fields, "node") or node
            if check_node.lower() != node.lower():
                raise HttpError(500, "Check node doesn't match register request node")
            check_id = field_str(check_fields, "checkid") or field_str(check_fields, "name")
            status = field_str(check_fields, "status") or CRITICAL
            if status not in STATUSES:
                raise HttpError(500, f"Invalid check status: '{status}'")
            catalog.upsert_check(Check(
                node=node, check_id=check_id, name=field_str(check_fields, "name"), status=status,
                notes=field_str(check_fields, "notes"), output=field_str(check_fields, "output"),
                service_id=field_str(check_fields, "serviceid")), write=write)
        catalog._commit(write)
        return self._json(request, True)

    async def _catalog_deregister(self, request: Request) -> Response:
        fields = lower_keys(self._json_body(request))
        node = field_str(fields, "node")
        self._require(request, "node:write", node)
        if not node:
            raise HttpError(400, "Must provide node")
        service_id = field_str(fields, "serviceid")
        check_id = field_str(fields, "checkid")
        if service_id:
            self.catalog.remove_service(node, service_id)
        elif check_id:
            self.catalog.remove_check(node, check_id)
        else:
            self.catalog.remove_node(node)
        return self._json(request, True)

    # ================================================================ control API
    async def _control(self, request: Request) -> Response:
        """``/_double/...``: the test hooks over HTTP, for a double running as a process.
        Never subject to ACLs, faults or hangs."""
        path = request.path[len("/_double/"):]
        action, _, arg = path.partition("/")
        param = request.param
        try:
            if action == "stats" and request.method == "GET":
                return self._json(request, {
                    "index": self.index, "requests": dict(self.requests),
                    "blocking_queries": self.blocking_queries, "connections": self.connections,
                    "rejected_connections": self.rejected_connections,
                    "hung_requests": self.hung_requests})
            if request.method != "PUT":
                raise HttpError(405, f"method {request.method} not allowed", {"Allow": "PUT"})
            client = param("client") or None
            if action == "fail":
                count = param("count")
                self.fail_with(int(param("status") or 500), param("body"),
                               count=int(count) if count else None, path=param("path"),
                               client=client)
            elif action == "clear":
                self.clear_faults(client)
                self.hang(False, client=client)
            elif action == "hang":
                self.hang(parse_bool(param("enable") or "true"), client=client)
            elif action == "disconnect":
                count = param("count")
                self.disconnect(int(count) if count else None, client=client)
            elif action == "client-port" and client:
                return self._json(request, await self.client_port(client))
            elif action == "stop" and client:
                await self.stop(client)
            elif action == "restart" and client:
                await self.restart(client)
            elif action == "invalidate-session":
                return self._json(request, self.sessions.destroy(arg))
            elif action == "latency":
                self.set_latency(float(param("seconds") or 0))
            elif action == "reset-index":
                self.reset_index(int(param("index") or 0))
            elif action == "register":
                body = self._json_body(request)
                if not isinstance(body, dict) or "service" not in body:
                    raise HttpError(400, "body: {service, id, address, port, node, ...}")
                return self._json(request, self.register(**body))
            elif action == "deregister":
                self.deregister(arg, node=param("node"))
            elif action == "check":
                self.set_check(arg, param("status") or PASSING, param("output") or "",
                               node=param("node"), check_id=param("check_id"))
            elif action == "node-health":
                self.set_node_health(arg, param("status") or PASSING, param("output"))
            elif action == "maintenance":
                self.maintenance(arg, parse_bool(param("enable") or "true"),
                                 param("reason") or "", node=param("node"))
            elif action == "node-maintenance":
                self.node_maintenance(arg, parse_bool(param("enable") or "true"),
                                      param("reason") or "")
            elif action == "touch":
                self.touch_service(arg)
            elif action == "outage":
                seconds = float(param("seconds") or 1)
                response = self._json(request, True)

                def begin_outage() -> None:
                    self.outage(seconds)

                response.after = begin_outage
                return response
            else:
                raise HttpError(404, f"unknown control action {action!r}")
        except HttpError as exc:
            return self._text(exc.status, exc.message, exc.headers)
        except (KeyError, ValueError, TypeError) as exc:
            return self._text(400, str(exc))
        return self._json(request, True)
