"""Shields-style SVG badges: /badge/{endpoint}/status.svg and
/badge/{endpoint}/uptime/{24h|7d|30d}.svg, where {endpoint} is an id or an unambiguous name.
An unknown endpoint is a 404 JSON error like any other; the access rules are the page's."""

from __future__ import annotations

from aiohttp import web

from availmon.api.app import DEPS
from availmon.web import access
from availmon.web.board import status_key
from availmon.web.fmt import pct
from availmon.web.svg import STATUS_COLOURS, badge, uptime_colour

BADGE_WINDOWS = ("24h", "7d", "30d")


def _svg(body: str) -> web.Response:
    response = web.Response(text=body, content_type="image/svg+xml")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


async def status_badge(request: web.Request) -> web.Response:
    viewer = access.badge_viewer(request)
    if isinstance(viewer, web.Response):
        return viewer
    deps = request.app[DEPS]
    endpoint = await deps.availability.find_endpoint(request.match_info["endpoint"])
    current = deps.collector.current(endpoint.id)
    if current is None:
        return _svg(badge(endpoint.name, "inactive", "lightgrey"))
    key = status_key(current)
    return _svg(badge(endpoint.name, key.lower(), STATUS_COLOURS[key]))


async def uptime_badge(request: web.Request) -> web.Response:
    viewer = access.badge_viewer(request)
    if isinstance(viewer, web.Response):
        return viewer
    deps = request.app[DEPS]
    window = request.match_info["window"]
    endpoint = await deps.availability.find_endpoint(request.match_info["endpoint"])
    availability = (await deps.availability.uptime(endpoint.id, window)).to_json()["availability"]
    return _svg(badge(f"uptime {window}", pct(availability), uptime_colour(availability)))


def add_badge_routes(app: web.Application) -> None:
    # {endpoint:.+}: names may hold "/" (sent as %2F or as is)
    app.router.add_get("/badge/{endpoint:.+}/status.svg", status_badge, name="web.badge_status")
    app.router.add_get(
        "/badge/{endpoint:.+}/uptime/{window:" + "|".join(BADGE_WINDOWS) + "}.svg",
        uptime_badge,
        name="web.badge_uptime",
    )
