"""The status page, endpoint pages and SVG badges, served by the API's aiohttp app.

Server-rendered HTML (jinja2, web/templates) with one stylesheet and one small script
(web/static); usable without JavaScript. Like the JSON API, handlers read the services from
ApiDeps and never touch probes or the runner. Access rules: web/access.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jinja2
from aiohttp import web
from markupsafe import Markup, escape

from availmon.charts import History
from availmon.web import fmt, page, svg
from availmon.web.badges import add_badge_routes

STATIC_DIR = Path(__file__).parent / "static"


def day_bar(history: History | None) -> Markup:
    """The 90-day bar: one cell per day, coloured by its figure, its words in the title."""
    if history is None:
        return Markup('<div class="bar empty">no history</div>')
    cells = "".join(
        f'<i class="{fmt.day_class(d)}" title="{escape(fmt.day_title(d))}"></i>'
        for d in history.days
    )
    label = escape(f"{len(history.days)} days: {fmt.pct(history.availability)} available")
    # every text in it went through escape(); the classes are fixed words
    return Markup(f'<div class="bar" role="img" aria-label="{label}">{cells}</div>')  # noqa: S704


def response_spark(history: History | None, width: int = 120, height: int = 24) -> Markup:
    values = history.response_ms if history else ()
    known = [v for v in values if v is not None]
    if not known:
        title = "no response times in the last 24 h"
    else:
        latest = next(v for v in reversed(values) if v is not None)
        title = (
            f"response time, last 24 h: mean {fmt.ms(sum(known) / len(known))}, "
            f"highest half-hour {fmt.ms(max(known))}, latest half-hour {fmt.ms(latest)}"
        )
    return Markup(svg.sparkline(values, title, width, height))  # noqa: S704 (escapes its text)


class Painter:
    """Bar and sparkline markup, kept while the History it was drawn from is the one the
    chart service hands out (60 s): a page of 250 rows would otherwise format 22,500 cells."""

    def __init__(self, limit: int = 20_000) -> None:
        self._limit = limit
        self._drawn: dict[tuple[int, str], tuple[History, Markup]] = {}

    def _cached(self, history: History | None, kind: str, draw: Callable[[], Markup]) -> Markup:
        if history is None:
            return draw()
        key = (id(history), kind)
        found = self._drawn.get(key)
        if found is not None and found[0] is history:
            return found[1]
        if len(self._drawn) >= self._limit:
            self._drawn.clear()
        markup = draw()
        self._drawn[key] = (history, markup)
        return markup

    def bar(self, history: History | None) -> Markup:
        return self._cached(history, "bar", lambda: day_bar(history))

    def spark(self, history: History | None, width: int = 120, height: int = 24) -> Markup:
        return self._cached(
            history, f"spark{width}x{height}", lambda: response_spark(history, width, height)
        )


def templates(static: web.AbstractResource) -> jinja2.Environment:
    painter = Painter()
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("availmon.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        static=lambda name: str(static.url_for(filename=name)),
        words=fmt.STATUS_WORDS,
        pct=fmt.pct,
        ms=fmt.ms,
        duration=fmt.duration,
        utc=fmt.utc,
        iso=fmt.iso,
        ago=fmt.ago,
        day_bar=painter.bar,
        spark=painter.spark,
    )
    return env


def add_web_routes(app: web.Application) -> None:
    """Routes named web.* (the OpenAPI document leaves them out: they are not JSON)."""
    static = app.router.add_static("/static/", STATIC_DIR, name="web.static", append_version=True)
    app[page.TEMPLATES] = templates(static)
    app.router.add_get("/", page.index, name="web.index")
    app.router.add_get("/endpoints/{id}", page.endpoint_page, name="web.endpoint")
    login = app.router.add_resource("/login", name="web.login")
    login.add_route("GET", page.login_form)
    login.add_route("POST", page.login)
    app.router.add_post("/logout", page.logout, name="web.logout")
    add_badge_routes(app)
