"""Outage management and uptime routes: PATCH /api/v1/outages/{id} (acknowledge, resolve,
notes) and GET /api/v1/endpoints/{id}/uptime."""

from __future__ import annotations

from aiohttp import web

from availmon.api.app import DEPS, read_json
from availmon.api.handlers import Query, _path_id
from availmon.errors import FieldError, ValidationFailed

routes = web.RouteTableDef()

_READ_ONLY = {
    "id", "endpoint_id", "severity", "started_at", "opened_at", "ended_at", "acknowledged_at",
    "is_active", "reason", "error", "duration_s", "resolution", "reopen_hold",
}  # fmt: skip


@routes.patch("/api/v1/outages/{id}")
async def update_outage(request: web.Request) -> web.Response:
    """{"acknowledged_by": "..."} acknowledges; {"resolved_by": "...", "notes": "..."}
    resolves; {"notes": "..."} alone sets the notes; given together, acknowledged_by is applied
    first (an outage resolved without an acknowledgement stays unacknowledged). The server sets
    every time."""
    outage_id = _path_id(request)
    data = await read_json(request)
    if not isinstance(data, dict):
        raise ValidationFailed("request body must be a JSON object", [])
    read_only = sorted(k for k in data if k in _READ_ONLY)
    if read_only:
        raise ValidationFailed(
            "invalid outage update",
            [FieldError(k, "is read-only; the server sets it") for k in read_only],
        )
    outage = await request.app[DEPS].outages.update_outage(outage_id, data)
    return web.json_response(outage.to_json())


@routes.get("/api/v1/endpoints/{id}/uptime")
async def uptime(request: web.Request) -> web.Response:
    endpoint_id = _path_id(request)
    query = Query(request, {"window", "from", "to"})
    window = query.str("window")
    start, end = query.time("from"), query.time("to")
    query.done()
    report = await request.app[DEPS].availability.uptime(endpoint_id, window, start, end)
    return web.json_response(report.to_json())
