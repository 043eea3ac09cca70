"""Property-based fuzzing of the exchange invariants of issue 8 (no byte crosses exchanges).

Theory of operation. One proxy and one strict recording member (tests/support/strict_member.py)
are started once for the module. Each Hypothesis example plans, for two clients at once, a few
pipelined requests each: valid ones (GET, HEAD, bodies by length or chunks, bait request lines
inside bodies, duplicated ordinary fields, harmless or proxy-field Connection options, HTTP/1.0
keep-alive, Upgrade offers) and invalid ones (two framings, two lengths, bad chunk sizes,
Connection naming a framing or routing field, bad Host, fragment, userinfo, garbage, obs-fold);
a request that ends the connection (``Connection: close``, HTTP/1.0) closes every plan. Every
request's target is ``/<client marker>/<index>/<kind>/<action>``, and the member answers it as
``action`` says: a clean 200, a 200 with a whole extra response after it, a 204 with a body, a
close-delimited or chunked body, a body shorter than its length, a head over 64 KiB, or a 101.
Each client's bytes are cut at random points into separate writes, both clients run
concurrently, and each reads until the proxy closes.

The oracle is the plan: by construction the fuzzer knows which requests are valid, which end
the connection, and what each member answer must become. Three invariants are checked:

1. Nothing arrives raw: every request the member parses carries X-Forwarded-For ending in the
   proxy's peer and a request id the proxy chose (not a client's); the member chokes on nothing;
   no byte follows an Upgrade request before the member answers it.
2. Every member request belongs to exactly one client request: its target is a request the
   plan says must reach the member (valid, and not after a request that ends the connection),
   and one request id never serves two targets nor one target two request ids.
3. Every client receives exactly one response per request, in order, then the close: the
   member's answer to that very request (its X-Tag), or for an invalid request a 4xx that is
   the last response; never a byte of the other client's exchange nor of a member's surplus.
   Legitimate early ends are allowed where the issue allows them: after a refused Upgrade the
   proxy may close; a response cut short by the member may be cut short to the client; a
   response that says ``Connection: close`` is the last.

``SLB_FUZZ_EXAMPLES`` sets the number of examples (``make fuzz`` runs 50000).
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.backends import ReceivedRequest, response
from tests.support.client import Response, send_raw, split_responses
from tests.support.proxy import RunningProxy, simple_config, start_proxy
from tests.support.strict_member import Reply, StrictMember, start_member

pytestmark = pytest.mark.asyncio(loop_scope="module")

HOST = "example.com"
# Every plan ends with a request that closes the connection, so a client waits this long only
# when something is wrong; generous, because a loaded CI machine can stall a process for seconds
# (a 5 s wait failed once at load average 20 and did not reproduce).
TIMEOUT = 20.0
INJECTED = b"INJ-surplus"

# kind -> (valid, ends the connection); upgrade kinds are valid and may end it.
KINDS: dict[str, tuple[bool, bool]] = {
    "get": (True, False), "head": (True, False), "post_cl": (True, False),
    "post_chunked": (True, False), "post_bait": (True, False), "dup_field": (True, False),
    "conn_option": (True, False), "conn_xff": (True, False), "conn_rid": (True, False),
    "http10_ka": (True, False), "upgrade_ws": (True, False), "upgrade_h2c": (True, False),
    "close": (True, True), "http10": (True, True),
    "cl_te": (False, True), "dup_cl": (False, True), "bad_chunk": (False, True),
    "conn_cl": (False, True), "conn_te": (False, True), "conn_host": (False, True),
    "bad_host": (False, True), "fragment": (False, True), "userinfo": (False, True),
    "garbage": (False, True), "no_host": (False, True), "dup_host": (False, True),
    "obs_fold": (False, True),
}
ACTIONS = ["ok", "surplus", "nobody204", "closedelim", "chunked", "short", "bighead"]
LENGTHLESS = {"closedelim", "chunked", "short"}  # not for HTTP/1.0 clients: see _action
# kinds whose body the request frames (by length or chunks), valid or not
FRAMED = {"post_cl", "post_chunked", "conn_cl", "conn_te", "cl_te", "dup_cl", "bad_chunk"}
BAD_HOSTS = ["shop.example.com/evil", "a b", "u@host", "host:80x", "b\xfccher.example", "[::1"]


# -- the plan -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    marker: str
    index: int
    kind: str
    action: str
    body: bytes = b""

    @property
    def path(self) -> str:
        return f"/{self.marker}/{self.index}/{self.kind}/{self.action}"

    @property
    def valid(self) -> bool:
        return KINDS[self.kind][0]

    @property
    def ends(self) -> bool:
        return KINDS[self.kind][1] or (self.kind.startswith("upgrade") and self.action == "switch")

    @property
    def method(self) -> str:
        return "HEAD" if self.kind == "head" else "POST" if self.kind.startswith("post") \
            or self.kind in ("cl_te", "dup_cl", "bad_chunk", "conn_cl", "conn_te") else "GET"

    def wire(self) -> bytes:
        """The request as the client writes it."""
        fields: list[str] = [f"Host: {HOST}"]
        body = self.body
        line = f"{self.method} {self.path} HTTP/1.1"
        kind = self.kind
        if kind in ("post_cl", "conn_cl", "dup_cl"):
            fields.append(f"Content-Length: {len(body)}")
        if kind == "post_bait":
            body = (f"GET /{self.marker}/{self.index}/bait/ok HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
                    ).encode()
            fields.append(f"Content-Length: {len(body)}")
        if kind in ("post_chunked", "conn_te", "cl_te"):
            fields.append("Transfer-Encoding: chunked")
            body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in _pieces(body)) + b"0\r\n\r\n"
        extra = {
            "dup_field": ["X-Dup: 1", "X-Dup: 2"],
            "conn_option": ["Connection: keep-alive, X-Hop", "X-Hop: gone"],
            "conn_xff": ["X-Forwarded-For: 6.6.6.6", "Connection: X-Forwarded-For"],
            "conn_rid": ["X-Request-Id: client-chosen", "Connection: X-Request-Id"],
            "upgrade_ws": ["Connection: Upgrade", "Upgrade: websocket",
                           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                           "Sec-WebSocket-Version: 13"],
            "upgrade_h2c": ["Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c",
                            "HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA"],
            "close": ["Connection: close"],
            "cl_te": [f"Content-Length: {len(body)}"],
            "dup_cl": [f"Content-Length: {len(body) + 1}"],
            "bad_chunk": ["Transfer-Encoding: chunked"],
            "conn_cl": ["Connection: keep-alive, Content-Length"],
            "conn_te": ["Connection: Transfer-Encoding"],
            "conn_host": ["Connection: Host"],
            "dup_host": ["Host: other.example"],
            "obs_fold": ["X-Folded: a", " b"],
        }.get(kind, [])
        fields += extra
        if kind == "bad_chunk":
            body = b"zz\r\n" + body + b"\r\n0\r\n\r\n"
        if kind == "bad_host":
            fields[0] = f"Host: {BAD_HOSTS[self.index % len(BAD_HOSTS)]}"
        if kind == "no_host":
            fields.pop(0)
        if kind == "fragment":
            line = f"GET {self.path}#frag HTTP/1.1"
        if kind == "userinfo":
            line = f"GET http://u:p@{HOST}{self.path} HTTP/1.1"
        if kind.startswith("http10"):
            line = f"GET {self.path} HTTP/1.0"
            fields += ["Connection: keep-alive"] if kind == "http10_ka" else []
        if kind == "garbage":
            return b"\x16\x03\x01 not http " + self.path.encode() + b"\r\n\r\n"
        head = line + "\r\n" + "".join(f + "\r\n" for f in fields) + "\r\n"
        return head.encode("latin-1") + body


def _pieces(body: bytes) -> list[bytes]:
    return [body[i:i + 7] for i in range(0, len(body), 7)] if body else []


def _action(kind: str, action: str) -> str:
    """Actions that fit the request: a 101 only to an upgrade offer; an HTTP/1.0 client cannot
    be sent a body without a length except by closing, which would end its plan early."""
    if kind.startswith("upgrade"):
        return action if action in ("ok", "switch", "surplus") else "ok"
    if action == "switch":
        return "ok"
    if kind.startswith("http10") and action in LENGTHLESS:
        return "ok"
    return action


@st.composite
def planned(draw: st.DrawFn, marker: str, index: int, last: bool) -> Planned:
    kind = "close" if last else draw(st.sampled_from(sorted(KINDS)))
    action = _action(kind, draw(st.sampled_from([*ACTIONS, "switch"])))
    body = draw(st.binary(min_size=1, max_size=40)) if kind in FRAMED else b""
    return Planned(marker, index, kind, action, body)


@st.composite
def client_plans(draw: st.DrawFn, marker: str) -> tuple[list[Planned], list[float]]:
    count = draw(st.integers(1, 4))
    plan = [draw(planned(marker, i, last=i == count)) for i in range(count + 1)]
    cuts = draw(st.lists(st.floats(0.0, 1.0), max_size=3))
    return plan, cuts


# -- the member's scripted answers ------------------------------------------------------------


def answer(request: ReceivedRequest) -> Reply:
    parts = request.path.split("/")
    action = parts[4] if len(parts) == 5 else "ok"
    tag = {"X-Tag": request.path}
    body = f"{request.path}\n".encode()
    head_only = request.method == "HEAD"
    clean = response(200, b"" if head_only else body, tag)
    if head_only:
        clean = clean.replace(b"Content-Length: 0", b"Content-Length: %d" % len(body))
    if action == "surplus":
        return Reply(clean + response(200, INJECTED, {"X-Tag": "injected"}))
    if action == "nobody204":
        return Reply(b"HTTP/1.1 204 No Content\r\nX-Tag: " + request.path.encode()
                     + b"\r\n\r\n" + INJECTED)
    # A member that closes says so: closing a keep-alive connection unannounced after a whole
    # response is the race every proxy loses on a non-idempotent request (RFC 9112 §9.3.1).
    if action == "closedelim":
        return Reply(b"HTTP/1.1 200 OK\r\nConnection: close\r\nX-Tag: " + request.path.encode()
                     + b"\r\n\r\n" + (b"" if head_only else body), close=True)
    if action == "chunked" and not head_only:
        return Reply(b"HTTP/1.1 200 OK\r\nX-Tag: " + request.path.encode()
                     + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    if action == "short":
        cut = response(200, b"" if head_only else body,
                       {**tag, "Content-Length": str(len(body) + 100), "Connection": "close"})
        return Reply(cut, close=True)
    if action == "bighead":
        pad = {f"X-Pad-{i:04d}": "p" * 90 for i in range(700)}
        return Reply(response(200, b"" if head_only else body, {**tag, **pad}))
    if action == "switch":
        return Reply(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "
                     + (request.header("upgrade") or "x").encode() + b"\r\nX-Tag: "
                     + request.path.encode() + b"\r\n\r\n", close=True)
    return Reply(clean)


# -- the oracle ------------------------------------------------------------------------------------


def outcomes(p: Planned) -> set[str]:
    """What the client may receive for a valid request, by the member's action."""
    if p.action == "bighead":
        return {"502"}
    if p.action == "nobody204":
        return {"204"}
    if p.action == "switch":
        return {"101"}
    if p.action == "short" and p.method != "HEAD":
        return {"502", "truncated"}
    return {"tagged"}


