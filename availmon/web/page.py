"""HTML handlers: the status page (GET /), one endpoint's page (GET /endpoints/{id}) and the
operator login form. They gather from the services and render web/templates with jinja2."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import jinja2
from aiohttp import web

from availmon.api.app import DEPS
from availmon.api.handlers import Query, _path_id
from availmon.errors import FieldError, NotFound, StorageError
from availmon.logs import get_logger
from availmon.web import access
from availmon.web.board import (
    MAX_OUTAGE_BANNERS,
    STATUS_ORDER,
    Filters,
    attach,
    build_board,
    maintenance_banners,
    outage_banners,
)

log = get_logger("availmon.web")
TEMPLATES: web.AppKey[jinja2.Environment] = web.AppKey("templates", jinja2.Environment)
REFRESH_S = 60
MAINTENANCE_AHEAD = timedelta(days=7)
UPTIME_WINDOWS = ("24h", "7d", "30d", "90d")
NO_DATABASE = "PostgreSQL cannot be reached: history, outages and acknowledgements are missing."
# the page's own script and style only; endpoint names and errors can never become markup
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; "
    "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


async def render(
    request: web.Request, template: str, status: int = 200, **context: Any
) -> web.Response:
    """Render in a worker thread: it reads only immutable data, and the event loop keeps
    getting the GIL between slices instead of stalling the checks in flight (~20 ms of
    rendering at 10,000 endpoints)."""
    page = request.app[TEMPLATES].get_template(template)
    html = await asyncio.to_thread(page.render, **context)
    response = web.Response(text=html, status=status, content_type="text/html")
    response.headers.update(_HEADERS)
    response.enable_compression()
    return response


def _filters(request: web.Request) -> Filters:
    query = Query(request, {"tag", "status", "q", "page"})
    status = query.str("status") or None
    if status is not None and status not in STATUS_ORDER:
        query.problems.append(FieldError("status", "must be one of " + ", ".join(STATUS_ORDER)))
    page = query.int("page", 1, 1, 10**6)
    query.done()
    return Filters(query.str("tag") or None, status, (query.str("q") or "").strip() or None, page)


async def index(request: web.Request) -> web.Response:
    viewer = access.page_viewer(request)
    filters = _filters(request)
    deps = request.app[DEPS]
    now = datetime.now(UTC)
    snapshot = deps.collector.snapshot()
    board = build_board(snapshot, filters)
    notice = None
    outages = []
    try:
        history = await deps.availability.charts.history(board.shown_ids, now)
        unchecked = [i for i, row in board.rows_by_id.items() if row.reason is None]
        attach(board, history, await deps.availability.charts.latest(unchecked))
        outages = await deps.outages.open_outages()
    except StorageError as exc:
        log.warning("status_page_without_database", error=str(exc))
        notice = NO_DATABASE
    current = {e.id: e for e in snapshot}
    occurrences = deps.availability.maintenance.occurrences(now, now + MAINTENANCE_AHEAD)
    return await render(
        request,
        "index.html",
        viewer=viewer,
        now=now,
        board=board,
        filters=filters,
        notice=notice,
        outage_banners=outage_banners(outages, current),
        max_outage_banners=MAX_OUTAGE_BANNERS,
        maintenance_banners=maintenance_banners(occurrences, now, current),
        refresh=REFRESH_S,
    )


async def endpoint_page(request: web.Request) -> web.Response:
    viewer = access.page_viewer(request)
    endpoint_id = _path_id(request)
    Query(request, set()).done()
    deps = request.app[DEPS]
    now = datetime.now(UTC)
    try:
        endpoint = await deps.availability.get_endpoint(endpoint_id)
    except NotFound as exc:
        return await render(request, "missing.html", 404, viewer=viewer, now=now, message=str(exc))
    history = (await deps.availability.charts.history([endpoint_id], now)).get(endpoint_id)
    uptime = {}
    for window in UPTIME_WINDOWS:
        uptime[window] = (await deps.availability.uptime(endpoint_id, window)).to_json()
    return await render(
        request,
        "endpoint.html",
        viewer=viewer,
        now=now,
        endpoint=endpoint,
        current=deps.collector.current(endpoint_id),
        history=history,
        uptime=uptime,
        checks=await deps.availability.list_statuses(endpoint_id, limit=50),
        outages=await deps.outages.list_outages(endpoint_id=endpoint_id, limit=20),
        maintenance=deps.availability.maintenance.status(endpoint, now),
    )


async def login_form(request: web.Request) -> web.Response:
    next_path = access.safe_next(request.query.get("next"))
    if not request.app[DEPS].token:
        raise web.HTTPSeeOther(next_path)  # nothing to log in with
    return await render(
        request, "login.html", viewer=access.viewer_of(request), now=datetime.now(UTC),
        next_path=next_path, failed=False,
    )  # fmt: skip


async def login(request: web.Request) -> web.StreamResponse:
    deps = request.app[DEPS]
    form = await request.post()
    next_path = access.safe_next(str(form.get("next", "")))
    token = form.get("token")
    if not deps.token or not isinstance(token, str) or not access.check_login(deps, token):
        log.info("status_page_login_refused", remote=request.remote)
        return await render(
            request, "login.html", 401, viewer=access.viewer_of(request), now=datetime.now(UTC),
            next_path=next_path, failed=True,
        )  # fmt: skip
    response = _see_other(next_path)
    access.start_session(response, request, deps.token)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    response = _see_other("/")
    access.end_session(response)
    return response


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})
