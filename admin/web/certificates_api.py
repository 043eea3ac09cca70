"""The REST API of certificates (``admin.domain.certificates``): upload, show, renew, delete.

Fixed paths under ``/api/v1/certificates``; ``admin.app`` includes this router before the
generic ``/{plural}`` collections. Answers never carry a private key: an upload or renewal
answers with the certificate as shown (subject, names, issuer, not-after, fingerprint, the
virtual servers binding it). Uploading and renewing are drafts, taking effect at activation.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from admin.domain import certificates
from admin.domain.service import AdminService
from admin.settings import ApiToken
from admin.web.api import Admin, Service, Viewer, object_body

router = APIRouter(prefix="/api/v1/certificates")


@router.get("")
async def list_certificates(token: ApiToken = Viewer, service: AdminService = Service
                            ) -> dict[str, Any]:
    return {"items": certificates.listed(service.store)}


@router.post("", status_code=201)
async def upload_certificate(request: Request, token: ApiToken = Admin,
                             service: AdminService = Service) -> dict[str, Any]:
    body, _, reason = await object_body(request)
    return certificates.upload(service.store, body, token.name, reason)


@router.get("/{name}")
async def get_certificate(name: str, token: ApiToken = Viewer,
                          service: AdminService = Service) -> dict[str, Any]:
    return certificates.get(service.store, name)


@router.put("/{name}")
async def renew_certificate(name: str, request: Request, token: ApiToken = Admin,
                            service: AdminService = Service) -> dict[str, Any]:
    """Renewal: a new chain and key for every virtual server binding ``name`` (a draft)."""
    body, row_version, reason = await object_body(request)
    return certificates.renew(service.store, name, body, row_version, token.name, reason)


@router.delete("/{name}", status_code=204)
async def delete_certificate(name: str, row_version: int | None = None, reason: str = "",
                             token: ApiToken = Admin, service: AdminService = Service
                             ) -> Response:
    """Refused (409) while a virtual server binds it, naming them."""
    service.delete(certificates.KIND, name, row_version, token.name, reason)
    return Response(status_code=204)