def outcome(r: Response, p: Planned) -> str:
    tag = r.header("x-tag")
    if r.status in (101, 200, 204) and tag == p.path:
        return {101: "101", 200: "tagged", 204: "204"}[r.status]
    if r.status >= 400 and tag is None:
        return str(r.status)
    return f"{r.status} tagged {tag}"


def may_reach_member(plan: list[Planned]) -> list[Planned]:
    """Valid requests up to the first that ends the connection or is invalid (a refused
    Upgrade may end it too, so what follows one may or may not arrive)."""
    out = []
    for p in plan:
        if not p.valid:
            break
        out.append(p)
        if p.ends:
            break
    return out


def check_client(plan: list[Planned], data: bytes, closed: bool, other: str) -> list[str]:
    problems: list[str] = []
    if f"/{other}/".encode() in data:
        problems.append(f"bytes of the other client's exchange ({other}) reached this one")
    if INJECTED in data:
        problems.append("a member's surplus bytes reached the client")
    if not closed:
        problems.append("the connection was not closed after the request that ends it")
    split = split_responses(data, [p.method for p in plan], closed)
    responses = split.responses
    may_end = False
    for j, p in enumerate(plan):
        if j >= len(responses):
            if split.rest and p.valid and "truncated" in outcomes(p):
                return problems  # the member cut its answer short: so may the proxy
            if not may_end or split.rest:
                problems.append(f"request {j} ({p.kind}/{p.action}) got no response; then "
                                f"{split.rest[:120]!r} ({split.error})")
            return problems
        got = outcome(responses[j], p)
        if not p.valid:
            if not (400 <= responses[j].status < 500 and got == str(responses[j].status)):
                problems.append(f"invalid request {j} ({p.kind}) answered {got}, not 4xx")
            break
        if got not in outcomes(p):
            problems.append(f"request {j} ({p.kind}/{p.action}) answered {got}, "
                            f"wanted {sorted(outcomes(p))}: {responses[j].body[:100]!r}")
        if p.ends or "close" in (responses[j].header("connection") or "").lower():
            break  # (a proxy may end the connection if it says so, e.g. after a 502)
        may_end = p.kind.startswith("upgrade")
    answered = min(j + 1, len(plan))
    if len(responses) > answered:
        problems.append(f"{len(responses) - answered} response(s) more than requests")
    if split.rest and not (responses and responses[-1].status == 101):
        problems.append(f"bytes after the last response: {split.rest[:120]!r} ({split.error})")
    return problems


