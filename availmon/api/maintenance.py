"""Maintenance window routes: CRUD on /api/v1/maintenance-windows and the per-endpoint view
GET /api/v1/endpoints/{id}/maintenance?at=."""

from __future__ import annotations

from aiohttp import web

from availmon.api.app import DEPS, read_json
from availmon.api.handlers import Query, _path_id
from availmon.errors import FieldError, ValidationFailed

routes = web.RouteTableDef()


async def _body(request: web.Request) -> dict[str, object]:
    data = await read_json(request)
    if not isinstance(data, dict):
        raise ValidationFailed("request body must be a JSON object", [])
    read_only = sorted(k for k in data if k in ("id", "source", "duration_s"))
    if read_only:
        message = "is read-only"
        raise ValidationFailed(
            "invalid maintenance window",
            [
                FieldError(k, message + ("; give duration" if k == "duration_s" else ""))
                for k in read_only
            ],
        )
    return data


@routes.get("/api/v1/maintenance-windows")
async def list_windows(request: web.Request) -> web.Response:
    Query(request, set()).done()
    windows = await request.app[DEPS].availability.maintenance.list_windows()
    return web.json_response({"items": [w.to_json() for w in windows], "count": len(windows)})


@routes.post("/api/v1/maintenance-windows")
async def create_window(request: web.Request) -> web.Response:
    data = await _body(request)
    window = await request.app[DEPS].availability.maintenance.create_window(data)
    return web.json_response(window.to_json(), status=201)


@routes.get("/api/v1/maintenance-windows/{id}")
async def get_window(request: web.Request) -> web.Response:
    window = await request.app[DEPS].availability.maintenance.get_window(_path_id(request))
    return web.json_response(window.to_json())


@routes.patch("/api/v1/maintenance-windows/{id}")
async def update_window(request: web.Request) -> web.Response:
    window_id = _path_id(request)
    data = await _body(request)
    window = await request.app[DEPS].availability.maintenance.update_window(window_id, data)
    return web.json_response(window.to_json())


@routes.delete("/api/v1/maintenance-windows/{id}")
async def delete_window(request: web.Request) -> web.Response:
    await request.app[DEPS].availability.maintenance.delete_window(_path_id(request))
    return web.Response(status=204)


@routes.get("/api/v1/endpoints/{id}/maintenance")
async def endpoint_maintenance(request: web.Request) -> web.Response:
    endpoint_id = _path_id(request)
    query = Query(request, {"at"})
    at = query.time("at")
    query.done()
    status = await request.app[DEPS].availability.is_in_maintenance(endpoint_id, at)
    return web.json_response(status.to_json())
