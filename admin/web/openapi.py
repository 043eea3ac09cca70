"""The REST API's OpenAPI document, complete, and its reference pages served offline.

The handlers read their bodies themselves (``deps.json_body``), so that a malformed body gets
the API's own error with every problem, not FastAPI's; FastAPI therefore cannot see the
bodies, and the generated document lacks them. ``openapi_document`` completes it, from the
same pydantic models the service validates with (``admin.domain.objects``):

- every request body and response has a schema, with examples where a body has a shape;
- the generic ``/api/v1/{plural}`` routes are described once per collection
  (``/api/v1/clusters``, ``/api/v1/groups``...), each with its own object schema;
- errors are the one ``Error`` schema (``slb.errors.error_body``), 400 instead of FastAPI's 422;
- the bearer scheme is declared and required by every ``/api/`` operation.

``/docs`` (Swagger UI) and ``/redoc`` load their scripts and styles from the admin itself
(``/docs-assets``), files shipped by the ``fastapi-offline`` package: they work without
internet access.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from admin.domain.objects import MODELS
from admin.web.api import KIND_PATHS

ASSETS = Path(fastapi_offline.__file__).parent / "static"
ASSETS_URL = "/docs-assets"
REF = "#/components/schemas/{model}"
API = "/api/v1"

# operations answered per node once delivered (admin.web.api.delivered): 200, or 202 in time
DELIVERED = {f"{API}/groups/{{name}}/members/{{address}}/{{op}}", f"{API}/servers/{{ip}}/{{op}}",
             f"{API}/batch", f"{API}/clusters/{{cluster}}/nodes/{{name}}/take-over",
             f"{API}/activate", f"{API}/versions/{{number}}/rollback"}
ERROR = {
    "type": "object", "required": ["error", "message", "details"],
    "properties": {
        "error": {"type": "string", "description": "a stable snake_case code",
                  "examples": ["bad_request", "unauthorized", "not_found", "conflict"]},
        "message": {"type": "string"},
        "details": {"type": "array", "items": {"type": "string"},
                    "description": "every problem, with its field path"},
    },
    "example": {"error": "bad_request", "message": "invalid group",
                "details": ["members[0].address: expected host:port"]},
}
REASON = {"type": "string", "description": "why: recorded in the audit log",
          "example": "deploy 2026-12-01"}
ROW_VERSION = {"type": "integer", "description": "the version the edit was made from"}
STORED = {"row_version": {"type": "integer"}, "updated_at": {"type": "number"},
          "updated_by": {"type": ["string", "null"]}}
EXAMPLES: dict[str, dict[str, Any]] = {
    "cluster": {"name": "east", "description": "the east data centre",
                "access_log": {"enabled": True, "path": "/var/log/slb/access.log",
                               "format": "json"}},
    "node": {"name": "node-1", "cluster": "east", "control_url": "http://10.0.0.5:9901",
             "token": "node-token"},
    "virtual_server": {"name": "shop", "cluster": "east", "listen": "0.0.0.0:80",
                       "domains": ["shop.example.com"], "default": True},
    "route": {"name": "shop-api", "virtual_server": "shop", "match": "prefix",
              "path": "/api/", "priority": 10, "group": "api"},
    "group": {"name": "api", "algorithm": "wrr",
              "members": [{"address": "10.0.0.11:8080", "weight": 5},
                          {"address": "10.0.0.12:8080", "weight": 5}]},
}


def _obj(properties: dict[str, Any], required: list[str] | None = None,
         description: str = "") -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    if description:
        schema["description"] = description
    return schema


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _json(schema: dict[str, Any], example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"content": {"application/json": media}}


def _model_schemas(components: dict[str, Any]) -> dict[str, str]:
    """Each kind's object schema in ``components``; returns kind -> schema name."""
    names = {}
    for kind, model in MODELS.items():
        schema = model.model_json_schema(ref_template=REF)
        for name, definition in schema.pop("$defs", {}).items():
            components.setdefault(name, definition)
        components[model.__name__] = schema
        names[kind] = model.__name__
        stored = copy.deepcopy(schema)
        stored["properties"].update(STORED)
        stored.pop("additionalProperties", None)  # a stored object carries its metadata too
        stored["title"] = f"Stored{model.__name__}"
        components[f"Stored{model.__name__}"] = stored
    return names


