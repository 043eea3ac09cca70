"""The double's ``/v1/kv/`` answers as Consul's does, through py-consul (asyncio and sync) and
raw HTTP: shapes, listings, check-and-set, deletes, blocking reads, errors and ACLs.

The same calls run unchanged against ``consul agent -dev`` (see tests/consul_double/README.md);
only the index values differ.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time

import consul
import consul.aio
import pytest

from tests.consul_double import ConsulDouble
from tests.unit.test_consul_double import client, raw


# ------------------------------------------------------------------------------------ shapes
async def test_a_key_reads_back_with_base64_value_flags_and_indexes(double: ConsulDouble) -> None:
    async with client(double) as c:
        assert await c.kv.put("admin/config", b"\x00\xffbinary", flags=42) is True
        index, entry = await c.kv.get("admin/config")

    assert entry["Value"] == b"\x00\xffbinary" and entry["Flags"] == 42
    assert entry["Key"] == "admin/config" and entry["LockIndex"] == 0
    assert entry["CreateIndex"] == entry["ModifyIndex"] == int(index)
    assert "Session" not in entry  # omitted when unlocked, as Go's omitempty does

    status, headers, body = await raw(double, "GET", "/v1/kv/admin/config")
    assert status == 200 and headers["content-type"] == "application/json"
    assert headers["x-consul-index"] == index and headers["x-consul-knownleader"] == "true"
    assert "x-consul-lastcontact" in headers
    [wire] = json.loads(body)
    assert base64.b64decode(wire["Value"]) == b"\x00\xffbinary"

    status, _, body = await raw(double, "GET", "/v1/kv/admin/config?raw")
    assert (status, body) == (200, b"\x00\xffbinary")


async def test_an_empty_value_reads_back_as_null(double: ConsulDouble) -> None:
    async with client(double) as c:
        assert await c.kv.put("flag", None)
        _, entry = await c.kv.get("flag")
    assert entry["Value"] is None


async def test_a_missing_key_is_404_with_the_index_headers(double: ConsulDouble) -> None:
    async with client(double) as c:
        await c.kv.put("other", "x")
        index, entry = await c.kv.get("missing")
    assert entry is None and int(index) >= 1
    status, headers, body = await raw(double, "GET", "/v1/kv/missing")
    assert (status, body) == (404, b"")
    assert headers["x-consul-index"] == index and headers["x-consul-knownleader"] == "true"


async def test_recurse_and_keys_list_a_prefix_in_byte_order(double: ConsulDouble) -> None:
    async with client(double) as c:
        for key in ("app/b", "app/a/2", "app/a/1", "apple", "zeta"):
            await c.kv.put(key, key)
        _, entries = await c.kv.get("app/", recurse=True)
        assert [e["Key"] for e in entries] == ["app/a/1", "app/a/2", "app/b"]
        _, keys = await c.kv.get("app", keys=True)
        assert keys == ["app/a/1", "app/a/2", "app/b", "apple"]
        _, keys = await c.kv.get("app/", keys=True, separator="/")
        assert keys == ["app/a/", "app/b"]  # one entry per "directory"
        _, keys = await c.kv.get("", keys=True, separator="/")
        assert keys == ["app/", "apple", "zeta"]
        # An empty prefix listing is a 404; the root's key list is [] instead.
        assert (await c.kv.get("nope/", recurse=True))[1] is None
        await c.kv.delete("", recurse=True)
        assert (await c.kv.get("", keys=True))[1] == []


# ------------------------------------------------------------------------------------ writes
async def test_cas_zero_creates_only_and_cas_n_needs_the_current_modify_index(
        double: ConsulDouble) -> None:
    async with client(double) as c:
        assert await c.kv.put("leader", "a", cas=0) is True
        assert await c.kv.put("leader", "b", cas=0) is False  # exists already
        _, entry = await c.kv.get("leader")
        stale = entry["ModifyIndex"]
        assert await c.kv.put("leader", "c", cas=stale) is True
        assert await c.kv.put("leader", "d", cas=stale) is False  # someone wrote since
        _, entry = await c.kv.get("leader")
        assert entry["Value"] == b"c" and entry["CreateIndex"] < entry["ModifyIndex"]
        assert await c.kv.put("absent", "x", cas=5) is False  # cas=N on a missing key


async def test_an_identical_write_changes_no_index(double: ConsulDouble) -> None:
    async with client(double) as c:
        await c.kv.put("k", "v")
        _, before = await c.kv.get("k")
        assert await c.kv.put("k", "v") is True
        _, after = await c.kv.get("k")
    assert after["ModifyIndex"] == before["ModifyIndex"]


async def test_delete_with_cas_and_recurse(double: ConsulDouble) -> None:
    async with client(double) as c:
        await c.kv.put("a/1", "x")
        await c.kv.put("a/2", "y")
        await c.kv.put("b", "z")
        _, entry = await c.kv.get("a/1")
        assert await c.kv.delete("a/1", cas=entry["ModifyIndex"] + 100) is False
        assert await c.kv.delete("a/1", cas=entry["ModifyIndex"]) is True
        assert await c.kv.delete("a/1", cas=1) is True  # Consul: a gone key "deletes" fine
        assert await c.kv.delete("a/", recurse=True) is True
        assert (await c.kv.get("a/", recurse=True))[1] is None
        assert (await c.kv.get("b"))[1]["Value"] == b"z"


async def test_a_prefix_index_does_not_go_back_when_a_key_under_it_is_deleted(
        double: ConsulDouble) -> None:
    async with client(double) as c:
        await c.kv.put("svc/a", "1")
        await c.kv.put("svc/b", "2")
        before, _ = await c.kv.get("svc/", recurse=True)
        await c.kv.delete("svc/b")
        after, entries = await c.kv.get("svc/", recurse=True)
    assert [e["Key"] for e in entries] == ["svc/a"]
    assert int(after) > int(before)  # the tombstone carries the delete's index


async def test_bad_requests_get_consuls_errors(double: ConsulDouble) -> None:
    cases = [
        ("PUT", "/v1/kv/k?cas=0&acquire=x", 400, b"Conflicting flags: cas|acquire|release"),
        ("DELETE", "/v1/kv/k?recurse&cas=1", 400, b"Conflicting flags: recurse|cas"),
        ("PUT", "/v1/kv/", 400, b"Missing key name"),
        ("GET", "/v1/kv/", 400, b"Missing key name"),
        ("DELETE", "/v1/kv/", 400, b"Missing key name"),
        ("PUT", "/v1/kv/k?cas=x", 500, b'strconv.ParseUint: parsing "x": invalid syntax'),
        ("PUT", "/v1/kv/k?acquire=", 500, b"missing session"),
        ("PUT", "/v1/kv/k?acquire=nope", 500, b'invalid session "nope"'),
        ("POST", "/v1/kv/k", 405, b"method POST not allowed"),
        ("GET", "/v1/kv/k?index=1&wait=10", 400, b"Invalid wait time"),
    ]
    for method, target, status, body in cases:
        assert (await raw(double, method, target))[::2] == (status, body), target
    status, _, body = await raw(double, "PUT", "/v1/kv/big", body=b"x" * (512 * 1024 + 1))
    assert status == 413 and b"too large" in body


# ------------------------------------------------------------------------------------ blocking
async def test_a_blocking_read_returns_when_its_key_changes_not_for_other_keys(
        double: ConsulDouble) -> None:
    async with client(double) as c:
        await c.kv.put("watched", "1")
        index, _ = await c.kv.get("watched")
        started = time.monotonic()
        watch = asyncio.create_task(c.kv.get("watched", index=index, wait="0.5s"))
        await c.kv.put("unrelated", "x")
        same, entry = await watch
        assert same == index and entry["Value"] == b"1"  # held for its wait, unchanged
        assert time.monotonic() - started >= 0.5

        watch = asyncio.create_task(c.kv.get("watched", index=index, wait="10s"))
        await c.kv.put("watched", "2")
        new, entry = await asyncio.wait_for(watch, 5)
    assert int(new) > int(index) and entry["Value"] == b"2"


async def test_a_blocking_prefix_read_wakes_on_a_delete_under_the_prefix(
        double: ConsulDouble) -> None:
    async with client(double) as c:
        await c.kv.put("nodes/n1", "up")
        await c.kv.put("nodes/n2", "up")
        index, _ = await c.kv.get("nodes/", recurse=True)
        watch = asyncio.create_task(c.kv.get("nodes/", recurse=True, index=index, wait="10s"))
        await c.kv.delete("nodes/n2")
        new, entries = await asyncio.wait_for(watch, 5)
    assert int(new) > int(index) and [e["Key"] for e in entries] == ["nodes/n1"]


async def test_a_blocking_read_on_a_missing_key_returns_when_it_is_created(
        double: ConsulDouble) -> None:
    async with client(double) as c:
        index, entry = await c.kv.get("later")
        assert entry is None
        watch = asyncio.create_task(c.kv.get("later", index=index, wait="10s"))
        await c.kv.put("later", "here")
        _, entry = await asyncio.wait_for(watch, 5)
    assert entry["Value"] == b"here"


# ------------------------------------------------------------------------------------ clients
async def test_the_synchronous_client_works_too(double: ConsulDouble) -> None:
    def use_sync_client() -> tuple[bool, bytes, bool, list[str]]:
        c = consul.Consul(host=double.host, port=double.port)
        put = c.kv.put("sync/key", "value")
        _, entry = c.kv.get("sync/key")
        deleted = c.kv.delete("sync/key")
        _, keys = c.kv.get("", keys=True)
        return put, entry["Value"], deleted, keys

    assert await asyncio.to_thread(use_sync_client) == (True, b"value", True, [])


async def test_acls_refuse_anonymous_reads_and_read_only_writes() -> None:
    d = await ConsulDouble.start(acl_token="root", read_tokens=["reader"])
    try:
        async with client(d, token="root") as admin, client(d) as anonymous, \
                client(d, token="reader") as reader:
            assert await admin.kv.put("secret/a", "1")
            with pytest.raises(consul.ACLPermissionDenied, match="key:read"):
                await anonymous.kv.get("secret/a")
            assert (await anonymous.kv.get("secret/", recurse=True))[1] is None  # filtered
            with pytest.raises(consul.ACLPermissionDenied):
                await anonymous.kv.put("secret/a", "2")
            assert (await reader.kv.get("secret/a"))[1]["Value"] == b"1"
            with pytest.raises(consul.ACLPermissionDenied):
                await reader.kv.put("secret/a", "2")
        status, _, body = await raw(d, "GET", "/v1/kv/secret/a",
                                    headers={"X-Consul-Token": "wrong"})
        assert (status, body) == (403, b"ACL not found")
    finally:
        await d.close()
