"""Who may see the status page and badges, and how much.

- `api.public_status_page = true`: anyone sees the page and badges, without URLs, check errors
  and who acknowledged; an operator (the token, as a bearer header or through /login) sees all.
- otherwise, with `api.token` and `read_token_required = true`: the page needs the token. A
  browser cannot send a bearer header, so /login takes the token in a form and sets a cookie
  (HttpOnly, SameSite=Strict) holding an HMAC of a fixed text under the token: the cookie opens
  the page and badges only, never the API, and changing the token ends every session. Badges
  answer 401 JSON without it.
- otherwise (no token, or a token that guards writes only): open to anyone with every detail,
  as GET /api/v1/status is.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from aiohttp import web

from availmon.api.app import DEPS, ApiDeps, error_response

COOKIE = "availmon_session"
COOKIE_MAX_AGE = 7 * 24 * 3600
_SESSION_TEXT = b"availmon status page session v1"


@dataclass(frozen=True)
class Viewer:
    operator: bool  # presented the token (header or session cookie)
    details: bool  # may see URLs, errors, who acknowledged
    can_login: bool  # a token exists, so /login means something


def session_value(token: str) -> str:
    return hmac.new(token.encode(), _SESSION_TEXT, hashlib.sha256).hexdigest()


def _same(given: str, expected: str) -> bool:
    # surrogateescape: aiohttp decodes header bytes that are not UTF-8 that way
    return hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    )


def _presents_token(request: web.Request, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and _same(given.strip(), token):
        return True
    cookie = request.cookies.get(COOKIE)
    return cookie is not None and _same(cookie, session_value(token))


def viewer_of(request: web.Request) -> Viewer | None:
    """The viewer of a page or badge request; None when it needs the token and has none."""
    deps: ApiDeps = request.app[DEPS]
    if not deps.token:
        return Viewer(operator=False, details=not deps.public_status_page, can_login=False)
    operator = _presents_token(request, deps.token)
    if not operator and deps.read_token_required and not deps.public_status_page:
        return None
    return Viewer(operator, details=operator or not deps.public_status_page, can_login=True)


def page_viewer(request: web.Request) -> Viewer:
    """The viewer of an HTML page; without the token where it is needed: off to /login."""
    viewer = viewer_of(request)
    if viewer is None:
        raise web.HTTPSeeOther(
            request.app.router["web.login"].url_for().with_query(next=request.path_qs)
        )
    return viewer


def badge_viewer(request: web.Request) -> Viewer | web.Response:
    viewer = viewer_of(request)
    if viewer is not None:
        return viewer
    response = error_response(
        401, "unauthorized", "this badge needs 'Authorization: Bearer <api.token>'"
    )
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


def safe_next(target: str | None) -> str:
    """Only paths of this site: never "//elsewhere" or "https://elsewhere"."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def check_login(deps: ApiDeps, given: str) -> bool:
    return bool(deps.token) and _same(given.strip(), deps.token or "")


def start_session(response: web.StreamResponse, request: web.Request, token: str) -> None:
    response.set_cookie(
        COOKIE,
        session_value(token),
        max_age=COOKIE_MAX_AGE,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )


def end_session(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path="/")
