"""Redis status cache: the whole daemon against a real redis-server (tests/redisserver.py) on a
free loopback port, real HTTP targets and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from redis.asyncio import Redis
from structlog.testing import capture_logs

from availmon.app import build_daemon
from availmon.config import Settings
from tests.loopback import serve
from tests.redisserver import RedisServer
from tests.redisserver import redis_server as redis_server  # the fixture

ROOT = Path(__file__).parents[2]
FAST = {
    "check_interval": 0.3,
    "timeout": 0.2,
    "recheck_interval": 0.1,
    "failure_threshold": 2,
    "recovery_threshold": 1,
}
SIDE_OUTPUT_EVENT = re.compile(r"redis|elasticsearch|^es_|side_output")


class Target:
    """An HTTP server whose health the test flips."""

    def __init__(self) -> None:
        self.healthy = True
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        return web.Response(text="ok") if self.healthy else web.Response(status=503)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{name}", self.handle)
        self._runner, self.port = await serve(app)

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    t = Target()
    await t.start()
    yield t
    await t.stop()


def daemon_settings(
    dsn: str,
    state_dir: Path,
    endpoints: list[dict[str, Any]],
    *,
    redis_url: str | None = None,
    es_hosts: list[str] | None = None,
) -> Settings:
    return Settings(
        database={"dsn": dsn, "flush_interval": 0.1},
        api={"port": 0},
        scheduler={"tick_interval": 0.05},
        daemon={"shutdown_timeout": 2, "state_dir": state_dir},
        redis={"url": redis_url, "retry_max": 0.4, "timeout": 0.5} if redis_url else {},
        elasticsearch={"hosts": es_hosts, "retry_max": 0.4, "request_timeout": 2}
        if es_hosts
        else {},
        endpoints=endpoints,
    )


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def redis_view(url: str, prefix: str = "availmon:") -> dict[int, dict[str, str]]:
    client = Redis.from_url(url, decode_responses=True)
    try:
        ids = await client.smembers(f"{prefix}endpoints")  # type: ignore[misc]
        return {int(i): await client.hgetall(f"{prefix}endpoint:{i}") for i in ids}  # type: ignore[misc]
    finally:
        await client.aclose()


async def pg_view(dsn: str) -> dict[int, dict[str, str]]:
    """What the Redis view must say, computed from PostgreSQL alone."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT e.id, e.name, s.status::text AS status, s.checked_at, s.reason, "
            "s.response_time_ms, st.since, o.id AS outage_id FROM endpoints e "
            "LEFT JOIN LATERAL (SELECT * FROM statuses WHERE endpoint_id = e.id "
            "  ORDER BY checked_at DESC LIMIT 1) s ON true "
            "LEFT JOIN endpoint_state st ON st.endpoint_id = e.id AND st.status = s.status "
            "LEFT JOIN outages o ON o.endpoint_id = e.id AND o.ended_at IS NULL "
            "WHERE e.deleted_at IS NULL AND e.is_active"
        )
    finally:
        await conn.close()
    view = {}
    for r in rows:
        fields = {"name": r["name"], "status": r["status"], "reason": r["reason"]}
        if r["checked_at"] is not None:
            fields["last_check_at"] = r["checked_at"].isoformat()
        if r["response_time_ms"] is not None:
            fields["response_time_ms"] = str(float(f"{r['response_time_ms']:.7g}"))
        if r["since"] is not None:
            fields["since"] = r["since"].isoformat()
        if r["outage_id"] is not None:
            fields["open_outage_id"] = str(r["outage_id"])
        view[r["id"]] = {k: v for k, v in fields.items() if v is not None}
    return view


def comparable(view: dict[int, dict[str, str]]) -> dict[int, dict[str, str]]:
    keys = {"name", "status", "reason", "last_check_at", "response_time_ms", "since"}
    return {
        i: {k: v for k, v in h.items() if k in keys | {"open_outage_id"}} for i, h in view.items()
    }


