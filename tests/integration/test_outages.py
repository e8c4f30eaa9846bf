"""Outage lifecycle through the whole daemon: DEGRADED opens low and is raised in place,
acknowledge and resolve over the API, a manual resolve holds reopening (also across a
restart). Real PostgreSQL, real loopback HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from availmon.app import Daemon, build_daemon
from availmon.config import Settings
from tests.loopback import serve

from .test_daemon import db_rows, wait_for

FAST = {"check_interval": 0.3, "timeout": 0.2, "recheck_interval": 0.1}
TOKEN = "t0ken"


class Switch:
    """An HTTP target that is "up", "slow" (DEGRADED past degraded_threshold_ms) or "down"."""

    def __init__(self) -> None:
        self.mode = "up"
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        if self.mode == "slow":
            await asyncio.sleep(0.08)
        if self.mode == "down":
            return web.Response(status=503, text="sick")
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/", self.handle)
        self._runner, self.port = await serve(app)

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


@pytest.fixture
async def switch() -> AsyncIterator[Switch]:
    s = Switch()
    await s.start()
    yield s
    await s.stop()


def settings(dsn: str, endpoints: list[dict[str, Any]], **extra: Any) -> Settings:
    return Settings(
        database={"dsn": dsn, "flush_interval": 0.05},
        api={"port": 0, "token": TOKEN},
        scheduler={"tick_interval": 0.02},
        daemon={"shutdown_timeout": 2},
        endpoints=endpoints,
        **extra,
    )


def web_endpoint(switch: Switch, **spec: Any) -> dict[str, Any]:
    return {
        "name": "web",
        "url": switch.url,
        "severity": "critical",
        "degraded_threshold_ms": 40,
        **FAST,
        **spec,
    }


async def call(daemon: Daemon, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{daemon.api_port}{path}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, json=body, headers=headers) as resp,
    ):
        text = await resp.text()
        return resp.status, (await resp.json() if text else None)


async def outages(dsn: str) -> list[Any]:
    return await db_rows(dsn, "SELECT * FROM outages ORDER BY id")


async def one_outage_opened(pg_dsn: str) -> None:
    """Wait until exactly one outage row is stored."""

    async def opened() -> bool:
        return len(await outages(pg_dsn)) == 1

    await wait_for(opened)


async def test_degraded_opens_low_and_down_raises_it_in_place(pg_dsn: str, switch: Switch):
    async with build_daemon(settings(pg_dsn, [web_endpoint(switch)])) as daemon:
        switch.mode = "slow"

        await one_outage_opened(pg_dsn)
        (low,) = await outages(pg_dsn)
        assert low["severity"] == "low" and low["ended_at"] is None
        switch.mode = "down"

        async def raised() -> bool:
            return (await outages(pg_dsn))[0]["severity"] == "critical"

        await wait_for(raised)
        switch.mode = "slow"  # DEGRADED keeps it open: only UP recovers
        await asyncio.sleep(1.0)
        assert (await outages(pg_dsn))[0]["ended_at"] is None
        switch.mode = "up"

        async def closed() -> bool:
            return (await outages(pg_dsn))[0]["ended_at"] is not None

        await wait_for(closed)
        await daemon.writer.flush()
    (outage,) = await outages(pg_dsn)  # one record throughout
    assert outage["id"] == low["id"] and outage["resolution"] == "recovered"
    statuses = await db_rows(
        pg_dsn, "SELECT checked_at, status::text AS s FROM statuses ORDER BY checked_at"
    )
    bad = [r for r in statuses if r["s"] in ("DEGRADED", "DOWN")]
    assert outage["started_at"] == bad[0]["checked_at"]  # first DEGRADED check of the episode
    first_up_after = next(
        r for r in statuses if r["s"] == "UP" and r["checked_at"] > bad[-1]["checked_at"]
    )
    assert outage["ended_at"] == first_up_after["checked_at"]


async def test_acknowledge_and_resolve_over_the_api(pg_dsn: str, switch: Switch):
    switch.mode = "down"
    async with build_daemon(settings(pg_dsn, [web_endpoint(switch)])) as daemon:
        await one_outage_opened(pg_dsn)
        outage_id = (await outages(pg_dsn))[0]["id"]
        path = f"/api/v1/outages/{outage_id}"
        status, body = await call(daemon, "PATCH", path, {"acknowledged_by": ""})
        assert status == 422
        assert body["error"]["fields"][0]["field"] == "acknowledged_by"
        status, body = await call(daemon, "PATCH", path, {"ended_at": "2026-01-01T00:00:00Z"})
        assert status == 422
        assert body["error"]["fields"] == [
            {"field": "ended_at", "message": "is read-only; the server sets it"}
        ]
        status, body = await call(daemon, "PATCH", path, {"acknowledge": "x"})
        assert status == 422 and body["error"]["fields"][0]["message"] == "unknown key"
        status, body = await call(daemon, "PATCH", path, {})
        assert status == 422 and body["error"]["fields"] == [
            {"field": "body", "message": "give at least one of acknowledged_by, resolved_by, notes"}
        ]
        status, body = await call(daemon, "PATCH", path, {"acknowledged_by": None, "notes": "x"})
        assert status == 422 and body["error"]["fields"] == [
            {"field": "acknowledged_by", "message": "must be a name, not null"}
        ]
        status, body = await call(daemon, "PATCH", "/api/v1/outages/999999", {"notes": "x"})
        assert status == 404
        status, body = await call(daemon, "PATCH", path, {"acknowledged_by": "alice"})
        assert status == 200, body
        assert body["acknowledged_by"] == "alice" and body["acknowledged_at"]
        status, body = await call(daemon, "PATCH", path, {"acknowledged_by": "bob"})
        assert status == 409 and "already acknowledged by 'alice'" in body["error"]["message"]
        status, body = await call(daemon, "PATCH", path, {"notes": "ticket NOC-1"})
        assert status == 200 and body["notes"] == "ticket NOC-1" and body["is_active"]
        status, body = await call(
            daemon, "PATCH", path, {"resolved_by": "bob", "notes": "fixed the pool"}
        )
        assert status == 200, body
        assert body["resolved_by"] == "bob" and body["resolution"] == "manual"
        assert body["ended_at"] and body["duration_s"] > 0 and body["reopen_hold"] is True
        status, _ = await call(daemon, "PATCH", path, {"resolved_by": "carol"})
        assert status == 409
        status, fetched = await call(daemon, "GET", path)
        assert fetched == body
        assert daemon.monitor.all()[0].machine.state.hold


async def test_acknowledge_and_resolve_in_one_patch(pg_dsn: str, switch: Switch):
    """README: the keys combine; acknowledged_by is applied first, and a 409 from it (already
    acknowledged) stops the request before anything is resolved."""
    switch.mode = "down"
    async with build_daemon(settings(pg_dsn, [web_endpoint(switch)])) as daemon:
        await one_outage_opened(pg_dsn)
        outage_id = (await outages(pg_dsn))[0]["id"]
        path = f"/api/v1/outages/{outage_id}"
        both = {"acknowledged_by": "a", "resolved_by": "b", "notes": "restarted the pool"}
        status, body = await call(daemon, "PATCH", path, both)
        assert status == 200, body
        assert body["acknowledged_by"] == "a" and body["acknowledged_at"]
        assert body["resolved_by"] == "b" and body["resolution"] == "manual"
        assert body["notes"] == "restarted the pool" and body["ended_at"]
        (row,) = await outages(pg_dsn)
        assert row["acknowledged_by"] == "a" and row["resolved_by"] == "b"
        assert row["acknowledged_at"] <= row["ended_at"]
        again = {"acknowledged_by": "c", "resolved_by": "d"}
        status, body = await call(daemon, "PATCH", path, again)
        assert status == 409, body
        assert await outages(pg_dsn) == [row]  # nothing changed


async def test_manual_resolve_while_failing_holds_until_recovery_even_across_a_restart(
    pg_dsn: str, switch: Switch
):
    switch.mode = "down"
    config = settings(pg_dsn, [web_endpoint(switch)])
    async with build_daemon(config) as daemon:
        await one_outage_opened(pg_dsn)
        outage_id = (await outages(pg_dsn))[0]["id"]
        status, _ = await call(
            daemon, "PATCH", f"/api/v1/outages/{outage_id}", {"resolved_by": "x"}
        )
        assert status == 200
        before = daemon.monitor.checks_executed

        async def many_checks() -> bool:
            return daemon.monitor.checks_executed >= before + 6

        await wait_for(many_checks)  # still failing: six DOWN checks, no new outage
        assert len(await outages(pg_dsn)) == 1
    async with build_daemon(config) as daemon:  # the hold is stored
        watched = daemon.monitor.all()[0]
        assert watched.machine.state.hold and not watched.machine.state.outage_open
        before = daemon.monitor.checks_executed

        async def more_checks() -> bool:
            return daemon.monitor.checks_executed >= before + 6

        await wait_for(more_checks)
        assert len(await outages(pg_dsn)) == 1
        switch.mode = "up"

        async def released() -> bool:
            rows = await outages(pg_dsn)
            return not rows[0]["reopen_hold"]

        await wait_for(released)
        switch.mode = "down"

        async def reopened() -> bool:
            return len(await outages(pg_dsn)) == 2

        await wait_for(reopened)
    first, second = await outages(pg_dsn)
    assert first["resolution"] == "manual" and second["ended_at"] is None
    assert second["started_at"] > first["ended_at"]


async def test_endpoint_removed_from_the_config_closes_as_inactive(pg_dsn: str, switch: Switch):
    switch.mode = "down"
    async with build_daemon(settings(pg_dsn, [web_endpoint(switch)])):
        await one_outage_opened(pg_dsn)
    async with build_daemon(settings(pg_dsn, [])):
        pass
    (outage,) = await outages(pg_dsn)
    assert outage["ended_at"] is not None and outage["resolution"] == "endpoint_inactive"