def _edit_body(components: dict[str, Any], model: str, update: bool,
               path_fields: tuple[str, ...] = ()) -> dict[str, Any]:
    """A create or update body: the object, with ``reason`` (and ``row_version``)."""
    schema = copy.deepcopy(components[model])
    schema["properties"]["reason"] = REASON
    required = [f for f in schema.get("required", []) if f not in path_fields]
    for name in path_fields:
        schema["properties"].pop(name, None)
    if update:
        schema["properties"]["row_version"] = ROW_VERSION
        required = [f for f in required if f != "name"] + ["row_version"]
    if required:
        schema["required"] = required
    else:
        schema.pop("required", None)
    return schema


def _operations(names: dict[str, str], components: dict[str, Any]
                ) -> dict[tuple[str, str], dict[str, Any]]:
    """(method, path) -> request body and 2xx response of every operation."""
    ops: dict[tuple[str, str], dict[str, Any]] = {}
    reason_only = _obj({"reason": REASON}, ["reason"])
    force = {"type": "boolean", "default": False,
             "description": "take out a group's last usable member anyway (409 otherwise)"}
    member_body = _obj({"reason": REASON, "force": force}, ["reason"])
    items = {kind: _obj({"items": {"type": "array", "items": _ref(f"Stored{name}")}}, ["items"])
             for kind, name in names.items()}
    for plural, kind in KIND_PATHS.items():
        name = names[kind]
        ops[("get", f"{API}/{plural}")] = {"response": items[kind]}
        ops[("post", f"{API}/{plural}")] = {
            "body": _edit_body(components, name, False),
            "example": {**EXAMPLES[kind], "reason": "new " + kind.replace("_", " ")},
            "response": _ref(f"Stored{name}")}
        ops[("get", f"{API}/{plural}/{{name}}")] = {"response": _ref(f"Stored{name}")}
        ops[("put", f"{API}/{plural}/{{name}}")] = {
            "body": _edit_body(components, name, True),
            "example": {**EXAMPLES[kind], "row_version": 1, "reason": "edit"},
            "response": _ref(f"Stored{name}")}
        ops[("delete", f"{API}/{plural}/{{name}}")] = {}
    node = names["node"]
    ops[("get", f"{API}/clusters/{{cluster}}/nodes")] = {"response": items["node"]}
    ops[("post", f"{API}/clusters/{{cluster}}/nodes")] = {
        "body": _edit_body(components, node, False, ("cluster",)),
        "example": {k: v for k, v in EXAMPLES["node"].items() if k != "cluster"},
        "response": _ref(f"Stored{node}")}
    ops[("put", f"{API}/clusters/{{cluster}}/nodes/{{name}}")] = {
        "body": _edit_body(components, node, True, ("cluster",)),
        "response": _ref(f"Stored{node}")}
    member_view = _obj({"address": {"type": "string"}, "weight": {"type": "integer"},
                        "state": {"type": "string", "enum": ["up", "drain", "down"]},
                        "held_by": {"type": "array", "items": {"type": "string"}},
                        "flags": {"type": "object"}},
                       ["address", "weight", "state", "held_by", "flags"])
    group_view = copy.deepcopy(components[f"Stored{names['group']}"])
    group_view["properties"].update({
        "members": {"type": "array", "items": member_view},
        "health": {"type": "string", "enum": ["all up", "some down", "none up", "no members"]},
        "stale": {"type": ["string", "null"]}, "last_contact": {"type": ["number", "null"]}})
    ops[("get", f"{API}/groups/{{name}}")] = {"response": group_view}
    ops[("post", f"{API}/groups/{{name}}/weight")] = {
        "body": _obj({"addresses": {"type": "array", "items": {"type": "string"}},
                      "weight": {"type": "integer", "minimum": 0, "maximum": 10000},
                      "row_version": ROW_VERSION, "reason": REASON},
                     ["addresses", "weight", "row_version", "reason"]),
        "example": {"addresses": ["10.0.0.11:8080"], "weight": 0, "row_version": 3,
                    "reason": "drain before reboot"},
        "response": _obj({}, description="the group's draft after the edit")}
    for path in (f"{API}/groups/{{name}}/members/{{address}}/{{op}}",
                 f"{API}/servers/{{ip}}/{{op}}"):
        ops[("post", path)] = {"body": member_body, "example": {"reason": "release 42"},
                               "response": _obj({}, description="what changed")}
    ops[("post", f"{API}/batch")] = {
        "body": _obj({"reason": REASON, "force": force, "operations": {
            "type": "array", "items": _obj({
                "group": {"type": "string"}, "address": {"type": "string"},
                "addresses": {"type": "array", "items": {"type": "string"}},
                "server": {"type": "string"}, "op": {"type": "string"}}, ["op"])}},
            ["reason", "operations"]),
        "example": {"reason": "release 42", "operations": [
            {"group": "api", "addresses": ["10.0.0.11:8080"], "op": "pull-out"},
            {"server": "10.0.0.12", "op": "down"}]},
        "response": _obj({}, description="each operation's result")}
    version = _obj({"version": {"type": "integer"}, "hash": {"type": "string"}},
                   ["version", "hash"])
    canary = _obj({"nodes": {"type": "array", "items": {"type": "string"}},
                   "percent": {"type": "integer", "minimum": 1, "maximum": 100},
                   "watch_seconds": {"type": "number"}, "max_error_ratio": {"type": "number"}},
                  description="send the draft to these nodes first and watch their 5xx ratio")
    ops[("post", f"{API}/activate")] = {
        "body": _obj({"reason": REASON, "canary": canary}, ["reason"]),
        "example": {"reason": "go live"}, "response": _obj({}, description="the version, "
                                                               "or the canary started")}
    ops[("post", f"{API}/routes/{{name}}/split")] = {
        "body": _obj({"weights": {"type": "object", "additionalProperties": {"type": "integer"}},
                      "row_version": ROW_VERSION, "reason": REASON},
                     ["weights", "row_version", "reason"]),
        "example": {"weights": {"api-v2": 20, "api-v1": 80}, "row_version": 3,
                    "reason": "canary step 2"},
        "response": _obj({}, description="the version activated with the new split")}
    ops[("post", f"{API}/clusters/{{cluster}}/nodes/{{name}}/take-over")] = {
        "body": reason_only, "example": {"reason": "this admin's store serves the cluster now"},
        "response": _obj({}, description="what the node applied")}
    pem = {"type": "string", "description": "PEM"}
    certificate = _obj({"name": {"type": "string"}, "subject": {"type": "string"},
                        "names": {"type": "array", "items": {"type": "string"}},
                        "issuer": {"type": "string"}, "not_after": {"type": "string"},
                        "fingerprint": {"type": "string"},
                        "virtual_servers": {"type": "array", "items": {"type": "string"}}},
                       description="a certificate as shown: never its private key")
    pair_example = {"certificate_pem": "-----BEGIN CERTIFICATE-----\n...",
                    "key_pem": "-----BEGIN PRIVATE KEY-----\n...", "reason": "shop TLS"}
    ops[("post", f"{API}/certificates")] = {
        "body": _obj({"name": {"type": "string"}, "certificate_pem": {
            **pem, "description": "the chain, leaf first"}, "key_pem": {
            **pem, "description": "write-only: never shown again"}, "reason": REASON},
            ["name", "certificate_pem", "key_pem", "reason"]),
        "example": {"name": "shop", **pair_example}, "response": certificate}
    ops[("put", f"{API}/certificates/{{name}}")] = {
        "body": _obj({"certificate_pem": pem, "key_pem": pem, "row_version": ROW_VERSION,
                      "reason": REASON},
                     ["certificate_pem", "key_pem", "row_version", "reason"]),
        "example": {**pair_example, "row_version": 2, "reason": "renewal before expiry"},
        "response": certificate}
    ops[("get", f"{API}/certificates")] = {
        "response": _obj({"items": {"type": "array", "items": certificate}}, ["items"])}
    ops[("get", f"{API}/certificates/{{name}}")] = {"response": certificate}
    ops[("get", f"{API}/canary")] = {"response": _obj({}, description="the canary, if any")}
    ops[("post", f"{API}/canary/{{action}}")] = {
        "response": _obj({}, description="what was decided")}
    ops[("post", f"{API}/versions/{{number}}/rollback")] = {
        "body": reason_only, "example": {"reason": "the release broke checkout"},
        "response": version}
    ops[("get", f"{API}/versions")] = {"response": _obj(
        {"active": {"type": ["integer", "null"]}, "versions": {"type": "array"}},
        ["active", "versions"])}
    ops[("get", f"{API}/versions/{{a}}/diff/{{b}}")] = {"response": _obj(
        {"from": {"type": "string"}, "to": {"type": "string"}}, ["from", "to"])}
    ops[("get", f"{API}/draft")] = {"response": _obj(
        {"active": {"type": ["integer", "null"]}, "pending": {"type": "boolean"},
         "changes": {}}, ["active", "pending"])}
    ops[("get", f"{API}/health")] = {"response": _obj(
        {"groups": {"type": "array"}, "group_counts": {"type": "object"},
         "member_counts": {"type": "object"}}, ["groups", "group_counts", "member_counts"])}
    ops[("get", f"{API}/resolve")] = {"response": _obj(
        {"url": {"type": "string"}, "answers": {"type": "array"},
         "notes": {"type": "array", "items": {"type": "string"}}}, ["url", "answers", "notes"])}
    listing = _obj({"items": {"type": "array", "items": {"type": "object"}}}, ["items"])
    ops[("get", f"{API}/nodes")] = {"response": listing}
    ops[("get", f"{API}/audit")] = {"response": listing}
    series = _obj({}, description="field -> one value per time (null: no data)")
    ops[("get", f"{API}/stats")] = {"response": _obj(
        {"scope": {"type": "string"}, "interval": {"type": "number"},
         "window": {"type": "number"}, "times": {"type": "array", "items": {"type": "number"}},
         "series": series, "members": {"type": "object", "additionalProperties": series}},
        ["scope", "interval", "window", "times", "series"])}
    return ops


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The generated document, completed (see the module docstring); built once, cached."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, routes=app.routes,
                      description=app.description)
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for generated in ("HTTPValidationError", "ValidationError"):
        schemas.pop(generated, None)
    schemas["Error"] = ERROR
    components["securitySchemes"] = {"bearer": {
        "type": "http", "scheme": "bearer",
        "description": "a token of the admin's file; its role (viewer, operator, admin) "
                       "decides what it may do"}}
    names = _model_schemas(schemas)
    paths = doc["paths"]
    _concrete_collections(paths)
    for (method, path), spec in _operations(names, schemas).items():
        op = paths.get(path, {}).get(method)
        if op is None:
            continue
        if "body" in spec:
            op["requestBody"] = {"required": True, **_json(spec["body"], spec.get("example"))}
        if path in DELIVERED:  # ?wait=: 202 when some node had not applied it in time
            op["responses"].setdefault("202", {
                "description": "stored and being pushed: some node had not applied it within "
                               "?wait= (the same body, per node)",
                **_json(_obj({"nodes": {"type": "array"}, "complete": {"type": "boolean"}},
                             ["nodes", "complete"]))})
        for status, response in op["responses"].items():
            if status.startswith("2") and status != "204" and "response" in spec:
                response.update(_json(spec["response"]))
    paths["/metrics"]["get"]["responses"]["200"] = {
        "description": "the admin's Prometheus metrics (text exposition format)",
        "content": {"text/plain": {"schema": {"type": "string"}}}}
    paths["/healthz"]["get"]["responses"]["200"].update(
        _json(_obj({"status": {"type": "string", "enum": ["ok"]}}, ["status"])))
    for path, ops in paths.items():
        for method, op in ops.items():
            _errors(method, op, secured=path.startswith("/api/"))
    app.openapi_schema = doc
    return doc


