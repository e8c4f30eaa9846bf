"""Monitor: retries, state machine wiring, stored outages, and log context per endpoint."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from availmon.clock import SystemClock
from availmon.model import Endpoint, EndpointSource, Reason, Status
from availmon.probes import ProbeContext
from availmon.runner import Monitor
from availmon.specs import ENDPOINT_ADAPTER
from availmon.store import EmbeddedPostgres, Repository, apply_migrations


@pytest.fixture
async def context() -> AsyncIterator[ProbeContext]:
    ctx = ProbeContext()
    yield ctx
    await ctx.close()


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return int(port)


async def test_failures_open_a_stored_outage_and_every_log_line_names_the_endpoint(
    repo: Repository, context: ProbeContext
):
    spec = ENDPOINT_ADAPTER.validate_python(
        {"name": "gone", "url": f"tcp://127.0.0.1:{closed_port()}", "timeout": 1}
    )
    endpoint = await repo.create_endpoint(spec, EndpointSource.API)
    monitor = Monitor(clock=SystemClock(), probe_context=context, max_concurrency=4, store=repo)
    monitor.watch(endpoint)
    with capture_logs() as logs:
        results = [await monitor.check(endpoint.id) for _ in range(4)]
    assert [r.reason for r in results] == [Reason.REFUSED] * 4
    assert all(r.response_time_ms is None for r in results)
    events = [e["event"] for e in logs]
    assert events.count("outage_opened") == 1
    assert "status_changed" in events
    assert all(
        e.get("endpoint_id") == endpoint.id and e.get("endpoint_name") == "gone" for e in logs
    ), logs
    (outage,) = await repo.open_outages()
    assert outage.endpoint_id == endpoint.id
    assert outage.started_at == results[0].checked_at
    assert outage.opened_at == results[2].checked_at
    assert monitor.get(endpoint.id).outage_id == outage.id
    since = await repo.status_since()
    assert since[endpoint.id] == (Status.DOWN, results[0].checked_at)


async def test_retries_turn_one_flaky_answer_into_an_up_check(context: ProbeContext):
    calls = 0

    async def flaky(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.Response(status=502 if calls % 2 else 200)

    app = web.Application()
    app.router.add_get("/", flaky)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        monitor = Monitor(clock=SystemClock(), probe_context=context, max_concurrency=1)
        for retries, expected in ((1, (Status.UP, 2)), (0, (Status.DOWN, 1))):
            spec = ENDPOINT_ADAPTER.validate_python(
                {"name": "flaky", "url": f"http://127.0.0.1:{port}/", "retries": retries}
            )
            monitor.watch(Endpoint(retries + 1, spec, EndpointSource.API))
            result = await monitor.check(retries + 1)
            assert (result.status, result.attempts) == expected
    finally:
        await runner.cleanup()


async def test_an_outage_opened_while_postgres_is_away_is_stored_when_it_returns(
    pg_state_dir: Path, context: ProbeContext
):
    server = EmbeddedPostgres(pg_state_dir, durable=False)
    dsn = await server.start()
    repo = await Repository.connect(dsn, 2)
    try:
        await apply_migrations(repo.pool)
        spec = ENDPOINT_ADAPTER.validate_python(
            {"name": "gone", "url": f"tcp://127.0.0.1:{closed_port()}", "timeout": 1}
        )
        endpoint = await repo.create_endpoint(spec, EndpointSource.API)
        monitor = Monitor(clock=SystemClock(), probe_context=context, max_concurrency=1, store=repo)
        monitor.watch(endpoint)
        first = await monitor.check(endpoint.id)  # first failure, stored while the database is up
        await server.stop()
        with capture_logs() as logs:
            results = [await monitor.check(endpoint.id) for _ in range(4)]
        assert monitor.get(endpoint.id).machine.state.outage_open
        assert monitor.get(endpoint.id).pending  # the opening waits for the database
        assert [e["event"] for e in logs].count("transition_not_stored") == 1
        await server.start()
        with capture_logs() as logs:
            await monitor.check(endpoint.id)
        assert "transitions_caught_up" in [e["event"] for e in logs]
        assert [e["event"] for e in logs].count("outage_opened") == 0  # logged when it happened
        (outage,) = await repo.open_outages()
        assert outage.started_at == first.checked_at  # the episode's first failure
        assert outage.opened_at == results[1].checked_at  # third failure (one stored before)
        assert monitor.get(endpoint.id).outage_id == outage.id
        assert not monitor.get(endpoint.id).pending
    finally:
        await repo.close()
        await server.stop()