async def test_redis_killed_mid_run_checks_go_on_and_the_view_converges(
    pg_dsn: str, tmp_path: Path, target: Target, redis_server: RedisServer
) -> None:
    endpoints = [{"name": n, "url": target.url(n), **FAST} for n in ("web", "api", "dns-ui")]
    settings = daemon_settings(pg_dsn, tmp_path, endpoints, redis_url=redis_server.url)
    with capture_logs() as logs:
        async with build_daemon(settings) as daemon:

            async def converged(status: str = "UP") -> bool:
                await daemon.writer.flush()
                want = await pg_view(pg_dsn)
                return comparable(await redis_view(redis_server.url)) == want and all(
                    v.get("status") == status for v in want.values()
                )

            await wait_for(converged)
            redis_server.kill()
            before = daemon.monitor.checks_executed
            target.healthy = False

            async def outages_open() -> bool:
                conn = await asyncpg.connect(pg_dsn)
                try:
                    n = await conn.fetchval("SELECT count(*) FROM outages WHERE ended_at IS NULL")
                finally:
                    await conn.close()
                return bool(n == 3 and daemon.monitor.checks_executed >= before + 24)

            await wait_for(outages_open)  # checks went on, at their pace, without Redis
            status = daemon.collector.summary()["redis"]
            assert status["connected"] is False and status["failing_since"] is not None
            assert "Connection" in status["last_error"]
            redis_server.start()  # empty: persistence is off, every key must be rewritten
            await wait_for(lambda: converged("DOWN"))
            view = await redis_view(redis_server.url)
            assert all(v["status"] == "DOWN" and "open_outage_id" in v for v in view.values())
            target.healthy = True
            await wait_for(converged)
            view = await redis_view(redis_server.url)
            assert all(v["status"] == "UP" and "open_outage_id" not in v for v in view.values())
    events = [e["event"] for e in logs]
    assert events.count("redis_unavailable") == 1  # one warning for the whole outage
    (recovered,) = [e for e in logs if e["event"] == "redis_recovered"]
    assert recovered["failed_attempts"] >= 2  # retried, with backoff, without more warnings
    assert events.count("redis_view_synced") == 2  # at start, and once when Redis came back
    assert not [e for e in logs if e["event"] == "check_listener_failed"]


async def test_a_view_lost_without_an_error_is_written_whole_again(
    pg_dsn: str, tmp_path: Path, target: Target, redis_server: RedisServer
) -> None:
    endpoints = [{"name": n, "url": target.url(n), **FAST} for n in ("web", "api")]
    settings = daemon_settings(pg_dsn, tmp_path, endpoints, redis_url=redis_server.url)
    with capture_logs() as logs:
        async with build_daemon(settings) as daemon:

            async def whole_view() -> bool:
                await daemon.writer.flush()
                view = await redis_view(redis_server.url)
                static = {"url", "tags", "protocol"}  # written once, then only changes are sent
                complete = len(view) == 2 and all(static <= set(v) for v in view.values())
                return complete and comparable(view) == await pg_view(pg_dsn)

            await wait_for(whole_view)
            # what a Redis restarted between two writes looks like too (the client reconnects
            # without an error): the keys are gone, nothing failed
            client = Redis.from_url(redis_server.url)
            await client.flushall()
            await client.aclose()
            await wait_for(whole_view)
    events = [e["event"] for e in logs]
    assert "redis_view_replaced" in events and "redis_unavailable" not in events


