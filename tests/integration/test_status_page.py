"""The status page, the endpoint page and badges on a seeded database (tests/pageseed.py)
served by the real daemon: the page in headless Chromium (the DOM after its script ran, and a
screenshot), filters, and the access rules (public mode, the login form)."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from availmon.app import Daemon, build_daemon
from availmon.model import Status
from availmon.store import Repository
from tests.htmltree import Node, parse
from tests.pageseed import Seeded, days_ago, demo_fleet, seed

from .test_daemon import settings_for

TOKEN = "page-t0ken"
ORDER = ["DOWN", "DEGRADED", "UNKNOWN", "MAINTENANCE", "UP"]


@pytest.fixture
async def seeded(repo: Repository) -> Seeded:
    return await seed(repo, demo_fleet())


@asynccontextmanager
async def daemon_on(pg_dsn: str, **api: Any) -> AsyncIterator[Daemon]:
    async with build_daemon(settings_for(pg_dsn, [], **api)) as daemon:
        yield daemon


def base(daemon: Daemon) -> str:
    return f"http://127.0.0.1:{daemon.api_port}"


async def get(url: str, **kwargs: Any) -> tuple[int, dict[str, str], str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, allow_redirects=False, **kwargs) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.text()


async def chromium(url: str, profile: Path, *args: str) -> bytes:
    """Run headless Chromium on `url` (asynchronously: the daemon answers from this loop)."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed: run `make test-deps` (as root)")
    proc = await asyncio.create_subprocess_exec(
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}", *args, url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0
    return out


def rows(dom: Node, status: str | None = None) -> list[Node]:
    found = dom.find_all("tr", cls="endpoint")
    return [r for r in found if status is None or r.attrs["data-status"] == status]


def row_of(dom: Node, name: str) -> Node:
    (row,) = [r for r in rows(dom) if r.find("td", cls="name").find("a").text == name]
    return row


def cell(row: Node, day: str) -> Node:
    (found,) = [i for i in row.find("div", cls="bar").kids("i") if i.attrs["title"][:10] == day]
    return found


