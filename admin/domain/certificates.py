"""Certificates as objects of the admin: uploaded once, bound by name, renewed in one step.

Two kinds of store object hold a certificate, so that its private key is write-only everywhere:

- ``certificate`` (versioned, like a virtual server): ``{name, fingerprint, subject,
  not_after}``. It is what the draft, the versions, their diffs and the audit log carry, and
  all they ever show of a certificate. A virtual server binds one by name (``certificate:``).
- ``certificate_key`` (not versioned), named by the leaf's sha256 fingerprint: the PEM chain
  and key, under the store's one write-only field (``rows.SECRET_KEYS``: the audit row keeps
  ``"(set)"``). Content-addressed, so a version keeps meaning what it meant: an old version
  names an old fingerprint, and its material stays in the store for a rollback.

``material`` is how the snapshot builder reads the PEM pair of a fingerprint: only snapshots
for the nodes (and the node's 0600 state file) ever hold the key in clear.

Renewal replaces the chain and key of one certificate: one store update (audited with the
reason, the old and new fingerprint), seen by every virtual server that binds the certificate.
Like any other change it is a draft until activated: the diff shows the fingerprint changing,
activation checks the new certificate covers every domain that uses it, and a rollback brings
the old one back. (Activating by itself would bypass that review and push other pending
drafts with it.)

Every upload is checked with the data plane's own functions (``slb.model.certs``): the key
matches the leaf, the chain is in order, the leaf is not expired.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pydantic import Field, ValidationError

from admin.domain import objects
from admin.domain.errors import (
    Conflict,
    Invalid,
    NotFound,
    bounded_reason,
    require_reason,
    validation_errors,
)
from admin.domain.rows import SECRET_KEYS, Row
from admin.domain.store import Store
from slb.model.certs import CertificateError, describe, expiry_text, inspect_pair

KIND = "certificate"
MATERIAL_KIND = "certificate_key"
SECRET_FIELD = "token"  # the store withholds this field from the audit log
if SECRET_FIELD not in SECRET_KEYS:  # fail at start, never write a key into the audit log
    raise RuntimeError(f"the store no longer withholds {SECRET_FIELD!r} from its audit log")
PEM_MAX = 64 * 1024  # a chain of a few certificates is far below this
EXPIRING_SOON = 30 * 86400  # seconds: what the overview warns about

# the PEM chain and key of a fingerprint, or None when the store has no such material
Material = Callable[[str], tuple[str, str] | None]


class Upload(objects.Strict):
    """What an operator sends: a name (on create), the chain (leaf first) and its key."""

    name: objects.Name
    certificate_pem: str = Field(min_length=1, max_length=PEM_MAX)
    key_pem: str = Field(min_length=1, max_length=PEM_MAX, repr=False)


def _parse(body: Any) -> Upload:
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object", ["body: expected an object"])
    try:
        upload = Upload.model_validate(body)
    except ValidationError as exc:
        # pydantic's messages quote the input: never the key's
        every = validation_errors(exc)
        errors = [e for e in every if not e.startswith("key_pem")]
        if len(errors) < len(every):
            errors.append("key_pem: required, a PEM private key of at most 64 KiB")
        raise Invalid("invalid certificate", errors) from None
    return upload


def _checked(upload: Upload, now: float) -> dict[str, Any]:
    """The public record of an upload; Invalid unless its chain and key can serve."""
    try:
        info = inspect_pair(upload.certificate_pem.encode(), upload.key_pem.encode())
    except CertificateError as exc:
        raise Invalid("invalid certificate", [f"{exc.field}_pem: {exc.message}"]) from None
    if info.not_after <= now:
        raise Invalid("invalid certificate", [f"certificate_pem: {info.subject} expired on "
                                              f"{expiry_text(info.not_after)}"])
    return {"name": upload.name, "fingerprint": info.fingerprint, "subject": info.subject,
            "not_after": info.not_after}


def _keep_material(store: Store, upload: Upload, fingerprint: str, who: str,
                   reason: str) -> None:
    if store.find(MATERIAL_KIND, fingerprint) is None:
        secret = {"certificate_pem": upload.certificate_pem, "key_pem": upload.key_pem}
        store.create(MATERIAL_KIND, fingerprint, {"name": fingerprint, SECRET_FIELD: secret},
                     who, reason)


def upload(store: Store, body: Any, who: str, reason: str, now: float | None = None
           ) -> dict[str, Any]:
    """A new certificate (a draft until activated, like every object)."""
    reason = bounded_reason(reason)
    parsed = _parse(body)
    record = _checked(parsed, time.time() if now is None else now)
    if store.find(KIND, parsed.name) is not None:
        raise Conflict(f"a certificate named {parsed.name!r} exists: renew it instead")
    _keep_material(store, parsed, record["fingerprint"], who, reason)
    return shown(store, store.create(KIND, parsed.name, record, who, reason))


def renew(store: Store, name: str, body: Any, row_version: int | None, who: str, reason: str,
          now: float | None = None) -> dict[str, Any]:
    """Replace the chain and key of ``name`` for every virtual server that binds it: one
    audited update, with a reason; the nodes get it at the next activation."""
    reason = require_reason(reason)
    if row_version is None:
        raise Invalid("row_version is required to renew", [
            "row_version: required (the version your renewal was made from)"])
    if isinstance(body, dict) and body.get("name", name) != name:
        raise Invalid("renaming is not supported", ["name: must stay " + repr(name)])
    store.get(KIND, name)  # NotFound before any material is kept
    parsed = _parse({**body, "name": name} if isinstance(body, dict) else body)
    record = _checked(parsed, time.time() if now is None else now)
    uncovered = _uncovered(store, name, parsed)
    if uncovered:
        raise Invalid("the new certificate does not cover every domain that uses it",
                      uncovered)
    _keep_material(store, parsed, record["fingerprint"], who, reason)
    return shown(store, store.update(KIND, name, record, row_version, who, reason))


def _uncovered(store: Store, name: str, upload: Upload) -> list[str]:
    """The domains of the draft virtual servers binding ``name`` that ``upload`` leaves out
    (activation would refuse them: said at once, before anything is stored)."""
    info = describe(upload.certificate_pem.encode())
    return [f"virtual_server/{r.name}.domains: {domain} is not covered by the new "
            f"certificate (it names {', '.join(info.names) or 'nothing'})"
            for r in store.objects("virtual_server") if r.body.get("certificate") == name
            for domain in r.body.get("domains", []) if not info.covers(domain)]


def material(store: Store) -> Material:
    """The snapshot builder's way to the PEM pair of a fingerprint."""
    def find(fingerprint: str) -> tuple[str, str] | None:
        row = store.find(MATERIAL_KIND, fingerprint)
        if row is None:
            return None
        secret = row.body[SECRET_FIELD]
        return secret["certificate_pem"], secret["key_pem"]
    return find


