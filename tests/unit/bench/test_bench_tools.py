"""The benchmark's own tools give right answers: the reference proxy (bench/reference_proxy.py)
forwards like a proxy wrk can trust, and the open-loop generator (bench/openloop.c) counts
every answer, Content-Length or chunked, at the rate it was asked for.

Backends here are stdlib HTTP/1.1 servers in threads; the proxy and the generator run as the
bench runs them, as processes on 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"
CHUNKS = [b"first-chunk;", b"x" * 3000, b";last"]


def make_handler(name: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def reply(self, body: bytes, chunked: bool = False) -> None:
            self.send_response(200)
            self.send_header("X-Backend", name)
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for part in CHUNKS:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path.startswith("/slow"):
                time.sleep(0.3)  # an answer that a faster one could overtake
            if self.path == "/chunked":
                self.reply(b"", chunked=True)
            else:
                self.reply(f"{self.path} from {name}".encode())

        def do_POST(self) -> None:  # echo the request body, de-chunked
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = b""
                while size := int(self.rfile.readline().strip(), 16):
                    body += self.rfile.read(size)
                    self.rfile.readline()
                self.rfile.readline()
            else:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.reply(body)

    return Handler


@pytest.fixture
def backends() -> Iterator[list[str]]:
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), make_handler(n)) for n in ("b1", "b2")]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    yield [f"127.0.0.1:{s.server_address[1]}" for s in servers]
    for s in servers:
        s.shutdown()
        s.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the process exited before listening"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listening on {port} after {timeout} s")


@pytest.fixture
def proxy(backends: list[str]) -> Iterator[int]:
    port = free_port()
    argv = [sys.executable, str(BENCH / "reference_proxy.py"), "--listen", f"127.0.0.1:{port}"]
    for b in backends:
        argv += ["--backend", b]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    try:
        wait_listening(port, proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def test_reference_proxy_forwards_both_framings_round_robin_on_one_connection(proxy: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", proxy, timeout=10)
    seen = []
    for i in range(6):
        path = "/chunked" if i % 2 else f"/cl/{i}"
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200
        seen.append(resp.getheader("X-Backend"))
        if i == 0:
            sock = conn.sock
        assert conn.sock is sock, "the client connection was not kept alive"
        if path == "/chunked":
            assert resp.getheader("Transfer-Encoding") == "chunked"
            assert body == b"".join(CHUNKS)
        else:
            assert body == f"{path} from {seen[-1]}".encode()
    assert seen == ["b1", "b2"] * 3
    conn.close()


def test_reference_proxy_forwards_request_bodies(proxy: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", proxy, timeout=10)
    conn.request("POST", "/echo", body=b"plain body")
    assert conn.getresponse().read() == b"plain body"
    conn.request("POST", "/echo", body=iter([b"part one, ", b"part two"]),
                 encode_chunked=True, headers={"Transfer-Encoding": "chunked"})
    assert conn.getresponse().read() == b"part one, part two"
    conn.close()


def test_reference_proxy_answers_bad_requests_with_400(proxy: int) -> None:
    with socket.create_connection(("127.0.0.1", proxy), timeout=10) as s:
        s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        answer = s.recv(1024)
    assert answer.startswith(b"HTTP/1.1 400")


def test_reference_proxy_refuses_a_bad_address() -> None:
    done = subprocess.run([sys.executable, str(BENCH / "reference_proxy.py"), "--listen",
                           "nowhere", "--backend", "127.0.0.1:1"], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2
    assert "invalid address value: 'nowhere'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture
def openloop(tmp_path: Path) -> Path:
    """bench/openloop.c built as the bench builds it."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc builds the generator")
    binary = tmp_path / "openloop"
    subprocess.run(["gcc", "-O2", "-o", str(binary), str(BENCH / "openloop.c")], check=True,
                   timeout=120)
    return binary


def test_openloop_sends_the_scheduled_requests_and_reads_every_answer(
        backends: list[str], openloop: Path) -> None:
    port = backends[0].rsplit(":", 1)[1]
    for path in ("/chunked", "/cl/x"):
        done = subprocess.run([str(openloop), "127.0.0.1", port, path, "200", "4", "1"],
                              capture_output=True, text=True, timeout=60, check=True)
        res = json.loads(done.stdout)
        # 200 requests a second for 1 s: all 200 sent, answered and recorded, none failed
        assert (res["sent"], res["completed"], res["recorded"]) == (200, 200, 200), res
        assert res["errors"] == res["non_2xx"] == res["unsent"] == 0, res
        assert 0 < res["p50_us"] <= res["p999_us"] <= res["max_us"], res


def test_openloop_refuses_bad_arguments(openloop: Path) -> None:
    done = subprocess.run([str(openloop), "127.0.0.1", "1", "/", "0", "4", "1"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "must be positive" in done.stderr


def test_reference_proxy_answers_pipelined_requests_in_order(proxy: int) -> None:
    with socket.create_connection(("127.0.0.1", proxy), timeout=10) as s:
        # three requests in one segment, before any connection to a backend exists; the first
        # one slow: answered out of order if the proxy sent them at once
        paths = [b"/slow/0", b"/cl/1", b"/cl/2"]
        s.sendall(b"".join(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % p for p in paths))
        data = b""
        deadline = time.monotonic() + 10
        while data.count(b"HTTP/1.1 200") < 3 or not data.endswith(b"b1"):
            assert time.monotonic() < deadline, data
            data += s.recv(65536)
    bodies = [part.rsplit(b"\r\n\r\n", 1)[-1] for part in data.split(b"HTTP/1.1 200 OK")[1:]]
    assert bodies == [b"/slow/0 from b1", b"/cl/1 from b2", b"/cl/2 from b1"]
