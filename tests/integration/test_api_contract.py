"""The admin API keeps the contract its OpenAPI document states (schemathesis, property-based).

The document (``/openapi.json``, completed by ``admin.web.openapi``) is loaded from the app
itself and every operation is called with generated input, in-process over ASGI against a real
service and a temporary SQLite store: no answer may be a 500, every answer must match the
document (status code, content type, body schema), and every ``/api/`` call without a token
must be refused with 401 in the shared error shape. Bounded: a few examples per operation, so
the whole run stays well under two minutes on a busy machine.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from admin.app import create_app
from admin.domain.service import AdminService
from admin.domain.store import Store
from admin.settings import AdminConfig, ApiToken

TOKEN = "admin-token-0123"
STORE = Store(str(Path(tempfile.mkdtemp(prefix="slb-contract-")) / "admin.db"))
APP = create_app(AdminConfig(tokens=[ApiToken(name="ada", token=TOKEN, role="admin")]),
                 AdminService(STORE))
SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", APP)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
BOUNDED = settings(max_examples=8, deadline=None, derandomize=True,
                   suppress_health_check=list(HealthCheck))


@SCHEMA.parametrize()
@BOUNDED
def test_every_operation_answers_as_its_document_says(case: schemathesis.Case) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS)


@SCHEMA.include(path_regex="^/api/").parametrize()
@settings(BOUNDED, max_examples=2)
def test_every_api_call_without_a_token_is_401(case: schemathesis.Case) -> None:
    response = case.call()
    body = response.json()
    if case.method.lower() != case.operation.method.lower() and response.status_code == 405:
        # schemathesis also tries methods a path does not have: refused before any auth
        assert body["error"] == "method_not_allowed"
        return
    assert response.status_code == 401, (case.method, case.path, response.text)
    assert body["error"] == "unauthorized" and isinstance(body["details"], list)