@pytest.mark.timeout(180)
async def test_the_status_page_in_chromium(pg_dsn: str, seeded: Seeded, tmp_path: Path):
    async with daemon_on(pg_dsn) as daemon:
        dom = parse((await chromium(base(daemon) + "/", tmp_path / "a", "--dump-dom")).decode())
        png = tmp_path / "page.png"
        await chromium(
            base(daemon) + "/", tmp_path / "b", f"--screenshot={png}", "--window-size=1280,1400"
        )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000

    groups = dom.find_all("details", cls="group")
    assert [g.attrs["data-status"] for g in groups] == ORDER  # failing first
    assert all("open" in g.attrs for g in groups)  # 36 endpoints: every group open
    counts = [a.text for a in dom.find("nav", cls="counts").find_all("a")]
    assert counts == ["4 DOWN", "2 DEGRADED", "1 UNKNOWN", "3 MAINTENANCE", "26 UP"]

    # the most severe first, then the longest failing
    down = rows(dom, "DOWN")
    names = [r.find("td", cls="name").find("a").text for r in down]
    assert names == ["payments-api", "search-api", "mail-relay", "legacy-ftp"]
    for row in down:  # in colour (the class) and in words
        pill = row.find("td", cls="status").find("span", cls="pill")
        assert pill.text == "DOWN" and "s-down" in pill.classes
    for status in ORDER:
        expected = sorted(seeded.names(Status(status)))
        got = sorted(r.find("td", cls="name").find("a").text for r in rows(dom, status))
        assert got == expected, status
        assert {r.find("td", cls="status").find("span").text for r in rows(dom, status)} == {status}

    payments = row_of(dom, "payments-api")
    assert payments.find("div", cls="url").text == "https://127.0.0.1:9/"
    assert payments.find("div", cls="reason").text == "timeout"
    assert payments.find("td", cls="since").text == "3 h"
    assert row_of(dom, "metrics-push").find("div", cls="reason").text == "overloaded"
    slow = row_of(dom, "checkout-web").find("td", cls="rt").text  # restored from PostgreSQL
    assert slow.endswith(" ms") and float(slow[:-3].replace(",", "")) > 1000

    # 90 day cells in every bar, ending today; hover text with the figure and the outages
    today = datetime.now(UTC).date()
    for row in rows(dom):
        cells = row.find("div", cls="bar").kids("i")
        assert len(cells) == 90
        days = [c.attrs["title"][:10] for c in cells]
        assert days == [(today - timedelta(days=89 - i)).isoformat() for i in range(90)]
        assert row.find("svg", cls="spark").find_all("path"), "24 h sparkline"
    now = seeded.now
    bad = cell(payments, days_ago(now, 3).isoformat())
    assert bad.attrs["title"].endswith(": 91.66% available; 1 outage, worst critical, 2 h down")
    assert bad.classes == {"c3"}
    search = row_of(dom, "search-api")
    blip = cell(search, days_ago(now, 10).isoformat())  # 5 min DOWN, never an outage
    assert blip.attrs["title"].endswith(": 100% available") and blip.classes == {"c0"}
    half = cell(search, days_ago(now, 20).isoformat())
    assert half.attrs["title"].endswith(": 97.91% available; 1 outage, worst high, 30 min down")
    assert half.classes == {"c2"}
    maint = cell(row_of(dom, "orders-db"), days_ago(now, 5).isoformat())
    assert maint.attrs["title"].endswith(": 100% available; 2 h maintenance")
    fresh = row_of(dom, "new-service").find("div", cls="bar").kids("i")
    no_data = [c for c in fresh if c.attrs["title"].endswith(": no data")]
    assert len(no_data) == (80 if now.hour >= 1 else 81) and {"n"} == {
        k for c in no_data for k in c.classes
    }

    banners = dom.find("section", cls="banners")
    outages = banners.find_all("div", cls="outage")
    assert [b.find("a").text for b in outages] == [
        "payments-api", "search-api", "mail-relay", "legacy-ftp",
    ]  # fmt: skip
    assert [b.find("span", cls="sev").text for b in outages] == [
        "CRITICAL", "HIGH", "HIGH", "MEDIUM",
    ]  # fmt: skip
    assert [b.find("span", cls="ack").text for b in outages] == [
        "Not acknowledged", "Acknowledged by alice", "Not acknowledged", "Acknowledged by bob",
    ]  # fmt: skip
    assert "Outage: payments-api is DOWN since" in outages[0].text
    running, upcoming = banners.find_all("div", cls="maintenance")
    assert running.text.startswith("MAINTENANCE NOW db patching: endpoints tagged db, until")
    assert "PostgreSQL minor upgrade" in running.text
    assert upcoming.text.startswith("SCHEDULED network upgrade: all endpoints,")
    assert "(in 2 d 23 h)" in upcoming.text


async def test_filters_are_query_parameters(pg_dsn: str, seeded: Seeded):
    async with daemon_on(pg_dsn) as daemon:
        status, _, html = await get(base(daemon) + "/?tag=db")
        assert status == 200
        dom = parse(html)
        assert [g.attrs["data-status"] for g in dom.find_all("details", cls="group")] == [
            "MAINTENANCE"
        ]
        assert len(rows(dom, "MAINTENANCE")) == 3 and len(rows(dom)) == 3
        dom = parse((await get(base(daemon) + "/?status=DOWN&tag=api"))[2])
        names = [r.find("td", cls="name").find("a").text for r in rows(dom)]
        assert names == ["payments-api", "search-api"]
        dom = parse((await get(base(daemon) + "/?q=DB"))[2])
        assert len(rows(dom)) == 3
        dom = parse((await get(base(daemon) + "/?tag=nothing"))[2])
        assert dom.find("p", cls="empty").text == "No endpoint matches these filters."
        status, _, body = await get(base(daemon) + "/?status=SIDEWAYS")
        assert status == 422 and '"field": "status"' in body