def check_member(member: StrictMember, plans: dict[str, list[Planned]]) -> list[str]:
    problems = [f"raw request at the member: {r.method} {r.path} {r.headers}"
                for r in member.raw_requests()]
    problems += [f"member could not parse: {e.error} in {e.raw[:200]!r}" for e in member.errors]
    problems += [f"bytes sent after an Upgrade offer before the member answered: {b[:80]!r}"
                 for _, b in member.early if b]
    allowed = {p.path for plan in plans.values() for p in may_reach_member(plan)}
    # A malformed chunk shows only after the head went out: the member may get the head of
    # such a request, never its end (the proxy must close that member connection).
    problems += [f"member got an aborted {r.path}" for r in member.aborted
                 if r.path not in allowed and r.path.split("/")[3:4] != ["bad_chunk"]]
    ids_by_path: dict[str, set[str]] = {}
    paths_by_id: dict[str, set[str]] = {}
    for r in member.requests:
        rid = r.header("x-request-id") or ""
        if rid.startswith("client"):
            problems.append(f"{r.path} carries the client's request id")
        if r.path.split("/")[3:4] == ["conn_xff"] and r.header("x-forwarded-for") != "127.0.0.1":
            problems.append(f"{r.path}: the client's X-Forwarded-For was kept")
        if r.path not in allowed:
            problems.append(f"member request {r.method} {r.path} is no client's request")
        ids_by_path.setdefault(r.path, set()).add(rid)
        paths_by_id.setdefault(rid, set()).add(r.path)
    problems += [f"{path} reached the member as {len(ids)} requests" for path, ids
                 in ids_by_path.items() if len(ids) > 1]
    problems += [f"request id {rid} served {sorted(paths)}" for rid, paths
                 in paths_by_id.items() if len(paths) > 1]
    return problems


