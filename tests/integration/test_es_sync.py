"""Elasticsearch sync: the real elasticsearch client against a wire-level fake (tests/esfake.py),
a real PostgreSQL, the real writer. One test runs against a real cluster when
AVAILMON_TEST_ES_URL is set."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from elasticsearch import AsyncElasticsearch
from structlog.testing import capture_logs

from availmon.app import build_daemon
from availmon.config import ElasticsearchSettings
from availmon.model import Endpoint, Reason, Status, StatusRow
from availmon.search import EsSync
from availmon.search.template import MAPPINGS, doc_id, index_name
from availmon.specs import ENDPOINT_ADAPTER
from availmon.store import Repository, StatusWriter
from tests.esfake import FakeElasticsearch
from tests.integration.test_redis_cache import comparable, daemon_settings, redis_view
from tests.redisserver import RedisServer
from tests.redisserver import redis_server as redis_server  # the fixture

ROOT = Path(__file__).parents[2]
T0 = datetime(2026, 3, 1, 23, 59, 50, tzinfo=UTC)  # rows cross midnight: two daily indices


@pytest.fixture
async def fake_es() -> AsyncIterator[FakeElasticsearch]:
    fake = FakeElasticsearch()
    await fake.start()
    yield fake
    await fake.stop()


def es_settings(hosts: list[str], **overrides: Any) -> ElasticsearchSettings:
    values: dict[str, Any] = {"hosts": hosts, "retry_max": 0.5, "request_timeout": 2.0}
    return ElasticsearchSettings(**(values | overrides))


async def make_endpoints(repo: Repository, count: int) -> list[Endpoint]:
    return [
        await repo.create_endpoint(
            ENDPOINT_ADAPTER.validate_python(
                {"name": f"svc-{i}", "url": f"http://127.0.0.1:9/{i}", "tags": ["test", f"t{i}"]}
            )
        )
        for i in range(count)
    ]


def rows_for(
    endpoints: list[Endpoint], count: int, start: int = 0, **fields: Any
) -> list[StatusRow]:
    values: dict[str, Any] = {
        "status": Status.UP,
        "reason": Reason.OK,
        "response_time_ms": 12.5,
        "error": None,
        "attempts": 1,
        "details": {"http": {"status_code": 200}},
    }
    values.update(fields)
    return [
        StatusRow(
            endpoint_id=endpoints[i % len(endpoints)].id,
            checked_at=T0 + timedelta(milliseconds=10 * i),
            **values,
        )
        for i in range(start, start + count)
    ]


async def eventually(check: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def stored_ids(repo: Repository) -> set[str]:
    records = await repo.pool.fetch("SELECT endpoint_id, checked_at FROM statuses")
    return {doc_id(r["endpoint_id"], r["checked_at"]) for r in records}


class Pipeline:
    """The real path: writer -> COPY -> commit listener -> EsSync -> _bulk."""

    def __init__(self, repo: Repository, settings: ElasticsearchSettings, **sync: Any) -> None:
        self.writer = StatusWriter(repo, batch_size=1000, flush_interval=0.05, queue_size=100_000)
        self.sync = EsSync(settings, repo, poll_interval=0.1, settle_s=0.3, **sync)
        self.writer.add_commit_listener(self.sync.on_commit)

    async def __aenter__(self) -> Pipeline:
        await self.writer.start()
        await self.sync.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.writer.stop()
        await self.sync.stop()

    def submit(self, rows: list[StatusRow]) -> None:
        for row in rows:
            assert self.writer.submit(row)


async def test_every_row_reaches_elasticsearch_with_a_deterministic_id(
    repo: Repository, fake_es: FakeElasticsearch
) -> None:
    endpoints = await make_endpoints(repo, 7)
    async with Pipeline(repo, es_settings([fake_es.url])) as pipe:
        pipe.submit(rows_for(endpoints, 3000))
        await eventually(lambda: len(fake_es.docs()) == 3000)
        await eventually(lambda: pipe.sync.status()["backlog_rows"] == 0)
        assert pipe.sync.status()["read_back_rows"] == 0  # all from memory
    assert set(fake_es.docs()) == await stored_ids(repo)
    # the template came first, and every index was created from it
    first_bulk = next(i for i, r in enumerate(fake_es.requests) if r.path.endswith("_bulk"))
    assert fake_es.requests[0].path == "/_index_template/availmon-status"
    assert first_bulk > 0
    template = fake_es.templates["availmon-status"]
    assert template["index_patterns"] == ["availmon-status-*"]
    assert template["template"]["mappings"] == MAPPINGS
    assert sorted(fake_es.indices) == ["availmon-status-2026.03.01", "availmon-status-2026.03.02"]
    assert all(i.template == "availmon-status" for i in fake_es.indices.values())
    row = rows_for(endpoints, 1, start=2999)[0]
    doc = fake_es.indices[index_name("availmon-status", row.checked_at)].docs[
        doc_id(row.endpoint_id, row.checked_at)
    ]
    assert doc["endpoint"]["name"] == "svc-3" and doc["endpoint"]["tags"] == ["test", "t3"]
    assert doc["status"] == "UP" and doc["available"] == 1 and doc["protocol"] == "http"
    assert doc["@timestamp"] == row.checked_at.isoformat()
    assert doc["details"] == {"http": {"status_code": 200}}
    # the real client spoke the 9.x wire protocol
    bulk = next(r for r in fake_es.requests if r.path.endswith("_bulk"))
    assert "compatible-with=9" in bulk.headers["Content-Type"]
    state = await repo.pool.fetch("SELECT es_state, count(*) FROM status_es_state GROUP BY 1")
    assert {r["es_state"]: r["count"] for r in state} == {"synced": 3000}


async def test_per_item_429_and_a_503_answer_are_retried(
    repo: Repository, fake_es: FakeElasticsearch
) -> None:
    endpoints = await make_endpoints(repo, 3)
    rows = rows_for(endpoints, 500)
    flaky = [doc_id(r.endpoint_id, r.checked_at) for r in rows[10:13]]
    for item, statuses in zip(flaky, ([429, 429], [503, 429], [429, 503]), strict=True):
        fake_es.item_failures[item] = collections.deque(statuses)
    fake_es.fail_requests.append(503)
    with capture_logs() as logs:
        async with Pipeline(repo, es_settings([fake_es.url]), item_retry_initial=0.01) as pipe:
            pipe.submit(rows)
            await eventually(lambda: len(fake_es.docs()) == 500)
            await eventually(lambda: pipe.sync.status()["backlog_rows"] == 0)
    bodies = fake_es.bulk_bodies()
    retried = [[line["index"]["_id"] for line in body[0::2]] for body in bodies]
    # the 503 answer was sent again whole; the items refused with 429/503 alone, twice
    assert retried.count(flaky) == 2
    assert len(fake_es.requests) - 1 == len(bodies)  # one template, then only bulks
    assert await repo.pool.fetchval("SELECT count(*) FROM es_failed") == 0
    assert await repo.pool.fetchval("SELECT count(*) FROM status_commits") == 0
    events = [e["event"] for e in logs]
    assert events.count("elasticsearch_unavailable") == 1
    assert events.count("elasticsearch_recovered") == 1
    warning = next(e for e in logs if e["event"] == "elasticsearch_unavailable")
    assert "503" in warning["error"] and "unavailable_shards_exception" in warning["error"]


async def test_a_mapping_conflict_is_recorded_and_the_queue_moves_on(
    repo: Repository, fake_es: FakeElasticsearch
) -> None:
    endpoints = await make_endpoints(repo, 2)
    deep: dict[str, Any] = {"leaf": 1}
    for _ in range(25):  # deeper than the flattened field's depth_limit (20)
        deep = {"d": deep}
    rows = rows_for(endpoints, 300)
    rows[150] = dataclasses.replace(rows[150], details=deep)
    bad = doc_id(rows[150].endpoint_id, rows[150].checked_at)
    with capture_logs() as logs:
        async with Pipeline(repo, es_settings([fake_es.url])) as pipe:
            pipe.submit(rows[:200])
            await eventually(lambda: len(fake_es.docs()) == 199)
            pipe.submit(rows[200:])  # rows behind the refused one keep flowing
            await eventually(lambda: len(fake_es.docs()) == 299)
            await eventually(lambda: pipe.sync.status()["backlog_rows"] == 0)
            assert pipe.sync.status()["rejected"] == 1
    assert bad not in fake_es.docs()
    (failed,) = await repo.pool.fetch("SELECT * FROM es_failed")
    assert failed["doc_id"] == bad and failed["status"] == 400
    assert failed["error_type"] == "document_parsing_exception"
    assert "exceeds the maximum depth limit of [20]" in failed["error"]
    assert await repo.pool.fetchval("SELECT count(*) FROM status_commits") == 0
    state = await repo.pool.fetch("SELECT es_state, count(*) FROM status_es_state GROUP BY 1")
    assert {r["es_state"]: r["count"] for r in state} == {"synced": 299, "failed": 1}
    (line,) = [e for e in logs if e["event"] == "es_document_rejected"]
    assert line["endpoint_id"] == rows[150].endpoint_id
    assert line["endpoint_name"] == "svc-0" and line["doc_id"] == bad
    assert not [e for e in logs if e["event"] == "elasticsearch_unavailable"]


async def test_backlog_drains_oldest_first_at_a_bounded_rate_while_new_rows_flow(
    repo: Repository, fake_es: FakeElasticsearch
) -> None:
    endpoints = await make_endpoints(repo, 5)
    settings = es_settings([fake_es.url], batch_size=500, backlog_rate=2000, memory_rows=2000)
    async with Pipeline(repo, settings) as pipe:
        await eventually(lambda: "availmon-status" in fake_es.templates)
        await fake_es.stop()
        backlog = rows_for(endpoints, 6000)
        pipe.submit(backlog)
        await eventually(lambda: pipe.writer.stats.written == 6000)
        await eventually(lambda: pipe.sync.status()["backlog_rows"] == 6000)
        assert pipe.sync.status()["available"] is False
        assert pipe.sync.status()["in_memory_rows"] <= 2000
        await fake_es.start()
        started = time.monotonic()
        await eventually(lambda: pipe.sync.status()["available"])
        fresh = rows_for(endpoints, 100, start=10_000)  # committed after it came back
        pipe.submit(fresh)
        await eventually(lambda: len(fake_es.docs()) == 6100, timeout=15)
        drained = time.monotonic() - started
        read_back = pipe.sync.status()["read_back_rows"]
    arrival = {}
    for when, ids in fake_es.bulks:
        for item in ids:
            arrival.setdefault(item, when)
    fresh_ids = {doc_id(r.endpoint_id, r.checked_at) for r in fresh}
    backlog_order = [doc_id(r.endpoint_id, r.checked_at) for r in backlog]
    # new rows did not wait for the backlog
    assert max(arrival[i] for i in fresh_ids) < max(arrival[i] for i in backlog_order)
    # oldest first: each bulk of the backlog is later in time than the one before
    firsts = [arrival[backlog_order[i]] for i in range(0, 6000, 500)]
    assert firsts == sorted(firsts)
    # bounded: the first 1000-row commit goes at once, the other 5000 rows at 2000/s
    assert drained >= (6000 - 1000) / 2000 - 0.05, drained
    # the token bucket holds one batch (500), so a short window may see a burst above 2000/s;
    # unbounded, the fake takes over 5,000/s
    assert pipe.sync.drain_rate() <= 2000 * 1.3
    assert read_back >= 4000  # what did not fit in memory came back from PostgreSQL


async def test_rows_pending_at_a_restart_are_read_back_from_postgresql(
    repo: Repository, fake_es: FakeElasticsearch, caplog: pytest.LogCaptureFixture
) -> None:
    endpoints = await make_endpoints(repo, 3)
    await fake_es.stop()
    with capture_logs() as logs:
        async with Pipeline(repo, es_settings([fake_es.url])) as pipe:
            pipe.submit(rows_for(endpoints, 1500))
            await eventually(lambda: pipe.sync.status()["backlog_rows"] == 1500)
            await eventually(lambda: pipe.sync.status()["failing_since"] is not None)
            await asyncio.sleep(1.0)  # several failed attempts
    warnings = [e for e in logs if e["event"] == "elasticsearch_unavailable"]
    assert len(warnings) == 1  # one per outage, however many attempts
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # nor the library
    await fake_es.start()
    async with Pipeline(repo, es_settings([fake_es.url])) as pipe:
        await eventually(lambda: len(fake_es.docs()) == 1500)
        await eventually(lambda: pipe.sync.status()["backlog_rows"] == 0)
        assert pipe.sync.status()["read_back_rows"] == 1500
    assert set(fake_es.docs()) == await stored_ids(repo)


async def test_setup_elasticsearch_command(fake_es: FakeElasticsearch, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[elasticsearch]\nhosts = ["{fake_es.url}"]\nindex_prefix = "noc-status"\n')
    code, _, err = await availmon("setup-elasticsearch", "--config", str(config))
    assert code == 0, err
    assert fake_es.templates["noc-status"]["index_patterns"] == ["noc-status-*"]
    await fake_es.stop()
    code, out, err = await availmon("setup-elasticsearch", "--config", str(config))
    assert code == 2
    assert "setup_elasticsearch_failed" in out + err


async def availmon(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        __import__("sys").executable, "-m", "availmon", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def test_kibana_objects_refer_to_fields_the_template_maps() -> None:
    objects = [
        json.loads(line)
        for line in (ROOT / "kibana/availmon-saved-objects.ndjson").read_text().splitlines()
        if line.strip()
    ]
    by_id = {(o["type"], o["id"]) for o in objects}
    pattern = next(o for o in objects if o["type"] == "index-pattern")
    assert pattern["attributes"]["title"] == "availmon-status-*"
    assert pattern["attributes"]["timeFieldName"] == "@timestamp"
    fields = _mapped_fields(MAPPINGS)
    kinds = set()
    for obj in objects:
        for ref in obj.get("references", []):
            assert (ref["type"], ref["id"]) in by_id, ref
        if obj["type"] == "visualization":
            vis = json.loads(obj["attributes"]["visState"])
            kinds |= {agg["type"] for agg in vis["aggs"]}
            for agg in vis["aggs"]:
                if "field" in agg["params"]:
                    assert agg["params"]["field"] in fields, agg
            json.loads(obj["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
        if obj["type"] == "dashboard":
            panels = json.loads(obj["attributes"]["panelsJSON"])
            names = {r["name"] for r in obj["references"]}
            assert {p["panelRefName"] for p in panels} == names
    assert {"avg", "percentiles", "date_histogram", "terms"} <= kinds
    rule = json.loads((ROOT / "kibana/availmon-down-rule.json").read_text())
    assert rule["rule_type_id"] == ".es-query"
    assert rule["params"]["index"] == ["availmon-status-*"]
    query = json.loads(rule["params"]["esQuery"])
    assert query["query"]["bool"]["filter"][0] == {"term": {"status": "DOWN"}}
    assert rule["params"]["termField"] in fields


def _mapped_fields(mapping: dict[str, Any], prefix: str = "") -> set[str]:
    fields = set()
    for name, spec in mapping["properties"].items():
        if "properties" in spec:
            fields |= _mapped_fields(spec, f"{prefix}{name}.")
        else:
            fields.add(f"{prefix}{name}")
            fields |= {f"{prefix}{name}.{sub}" for sub in spec.get("fields", {})}
    return fields


@pytest.mark.skipif(
    not os.environ.get("AVAILMON_TEST_ES_URL"),
    reason="AVAILMON_TEST_ES_URL is not set: no real Elasticsearch cluster to test against",
)
async def test_against_a_real_cluster(repo: Repository) -> None:
    url = os.environ["AVAILMON_TEST_ES_URL"]
    prefix = f"availmon-test-{secrets.token_hex(4)}"
    settings = es_settings([url], index_prefix=prefix, request_timeout=30.0, retry_max=2.0)
    endpoints = await make_endpoints(repo, 4)
    client = AsyncElasticsearch([url], verify_certs=settings.verify_certs)
    try:
        async with Pipeline(repo, settings) as pipe:
            pipe.submit(rows_for(endpoints, 2000))
            await eventually(lambda: pipe.sync.status()["backlog_rows"] == 0, timeout=60)
        await client.indices.refresh(index=f"{prefix}-*")
        count = await client.count(index=f"{prefix}-*")
        assert count["count"] == 2000
        template = await client.indices.get_index_template(name=prefix)
        mappings = template["index_templates"][0]["index_template"]["template"]["mappings"]
        assert mappings["properties"]["details"]["type"] == "flattened"
    finally:
        await client.indices.delete(index=f"{prefix}-*", ignore_unavailable=True)
        await client.indices.delete_index_template(name=prefix)
        await client.close()


async def latest_from_postgresql(dsn: str) -> dict[int, dict[str, str]]:
    """Per endpoint: the newest row, and since when its status holds (start of its run)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "WITH runs AS (SELECT endpoint_id, checked_at, status, lag(status) OVER "
            "  (PARTITION BY endpoint_id ORDER BY checked_at) AS previous FROM statuses), "
            "changes AS (SELECT endpoint_id, max(checked_at) AS since FROM runs "
            "  WHERE previous IS DISTINCT FROM status GROUP BY endpoint_id) "
            "SELECT DISTINCT ON (s.endpoint_id) s.endpoint_id, e.name, s.checked_at, "
            "s.status::text, s.reason, s.response_time_ms, c.since FROM statuses s "
            "JOIN changes c USING (endpoint_id) JOIN endpoints e ON e.id = s.endpoint_id "
            "ORDER BY s.endpoint_id, s.checked_at DESC"
        )
    finally:
        await conn.close()
    return {
        r["endpoint_id"]: {
            "name": r["name"],
            "status": r["status"],
            "reason": r["reason"],
            "last_check_at": r["checked_at"].isoformat(),
            "response_time_ms": str(float(f"{r['response_time_ms']:.7g}")),
            "since": r["since"].isoformat(),
        }
        for r in rows
    }


