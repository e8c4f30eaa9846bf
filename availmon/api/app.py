"""aiohttp application factory: dependencies through typed AppKeys, JSON errors everywhere."""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from availmon.errors import Conflict, NotFound, StorageError, ValidationFailed
from availmon.logs import get_logger
from availmon.services import (
    AvailabilityService,
    OutageManagementService,
    ServiceAvailabilityCollector,
)

log = get_logger("availmon.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class ApiDeps:
    availability: AvailabilityService
    collector: ServiceAvailabilityCollector
    outages: OutageManagementService
    token: str | None = None
    max_body_bytes: int = 256 * 1024
    # () -> (ready, facts): scheduler running, results reaching PostgreSQL, backlogs
    readiness: Callable[[], tuple[bool, dict[str, Any]]] | None = None


DEPS: web.AppKey[ApiDeps] = web.AppKey("deps", ApiDeps)


def error_response(
    status: int, code: str, message: str, fields: list[Any] | None = None
) -> web.Response:
    body = {"error": {"code": code, "message": message, "fields": fields or []}}
    return web.json_response(body, status=status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ValidationFailed as exc:
        body = exc.to_json()
        return error_response(422, body["code"], body["message"], body["fields"])
    except NotFound as exc:
        return error_response(404, "not_found", str(exc))
    except Conflict as exc:
        return error_response(409, "conflict", str(exc))
    except StorageError as exc:
        return error_response(503, "storage_unavailable", str(exc))
    except web.HTTPRequestEntityTooLarge:
        return error_response(413, "body_too_large", "request body is too large")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        return error_response(exc.status, code, exc.text or exc.reason)
    except Exception:
        log.exception("api_handler_crashed", path=request.path, method=request.method)
        return error_response(500, "internal_error", "internal error; see the daemon log")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[DEPS].token
    if token and request.method in WRITE_METHODS:
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            response = error_response(
                401, "unauthorized", "this request needs 'Authorization: Bearer <api.token>'"
            )
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
    return await handler(request)


async def read_json(request: web.Request) -> Any:
    if request.content_length is None and not request.can_read_body:
        raise ValidationFailed("request body must be a JSON object", [])
    raw = await request.read()
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationFailed(f"request body is not valid JSON: {exc}", []) from None


def create_app(deps: ApiDeps) -> web.Application:
    from availmon.api import handlers

    app = web.Application(
        middlewares=[errors_middleware, auth_middleware], client_max_size=deps.max_body_bytes
    )
    app[DEPS] = deps
    handlers.add_routes(app)
    return app
