"""A tiny demo backend for ``make run``: answers every request with its name, and /health.

Only for the embedded demo; run as ``python -m dev.demo_backend NAME PORT``.
"""

from __future__ import annotations

import asyncio
import sys


async def serve(name: str, port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line = head.split(b"\r\n", 1)[0].decode("latin-1")
                length = 0
                for field in head.split(b"\r\n")[1:]:
                    key, _, value = field.partition(b":")
                    if key.strip().lower() == b"content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                body = f"hello from {name}: {line}\n".encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Backend: "
                             + name.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
                             + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(serve(sys.argv[1], int(sys.argv[2])))
    except OSError as exc:  # a taken port: one line, not a traceback
        sys.exit(f"demo backend {sys.argv[1]}: cannot listen on 127.0.0.1:{sys.argv[2]}: "
                 f"{exc.strerror or exc}")
    except KeyboardInterrupt:
        pass
