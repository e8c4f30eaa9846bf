"""Route handlers: parse the request, call a service, shape the JSON."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from availmon.api.app import DEPS, METRICS_CONTENT_TYPE, METRICS_PATH, read_json
from availmon.clock import in_time_range
from availmon.errors import FieldError, ValidationFailed
from availmon.model import Endpoint, ProbeResult, Severity, StatusRow

routes = web.RouteTableDef()


def endpoint_json(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "id": endpoint.id,
        "source": endpoint.source.value,
        **endpoint.spec.model_dump(mode="json"),
    }


def status_json(row: StatusRow) -> dict[str, Any]:
    return {
        "endpoint_id": row.endpoint_id,
        "checked_at": row.checked_at.isoformat(),
        "status": row.status.value,
        "reason": row.reason.value,
        "response_time_ms": row.response_time_ms,
        "error": row.error,
        "attempts": row.attempts,
        "details": row.details,
    }


def result_json(endpoint: Endpoint, result: ProbeResult) -> dict[str, Any]:
    return {"endpoint_id": endpoint.id, "name": endpoint.name, **result.to_json()}


def _path_id(request: web.Request, key: str = "id") -> int:
    raw = request.match_info[key]
    # ASCII digits only: int() also takes " 7", "+7", "7_0" and Arabic-Indic digits
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        raise ValidationFailed("invalid path", [FieldError(key, f"{raw!r} is not an integer id")])
    value = int(raw)
    if value < 1 or value > 2**63 - 1:
        raise ValidationFailed("invalid path", [FieldError(key, "out of range")])
    return value


class Query:
    """Typed access to query parameters, collecting every problem before failing."""

    def __init__(self, request: web.Request, allowed: set[str]) -> None:
        self._q = request.query
        self.problems: list[FieldError] = []
        for key in dict.fromkeys(self._q):  # each key once, in order
            if key not in allowed:
                self.problems.append(FieldError(key, "unknown query parameter"))
            elif (times := len(self._q.getall(key))) > 1:
                self.problems.append(FieldError(key, f"given {times} times; give it once"))

    def int(self, key: str, default: int, low: int, high: int) -> int:
        raw = self._q.get(key)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            self.problems.append(FieldError(key, f"{raw!r} is not an integer"))
            return default
        if not low <= value <= high:
            self.problems.append(FieldError(key, f"must be between {low} and {high}"))
        return value

    def bool(self, key: str) -> bool | None:
        raw = self._q.get(key)
        if raw is None:
            return None
        if raw.lower() in ("1", "true", "yes"):
            return True
        if raw.lower() in ("0", "false", "no"):
            return False
        self.problems.append(FieldError(key, f"{raw!r} is not true or false"))
        return None

    def time(self, key: str) -> datetime | None:
        raw = self._q.get(key)
        if raw is None:
            return None
        try:
            value = datetime.fromisoformat(raw.replace("Z", "+00:00").replace(" ", "+"))
        except ValueError:
            self.problems.append(FieldError(key, f"{raw!r} is not an ISO 8601 time"))
            return None
        if value.tzinfo is None:
            self.problems.append(FieldError(key, "needs a UTC offset, e.g. 2026-01-01T00:00:00Z"))
            return None
        try:
            return in_time_range(value)
        except ValueError as exc:  # year 1 or 9999 with an offset overflows later arithmetic
            self.problems.append(FieldError(key, str(exc)))
            return None

    def str(self, key: str) -> str | None:
        return self._q.get(key)

    def done(self) -> None:
        if self.problems:
            raise ValidationFailed("invalid query", self.problems)


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """503 while results are not reaching PostgreSQL (they are being spooled) or checks are not
    scheduled; the body says why and how large the backlogs are."""
    check = request.app[DEPS].readiness
    ready, facts = check() if check is not None else (True, {})
    return web.json_response({"ready": ready, **facts}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    """The Prometheus text format; gzip when the scraper accepts it (Prometheus does)."""
    render = request.app[DEPS].metrics
    assert render is not None  # the route is added only with it
    response = web.Response(body=await render(), headers={"Content-Type": METRICS_CONTENT_TYPE})
    response.enable_compression()
    return response


@routes.get("/api/v1/status")
async def status(request: web.Request) -> web.Response:
    Query(request, set()).done()
    body = request.app[DEPS].collector.summary_json()
    return web.Response(body=body, content_type="application/json")


@routes.get("/api/v1/endpoints")
async def list_endpoints(request: web.Request) -> web.Response:
    query = Query(request, {"include_inactive"})
    include_inactive = query.bool("include_inactive")
    query.done()
    items = await request.app[DEPS].availability.list_endpoints(
        include_inactive=include_inactive is not False
    )
    return web.json_response({"items": [endpoint_json(e) for e in items], "total": len(items)})


@routes.post("/api/v1/endpoints")
async def create_endpoint(request: web.Request) -> web.Response:
    data = await read_json(request)
    if not isinstance(data, dict):
        raise ValidationFailed("request body must be a JSON object", [])
    endpoint = await request.app[DEPS].availability.create_endpoint(data)
    return web.json_response(endpoint_json(endpoint), status=201)


@routes.get("/api/v1/endpoints/{id}")
async def get_endpoint(request: web.Request) -> web.Response:
    endpoint = await request.app[DEPS].availability.get_endpoint(_path_id(request))
    return web.json_response(endpoint_json(endpoint))


@routes.patch("/api/v1/endpoints/{id}")
async def update_endpoint(request: web.Request) -> web.Response:
    endpoint_id = _path_id(request)
    data = await read_json(request)
    if not isinstance(data, dict):
        raise ValidationFailed("request body must be a JSON object", [])
    for key in ("id", "source"):
        if key in data:
            raise ValidationFailed("invalid endpoint", [FieldError(key, "is read-only")])
    endpoint = await request.app[DEPS].availability.update_endpoint(endpoint_id, data)
    return web.json_response(endpoint_json(endpoint))


@routes.delete("/api/v1/endpoints/{id}")
async def delete_endpoint(request: web.Request) -> web.Response:
    await request.app[DEPS].availability.delete_endpoint(_path_id(request))
    return web.Response(status=204)


@routes.get("/api/v1/endpoints/{id}/statuses")
async def list_statuses(request: web.Request) -> web.Response:
    endpoint_id = _path_id(request)
    query = Query(request, {"from", "to", "limit", "before"})
    since, until = query.time("from"), query.time("to")
    before = query.time("before")
    limit = query.int("limit", 100, 1, 1000)
    if since is not None and until is not None and since >= until:
        query.problems.append(FieldError("from", "must be before to"))
    query.done()
    rows = await request.app[DEPS].availability.list_statuses(
        endpoint_id, since, until, limit, before
    )
    next_before = rows[-1].checked_at.isoformat() if len(rows) == limit else None
    return web.json_response(
        {"items": [status_json(r) for r in rows], "count": len(rows), "next_before": next_before}
    )


@routes.post("/api/v1/endpoints/{id}/check")
async def check_now(request: web.Request) -> web.Response:
    endpoint_id = _path_id(request)
    deps = request.app[DEPS]
    endpoint = await deps.availability.get_endpoint(endpoint_id)
    result = await deps.availability.check_service(endpoint_id)
    return web.json_response(result_json(endpoint, result))


@routes.get("/api/v1/outages")
async def list_outages(request: web.Request) -> web.Response:
    query = Query(request, {"active", "endpoint", "endpoint_id", "severity", "limit", "offset"})
    active = query.bool("active")
    endpoint_raw = query.str("endpoint") or query.str("endpoint_id")
    endpoint_id: int | None = None
    if endpoint_raw is not None:
        # isdigit alone lets "²" (int() fails) and 0 or 2**63 (bigint fails) through
        digits = endpoint_raw.isascii() and endpoint_raw.isdigit() and len(endpoint_raw) < 20
        if digits and 0 < int(endpoint_raw) < 2**63:
            endpoint_id = int(endpoint_raw)
        else:
            query.problems.append(FieldError("endpoint", f"{endpoint_raw!r} is not an id"))
    limit = query.int("limit", 100, 1, 1000)
    offset = query.int("offset", 0, 0, 10**9)
    severity = query.str("severity")
    if severity is not None and severity not in {s.value for s in Severity}:
        allowed = ", ".join(s.value for s in Severity)
        query.problems.append(FieldError("severity", f"must be one of {allowed}"))
    query.done()
    outages = await request.app[DEPS].outages.list_outages(
        active, endpoint_id, severity, limit, offset
    )
    return web.json_response({"items": [o.to_json() for o in outages], "count": len(outages)})


@routes.get("/api/v1/outages/{id}")
async def get_outage(request: web.Request) -> web.Response:
    outage = await request.app[DEPS].outages.get_outage(_path_id(request))
    return web.json_response(outage.to_json())


def add_routes(app: web.Application) -> None:
    from availmon.api import maintenance, openapi, outages  # route modules of their own

    app.add_routes([*routes, *outages.routes, *maintenance.routes])
    if app[DEPS].metrics is not None:
        app.router.add_get(METRICS_PATH, metrics)
    app.router.add_get(openapi.OPENAPI_PATH, openapi.serve)  # describes the routes above