async def test_the_endpoint_page(pg_dsn: str, seeded: Seeded):
    endpoint_id = seeded.ids["payments-api"]
    async with daemon_on(pg_dsn) as daemon:
        status, headers, html = await get(f"{base(daemon)}/endpoints/{endpoint_id}")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        dom = parse(html)
        assert dom.find("h1").text == "payments-api DOWN"
        uptime = dom.find("table", cls="uptime").find("tbody").kids("tr")
        assert [r.attrs["data-window"] for r in uptime] == ["24h", "7d", "30d", "90d"]
        day = uptime[0].find("td", cls="availability").text
        assert day.endswith("%") and float(day[:-1]) < 90  # DOWN for 3 h of the last 24
        outages = dom.find("table", cls="outages").find("tbody").kids("tr")
        assert [o.attrs["class"] for o in outages] == ["open", "closed"]
        assert outages[1].kids("td")[2].text == "2 h"
        checks = dom.find("table", cls="checks").find("tbody").kids("tr")
        assert len(checks) == 50 and checks[0].attrs["data-status"] == "DOWN"
        assert len(dom.find("div", cls="bar").kids("i")) == 90
        status, _, html = await get(f"{base(daemon)}/endpoints/999999")
        assert status == 404 and "endpoint 999999 does not exist" in html
        status, _, body = await get(f"{base(daemon)}/endpoints/abc")
        assert status == 422 and body.startswith('{"error"')


def badge_title(svg: str) -> str:
    return parse(svg).find("title").text


async def test_badges_by_id_and_by_name(pg_dsn: str, seeded: Seeded):
    ids = seeded.ids
    async with daemon_on(pg_dsn, token=TOKEN) as daemon:
        url = base(daemon)
        status, headers, svg = await get(f"{url}/badge/{ids['payments-api']}/status.svg")
        assert status == 200 and headers["Content-Type"].startswith("image/svg+xml")
        assert badge_title(svg) == "payments-api: down" and "#e05d44" in svg
        status, _, svg = await get(f"{url}/badge/users-db/status.svg")
        assert status == 200 and badge_title(svg) == "users-db: maintenance"
        async with aiohttp.ClientSession() as session:
            api = f"{url}/api/v1/endpoints/{ids['payments-api']}/uptime?window=7d"
            async with session.get(api) as resp:
                figure = (await resp.json())["availability"]
        status, _, svg = await get(f"{url}/badge/payments-api/uptime/7d.svg")
        expected = f"{int(figure * 10000) / 100:.2f}%"
        assert status == 200 and badge_title(svg) == f"uptime 7d: {expected}"
        status, _, svg = await get(f"{url}/badge/{ids['blog']}/uptime/30d.svg")
        assert badge_title(svg) == "uptime 30d: 100%"

        status, _, body = await get(f"{url}/badge/no-such-thing/status.svg")
        assert status == 404 and '"code": "not_found"' in body
        status, _, body = await get(f"{url}/badge/blog/uptime/90d.svg")
        assert status == 404 and '"code": "not_found"' in body
        # a name that is another endpoint's id is ambiguous; a name with "/" and " " works
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession(headers=auth) as session:
            for name in (str(ids["blog"]), "ops/edge 1"):
                spec = {"name": name, "url": "tcp://127.0.0.1:9", "check_interval": 86400}
                async with session.post(f"{url}/api/v1/endpoints", json=spec) as resp:
                    assert resp.status == 201
        status, _, body = await get(f"{url}/badge/{ids['blog']}/status.svg")
        assert status == 404 and "use an id" in body
        status, _, svg = await get(f"{url}/badge/{quote('ops/edge 1', safe='')}/status.svg")
        assert status == 200 and badge_title(svg).startswith("ops/edge 1: ")