def synthetic(endpoints: list[Endpoint], start: int, count: int) -> list[StatusRow]:
    """Rows in time order whose status changes every few hundred rows per endpoint."""
    base = datetime.now(UTC) - timedelta(hours=1)
    out = []
    for i in range(start, start + count):
        down = (i // 700) % 3 == 1
        out.append(
            StatusRow(
                endpoint_id=endpoints[i % len(endpoints)].id,
                checked_at=base + timedelta(milliseconds=50 * i),
                status=Status.DOWN if down else Status.UP,
                reason=Reason.REFUSED if down else Reason.OK,
                response_time_ms=None if down else 1.0 + (i % 997) / 7,
                error="connection refused" if down else None,
                attempts=1,
                details={},
            )
        )
    return out


async def test_ten_thousand_results_with_both_outputs_stopped_and_restarted_mid_run(
    pg_dsn: str, tmp_path: Path, fake_es: FakeElasticsearch, redis_server: RedisServer
) -> None:
    specs = [{"name": f"svc-{i}", "url": f"tcp://127.0.0.1:9{i:02d}"} for i in range(25)]
    settings = daemon_settings(
        pg_dsn, tmp_path, specs, redis_url=redis_server.url, es_hosts=[fake_es.url]
    )
    with capture_logs() as logs:
        async with build_daemon(settings) as daemon:
            for watched in daemon.monitor.all():  # the writer is driven directly, below
                daemon.scheduler.unschedule(watched.endpoint.id)
            endpoints = [w.endpoint for w in daemon.monitor.all()]
            written = 0

            async def submit(count: int) -> None:
                nonlocal written
                for row in synthetic(endpoints, written, count):
                    assert daemon.writer.submit(row)
                written += count
                await eventually(lambda: daemon.writer.stats.written == written)

            await submit(2500)
            redis_server.kill()
            await submit(2500)
            await fake_es.stop()
            await submit(2000)
            status = daemon.collector.summary()
            assert status["redis"]["connected"] is False
            redis_server.start()
            await submit(1500)
            # the backlog figure is refreshed from the outbox after each failed attempt: on a
            # busy host the first refresh can come before every row is in the outbox
            await eventually(
                lambda: daemon.collector.summary()["elasticsearch"]["backlog_rows"] >= 3500 - 1000
            )
            url = f"http://127.0.0.1:{daemon.api_port}/api/v1/status"
            async with aiohttp.ClientSession() as http, http.get(url) as response:
                body = await response.json()
            assert body["elasticsearch"]["available"] is False  # what the API shows
            assert body["elasticsearch"]["backlog_rows"] >= 3500 - 1000
            await fake_es.start()
            await submit(1500)
            assert written == 10_000

            last: list[Any] = []

            async def both_converged() -> bool:
                view = comparable(await redis_view(redis_server.url))
                want = await latest_from_postgresql(pg_dsn)
                es = daemon.collector.summary()["elasticsearch"]
                last[:] = [len(fake_es.docs()), es, view, want]
                return len(fake_es.docs()) == 10_000 and es["backlog_rows"] == 0 and view == want

            try:
                await eventually(both_converged, timeout=20)
            except AssertionError:
                docs, es, view, want = last
                diff = {k: (view.get(k), want.get(k)) for k in want if view.get(k) != want.get(k)}
                raise AssertionError(
                    f"docs={docs} es={es} differ={list(diff.items())[:3]}"
                ) from None
            summary = daemon.collector.summary()
    assert set(fake_es.docs()) == await stored_ids_dsn(pg_dsn)
    assert summary["redis"]["connected"] is True and summary["redis"]["events_dropped"] == 0
    assert summary["elasticsearch"]["indexed"] >= 10_000
    events = [e["event"] for e in logs]
    for peer in ("redis", "elasticsearch"):
        assert events.count(f"{peer}_unavailable") == 1, peer
        assert events.count(f"{peer}_recovered") == 1, peer


async def stored_ids_dsn(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        records = await conn.fetch("SELECT endpoint_id, checked_at FROM statuses")
    finally:
        await conn.close()
    return {doc_id(r["endpoint_id"], r["checked_at"]) for r in records}
