"""Certificates made by the tests (trustme), never committed, and TLS clients that trust them.

``TestPki`` is one test CA; ``issue`` writes a leaf's chain and key as PEM files under a
temporary directory and returns their paths, as an operator's ``tls.certificate`` and
``tls.key`` name them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509

from tests.support.client import Connection


@dataclass
class Pair:
    certificate: str
    key: str

    def tls(self) -> dict[str, str]:
        """The ``tls`` entry of a virtual server serving this pair from its files."""
        return {"certificate": self.certificate, "key": self.key}

    def inline(self) -> dict[str, str]:
        """The same, inline, as a pushed snapshot carries it."""
        return {"certificate_pem": Path(self.certificate).read_text(),
                "key_pem": Path(self.key).read_text()}


class TestPki:
    __test__ = False  # (not a test class)

    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA()
        self.directory = directory
        self.issued = 0
        self.ca_file = str(directory / "ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)

    def issue(self, *names: str, days: float = 90, rsa: bool = False,
              expired: bool = False) -> Pair:
        now = datetime.datetime.now(datetime.UTC)
        if expired:
            not_before, not_after = now - datetime.timedelta(days=30), now - datetime.timedelta(
                days=1)
        else:
            not_before, not_after = now - datetime.timedelta(hours=1), now + datetime.timedelta(
                days=days)
        leaf = self.ca.issue_cert(*names, not_before=not_before, not_after=not_after,
                                  key_type=trustme.KeyType.RSA if rsa else trustme.KeyType.ECDSA)
        self.issued += 1
        cert = self.directory / f"leaf{self.issued}.pem"
        key = self.directory / f"leaf{self.issued}-key.pem"
        cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key))
        return Pair(str(cert), str(key))

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        context.set_alpn_protocols(["http/1.1"])
        return context


async def open_tls(port: int, context: ssl.SSLContext, server_name: str | None,
                   timeout: float = 10.0) -> Connection:
    """A TLS connection to the proxy; ``server_name`` None sends no SNI (and skips the name
    check)."""
    if server_name is None:
        context.check_hostname = False
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname=server_name or "")
    return Connection(reader, writer)


@contextlib.asynccontextmanager
async def tls_connection(port: int, context: ssl.SSLContext, server_name: str | None
                         ) -> AsyncIterator[Connection]:
    """``open_tls``'s connection, closed on leaving the block (also when a check fails)."""
    conn = await open_tls(port, context, server_name)
    try:
        yield conn
    finally:
        await conn.close()


def peer_names(conn: Connection) -> list[str]:
    """The DNS names of the certificate the proxy presented on ``conn``."""
    der = conn.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    san = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
        x509.SubjectAlternativeName)
    return list(san.value.get_values_for_type(x509.DNSName))
