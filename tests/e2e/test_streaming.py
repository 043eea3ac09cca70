"""Large bodies stream through the proxy with flat memory, in both directions.

The proxy runs as its own process (``python -m slb proxy``) so its resident memory can be read
from /proc/<pid>/status while a slow client (or a slow member) holds the transfer back. The
members here are plain blocking socket servers on threads of the test process; the client is a
blocking socket in the test's thread. Content is checked with CRC-32 over every byte, computed
by the sending side as it sends and by the receiving side as it receives.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httptools
import pytest

from tests.e2e.conftest import SlbProcess, node_config

CHUNK = 64 * 1024
DOWNLOAD_BYTES = 1 << 30  # 1 GiB
UPLOAD_BYTES = 256 << 20  # 256 MiB
SLOW_SECONDS = 2.0
MAX_GROWTH = 50 << 20  # the proxy's resident memory may grow by less than this
_FILLER = os.urandom(CHUNK - 8)


def numbered_chunk(index: int) -> bytes:
    """64 KiB whose first 8 bytes are the chunk's number: a lost or repeated chunk shows."""
    return struct.pack(">Q", index) + _FILLER


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """Read up to the end of an HTTP head; returns (head, bytes read past it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            raise ConnectionError(f"closed before the end of the head: {data!r}")
        data += piece
        assert b"\r\n\r\n" in data or len(data) < 65536, "head too long"
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def header(head: bytes, name: str) -> str | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name.encode():
            return value.strip().decode()
    return None


class BodyDigest:
    """httptools callbacks that count a message's body and take its CRC-32, keeping nothing."""

    def __init__(self) -> None:
        self.bytes = 0
        self.crc = 0
        self.done = False

    def on_body(self, piece: bytes) -> None:
        self.bytes += len(piece)
        self.crc = zlib.crc32(piece, self.crc)

    def on_message_complete(self) -> None:
        self.done = True


class RssSampler:
    """Samples the proxy's resident memory every 20 ms on a thread; keeps the peak."""

    def __init__(self, node: SlbProcess) -> None:
        self.node = node
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, self.node.rss_bytes())
                self.samples += 1
            self._stop.wait(0.02)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@dataclass
class ThreadMember:
    """A blocking HTTP/1.1 member on a thread: ``serve(conn, head, rest)`` answers one request
    per connection."""

    serve: Callable[[socket.socket, bytes, bytes], None]
    sock: socket.socket = field(default_factory=socket.socket)
    errors: list[BaseException] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            try:
                head, rest = read_head(conn)
                self.serve(conn, head, rest)
            except BaseException as exc:  # reported by the test, not lost on a thread
                self.errors.append(exc)

    def close(self) -> None:
        self._stop.set()
        self._acceptor.join(5)
        self.sock.close()
        for thread in self.threads:
            thread.join(10)


@pytest.fixture
def thread_member() -> Iterator[Callable[..., ThreadMember]]:
    members: list[ThreadMember] = []

    def make(serve: Callable[[socket.socket, bytes, bytes], None]) -> ThreadMember:
        member = ThreadMember(serve)
        members.append(member)
        return member

    yield make
    for member in members:
        member.close()