async def test_events_are_published_with_the_documented_payloads(
    pg_dsn: str, tmp_path: Path, target: Target, redis_server: RedisServer
) -> None:
    endpoints = [{"name": "web", "url": target.url("web"), **FAST}]
    client = Redis.from_url(redis_server.url, decode_responses=True)
    pubsub = client.pubsub()
    await pubsub.subscribe("availmon:events")
    received: list[dict[str, Any]] = []

    async def listen() -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                received.append(json.loads(message["data"]))

    listener = asyncio.create_task(listen())
    try:
        settings = daemon_settings(pg_dsn, tmp_path, endpoints, redis_url=redis_server.url)
        async with build_daemon(settings) as daemon:
            endpoint_id = daemon.monitor.all()[0].endpoint.id

            async def seen(kind: str) -> bool:
                return any(e["type"] == kind for e in received)

            await wait_for(lambda: seen("status_changed"))
            target.healthy = False
            await wait_for(lambda: seen("outage_opened"))
            target.healthy = True
            await wait_for(lambda: seen("outage_closed"))
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await pubsub.aclose()
        await client.aclose()
    kinds = [e["type"] for e in received]
    assert kinds[0] == "resync"  # the daemon's first full write
    assert set(received[0]) == {"v", "type", "at", "endpoints", "reason"}
    changes = [e for e in received if e["type"] == "status_changed"]
    assert [(c["previous"], c["status"]) for c in changes] == [
        (None, "UP"), ("UP", "DOWN"), ("DOWN", "UP")
    ]  # fmt: skip
    assert set(changes[1]) == {
        "v", "type", "endpoint_id", "endpoint_name", "at",
        "previous", "status", "reason", "error", "response_time_ms",
    }  # fmt: skip
    assert changes[1]["reason"] == "unexpected_status"
    (opened,) = [e for e in received if e["type"] == "outage_opened"]
    (closed,) = [e for e in received if e["type"] == "outage_closed"]
    conn = await asyncpg.connect(pg_dsn)
    try:
        outage = await conn.fetchrow("SELECT * FROM outages")
    finally:
        await conn.close()
    assert opened["outage_id"] == closed["outage_id"] == outage["id"]
    assert opened["endpoint_id"] == endpoint_id and opened["endpoint_name"] == "web"
    assert opened["started_at"] == outage["started_at"].isoformat()
    assert closed["ended_at"] == outage["ended_at"].isoformat()
    assert set(opened) == {
        "v", "type", "endpoint_id", "endpoint_name", "at",
        "outage_id", "severity", "started_at", "reason", "error",
    }  # fmt: skip
    assert set(closed) == {
        "v", "type", "endpoint_id", "endpoint_name", "at",
        "outage_id", "started_at", "ended_at", "duration_s",
    }  # fmt: skip


async def test_rebuild_redis_writes_the_view_from_postgresql(
    pg_dsn: str, tmp_path: Path, target: Target, redis_server: RedisServer
) -> None:
    endpoints = [{"name": n, "url": target.url(n), **FAST} for n in ("web", "api")]
    target.healthy = False
    async with build_daemon(daemon_settings(pg_dsn, tmp_path, endpoints)) as daemon:
        await wait_for(lambda: _outages(pg_dsn, 2))
        await daemon.writer.flush()
    stale = Redis.from_url(redis_server.url, decode_responses=True)
    await stale.sadd("availmon:endpoints", "999")  # type: ignore[misc]
    await stale.hset("availmon:endpoint:999", mapping={"name": "gone"})  # type: ignore[misc]
    await stale.aclose()
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\ndsn = "{pg_dsn}"\n[redis]\nurl = "{redis_server.url}"\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "availmon", "rebuild-redis", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert "rebuild_redis_done" in out.decode() and "stale_removed=1" in out.decode()
    view = await redis_view(redis_server.url)
    assert comparable(view) == await pg_view(pg_dsn)
    assert all(v["status"] == "DOWN" and "open_outage_id" in v for v in view.values())
    assert 999 not in view


async def _outages(dsn: str, count: int) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        found = await conn.fetchval("SELECT count(*) FROM outages WHERE ended_at IS NULL")
    finally:
        await conn.close()
    return bool(found == count)


async def test_with_neither_configured_nothing_starts_and_one_line_says_so(
    pg_dsn: str, tmp_path: Path, target: Target
) -> None:
    endpoints = [{"name": "web", "url": target.url("web"), **FAST}]
    with capture_logs() as logs:
        async with build_daemon(daemon_settings(pg_dsn, tmp_path, endpoints)) as daemon:
            await wait_for(lambda: _checked(daemon))
            tasks = {t.get_name() for t in asyncio.all_tasks()}
            summary = daemon.collector.summary()
    assert not [name for name in tasks if "redis" in name or "es-sync" in name]
    assert "redis" not in summary and "elasticsearch" not in summary
    about_them = [e for e in logs if SIDE_OUTPUT_EVENT.search(e["event"])]
    assert [e["event"] for e in about_them] == ["side_outputs_disabled"]
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT enabled FROM es_sync") is False
        assert await conn.fetchval("SELECT count(*) FROM status_commits") == 0
    finally:
        await conn.close()


async def _checked(daemon: Any) -> bool:
    await daemon.writer.flush()
    return bool(daemon.writer.stats.written >= 2)
