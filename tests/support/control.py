"""A small JSON client for a node's control API, over the raw test client's ``Connection``.

Each call opens a fresh connection (the control API is not on the request path, and a fresh
connection keeps a test independent of how the node handles keep-alive there). Changes carry
``Authorization: Bearer <token>`` when a token is given; ``raw`` sends a body as it is, for
malformed JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tests.support.client import Connection, Response


@dataclass
class ControlReply:
    status: int
    response: Response

    @property
    def body(self) -> bytes:
        return self.response.body

    def json(self) -> Any:
        return json.loads(self.response.body)


class ControlClient:
    def __init__(self, port: int, token: str | None = None, timeout: float = 10.0) -> None:
        self.port = port
        self.token = token
        self.timeout = timeout

    async def call(self, method: str, path: str, data: Any = None, *, raw: bytes | None = None,
                   token: str | None = None, authorization: str | None = None,
                   headers: dict[str, str] | None = None) -> ControlReply:
        """``token`` overrides the client's; ``authorization`` sends that header value as is;
        ``headers`` are sent as well (``X-SLB-Term``)."""
        headers = {"Connection": "close", **(headers or {})}
        given = token if token is not None else self.token
        if authorization is not None:
            headers["Authorization"] = authorization
        elif given is not None:
            headers["Authorization"] = f"Bearer {given}"
        body = raw
        if body is None and data is not None:
            body = json.dumps(data).encode()
            headers["Content-Type"] = "application/json"
        if body is None and method in ("PUT", "PATCH", "POST"):
            body = b""
        conn = await Connection.open(self.port)
        try:
            reply = await conn.request(method, path, host="127.0.0.1", headers=headers,
                                       body=body, timeout=self.timeout)
        finally:
            await conn.close()
        return ControlReply(reply.status, reply)

    async def get(self, path: str) -> ControlReply:
        return await self.call("GET", path)

    async def get_json(self, path: str) -> Any:
        reply = await self.get(path)
        assert reply.status == 200, (path, reply.status, reply.body)
        return reply.json()

    async def put(self, path: str, data: Any = None, **options: Any) -> ControlReply:
        return await self.call("PUT", path, data, **options)

    async def patch(self, path: str, data: Any = None, **options: Any) -> ControlReply:
        return await self.call("PATCH", path, data, **options)

    # -- the endpoints -------------------------------------------------------------------------

    async def config(self) -> Any:
        return await self.get_json("/v1/config")

    async def status(self) -> Any:
        return await self.get_json("/v1/status")

    async def push(self, snapshot: dict[str, Any], **options: Any) -> ControlReply:
        return await self.put("/v1/config", snapshot, **options)

    async def patch_group(self, group: str, delta: dict[str, Any], **options: Any
                          ) -> ControlReply:
        return await self.patch(f"/v1/groups/{group}", delta, **options)

    async def ready_status(self) -> int:
        return (await self.get("/ready")).status
