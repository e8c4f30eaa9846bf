"""aiohttp application factory: dependencies through typed AppKeys, JSON errors everywhere."""

from __future__ import annotations

import hmac
import json
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from availmon.errors import (
    Conflict,
    FieldError,
    NotFound,
    StorageError,
    ValidationFailed,
    key_path,
)
from availmon.logs import get_logger
from availmon.services import (
    AvailabilityService,
    OutageManagementService,
    ServiceAvailabilityCollector,
)
from availmon.spectext import unstorable

log = get_logger("availmon.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
METRICS_PATH = "/metrics"
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # prometheus-client's text


def read_protected(path: str) -> bool:
    """Whether a GET of `path` needs the token when read_token_required is set: the API and
    the metrics (they name every endpoint); /healthz and /readyz stay open."""
    return path.startswith("/api/") or path == METRICS_PATH


# browser forms of the status page: they check the token themselves (web/access.py)
FORM_PATHS = frozenset({"/login", "/logout"})


@dataclass(frozen=True)
class ApiDeps:
    availability: AvailabilityService
    collector: ServiceAvailabilityCollector
    outages: OutageManagementService
    token: str | None = None
    max_body_bytes: int = 256 * 1024
    # with a token: GETs under /api/ and of /metrics need it too (see read_protected)
    read_token_required: bool = False
    # () -> (ready, facts): scheduler running, results reaching PostgreSQL, backlogs
    readiness: Callable[[], tuple[bool, dict[str, Any]]] | None = None
    # () -> the Prometheus text format 0.0.4, served at GET /metrics (no route without it)
    metrics: Callable[[], Awaitable[bytes]] | None = None
    # the status page and badges open to all, without URLs and error details (see web/access)
    public_status_page: bool = False


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
        response = error_response(exc.status, code, exc.text or exc.reason)
        if "Allow" in exc.headers:  # a 405 must say which methods the resource has
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("api_handler_crashed", path=request.path, method=request.method)
        return error_response(500, "internal_error", "internal error; see the daemon log")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    deps = request.app[DEPS]
    token = deps.token
    protected = (request.method in WRITE_METHODS and request.path not in FORM_PATHS) or (
        deps.read_token_required and read_protected(request.path)
    )
    if token and protected:
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        # surrogateescape: aiohttp decodes header bytes that are not UTF-8 that way
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode("utf-8", "surrogateescape"), token.encode()
        ):
            response = error_response(
                401, "unauthorized", "this request needs 'Authorization: Bearer <api.token>'"
            )
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
    return await handler(request)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400; json would make it inf, jsonb cannot hold it
        raise ValueError(f"number {text} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unstorable_fields(data: Any) -> list[FieldError]:
    """Strings (values or keys) holding U+0000 or a lone surrogate ("\\ud800" is valid JSON),
    which PostgreSQL cannot store in text/jsonb: a 422 here, not its error as a 503 later."""
    found: list[FieldError] = []
    stack: list[tuple[tuple[int | str, ...], Any]] = [((), data)]
    while stack:  # no recursion: json.loads accepts nesting nearly as deep as the stack
        loc, value = stack.pop()
        if isinstance(value, str):
            problem = unstorable(value)
            if problem:
                found.append(FieldError(key_path(loc), problem))
        elif isinstance(value, list):
            stack.extend(((*loc, i), item) for i, item in enumerate(value))
        elif isinstance(value, dict):
            stack.extend(((*loc, k), item) for k, item in value.items())
            stack.extend(((*loc, k), k) for k in value if unstorable(k))
    return sorted(set(found), key=lambda f: f.field)


async def read_json(request: web.Request) -> Any:
    if request.content_length is None and not request.can_read_body:
        raise ValidationFailed("request body must be a JSON object", [])
    raw = await request.read()
    try:
        data = json.loads(raw, parse_float=_finite, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as exc:  # also NaN, 1e400, ints over 4300 digits
        raise ValidationFailed(f"request body is not valid JSON: {exc}", []) from None
    except RecursionError:
        raise ValidationFailed("request body is nested too deeply", []) from None
    problems = _unstorable_fields(data)
    if problems:
        raise ValidationFailed("invalid request body", problems)
    return data


class ServerLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server logger (RequestHandler's `logger`): a request its parser refused
    (duplicate Content-Type, a request line over 8190 bytes, ...) is the client's mistake, so it
    is one warning without a traceback; every other error is logged as aiohttp logs it.

    aiohttp answers those requests itself, in plain text: they never reach the app, so no
    middleware sees them, and changing the body would mean replacing aiohttp's RequestHandler
    and Server classes, which AppRunner does not let us choose."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            remote = args[0] if args else None
            log.warning(
                "http_request_rejected", status=exc_info.code, reason=exc_info.message,
                remote=remote,
            )  # fmt: skip
            return
        super().exception(msg, *args, exc_info=exc_info, **kwargs)


def server_log() -> ServerLog:
    return ServerLog(logging.getLogger("aiohttp.server"), {})


def create_app(deps: ApiDeps) -> web.Application:
    from availmon.api import handlers
    from availmon.web import add_web_routes

    app = web.Application(
        middlewares=[errors_middleware, auth_middleware], client_max_size=deps.max_body_bytes
    )
    app[DEPS] = deps
    handlers.add_routes(app)
    add_web_routes(app)  # status page, badges, static files: not part of the JSON API
    return app
