"""The status page at scale, and the README screenshot. A measurement, not a test.

    .venv/bin/python bench/status_page.py --endpoints 10000 [--requests 5]
    .venv/bin/python bench/status_page.py --demo --screenshot docs/status-page.png

Starts an embedded PostgreSQL in a temp dir, seeds it (tests/pageseed.py: `large_fleet` or
the 36-endpoint `demo_fleet`), starts the daemon on it in this process (API on a free port),
then GETs / cold (nothing cached) and warm, a filtered page and a later page of the UP group,
and prints one JSON line: seconds per request, HTML size raw and gzipped, rows rendered.
With --screenshot, headless Chromium (Debian's chromium) saves a PNG of the page.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ holds the seed

from availmon.app import build_daemon
from availmon.config import Settings
from availmon.store import EmbeddedPostgres, Repository, apply_migrations
from tests.pageseed import demo_fleet, large_fleet, seed


async def fetch(session: aiohttp.ClientSession, url: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    async with session.get(url) as resp:
        body = await resp.read()
        assert resp.status == 200, body[:500]
    return time.perf_counter() - started, body


async def screenshot(url: str, path: Path, width: int, height: int) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "apt-get install chromium (make test-deps)"
    with tempfile.TemporaryDirectory() as profile:
        proc = await asyncio.create_subprocess_exec(
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--user-data-dir={profile}", f"--window-size={width},{height}",
            f"--screenshot={path}", url,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await asyncio.wait_for(proc.wait(), 120)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="availmon-page-") as tmp:
        os.chmod(tmp, 0o755)  # noqa: S103 (the embedded server may run as another user)
        server = EmbeddedPostgres(Path(tmp) / "pg", durable=False)
        dsn = await server.start()
        try:
            return await _measure(args, dsn, Path(tmp))
        finally:
            await server.stop()


async def _measure(args: argparse.Namespace, dsn: str, tmp: Path) -> dict[str, Any]:
    plans = demo_fleet() if args.demo else large_fleet(args.endpoints)
    repo = await Repository.connect(dsn)
    started = time.perf_counter()
    try:
        await apply_migrations(repo.pool)
        await seed(repo, plans)
    finally:
        await repo.close()
    seeded_s = time.perf_counter() - started
    settings = Settings(
        database={"dsn": dsn},
        api={"port": 0},
        daemon={"state_dir": str(tmp / "state"), "shutdown_timeout": 2},
        logging={"level": "warning"},
    )
    result: dict[str, Any] = {"endpoints": len(plans), "seed_s": round(seeded_s, 1)}
    async with build_daemon(settings) as daemon, aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{daemon.api_port}"
        cold, body = await fetch(session, base + "/")
        warm = [(await fetch(session, base + "/"))[0] for _ in range(args.requests)]
        result |= {
            "cold_s": round(cold, 3),
            "warm_s": [round(w, 3) for w in warm],
            "html_bytes": len(body),
            "html_gzip_bytes": len(gzip.compress(body)),
            "rows": body.count(b'<tr class="endpoint"'),
        }
        for name, path in (("filtered", "/?tag=db"), ("up_page_3", "/?status=UP&page=3")):
            cold, _ = await fetch(session, base + path)
            result[f"{name}_cold_s"] = round(cold, 3)
        result["phases_ms"] = await _phases(daemon)
        if args.screenshot:
            await screenshot(base + args.path, Path(args.screenshot), args.width, args.height)
            result["screenshot"] = args.screenshot
    return result


async def _phases(daemon: Any) -> dict[str, float]:
    """The index handler's steps, timed in this process (best of 5; history cached as it is
    for 60 s after a request), then the history queries without the cache."""
    from aiohttp import web

    from availmon.web import add_web_routes
    from availmon.web import board as b
    from availmon.web.access import Viewer
    from availmon.web.page import TEMPLATES

    app = web.Application()
    add_web_routes(app)  # the same templates, on an app of its own
    env = app[TEMPLATES]
    best: dict[str, float] = {}

    def took(name: str, started: float) -> float:
        now = time.perf_counter()
        best[name] = min(best.get(name, 1e9), round((now - started) * 1000, 1))
        return now

    for _ in range(5):
        now = datetime.now(UTC)
        t = time.perf_counter()
        snapshot = daemon.collector.snapshot()
        t = took("snapshot", t)
        board = b.build_board(snapshot, b.Filters())
        t = took("group_and_sort", t)
        b.attach(board, await daemon.availability.charts.history(board.shown_ids, now), {})
        t = took("history_cached", t)
        outages = await daemon.outages.open_outages()
        t = took("open_outages_query", t)
        current = {e.id: e for e in snapshot}
        html = env.get_template("index.html").render(
            viewer=Viewer(operator=False, details=True, can_login=False), now=now,
            board=board, filters=board.filters, notice=None,
            outage_banners=b.outage_banners(outages, current), max_outage_banners=5,
            maintenance_banners=[], refresh=60,
        )  # fmt: skip
        t = took("render", t)
        gzip.compress(html.encode(), 6)
        took("gzip", t)
    repo, ids = daemon.repo, board.shown_ids
    now = datetime.now(UTC)
    for _ in range(3):
        t = time.perf_counter()
        await repo.daily_totals(ids, now - timedelta(days=90), now)
        t = took("q_daily_totals", t)
        await repo.outages_overlapping(ids, now - timedelta(days=90), now)
        t = took("q_outages", t)
        await repo.response_buckets(ids, now - timedelta(days=1), now, timedelta(minutes=30))
        took("q_response_buckets", t)
    for _ in range(3):
        daemon.availability.charts._recent.clear()
        daemon.availability.charts._past.clear()
        t = time.perf_counter()
        await daemon.availability.charts.history(board.shown_ids, datetime.now(UTC))
        took("history_uncached", t)
    for _ in range(3):  # what a refresh after 60 s costs: today's rollups, the 24 h series
        daemon.availability.charts._recent.clear()
        t = time.perf_counter()
        await daemon.availability.charts.history(board.shown_ids, datetime.now(UTC))
        took("history_refresh", t)
    return best


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=10_000)
    parser.add_argument("--demo", action="store_true", help="the 36-endpoint demo fleet")
    parser.add_argument("--requests", type=int, default=5, help="warm requests after the first")
    parser.add_argument("--screenshot", help="save a PNG of the page at --path here")
    parser.add_argument("--path", default="/", help="e.g. /endpoints/1 or /?status=UP")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1500)
    print(json.dumps(asyncio.run(main(parser.parse_args()))))  # noqa: T201
