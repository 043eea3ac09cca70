"""Certificates: read, described and checked at load time, for the proxy and the admin alike.

A virtual server's ``tls`` names a PEM chain (leaf first) and its private key, as files on the
node or inline in a pushed snapshot. ``read_pair`` returns the PEM bytes of either form;
``inspect_pair`` parses them with the ``cryptography`` package (never by hand) and returns a
``CertificateInfo`` (subject, DNS names, issuer, not-after, fingerprint), or raises
``CertificateError`` naming the field at fault: a chain out of order, a key that does not
belong to the leaf, PEM that is not PEM.

``tls_problems`` is what a configuration must pass before anything of it is applied (`slb
check` runs the same): every file readable, every key matching, no certificate expired, every
name in a TLS virtual server's ``domains`` covered by its own certificate (the SNI callback
chooses the certificate by those domains, so a name its certificate does not cover would fail
in every browser), and no address served both with and without TLS. Certificates that expire
within ``EXPIRY_WARNING`` come back as warnings, which never stop a load.

Nothing here runs per request: the proxy compiles SSL contexts from the PEM bytes once per
apply (``slb.proxy.tls``).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from slb.model.hosts import wildcard_suffix

if TYPE_CHECKING:
    from slb.model.schema import Config, ServerTls

Problem = tuple[tuple[str | int, ...], str]  # (slb.model.parse's, which imports this module)

EXPIRY_WARNING = 14 * 86400  # seconds: a certificate this close to its end is reported


class CertificateError(ValueError):
    """A certificate or key that cannot serve; ``field`` is ``certificate`` or ``key``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    subject: str  # the leaf's subject, RFC 4514 form
    names: tuple[str, ...]  # the leaf's DNS names (subjectAltName), lowercased
    issuer: str
    not_after: float  # Unix time
    fingerprint: str  # sha256 of the leaf, hex

    def covers(self, domain: str) -> bool:
        """Whether a client asking for ``domain`` (a name or ``*.suffix``) accepts this leaf.

        RFC 6125 §6.4.3: a wildcard stands for exactly one leftmost label.
        """
        domain = domain.lower()
        if domain in self.names:
            return True
        if wildcard_suffix(domain) is not None:
            return False  # a wildcard domain needs the same wildcard in the certificate
        first, dot, rest = domain.partition(".")
        return bool(dot and first) and f"*.{rest}" in self.names


def read_pair(tls: ServerTls) -> tuple[bytes, bytes]:
    """The PEM bytes of ``tls``'s chain and key, from its files or inline."""
    if tls.certificate_pem is not None and tls.key_pem is not None:
        return tls.certificate_pem.encode(), tls.key_pem.encode()
    return (_read("certificate", tls.certificate or ""), _read("key", tls.key or ""))


def _read(field: str, path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise CertificateError(field, f"cannot read {path}: {exc.strerror or exc}") from None


def inspect_pair(cert_pem: bytes, key_pem: bytes) -> CertificateInfo:
    """Parse a chain and its key; raises CertificateError unless they can serve together."""
    chain = _load_chain(cert_pem)
    leaf = chain[0]
    for position, (cert, issuer) in enumerate(itertools.pairwise(chain)):
        if cert.issuer != issuer.subject:
            raise CertificateError(
                "certificate", f"the chain is out of order: certificate {position + 1} is not "
                f"issued by certificate {position + 2} (leaf first, then its issuers)")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        reason = "it is encrypted" if isinstance(exc, TypeError) else "not a PEM private key"
        raise CertificateError("key", f"unreadable private key: {reason}") from None
    if _public_der(key.public_key()) != _public_der(leaf.public_key()):
        raise CertificateError("key", "the key does not match the certificate")
    return describe_leaf(leaf)


def describe(cert_pem: bytes) -> CertificateInfo:
    """The leaf of a PEM chain, described (no key needed)."""
    return describe_leaf(_load_chain(cert_pem)[0])


def describe_leaf(leaf: x509.Certificate) -> CertificateInfo:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(n.lower() for n in san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        # RFC 6125 §6.4.4: the CN only counts when there is no subjectAltName
        names = tuple(str(a.value).lower()
                      for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME))
    return CertificateInfo(
        subject=leaf.subject.rfc4514_string(), names=names,
        issuer=leaf.issuer.rfc4514_string(),
        not_after=leaf.not_valid_after_utc.timestamp(),
        fingerprint=leaf.fingerprint(hashes.SHA256()).hex())


def _load_chain(cert_pem: bytes) -> list[x509.Certificate]:
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise CertificateError("certificate", "not a PEM certificate chain") from None
    return chain


def _public_der(key: object) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined, no-any-return]
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def expiry_text(not_after: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(not_after))


def tls_problems(config: Config, now: float | None = None
                 ) -> tuple[list[Problem], list[Problem]]:
    """Errors and warnings of a configuration's TLS (see the module docstring)."""
    now = time.time() if now is None else now
    errors: list[Problem] = []
    warnings: list[Problem] = []
    kinds: dict[str, tuple[bool, str]] = {}  # listener -> (TLS, first virtual server)
    for i, vs in enumerate(config.virtual_servers):
        is_tls = vs.tls is not None
        first = kinds.setdefault(vs.listen, (is_tls, vs.name))
        if first[0] != is_tls:
            errors.append((("virtual_servers", i, "tls"),
                           f"{vs.listen} is served {'with' if first[0] else 'without'} TLS by "
                           f"{first[1]!r}: one address cannot be both"))
        if vs.tls is None:
            continue
        where = ("virtual_servers", i, "tls")
        try:
            info = inspect_pair(*read_pair(vs.tls))
        except CertificateError as exc:
            field = exc.field if vs.tls.certificate is not None else f"{exc.field}_pem"
            errors.append(((*where, field), exc.message))
            continue
        field = "certificate" if vs.tls.certificate is not None else "certificate_pem"
        if info.not_after <= now:
            errors.append(((*where, field),
                           f"certificate {info.subject} expired on {expiry_text(info.not_after)}"))
        elif info.not_after - now < EXPIRY_WARNING:
            warnings.append(((*where, field), f"certificate {info.subject} expires on "
                             f"{expiry_text(info.not_after)}"))
        for j, domain in enumerate(vs.domains):
            if not info.covers(domain):
                errors.append((("virtual_servers", i, "domains", j),
                               f"{domain} is not covered by the certificate of {vs.name!r} "
                               f"(it names {', '.join(info.names) or 'nothing'})"))
    for i, group in enumerate(config.groups):
        ca = group.upstream_tls.ca
        if group.upstream_tls.enabled and ca is not None:
            try:
                x509.load_pem_x509_certificates(_read("ca", ca))
            except CertificateError as exc:
                errors.append((("groups", i, "upstream_tls", "ca"), exc.message))
            except ValueError:
                errors.append((("groups", i, "upstream_tls", "ca"),
                               f"{ca} holds no PEM certificate"))
    return errors, warnings
