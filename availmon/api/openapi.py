"""The OpenAPI 3.1 document of the HTTP API, served at GET /api/v1/openapi.json.

Generated, not copied: request and response bodies are the JSON Schema pydantic derives from
the models (the endpoint spec union, StatusRow, Outage, ProbeResult, the error body), and the
paths are the routes the running app has. A route not described here (see `describe`) still
appears, with its path parameters, a JSON object body for writes and the error responses, so
the document never leaves out something the server answers.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, TypeAdapter

from availmon import __version__
from availmon.api.app import DEPS, METRICS_PATH, WRITE_METHODS, read_protected
from availmon.errors import FieldError
from availmon.model import Outage, ProbeResult, Severity, Status, StatusRow
from availmon.specs import ENDPOINT_ADAPTER

OPENAPI_PATH = "/api/v1/openapi.json"
_REF = "#/components/schemas/{model}"
JsonSchema = dict[str, Any]


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str
    message: str
    fields: list[FieldError]


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer (api/app.py, error_response)."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


@dataclass(frozen=True)
class Param:
    name: str
    schema: JsonSchema
    description: str = ""


@dataclass(frozen=True)
class Operation:
    """What the document says about one route; bodies name components (see _components)."""

    summary: str
    response: str | None = None  # component of the success body; None: no body
    status: int = 200
    body: str | None = None  # component of the JSON request body
    query: tuple[Param, ...] = ()
    conflict: bool = False  # may answer 409
    examples: tuple[tuple[str, JsonSchema], ...] = ()
    media: str = "application/json"  # of the success body


_OPERATIONS: dict[tuple[str, str], Operation] = {}


def describe(method: str, path: str, operation: Operation) -> None:
    """Describe a route (by its aiohttp path, e.g. /api/v1/endpoints/{id}) in the document."""
    _OPERATIONS[(method.upper(), path)] = operation


def _ref(name: str) -> JsonSchema:
    return {"$ref": _REF.format(model=name)}


def _extended(schemas: dict[str, JsonSchema], ref: JsonSchema, title: str, **extra: Any) -> str:
    """Copy the component `ref` points at as `title`, with more (all required) properties."""
    base = copy.deepcopy(schemas[ref["$ref"].rsplit("/", 1)[1]])
    base["properties"] = {**extra, **base["properties"]}
    base["required"] = list(base["properties"])
    base["title"] = title
    schemas[title] = base
    return title


def _endpoint_components(
    schemas: dict[str, JsonSchema], spec_in: JsonSchema, spec_out: JsonSchema
) -> None:
    variants_in = [schemas[r["$ref"].rsplit("/", 1)[1]] for r in spec_in["oneOf"]]
    for variant in variants_in:  # the url scheme (or a bare host: icmp) names it otherwise
        variant["required"] = [k for k in variant["required"] if k != "protocol"]
    schemas["EndpointCreate"] = {"anyOf": spec_in["oneOf"]}
    merged: dict[str, list[JsonSchema]] = {}
    for variant in variants_in:
        for key, prop in variant["properties"].items():
            prop = {k: v for k, v in prop.items() if k != "default"}  # absent: left as is
            if prop not in merged.setdefault(key, []):
                merged[key].append(prop)
    schemas["EndpointPatch"] = {
        "type": "object",
        "description": "Any fields of the endpoint's protocol; the rest stay as they are.",
        "properties": {k: v[0] if len(v) == 1 else {"anyOf": v} for k, v in merged.items()},
        "additionalProperties": False,
    }
    identity = {
        "id": {"type": "integer", "minimum": 1},
        "source": {"type": "string", "enum": ["config", "api"]},
    }
    names = [
        _extended(schemas, ref, ref["$ref"].rsplit("/", 1)[1].split("-")[0] + "Out", **identity)
        for ref in spec_out["oneOf"]
    ]
    schemas["Endpoint"] = {"oneOf": [_ref(n) for n in names]}


def _page(item: str, count: str, **extra: JsonSchema) -> JsonSchema:
    properties = {"items": {"type": "array", "items": _ref(item)}, count: {"type": "integer"}}
    properties |= extra
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _components() -> dict[str, JsonSchema]:
    sources = [
        ("spec_in", "validation", ENDPOINT_ADAPTER),
        ("spec_out", "serialization", ENDPOINT_ADAPTER),
        ("status", "serialization", TypeAdapter(StatusRow)),
        ("outage", "serialization", TypeAdapter(Outage)),
        ("result", "serialization", TypeAdapter(ProbeResult)),
        ("error", "serialization", TypeAdapter(ErrorBody)),
    ]
    mapping, top = TypeAdapter.json_schemas(sources, ref_template=_REF)  # type: ignore[arg-type]
    refs = {key: schema for (key, _), schema in mapping.items()}
    schemas: dict[str, JsonSchema] = dict(top["$defs"])
    _endpoint_components(schemas, refs["spec_in"], refs["spec_out"])
    string = {"type": "string"}
    _extended(schemas, refs["outage"], "OutageOut", is_active={"type": "boolean"})
    schemas["OutageOut"]["additionalProperties"] = True  # management fields come on top
    _extended(schemas, refs["result"], "CheckResult", endpoint_id={"type": "integer"}, name=string)
    schemas["EndpointList"] = _page("Endpoint", "total")
    next_before = {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]}
    schemas["StatusPage"] = _page("StatusRow", "count", next_before=next_before)
    schemas["OutagePage"] = _page("OutageOut", "count")
    counts = {s.value: {"type": "integer", "minimum": 0} for s in Status}
    schemas["StatusSummary"] = {
        "type": "object",
        "description": "Counts per status, then every watched endpoint's current state; side "
        "outputs (Redis, Elasticsearch) add a section each.",
        "properties": {
            "counts": {"type": "object", "properties": counts, "required": list(counts)},
            "total": {"type": "integer", "minimum": 0},
            "endpoints": {"type": "array", "items": {"type": "object"}},
        },
        "required": ["counts", "total", "endpoints"],
    }
    schemas["Health"] = {"type": "object", "properties": {"status": {"const": "ok"}}}
    schemas["Readiness"] = {
        "type": "object",
        "properties": {
            "ready": {"type": "boolean"},
            "problems": {"type": "array"},
            "warnings": {"type": "array"},
        },
        "required": ["ready"],
    }
    schemas["OpenApi"] = {"type": "object", "required": ["openapi", "paths"]}
    schemas["Metrics"] = {
        "type": "string",
        "description": "Prometheus text exposition format 0.0.4 (README, Prometheus metrics)",
    }
    schemas["Error"] = schemas.pop(refs["error"]["$ref"].rsplit("/", 1)[1])
    return schemas


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_ID_RANGE = {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
_TIME = {"type": "string", "format": "date-time"}
_LIMIT = Param("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100})
_ERRORS = {
    401: "The bearer token is missing or wrong",
    404: "No such id (or route)",
    409: "Not allowed in the current state (config-owned endpoint, duplicate name, ...)",
    413: "The request body is larger than api.max_body_bytes",
    422: "Invalid input; `fields` names every problem",
    503: "PostgreSQL is unavailable",
}
_EXAMPLES = (
    ("http", {"name": "web", "url": "http://127.0.0.1:8080/health", "tags": ["prod"]}),
    (
        "tcp",
        {"name": "db port", "url": "tcp://127.0.0.1:5432", "check_interval": 30, "timeout": 2},
    ),
)

for _method, _path, _op in [
    ("GET", "/healthz", Operation("Liveness: the process answers", "Health")),
    ("GET", "/readyz", Operation("Readiness: checks scheduled, results stored", "Readiness")),
    ("GET", OPENAPI_PATH, Operation("This document", "OpenApi")),
    ("GET", METRICS_PATH, Operation("Prometheus metrics", "Metrics", media="text/plain")),
    ("GET", "/api/v1/status", Operation("State of every watched endpoint", "StatusSummary")),
    (
        "GET",
        "/api/v1/endpoints",
        Operation(
            "List endpoints",
            "EndpointList",
            query=(Param("include_inactive", {"type": "boolean", "default": True}),),
        ),
    ),
    (
        "POST",
        "/api/v1/endpoints",
        Operation(
            "Create an endpoint (checked from now on)",
            "Endpoint",
            201,
            "EndpointCreate",
            conflict=True,
            examples=_EXAMPLES,
        ),
    ),
    ("GET", "/api/v1/endpoints/{id}", Operation("One endpoint", "Endpoint")),
    (
        "PATCH",
        "/api/v1/endpoints/{id}",
        Operation("Change some fields", "Endpoint", body="EndpointPatch", conflict=True),
    ),
    (
        "DELETE",
        "/api/v1/endpoints/{id}",
        Operation("Delete (history is kept)", None, 204, conflict=True),
    ),
    (
        "GET",
        "/api/v1/endpoints/{id}/statuses",
        Operation(
            "Stored check results, newest first",
            "StatusPage",
            query=(
                Param("from", _TIME),
                Param("to", _TIME),
                Param("before", _TIME, "Page cursor: next_before of the previous page"),
                _LIMIT,
            ),
        ),
    ),
    (
        "POST",
        "/api/v1/endpoints/{id}/check",
        Operation("Check now (recorded like a scheduled check)", "CheckResult", conflict=True),
    ),
    (
        "GET",
        "/api/v1/outages",
        Operation(
            "Outages, newest first",
            "OutagePage",
            query=(
                Param("active", {"type": "boolean"}),
                Param("endpoint", _ID_RANGE),
                Param("endpoint_id", _ID_RANGE, "Same as endpoint"),
                Param("severity", {"type": "string", "enum": [s.value for s in Severity]}),
                _LIMIT,
                Param("offset", {"type": "integer", "minimum": 0, "maximum": 10**9}),
            ),
        ),
    ),
    ("GET", "/api/v1/outages/{id}", Operation("One outage", "OutageOut")),
]:
    describe(_method, _path, _op)


def _json(schema: JsonSchema) -> JsonSchema:
    return {"application/json": {"schema": schema}}


def _responses(method: str, path: str, op: Operation | None, errors: set[int]) -> JsonSchema:
    if op is None:  # not described: any JSON, with the codes a route of this method may use
        ok: JsonSchema = {"description": "(not described yet)", "content": _json({})}
        responses = {"200": ok} | ({"201": ok} if method == "POST" else {})
        if method == "DELETE":
            responses["204"] = {"description": "Deleted"}
        errors |= {404, 409}
    else:
        ok = {"description": op.summary}
        if op.response:
            ok["content"] = {op.media: {"schema": _ref(op.response)}}
        responses = {str(op.status): ok}
    if path == "/readyz":
        responses["503"] = {"description": "Not ready", "content": _json(_ref("Readiness"))}
    elif path.startswith("/api/"):
        errors.add(503)
    for status in sorted(errors):
        responses[str(status)] = {"description": _ERRORS[status], "content": _json(_ref("Error"))}
    return responses


def _operation(
    method: str, path: str, route_params: list[str], protected: bool, op: Operation | None
) -> JsonSchema:
    body = op.body if op is not None else ("" if method in _BODY_METHODS else None)
    errors = {422}
    errors |= {404} if route_params else set()
    errors |= {413} if body is not None else set()
    errors |= {409} if op is not None and op.conflict else set()
    errors |= {401} if protected else set()
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": _ID_RANGE} for name in route_params
    ]
    for param in op.query if op is not None else ():
        parameters.append(
            {
                "name": param.name,
                "in": "query",
                "schema": param.schema,
                "description": param.description,
            }
        )
    result: JsonSchema = {
        "operationId": method.lower() + "".join(c if c.isalnum() else "_" for c in path),
        "summary": op.summary if op is not None else "(not described yet)",
        "parameters": parameters,
        "responses": _responses(method, path, op, errors),
    }
    if body is not None:  # "": a JSON object, not described further
        media: JsonSchema = {"schema": _ref(body) if body else {"type": "object"}}
        if op is not None and op.examples:
            media["examples"] = {name: {"value": value} for name, value in op.examples}
        result["requestBody"] = {"required": True, "content": {"application/json": media}}
    if protected:
        result["security"] = [{"bearerAuth": []}]
    return result


def build_document(app: web.Application) -> JsonSchema:
    """The document for this app: its routes, its token settings."""
    deps = app[DEPS]
    paths: dict[str, JsonSchema] = {}
    for route in app.router.routes():
        method = route.method.upper()
        if method == "HEAD":
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if path is None or (route.name or "").startswith("web."):  # pages and badges: not JSON
            continue
        params = [p.split("}")[0] for p in path.split("{")[1:]]
        protected = bool(deps.token) and (
            method in WRITE_METHODS or (deps.read_token_required and read_protected(path))
        )
        operation = _operation(method, path, params, protected, _OPERATIONS.get((method, path)))
        paths.setdefault(path, {})[method.lower()] = operation
    components: JsonSchema = {"schemas": _components()}
    if deps.token:
        components["securitySchemes"] = {"bearerAuth": {"type": "http", "scheme": "bearer"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "availmon", "version": __version__},
        "paths": paths,
        "components": components,
    }


async def serve(request: web.Request) -> web.Response:
    document = build_document(request.app)
    return web.json_response(document, dumps=lambda obj: json.dumps(obj, sort_keys=True))
