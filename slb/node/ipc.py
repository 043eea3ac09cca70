"""The channel between the supervisor and a worker: framed, pickled messages over a socketpair.

A frame is a header (payload length, request id) and a pickled dict. A request carries an id
that its reply echoes, so the supervisor can have several requests in flight per worker.

    supervisor -> worker          worker -> supervisor
    {op: apply, config}           {id, ok, version} or {id, ok: False, errors}
    {op: group, group, version}   {id, ok, version}
    {op: health, down}            {id, ok}  (active health: {(group, address): down})
    {op: stats}                   {id, ok, stats, members}
    {op: drain}                   (exits when drained)

Pickle, not JSON: a snapshot of 10,000 groups is pickled once and sent to every worker, and both
ends are this code.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from typing import Any

from slb.gcpause import gc_paused

HEADER = struct.Struct("!IQ")  # payload length, request id


def encode(message: dict[str, Any]) -> bytes:
    """Pickled once, sent to every worker: a 10,000-group snapshot takes long to pickle."""
    return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


async def send_message(writer: asyncio.StreamWriter, request_id: int, payload: bytes) -> None:
    writer.write(HEADER.pack(len(payload), request_id))
    writer.write(payload)
    await writer.drain()


async def read_message(reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]] | None:
    try:
        head = await reader.readexactly(HEADER.size)
        size, request_id = HEADER.unpack(head)
        data = await reader.readexactly(size)
        with gc_paused():  # a full snapshot is a large unpickle
            message: dict[str, Any] = pickle.loads(data)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return request_id, message
