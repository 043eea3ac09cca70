"""HTTP endpoints of the double's KV store and sessions: ``/v1/kv/<key>`` and ``/v1/session/*``.

The request parsing follows ``agent/kvs_endpoint.go`` and ``agent/session_endpoint.go``: which
query parameters count by their mere presence (``recurse``, ``keys``, ``raw``, ``acquire``...),
which combinations are refused (``Conflicting flags: cas|acquire|release``), which errors are
400s (decoding, missing key or ID) and which are 500s (what Consul's server refuses: an invalid
session, a bad TTL, an unparsable ``cas`` or ``flags``). The semantics live in kv.py and
sessions.py; blocking, consistency, index headers and ACLs are the double's (server.py), shared
with the catalog endpoints.

ACLs, with the double's three kinds of token: the management token may do anything; a read
token reads keys and sessions; the anonymous token (no token) is refused a single-key read with
403, sees prefix listings and session lists filtered to nothing, and is refused every write.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .fields import HttpError, field_str, field_str_list, lower_keys
from .gotypes import parse_uint
from .http import Request, Response
from .kv import DirEntry
from .sessions import SessionError, lock_delay_field
from .state import SERF_CHECK_ID

if TYPE_CHECKING:
    from .server import ConsulDouble

MAX_VALUE_SIZE = 512 * 1024  # the agent's kv_max_value_size


class KVSessionAPI:
    """Route handlers bound to one :class:`ConsulDouble` (its stores, ACLs and blocking)."""

    def __init__(self, double: ConsulDouble) -> None:
        self._d = double

    def routes(self) -> list[tuple[str, bool, tuple[str, ...], Any]]:
        return [
            ("/v1/kv/", True, ("GET", "PUT", "DELETE"), self.kv),
            ("/v1/session/create", False, ("PUT",), self.session_create),
            ("/v1/session/destroy/", True, ("PUT",), self.session_destroy),
            ("/v1/session/renew/", True, ("PUT",), self.session_renew),
            ("/v1/session/info/", True, ("GET",), self.session_info),
            ("/v1/session/list", False, ("GET",), self.session_list),
            ("/v1/session/node/", True, ("GET",), self.session_node),
        ]

    # ================================================================ KV
    async def kv(self, request: Request, key: str) -> Response:
        if request.method == "GET":
            return await self._kv_get(request, key)
        if request.method == "PUT":
            return self._kv_put(request, key)
        return self._kv_delete(request, key)

    async def _kv_get(self, request: Request, key: str) -> Response:
        d = self._d
        opts = d._query_options(request)
        visible = d._can_read(request)
        store = d.kv
        if request.has("keys"):
            # "seperator" is a historic misspelling Consul still accepts.
            separator = request.param("separator") or request.param("seperator") or ""
            index, keys = await d._blocking(opts, lambda: self._hide(
                store.keys(key, separator), visible))
            if not keys and key:
                return Response(404, b"", d._meta(index, opts))
            return d._json(request, keys, d._meta(index, opts))
        if request.has("recurse"):
            index, entries = await d._blocking(opts, lambda: self._hide(
                store.list(key), visible))
            if not entries:
                return Response(404, b"", d._meta(index, opts))
            return d._json(request, [e.to_json() for e in entries], d._meta(index, opts))
        if not key:
            raise HttpError(400, "Missing key name")
        if not visible:
            d._require(request, "key:read", key)

        def one() -> tuple[int, list[DirEntry]]:
            index, entry = store.get(key)
            return index, [entry] if entry is not None else []

        index, found = await d._blocking(opts, one)
        headers = d._meta(index, opts)
        if not found:
            return Response(404, b"", headers)
        if request.has("raw"):
            return Response(200, found[0].value or b"",
                            {**headers, "Content-Type": "text/plain; charset=utf-8"})
        return d._json(request, [found[0].to_json()], headers)

    @staticmethod
    def _hide(result: tuple[int, list[Any]], visible: bool) -> tuple[int, list[Any]]:
        # The anonymous token's listings are filtered to nothing, with the real index.
        index, items = result
        return index, items if visible else []

    def _uint_param(self, request: Request, name: str) -> int:
        raw = request.param(name) or ""
        try:
            return parse_uint(raw)
        except ValueError:
            # Consul hands strconv's error back as a 500.
            raise HttpError(
                500, f'strconv.ParseUint: parsing {json.dumps(raw)}: invalid syntax') from None

    def _conflicting(self, request: Request, *names: str) -> None:
        if sum(request.has(n) for n in names) > 1:
            raise HttpError(400, "Conflicting flags: " + "|".join(names))

    def _kv_put(self, request: Request, key: str) -> Response:
        d = self._d
        if not key:
            raise HttpError(400, "Missing key name")
        self._conflicting(request, "cas", "acquire", "release")
        d._require(request, "key:write", key)
        flags = self._uint_param(request, "flags") if request.has("flags") else 0
        if len(request.body) > MAX_VALUE_SIZE:
            raise HttpError(413, f"Request body({len(request.body)} bytes) too large, max "
                                    f"size: {MAX_VALUE_SIZE} bytes. See "
                                    "https://developer.hashicorp.com/docs/agent/config/"
                                    "config-files#kv_max_value_size.")
        value = request.body or None
        store = d.kv
        if request.has("cas"):
            done = store.cas(key, value, flags, self._uint_param(request, "cas"))
        elif request.has("acquire"):
            session = self._session_param(request, "acquire", must_exist=True)
            # Lock-delay is the leader's wall-clock rule, checked before the write.
            done = (store.lock_delay_remaining(key) <= 0
                    and store.lock(key, value, flags, session))
        elif request.has("release"):
            done = store.unlock(key, value, flags, self._session_param(request, "release"))
        else:
            done = store.set(key, value, flags)
        return d._json(request, done)

    def _session_param(self, request: Request, name: str, *, must_exist: bool = False) -> str:
        session = request.param(name) or ""
        if not session:
            raise HttpError(500, "missing session")
        if must_exist and self._d.sessions.get(session) is None:
            raise HttpError(500, f"invalid session {json.dumps(session)}")
        return session

    def _kv_delete(self, request: Request, key: str) -> Response:
        d = self._d
        self._conflicting(request, "recurse", "cas")
        if not key and not request.has("recurse"):
            raise HttpError(400, "Missing key name")
        d._require(request, "key:write", key)
        if request.has("recurse"):
            return d._json(request, d.kv.delete_tree(key))
        if request.has("cas"):
            return d._json(request, d.kv.delete_cas(key, self._uint_param(request, "cas")))
        return d._json(request, d.kv.delete(key))

    # ================================================================ sessions
    async def session_create(self, request: Request) -> Response:
        d = self._d
        fields = lower_keys(d._json_body(request))
        node = field_str(fields, "node") or d.node_name
        d._require(request, "session:write", node)
        try:
            lock_delay = lock_delay_field(fields.get("lockdelay", "15s"))
        except ValueError as exc:
            raise HttpError(400, f"Request decode failed: {exc}") from None
        node_checks, service_checks = self._session_checks(fields)
        try:
            session = d.sessions.create(
                node=node, name=field_str(fields, "name"), lock_delay=lock_delay,
                behavior=field_str(fields, "behavior"), ttl=field_str(fields, "ttl"),
                node_checks=node_checks, service_checks=service_checks)
        except SessionError as exc:
            raise HttpError(exc.status, exc.message) from None
        return d._json(request, {"ID": session.id})

    def _session_checks(self, fields: dict[str, Any]
                        ) -> tuple[list[str], list[tuple[str, str]]]:
        """``Checks``/``NodeChecks``/``ServiceChecks`` with the agent's defaults and its
        ``fixupEmptySessionChecks``: both default to serfHealth; an explicit empty ``Checks``
        empties ``NodeChecks`` too. Deprecated ``Checks`` are merged into ``NodeChecks``."""
        checks = field_str_list(fields, "checks") if "checks" in fields else [SERF_CHECK_ID]
        node_checks = (field_str_list(fields, "nodechecks") if "nodechecks" in fields
                       else [SERF_CHECK_ID])
        if not checks:
            node_checks = []
        elif checks == [SERF_CHECK_ID] or not node_checks:
            checks = []
        merged = list(dict.fromkeys([*node_checks, *checks]))
        raw_service = fields.get("servicechecks") or []
        if not isinstance(raw_service, list):
            raise HttpError(400, "Request decode failed: ServiceChecks must be a list")
        service_checks = []
        for raw in raw_service:
            entry = lower_keys(raw, "ServiceChecks")
            service_checks.append((field_str(entry, "id"), field_str(entry, "namespace")))
        return merged, service_checks

    def _session_id(self, request: Request, session_id: str) -> str:
        if not session_id:
            raise HttpError(400, "Missing session")
        return session_id

    async def session_destroy(self, request: Request, session_id: str) -> Response:
        d = self._d
        self._session_id(request, session_id)
        d._require(request, "session:write", session_id)
        d.sessions.destroy(session_id)
        return d._json(request, True)

    async def session_renew(self, request: Request, session_id: str) -> Response:
        d = self._d
        self._session_id(request, session_id)
        d._require(request, "session:write", session_id)
        session = d.sessions.renew(session_id)
        if session is None:
            raise HttpError(404, f"Session id '{session_id}' not found")
        return d._json(request, [session.to_json()])

    async def _session_read(self, request: Request, select: Any) -> Response:
        d = self._d
        opts = d._query_options(request)
        visible = d._can_read(request)

        def run() -> tuple[int, list[dict[str, Any]]]:
            found = select() if visible else []
            return d.sessions.index(), [s.to_json() for s in found]

        index, data = await d._blocking(opts, run)
        return d._json(request, data, d._meta(index, opts))

    async def session_info(self, request: Request, session_id: str) -> Response:
        self._session_id(request, session_id)
        store = self._d.sessions
        return await self._session_read(
            request, lambda: [s for s in [store.get(session_id)] if s is not None])

    async def session_list(self, request: Request) -> Response:
        return await self._session_read(request, self._d.sessions.listed)

    async def session_node(self, request: Request, node: str) -> Response:
        if not node:
            raise HttpError(400, "Missing node name")
        return await self._session_read(request, lambda: self._d.sessions.listed(node))
