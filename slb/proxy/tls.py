"""TLS: client listeners that terminate it, and member connections that originate it.

Theory of operation. The transport does the crypto: a TLS listener is an asyncio server made
with an ``ssl.SSLContext`` (uvloop's SSL protocol, in C and Cython), so once a handshake is done
a request on a TLS connection costs the proxy no more Python than one on a plain connection.
Everything here runs per handshake or per apply, never per request.

Two kinds of context, so that a reload changes certificates without touching the listener:

- A *listener context* (``listener_context``) lives as long as its asyncio server and carries
  the node-wide settings (versions, ciphers, ALPN ``http/1.1``). It serves no certificate of
  its own: its SNI callback looks up the *current* runtime's ``ListenerCertificates`` at
  handshake time and moves the handshake to that virtual server's context. Handshakes after a
  swap see the new certificates; established connections keep the ones they were made with.
- A ``CertificateContext`` per distinct certificate of a listener, compiled with the runtime.
  It carries ``served``: the names of the virtual servers that present this certificate, which
  the client protocol keeps per connection to answer 421 to a Host of another certificate.

The certificate is chosen by SNI with the same rules and code as Host routing (exact domain,
then the longest wildcard, then the listener's default virtual server), so a name routes where
its certificate was chosen; a client without SNI gets the default's.

Handshake failures are counted by reason through ``sslobject_class``: each handshake runs in a
``_Handshake`` (an ``ssl.SSLObject``) that records how it ended; one that never ended (the
client stalled until ``handshake_timeout`` or went away) is counted when it is dropped.

Certificates given inline (pushed snapshots) reach OpenSSL through an anonymous memory file
(``memfd``): a private key is never written to disk by the proxy.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from slb.errors import ConfigError
from slb.model import CertificateError, Config, TlsSettings, UpstreamTls, describe, read_pair
from slb.proxy.head import PROTO_HTTPS

if TYPE_CHECKING:
    from slb.proxy.router import RouteTable

ALPN = ["http/1.1"]
_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}

# OpenSSL's reason for a failed handshake -> the metric's reason label
_REASONS = {
    "HTTP_REQUEST": "plain_http", "HTTPS_PROXY_REQUEST": "plain_http",
    "UNSUPPORTED_PROTOCOL": "protocol_version", "VERSION_TOO_LOW": "protocol_version",
    "TLSV1_ALERT_PROTOCOL_VERSION": "protocol_version", "WRONG_SSL_VERSION": "protocol_version",
    "NO_SHARED_CIPHER": "no_shared_cipher",
    "WRONG_VERSION_NUMBER": "malformed", "UNKNOWN_PROTOCOL": "malformed",
    "PACKET_LENGTH_TOO_LONG": "malformed", "RECORD_LENGTH_MISMATCH": "malformed",
    "BAD_PACKET_LENGTH": "malformed", "LENGTH_MISMATCH": "malformed",
}
TIMEOUT = "timeout"  # no handshake within handshake_timeout
CLOSED = "closed"  # the client went away before finishing


def failure_reason(exc: ssl.SSLError) -> str:
    reason = exc.reason or ""
    if reason in _REASONS:
        return _REASONS[reason]
    if "ALERT" in reason:
        return "client_alert"  # the client refused us (commonly our certificate)
    return "other"


class CertificateContext(ssl.SSLContext):
    """A server context holding one certificate; ``served`` names its virtual servers."""

    served: frozenset[str] = frozenset()


@dataclass(slots=True, frozen=True)
class ListenerCertificates:
    """The certificates of one TLS listener in one runtime, chosen by SNI."""

    table: RouteTable
    contexts: dict[str, CertificateContext]  # by virtual server name

    def choose(self, server_name: str | None) -> CertificateContext:
        table = self.table
        vhost = table.virtual_host(server_name) if server_name else table.default
        if vhost is None:
            vhost = table.default
        assert vhost is not None  # (every listener has a default virtual server)
        return self.contexts[vhost.name]


def _server_context(settings: TlsSettings, cls: type[ssl.SSLContext]) -> Any:
    # OpenSSL takes versions and ciphers from the listener context, but ALPN from the context
    # the SNI callback switches to: both are made here, alike.
    context = cls(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[settings.min_version]
    if settings.ciphers is not None:
        context.set_ciphers(settings.ciphers)
    context.set_alpn_protocols(ALPN)
    # no TLS session cache across workers: tickets keep resumption stateless (nginx default)
    return context


def established(tls: ssl.SSLObject) -> tuple[bytes, str, frozenset[str]]:
    """What a client connection keeps of its handshake: the X-Forwarded-Proto field, the
    version for the access log, and the virtual servers its certificate speaks for (421)."""
    return (PROTO_HTTPS, tls.version() or "-",
            getattr(tls.context, "served", frozenset()))


def load_certificates(config: Config) -> dict[str, dict[str, CertificateContext]]:
    """Per TLS listener, the context of each virtual server; ConfigError if one cannot load.

    Virtual servers with the same chain and key share one context, so ``served`` says which
    virtual servers one certificate answers for.
    """
    by_pair: dict[tuple[str, bytes, bytes], list[str]] = {}
    for vs in config.virtual_servers:
        if vs.tls is None:
            continue
        try:
            cert_pem, key_pem = read_pair(vs.tls)
        except CertificateError as exc:
            raise ConfigError([f"virtual server {vs.name!r}: {exc.message}"]) from None
        by_pair.setdefault((vs.listen, cert_pem, key_pem), []).append(vs.name)
    listeners: dict[str, dict[str, CertificateContext]] = {}
    for (listen, cert_pem, key_pem), names in by_pair.items():
        context: CertificateContext = _server_context(config.tls, CertificateContext)
        try:
            load_pem_pair(context, cert_pem, key_pem)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError([f"virtual server {names[0]!r}: the certificate cannot be "
                               f"loaded: {exc}"]) from None
        context.served = frozenset(names)
        for name in names:
            listeners.setdefault(listen, {})[name] = context
    return listeners


def load_pem_pair(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """``load_cert_chain`` from bytes: OpenSSL reads files, so give it memory files."""
    cert_fd = _memory_file("certificate", cert_pem)
    key_fd = _memory_file("key", key_pem)
    try:
        context.load_cert_chain(f"/proc/self/fd/{cert_fd}", f"/proc/self/fd/{key_fd}")
    finally:
        os.close(cert_fd)
        os.close(key_fd)


def _memory_file(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.write(fd, data)
    return fd


def listener_context(settings: TlsSettings,
                     certificates: Callable[[], ListenerCertificates | None],
                     count_failure: Callable[[str], None],
                     count_handshake: Callable[[str], None]) -> ssl.SSLContext:
    """The context a TLS listener is served with (see the module docstring).

    ``certificates`` returns the current runtime's certificates of this listener.
    """
    context: ssl.SSLContext = _server_context(settings, ssl.SSLContext)

    def choose(sslobj: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> int | None:
        current = certificates()
        if current is None:  # (the listener is closing: it serves no certificate any more)
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR  # type: ignore[attr-defined, no-any-return]
        sslobj.context = current.choose(server_name)
        return None

    context.sni_callback = choose  # type: ignore[assignment]
    context.sslobject_class = _handshake_class(count_failure, count_handshake,
                                               settings.handshake_timeout)
    return context


def _handshake_class(count_failure: Callable[[str], None],
                     count_handshake: Callable[[str], None],
                     timeout: float) -> type[ssl.SSLObject]:
    class _Handshake(ssl.SSLObject):
        """An SSLObject that says how its handshake ended (per handshake, not per read)."""

        _started = 0.0
        _ended = False

        def do_handshake(self) -> None:
            if not self._started:
                self._started = time.monotonic()
            try:
                super().do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise
            except ssl.SSLError as exc:
                self._ended = True
                count_failure(failure_reason(exc))
                raise
            self._ended = True
            count_handshake(self.version() or "unknown")

        def __del__(self) -> None:
            if self._started and not self._ended:
                elapsed = time.monotonic() - self._started
                count_failure(TIMEOUT if elapsed >= timeout * 0.99 else CLOSED)

    return _Handshake


def certificate_expiry(config: Config) -> list[tuple[str, str, float]]:
    """``(virtual_server, subject, not_after)`` of every certificate ``config`` serves."""
    rows = []
    for vs in config.virtual_servers:
        if vs.tls is None:
            continue
        try:
            info = describe(read_pair(vs.tls)[0])
        except CertificateError:
            continue  # (checked at load: a file gone since then has nothing to report)
        rows.append((vs.name, info.subject, info.not_after))
    return rows


def upstream_context(settings: UpstreamTls) -> ssl.SSLContext:
    """The client context of a group's member connections; ConfigError if ``ca`` is bad."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if settings.ca is not None:
        try:
            context.load_verify_locations(cafile=settings.ca)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError([f"upstream_tls.ca {settings.ca}: {exc}"]) from None
    if not settings.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(ALPN)
    return context


def compile_upstream(config: Config) -> dict[str, tuple[ssl.SSLContext, str | None]]:
    """Per group with ``upstream_tls.enabled``: its context and the server name to send."""
    return {group.name: (upstream_context(group.upstream_tls), group.upstream_tls.server_name)
            for group in config.groups if group.upstream_tls.enabled}