async def test_public_mode_shows_the_page_without_urls_or_errors(pg_dsn: str, seeded: Seeded):
    settings = {"token": TOKEN, "read_token_required": True, "public_status_page": True}
    async with daemon_on(pg_dsn, **settings) as daemon:
        url = base(daemon)
        status, _, html = await get(url + "/")
        assert status == 200 and len(rows(parse(html))) == 36
        for secret in ("127.0.0.1:9", "timeout", "refused", "alice", "connection refused"):
            assert secret not in html, secret
        assert "Acknowledged" in html and "Operator login" in html
        status, _, html = await get(f"{url}/endpoints/{seeded.ids['mail-relay']}")
        assert status == 200 and "127.0.0.1" not in html and "refused" not in html
        assert (await get(f"{url}/badge/mail-relay/status.svg"))[0] == 200
        assert (await get(url + "/api/v1/status"))[0] == 401  # the API stays closed
        operator = {"Authorization": f"Bearer {TOKEN}"}
        status, _, html = await get(url + "/", headers=operator)
        assert status == 200 and "tcp://127.0.0.1:9" in html and "by alice" in html


async def test_a_read_protected_page_needs_a_login(pg_dsn: str, seeded: Seeded):
    async with daemon_on(pg_dsn, token=TOKEN, read_token_required=True) as daemon:
        url = base(daemon)
        status, headers, _ = await get(url + "/?tag=db")
        assert status == 303 and headers["Location"] == "/login?next=/?tag%3Ddb"
        status, headers, body = await get(url + "/badge/blog/status.svg")
        assert status == 401 and headers["WWW-Authenticate"] == "Bearer" and '"error"' in body
        status, _, html = await get(url + "/login?next=/")
        assert status == 200 and 'type="password"' in html

        # unsafe=True: keep cookies of an IP-address host, as a browser does
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            form = {"token": "wrong", "next": "/"}
            async with session.post(url + "/login", data=form, allow_redirects=False) as resp:
                assert resp.status == 401 and "That is not the token." in await resp.text()
                assert "availmon_session" not in resp.cookies
            form = {"token": TOKEN, "next": "//elsewhere.example/"}
            async with session.post(url + "/login", data=form, allow_redirects=False) as resp:
                assert resp.status == 303 and resp.headers["Location"] == "/"
                cookie = resp.headers["Set-Cookie"]
                assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
            async with session.get(url + "/") as resp:  # the session cookie opens the page
                html = await resp.text()
                assert resp.status == 200 and "tcp://127.0.0.1:9" in html and "Log out" in html
            async with session.get(url + "/badge/blog/status.svg") as resp:
                assert resp.status == 200
            async with session.get(url + "/api/v1/status") as resp:  # ... and never the API
                assert resp.status == 401
            spec = {"name": "sneaky", "url": "tcp://127.0.0.1:9"}
            async with session.post(url + "/api/v1/endpoints", json=spec) as resp:
                assert resp.status == 401
            async with session.post(url + "/logout", allow_redirects=False) as resp:
                assert resp.status == 303
            async with session.get(url + "/", allow_redirects=False) as resp:
                assert resp.status == 303


async def test_a_token_for_writes_only_leaves_the_page_open(pg_dsn: str, seeded: Seeded):
    async with daemon_on(pg_dsn, token=TOKEN) as daemon:
        status, _, html = await get(base(daemon) + "/")
        assert status == 200 and "tcp://127.0.0.1:9" in html and "Operator login" in html
        status, headers, css = await get(base(daemon) + parse(html).find("link").attrs["href"])
        assert status == 200 and headers["Content-Type"].startswith("text/css") and ".bar" in css
        status, _, document = await get(base(daemon) + "/api/v1/openapi.json")
        paths = set(json.loads(document)["paths"])
        # the JSON API's document: pages, badges and static files are not in it
        assert "/api/v1/status" in paths
        assert not {p for p in paths if not p.startswith("/api/")} - {
            "/healthz",
            "/readyz",
            "/metrics",
        }
