"""Locust load test against a running SLB proxy (see loadtest/README.md).

    .venv/bin/locust -f loadtest/locustfile.py --headless -u 20 -r 10 -t 10s \\
        --host http://127.0.0.1:8080 --json-file out/run

Each simulated user keeps one keep-alive connection (FastHttpUser) and picks, by weight:

- ``GET /small``                    (6) the common case: a small response;
- ``GET /search?q=...&page=N``      (3) the query string must reach the backend unchanged;
- ``POST /orders`` with a JSON body (1) the body must reach the backend whole.

Responses are checked, not only counted: status 200 and, when the backends are loadtest/run.sh's
echoing nginx (``<backend> <method> <request uri> <content length>``), that the method, target
and body length arrived as sent. Against other backends set ``SLB_LOADTEST_ECHO=0`` to check the
status alone. Users send without pause (``wait_time`` 0: a closed loop, like wrk); set
``SLB_LOADTEST_RPS_PER_USER`` for a fixed rate per user (``constant_throughput``).

This file runs only inside locust's own process: locust monkey-patches the standard library with
gevent, so it must never be imported by the proxy or by pytest.
"""

from __future__ import annotations

import json
import os
import random

from locust import FastHttpUser, constant, constant_throughput, task

ECHO = os.environ.get("SLB_LOADTEST_ECHO", "1") != "0"
RPS_PER_USER = float(os.environ.get("SLB_LOADTEST_RPS_PER_USER", "0") or 0)
BACKENDS = (b"b1", b"b2")
WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta")


def echo_problem(body: bytes, method: str, uri: str, length: int | None) -> str | None:
    """What is wrong with an echo line ``b1 GET /search?q=x 17``, or None."""
    parts = body.rstrip(b"\n").split(b" ")
    if len(parts) != 4:
        return f"unexpected body {body[:80]!r}"
    backend, got_method, got_uri, got_length = parts
    if backend not in BACKENDS:
        return f"unknown backend {backend!r}"
    if got_method.decode() != method or got_uri.decode() != uri:
        return f"backend saw {got_method.decode()} {got_uri.decode()}, sent {method} {uri}"
    want = b"" if length is None else str(length).encode()
    if got_length != want:
        return f"backend saw Content-Length {got_length.decode()!r}, sent {length}"
    return None


class ProxyUser(FastHttpUser):
    wait_time = constant_throughput(RPS_PER_USER) if RPS_PER_USER > 0 else constant(0)

    def _check(self, method: str, uri: str, name: str, body: bytes | None = None) -> None:
        headers = {"Content-Type": "application/json"} if body is not None else None
        with self.client.request(method, uri, name=name, data=body, headers=headers,
                                 catch_response=True) as resp:
            if resp.status_code != 200:
                error = getattr(resp, "error", None)
                resp.failure(f"status {resp.status_code}" + (f": {error}" if error else ""))
                return
            if ECHO:
                problem = echo_problem(resp.content or b"", method, uri,
                                       len(body) if body is not None else None)
                if problem is not None:
                    resp.failure(problem)
                    return
            resp.success()

    @task(6)
    def get_small(self) -> None:
        self._check("GET", "/small", "/small")

    @task(3)
    def get_with_query(self) -> None:
        query = f"q={random.choice(WORDS)}+{random.randrange(1000)}&page={random.randint(1, 50)}"
        self._check("GET", f"/search?{query}", "/search?q=...")

    @task(1)
    def post_body(self) -> None:
        order = {"id": random.randrange(10**9), "items": [
            {"sku": f"sku-{random.randrange(10**6):06d}", "qty": random.randint(1, 5)}
            for _ in range(random.randint(1, 20))]}
        self._check("POST", "/orders", "/orders", json.dumps(order).encode())