# -- the test ----------------------------------------------------------------------------------


class Stage:
    """The member and the proxy (no dataclass: Hypothesis would print every record)."""

    def __init__(self, member: StrictMember, proxy: RunningProxy) -> None:
        self.member = member
        self.proxy = proxy


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stage() -> AsyncIterator[Stage]:
    member = await start_member(responder=answer)
    proxy = await start_proxy(simple_config([member.address]))
    yield Stage(member, proxy)
    await proxy.close()
    await member.close()


EXAMPLES = itertools.count()


def writes(data: bytes, cuts: list[float]) -> list[bytes]:
    points = sorted({int(c * len(data)) for c in cuts} - {0, len(data)})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


async def run_client(port: int, plan: list[Planned], cuts: list[float]) -> tuple[bytes, bool]:
    data = b"".join(p.wire() for p in plan)
    reply = await send_raw(port, *writes(data, cuts), timeout=TIMEOUT)
    return reply.data, reply.closed


@settings(max_examples=int(os.environ.get("SLB_FUZZ_EXAMPLES", "3000")), deadline=None,
          database=None, report_multiple_bugs=False,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
async def test_no_byte_crosses_exchanges_under_fuzzed_traffic(stage: Stage,
                                                              data: st.DataObject) -> None:
    n = next(EXAMPLES)
    markers = (f"m{n}a", f"m{n}b")
    plans = {m: data.draw(client_plans(m), label=m) for m in markers}
    stage.member.reset()
    port = stage.proxy.port
    results = await asyncio.gather(*(run_client(port, *plans[m]) for m in markers))
    problems = check_member(stage.member, {m: plans[m][0] for m in markers})
    for (mine, other), (received, closed) in zip((markers, markers[::-1]), results, strict=True):
        problems += [f"client {mine}: {p}" for p in check_client(plans[mine][0], received,
                                                                 closed, other)]
    assert not problems, "\n".join(problems)