def users(store: Store, name: str) -> list[str]:
    """The draft virtual servers that bind certificate ``name``."""
    return sorted(r.name for r in store.objects("virtual_server")
                  if r.body.get("certificate") == name)


def shown(store: Store, row: Row) -> dict[str, Any]:
    """A certificate as answers and pages show it: never its key."""
    body = row.to_json()
    found = material(store)(body["fingerprint"])
    if found is not None:
        info = describe(found[0].encode())
        body["names"], body["issuer"] = list(info.names), info.issuer
    body["not_after_text"] = expiry_text(body["not_after"])
    body["virtual_servers"] = users(store, row.name)
    return body


def listed(store: Store) -> list[dict[str, Any]]:
    return [shown(store, r) for r in store.objects(KIND)]


def get(store: Store, name: str) -> dict[str, Any]:
    row = store.find(KIND, name)
    if row is None:
        raise NotFound(f"no certificate named {name!r}")
    return shown(store, row)


def expiring(store: Store, within: float = EXPIRING_SOON, now: float | None = None
             ) -> list[dict[str, Any]]:
    """Certificates whose leaf ends within ``within`` seconds (or has ended), soonest first."""
    limit = (time.time() if now is None else now) + within
    return sorted((c for c in listed(store) if c["not_after"] <= limit),
                  key=lambda c: c["not_after"])


def server_tls(content: dict[str, list[dict[str, Any]]], server: dict[str, Any],
               find: Material | None) -> dict[str, str] | None:
    """The ``tls`` of a virtual server draft in a snapshot: its bound certificate inline.

    None without a binding, or without ``find`` (URL resolution needs no key). A binding whose
    material is missing yields an empty ``tls``, which the data plane's schema refuses with
    the field path."""
    name = server.get("certificate")
    if name is None or find is None:
        return None
    record = next((c for c in content.get(KIND, []) if c["name"] == name), None)
    pair = None if record is None else find(record["fingerprint"])
    if pair is None:
        return {}
    return {"certificate_pem": pair[0], "key_pem": pair[1]}