def small_request(port: int, path: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"
                     .encode())
        head, _ = read_head(sock)
        return int(head.split(b" ", 2)[1])


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_one_gib_response_to_slow_client_streams_complete_with_flat_proxy_memory(
        slb_proxy, thread_member, framing: str) -> None:
    sent = {"crc": 0, "bytes": 0}
    # the member thread records its CRC after its last write, which the client may read first:
    # the test reads ``sent`` only once this is set
    finished = threading.Event()

    def serve(conn: socket.socket, head: bytes, rest: bytes) -> None:
        if head.startswith(b"GET /warm "):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
            return
        chunked = framing == "chunked"
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                     + (b"Transfer-Encoding: chunked\r\n" if chunked
                        else b"Content-Length: %d\r\n" % DOWNLOAD_BYTES) + b"\r\n")
        crc = 0
        for index in range(DOWNLOAD_BYTES // CHUNK):
            chunk = numbered_chunk(index)
            conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            crc = zlib.crc32(chunk, crc)
            sent["bytes"] += len(chunk)
        if chunked:
            conn.sendall(b"0\r\n\r\n")
        sent["crc"] = crc
        finished.set()

    member = thread_member(serve)
    node = slb_proxy(node_config([member.address]))
    node.wait_ready()
    assert small_request(node.port, "/warm") == 200
    baseline = node.rss_bytes()

    body = BodyDigest()
    parser = httptools.HttpResponseParser(body)
    with socket.create_connection(("127.0.0.1", node.port), timeout=30) as sock, \
            RssSampler(node) as sampler:
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: example.com\r\n\r\n")
        slow_until = time.monotonic() + SLOW_SECONDS
        while time.monotonic() < slow_until:  # a slow client: 4 KiB every 10 ms
            piece = sock.recv(4096)
            assert piece, "closed during the slow read"
            parser.feed_data(piece)
            time.sleep(0.01)
        slow_peak = sampler.peak
        assert body.bytes < DOWNLOAD_BYTES // 4, "the client was not slow"

        buffer = bytearray(1 << 20)
        view = memoryview(buffer)
        deadline = time.monotonic() + 60
        while not body.done:
            count = sock.recv_into(view)
            assert count, f"closed after {body.bytes} of {DOWNLOAD_BYTES} bytes"
            parser.feed_data(view[:count])
            assert time.monotonic() < deadline, "download too slow"
        view.release()

    assert parser.get_status_code() == 200
    assert body.bytes == DOWNLOAD_BYTES
    assert finished.wait(10) or member.errors, "the member never finished its writes"
    assert not member.errors, member.errors
    assert sent["bytes"] == DOWNLOAD_BYTES
    assert body.crc == sent["crc"], "the body arrived altered"
    assert sampler.samples > 10
    assert slow_peak - baseline < MAX_GROWTH, (
        f"proxy grew by {(slow_peak - baseline) >> 20} MiB while the client read slowly")
    assert sampler.peak - baseline < MAX_GROWTH, (
        f"proxy grew by {(sampler.peak - baseline) >> 20} MiB during the transfer")


def test_large_chunked_upload_to_slow_member_streams_complete_with_flat_proxy_memory(
        slb_proxy, thread_member) -> None:
    def serve(conn: socket.socket, head: bytes, rest: bytes) -> None:
        if head.startswith(b"GET /warm "):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
            return
        body = BodyDigest()
        parser = httptools.HttpRequestParser(body)
        parser.feed_data(head + b"\r\n\r\n" + rest)
        slow_until = time.monotonic() + SLOW_SECONDS
        while not body.done and time.monotonic() < slow_until:  # a slow member
            piece = conn.recv(4096)
            if not piece:
                raise ConnectionError("closed during the slow read")
            parser.feed_data(piece)
            time.sleep(0.01)
        buffer = bytearray(1 << 20)
        view = memoryview(buffer)
        while not body.done:
            count = conn.recv_into(view)
            if not count:
                raise ConnectionError(f"closed after {body.bytes} body bytes")
            parser.feed_data(view[:count])
        view.release()
        answer = f"{body.bytes} {body.crc}".encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer))

    member = thread_member(serve)
    node = slb_proxy(node_config([member.address], max_body_bytes=0))
    node.wait_ready()
    assert small_request(node.port, "/warm") == 200
    baseline = node.rss_bytes()

    with socket.create_connection(("127.0.0.1", node.port), timeout=30) as sock, \
            RssSampler(node) as sampler:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: example.com\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        crc, started = 0, time.monotonic()
        try:
            for index in range(UPLOAD_BYTES // CHUNK):
                chunk = numbered_chunk(index)
                crc = zlib.crc32(chunk, crc)
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                assert time.monotonic() - started < 60, "upload too slow"
            sock.sendall(b"0\r\n\r\n")
        except OSError as exc:
            answer = b""
            with contextlib.suppress(OSError):
                answer = sock.recv(65536)
            pytest.fail(f"upload cut after {index} chunks ({exc}); proxy answered {answer!r}; "
                        f"member errors {member.errors}; proxy log:\n{node.log()}")
        head, reply = read_head(sock)
        length = int(header(head, "content-length") or 0)
        while len(reply) < length:
            piece = sock.recv(65536)
            assert piece, "closed before the end of the response"
            reply += piece
        elapsed = time.monotonic() - started

    assert not member.errors, member.errors
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert reply == f"{UPLOAD_BYTES} {crc}".encode(), "the body arrived incomplete or altered"
    assert elapsed >= SLOW_SECONDS  # the member did hold the upload back
    assert sampler.samples > 10
    assert sampler.peak - baseline < MAX_GROWTH, (
        f"proxy grew by {(sampler.peak - baseline) >> 20} MiB during the upload")
