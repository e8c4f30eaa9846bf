"""The whole daemon (build_daemon) against real loopback servers and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from availmon.app import Daemon, build_daemon
from availmon.config import Settings
from availmon.gctuning import GC_THRESHOLDS
from tests.loopback import serve

FAST = {"check_interval": 0.4, "timeout": 0.2, "recheck_interval": 0.1}


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


class Target:
    """An HTTP server whose health the test flips."""

    def __init__(self) -> None:
        self.healthy = True
        self.hits = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.healthy:
            return web.Response(text="all good")
        return web.Response(status=503, text="sick")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/health", self.handle)
        self._runner, self.port = await serve(app)

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    t = Target()
    await t.start()
    yield t
    await t.stop()


def settings_for(dsn: str, endpoints: list[dict[str, Any]], **api: Any) -> Settings:
    return Settings(
        database={"dsn": dsn, "flush_interval": 0.1},
        api={"port": 0, **api},
        scheduler={"tick_interval": 0.05},
        daemon={"shutdown_timeout": 2},
        endpoints=endpoints,
    )


async def db_rows(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def api_get(daemon: Daemon, path: str) -> Any:
    url = f"http://127.0.0.1:{daemon.api_port}{path}"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_outage_opens_after_threshold_and_closes_after_recovery(pg_dsn: str, target: Target):
    endpoints = [{"name": "web", "url": target.url, **FAST}]
    async with build_daemon(settings_for(pg_dsn, endpoints)) as daemon:

        async def status_is(value: str) -> bool:
            body = await api_get(daemon, "/api/v1/status")
            return bool(body["endpoints"]) and body["endpoints"][0]["status"] == value

        await wait_for(lambda: status_is("UP"))
        body = await api_get(daemon, "/api/v1/status")
        assert body["counts"]["UP"] == 1 and body["total"] == 1
        assert body["endpoints"][0]["response_time_ms"] > 0
        target.healthy = False

        async def outage_exists() -> bool:
            return bool(await db_rows(pg_dsn, "SELECT 1 FROM outages"))

        await wait_for(outage_exists)
        target.healthy = True

        async def outage_closed() -> bool:
            rows = await db_rows(pg_dsn, "SELECT ended_at FROM outages")
            return rows[0]["ended_at"] is not None

        await wait_for(outage_closed)
        await daemon.writer.flush()
    (outage,) = await db_rows(pg_dsn, "SELECT * FROM outages")
    statuses = await db_rows(
        pg_dsn,
        "SELECT checked_at, status::text AS status, reason FROM statuses ORDER BY checked_at",
    )
    down = [r for r in statuses if r["status"] == "DOWN"]
    assert all(r["reason"] == "unexpected_status" for r in down)
    # opened by exactly failure_threshold (3) failures; started at the first of them
    assert outage["started_at"] == down[0]["checked_at"]
    assert outage["opened_at"] == down[2]["checked_at"]
    # closed by exactly recovery_threshold (2) good checks; ended at the first of them
    after = [r for r in statuses if r["checked_at"] > down[-1]["checked_at"]]
    assert outage["ended_at"] == after[0]["checked_at"]
    assert len(down) == 3 or all(r["checked_at"] < outage["ended_at"] for r in down)
    assert outage["severity"] == "high"


async def test_restart_continues_the_open_outage(pg_dsn: str):
    # nothing listens on this port: refused on every check
    sock = __import__("socket").socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    endpoints = [{"name": "gone", "url": f"tcp://127.0.0.1:{port}", "severity": "critical", **FAST}]
    settings = settings_for(pg_dsn, endpoints)
    async with build_daemon(settings) as daemon:

        async def outage_open() -> bool:
            return bool(await db_rows(pg_dsn, "SELECT 1 FROM outages WHERE ended_at IS NULL"))

        await wait_for(outage_open)
        first = daemon.monitor.get(daemon.monitor.all()[0].endpoint.id).outage_id
    async with build_daemon(settings) as daemon:
        watched = daemon.monitor.all()[0]
        assert watched.outage_id == first
        assert watched.machine.state.outage_open
        before = daemon.monitor.checks_executed

        async def more_checks() -> bool:
            return daemon.monitor.checks_executed >= before + 4

        await wait_for(more_checks)
        body = await api_get(daemon, "/api/v1/status")
        assert body["endpoints"][0]["open_outage"]["id"] == first
        assert body["endpoints"][0]["reason"] == "refused"
        outages = await api_get(daemon, "/api/v1/outages?active=true")
        assert [o["id"] for o in outages["items"]] == [first]
    rows = await db_rows(pg_dsn, "SELECT id, severity FROM outages")
    assert [(r["id"], r["severity"]) for r in rows] == [(first, "critical")]


async def test_results_are_stored_with_null_response_time_when_nothing_answered(pg_dsn: str):
    sock = __import__("socket").socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    endpoints = [{"name": "closed", "url": f"tcp://127.0.0.1:{port}", **FAST}]
    async with build_daemon(settings_for(pg_dsn, endpoints)) as daemon:

        async def stored() -> bool:
            await daemon.writer.flush()
            return bool(await db_rows(pg_dsn, "SELECT 1 FROM statuses"))

        await wait_for(stored)
        endpoint_id = daemon.monitor.all()[0].endpoint.id
        page = await api_get(daemon, f"/api/v1/endpoints/{endpoint_id}/statuses?limit=1")
    assert page["count"] == 1
    item = page["items"][0]
    assert item["status"] == "DOWN" and item["reason"] == "refused"
    assert item["response_time_ms"] is None
    rows = await db_rows(pg_dsn, "SELECT response_time_ms FROM statuses")
    assert all(r["response_time_ms"] is None for r in rows)


async def test_config_sync_deactivates_removed_endpoints(pg_dsn: str, target: Target):
    both = [
        {"name": "a", "url": target.url, **FAST},
        {"name": "b", "url": target.url, **FAST},
    ]
    async with build_daemon(settings_for(pg_dsn, both)) as daemon:
        assert len(daemon.monitor) == 2
    async with build_daemon(settings_for(pg_dsn, both[:1])) as daemon:
        assert [w.endpoint.name for w in daemon.monitor.all()] == ["a"]
        listing = await api_get(daemon, "/api/v1/endpoints")
        by_name = {e["name"]: e for e in listing["items"]}
        assert by_name["b"]["is_active"] is False
        assert by_name["a"]["source"] == "config"


async def test_without_a_dsn_the_daemon_runs_on_an_embedded_server(
    daemon_state_dir: Path, target: Target
):
    settings = Settings(
        api={"port": 0},
        database={"flush_interval": 0.1},
        scheduler={"tick_interval": 0.05},
        endpoints=[{"name": "web", "url": target.url, **FAST}],
    )
    assert settings.daemon.state_dir == daemon_state_dir
    async with build_daemon(settings) as daemon:

        async def stored() -> bool:
            await daemon.writer.flush()
            return daemon.writer.stats.written >= 2

        await wait_for(stored)
        pgdata = daemon_state_dir / "pgdata"
        assert (pgdata / "PG_VERSION").exists()
        rows = await daemon.repo.list_statuses(daemon.monitor.all()[0].endpoint.id, limit=10)
        assert rows and all(r.status.value == "UP" for r in rows)
    # stopped with the daemon: the postmaster is gone and its pid file removed
    assert not (pgdata / "postmaster.pid").exists()


async def test_outage_of_an_endpoint_removed_from_the_config_is_closed(pg_dsn: str, target: Target):
    sock = __import__("socket").socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    web_ep = {"name": "web", "url": target.url, **FAST}
    gone = {"name": "gone", "url": f"tcp://127.0.0.1:{port}", **FAST}
    async with build_daemon(settings_for(pg_dsn, [web_ep, gone])):

        async def outage_open() -> bool:
            return bool(await db_rows(pg_dsn, "SELECT 1 FROM outages WHERE ended_at IS NULL"))

        await wait_for(outage_open)
    async with build_daemon(settings_for(pg_dsn, [web_ep])) as daemon:
        assert [w.endpoint.name for w in daemon.monitor.all()] == ["web"]
    (row,) = await db_rows(pg_dsn, "SELECT ended_at FROM outages")
    assert row["ended_at"] is not None


async def test_readyz_reports_the_spool_while_postgres_is_away(pg_state_dir: Path, target: Target):
    from availmon.store import EmbeddedPostgres

    server = EmbeddedPostgres(pg_state_dir, durable=False)
    dsn = await server.start()
    try:
        endpoints = [{"name": "web", "url": target.url, **FAST}]
        async with build_daemon(settings_for(dsn, endpoints)) as daemon:
            url = f"http://127.0.0.1:{daemon.api_port}/readyz"

            async def readyz() -> tuple[int, Any]:
                async with aiohttp.ClientSession() as session, session.get(url) as resp:
                    return resp.status, await resp.json()

            async def state(code: int, spooled: bool) -> bool:
                status, body = await readyz()
                backlog = body["writer"]["spool_backlog"]
                return status == code and (backlog > 0) == spooled

            await wait_for(lambda: state(200, False))
            _, body = await readyz()
            assert body["event_loop"]["implementation"] == "asyncio"  # pytest-asyncio's loop
            # start-up objects are frozen out of the collector's passes while it runs
            assert body["event_loop"]["gc"]["frozen_objects"] > 0 and gc.get_freeze_count() > 0
            assert gc.get_threshold() == GC_THRESHOLDS
            await server.stop()
            await wait_for(lambda: state(503, True))
            _, body = await readyz()
            assert body["ready"] is False
            assert "not reaching PostgreSQL" in body["problems"][0]
            await server.start()
            await wait_for(lambda: state(200, False))
            assert daemon.writer.stats.dropped == 0
        assert gc.get_freeze_count() == 0 and gc.get_threshold() != GC_THRESHOLDS
    finally:
        await server.stop()


async def test_readyz_warns_of_overload_and_late_checks_and_stays_ready(
    pg_dsn: str, target: Target
) -> None:
    endpoints = [{"name": f"web-{i}", "url": target.url, **FAST} for i in range(3)]
    async with build_daemon(settings_for(pg_dsn, endpoints)) as daemon:
        url = f"http://127.0.0.1:{daemon.api_port}/readyz"

        async def readyz() -> tuple[int, Any]:
            async with aiohttp.ClientSession() as session, session.get(url) as resp:
                return resp.status, await resp.json()

        async def checked_twice() -> bool:
            return daemon.scheduler.executed >= 6

        await wait_for(checked_twice)
        looplag = daemon.monitor.looplag
        assert looplag is not None
        looplag.recent.clear()  # start-up's own pauses (the freeze's full pass) are past
        daemon.scheduler.lags.clear()
        daemon.scheduler.lag_times.clear()
        await asyncio.sleep(0.2)
        status, body = await readyz()
        assert status == 200 and body["warnings"] == []
        time.sleep(1.3)  # the whole daemon shares this loop: every check due meanwhile waits
        await asyncio.sleep(0.3)  # the late ones start, the lag monitor wakes
        status, body = await readyz()
    assert status == 200 and body["ready"] is True and body["problems"] == []
    overload, late = body["warnings"]
    assert overload.startswith("event loop overloaded: a wake-up came ")
    assert late.startswith("checks start late: schedule lag p99 ")
    assert body["scheduler"]["lag_ms_p99"] > 1000