def _concrete_collections(paths: dict[str, Any]) -> None:
    """``/api/v1/{plural}[/{name}]`` described once per collection, as callers use them."""
    generic = paths.pop(f"{API}/{{plural}}", {})
    generic_item = paths.pop(f"{API}/{{plural}}/{{name}}", {})
    for plural, kind in KIND_PATHS.items():
        for template, ops in ((f"{API}/{plural}", generic), (f"{API}/{plural}/{{name}}",
                                                             generic_item)):
            target = paths.setdefault(template, {})
            for method, op in ops.items():
                if method in target:
                    continue  # a fixed route (GET /groups/{name}) wins, as in routing
                concrete = copy.deepcopy(op)
                concrete["parameters"] = [p for p in concrete.get("parameters", [])
                                          if p["name"] != "plural"]
                concrete["operationId"] = f"{op['operationId']}_{kind}"
                concrete["summary"] = f"{op.get('summary', '')} ({kind.replace('_', ' ')})"
                concrete["tags"] = [plural]
                target[method] = concrete


def _errors(method: str, op: dict[str, Any], secured: bool) -> None:
    responses = op["responses"]
    responses.pop("422", None)
    error = {"description": "error", **_json(_ref("Error"))}
    if secured:
        op["security"] = [{"bearer": []}]
        responses.setdefault("401", {**error, "description": "no valid bearer token"})
        responses.setdefault("403", {**error, "description": "the token's role may not"})
        responses.setdefault("400", {**error, "description": "invalid input"})
        responses.setdefault("404", {**error, "description": "no such object"})
        if method != "get":
            responses.setdefault("409", {**error, "description": "refused: a conflict"})


def install_docs(app: FastAPI) -> None:
    """``/openapi.json`` completed, ``/docs`` and ``/redoc`` with local assets."""
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]
    app.mount(ASSETS_URL, StaticFiles(directory=str(ASSETS)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title=f"{app.title} · API",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png")

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json", title=f"{app.title} · API reference",
            redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_URL}/favicon.png", with_google_fonts=False)
