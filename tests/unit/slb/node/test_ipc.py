"""``slb.node.ipc``: framed messages between supervisor and worker arrive whole and in order."""

from __future__ import annotations

import asyncio
import socket

from slb.model import parse_config
from slb.node.ipc import encode, read_message, send_message


async def test_messages_cross_a_socketpair_whole_with_their_ids() -> None:
    left, right = socket.socketpair()
    _, writer = await asyncio.open_unix_connection(sock=left)
    reader, other = await asyncio.open_unix_connection(sock=right)
    config = parse_config({"version": 7, "groups": [{"name": f"g{i}"} for i in range(500)]})
    try:
        await send_message(writer, 1, encode({"op": "apply", "config": config}))
        await send_message(writer, 2, encode({"op": "stats"}))
        first, second = await read_message(reader), await read_message(reader)
        assert first is not None and second is not None
        assert first[0] == 1 and first[1]["config"] == config
        assert first[1]["config"].content_hash() == config.content_hash()
        assert second == (2, {"op": "stats"})
        writer.close()
        assert await read_message(reader) is None  # the other end went away
    finally:
        writer.close()
        other.close()
