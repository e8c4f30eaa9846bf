"""GET /metrics of a whole daemon (build_daemon) checking loopback targets, on a real PostgreSQL,
read back with prometheus-client's own parser."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from availmon.app import Daemon, build_daemon
from availmon.config import Settings
from tests.promtext import Samples, parse, value

from .test_daemon import Target, db_rows, settings_for, wait_for

# timeouts with room to spare on a busy machine: every check of the UP target stays UP
FAST = {"check_interval": 0.4, "timeout": 0.35, "recheck_interval": 0.1}
TOKEN = "metrics-token-0d3c"


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    web = Target()
    await web.start()
    yield web
    await web.stop()


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    return port


async def scrape(daemon: Daemon, token: str | None = None) -> tuple[int, str, Any]:
    url = f"http://127.0.0.1:{daemon.api_port}/metrics"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        return resp.status, await resp.text(), resp.headers


async def samples_of(daemon: Daemon) -> Samples:
    status, text, headers = await scrape(daemon)
    assert status == 200, text
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(text)


async def test_metrics_after_checks_of_an_up_http_and_a_down_tcp_endpoint(
    pg_dsn: str, target: Target
):
    endpoints = [
        {"name": "web", "url": target.url, **FAST},
        {"name": "gone", "url": f"tcp://127.0.0.1:{closed_port()}", **FAST},
    ]
    async with build_daemon(settings_for(pg_dsn, endpoints)) as daemon:
        ids = {w.endpoint.name: w.endpoint.id for w in daemon.monitor.all()}

        async def checked_enough() -> bool:
            return all(
                (w.machine.state.outage_open if w.endpoint.name == "gone" else target.hits >= 3)
                for w in daemon.monitor.all()
            )

        await wait_for(checked_enough)
        await daemon.scheduler.stop(2.0)  # no check from here on: the values hold still
        await daemon.writer.flush()
        samples = await samples_of(daemon)
        rows = await db_rows(
            pg_dsn,
            "SELECT endpoint_id, status::text AS status, count(*) AS n FROM statuses"
            " GROUP BY endpoint_id, status",
        )
        executed = daemon.scheduler.executed
        durations = {w.endpoint.name: w.last_duration_s for w in daemon.monitor.all()}
        lags = sorted(daemon.scheduler.lags)
        looplag = daemon.monitor.looplag
        assert looplag is not None
        overloaded = looplag.overloaded
    web = {"endpoint_id": str(ids["web"]), "endpoint_name": "web", "protocol": "http"}
    gone = {"endpoint_id": str(ids["gone"]), "endpoint_name": "gone", "protocol": "tcp"}
    assert value(samples, "availmon_endpoint_up", **web) == 1.0
    assert value(samples, "availmon_endpoint_up", **gone) == 0.0
    assert value(samples, "availmon_endpoint_http_status_code", **web) == 200.0
    assert value(samples, "availmon_endpoint_http_status_code", **gone) is None
    assert value(samples, "availmon_endpoint_open_outage", **web) == 0.0
    assert value(samples, "availmon_endpoint_open_outage", **gone) == 1.0
    for name, labels in (("web", web), ("gone", gone)):
        latest = value(samples, "availmon_endpoint_check_duration_seconds", **labels)
        assert latest == durations[name] and latest is not None and latest > 0
    # plain HTTP, no certificate
    assert not [n for n, _ in samples if n.endswith("certificate_expiry_timestamp_seconds")]

    # the histogram counted every check, under its protocol and recorded status
    protocols = {ids["web"]: "http", ids["gone"]: "tcp"}
    stored = {(protocols[r["endpoint_id"]], r["status"]): r["n"] for r in rows}
    counts = {
        (dict(labels)["protocol"], dict(labels)["result"]): n
        for (name, labels), n in samples.items()
        if name == "availmon_check_duration_seconds_count"
    }
    assert counts == stored
    assert counts[("http", "UP")] >= 3 and counts[("tcp", "DOWN")] >= 3
    assert value(samples, "availmon_checks_executed_total") == executed == sum(counts.values())
    assert value(samples, "availmon_checks_skipped_total") == 0
    assert value(samples, "availmon_writer_rows_written_total") == sum(stored.values())
    assert value(samples, "availmon_writer_rows_dropped_total") == 0
    assert value(samples, "availmon_writer_queue_depth") == 0
    assert (value(samples, "availmon_writer_flush_seconds") or 0) > 0
    assert value(samples, "availmon_spool_backlog_rows") == 0
    assert value(samples, "availmon_schedule_lag_seconds", quantile="1.0") == lags[-1]
    assert value(samples, "availmon_event_loop_overloaded") == float(overloaded)
    # no [redis] url, no [elasticsearch] hosts: no metrics of theirs
    assert not [n for n, _ in samples if "redis" in n or "elasticsearch" in n]


async def test_side_outputs_that_cannot_be_reached_count_their_errors(pg_dsn: str):
    settings = Settings(
        database={"dsn": pg_dsn, "flush_interval": 0.1},
        api={"port": 0},
        daemon={"shutdown_timeout": 2},
        redis={"url": f"redis://127.0.0.1:{closed_port()}/0", "retry_max": 0.2},
        elasticsearch={"hosts": [f"http://127.0.0.1:{closed_port()}"], "retry_max": 0.2},
    )
    async with build_daemon(settings) as daemon:

        async def errors_counted() -> bool:
            samples = await samples_of(daemon)
            return all(
                (value(samples, f"availmon_{peer}_errors_total") or 0) >= 2
                for peer in ("redis", "elasticsearch")
            )

        await wait_for(errors_counted)
        samples = await samples_of(daemon)
    assert value(samples, "availmon_redis_backlog", kind="endpoints") == 0
    assert value(samples, "availmon_redis_backlog", kind="events") == 0
    assert value(samples, "availmon_elasticsearch_backlog") == 0


async def test_metrics_need_the_token_only_when_reads_do(pg_dsn: str):
    for read_token_required, status_without in ((False, 200), (True, 401)):
        settings = settings_for(pg_dsn, [], token=TOKEN, read_token_required=read_token_required)
        async with build_daemon(settings) as daemon:
            status, text, _ = await scrape(daemon)
            assert status == status_without, text
            status, text, _ = await scrape(daemon, TOKEN)
            assert status == 200 and "availmon_checks_executed_total 0.0" in text
            url = f"http://127.0.0.1:{daemon.api_port}/api/v1/openapi.json"
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with (
                aiohttp.ClientSession() as session,
                session.get(url, headers=headers) as resp,
            ):
                operation = (await resp.json())["paths"]["/metrics"]["get"]
            assert list(operation["responses"]["200"]["content"]) == ["text/plain"]
            assert ("security" in operation) is read_token_required


async def test_a_scraper_that_accepts_gzip_gets_it(pg_dsn: str):
    async with build_daemon(settings_for(pg_dsn, [])) as daemon:
        url = f"http://127.0.0.1:{daemon.api_port}/metrics"
        headers = {"Accept-Encoding": "gzip"}
        async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
            assert resp.headers["Content-Encoding"] == "gzip"
            families = list(text_string_to_metric_families(await resp.text()))
    assert "availmon_checks_executed" in {f.name for f in families}
