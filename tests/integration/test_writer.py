"""StatusWriter against a real PostgreSQL, with real faults (no mocks)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from availmon.model import Reason, Status, StatusRow
from availmon.store import Repository, StatusWriter

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def rows(count: int, start: int = 0, endpoint_id: int = 1, **fields: Any) -> list[StatusRow]:
    values: dict[str, Any] = {
        "status": Status.UP,
        "reason": Reason.OK,
        "response_time_ms": 5.0,
        "error": None,
        "attempts": 1,
        "details": {},
    }
    values.update(fields)
    return [
        StatusRow(endpoint_id=endpoint_id, checked_at=T0 + timedelta(seconds=i), **values)
        for i in range(start, start + count)
    ]


async def stored(repo: Repository) -> int:
    count: int = await repo.pool.fetchval("SELECT count(*) FROM statuses")
    return count


async def eventually(check: Callable[[], Any], timeout: float = 5.0) -> None:
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


@pytest.fixture
async def admin(pg_dsn: str) -> AsyncIterator[Any]:
    """A separate connection to the test database, for making trouble."""
    conn = await asyncpg.connect(pg_dsn)
    yield conn
    await conn.close()


async def test_flushes_when_a_batch_is_full(repo: Repository) -> None:
    writer = StatusWriter(repo, batch_size=10, flush_interval=60, queue_size=1000)
    await writer.start()
    try:
        for row in rows(25):
            assert writer.submit(row)
        await eventually(lambda: writer.stats.written >= 20)
        assert await stored(repo) >= 20
        assert writer.stats.flushes >= 2
        assert writer.stats.last_flush_seconds is not None
    finally:
        await writer.stop()
    assert await stored(repo) == 25  # stop() wrote the last partial batch


async def test_flushes_after_the_interval(repo: Repository) -> None:
    writer = StatusWriter(repo, batch_size=1000, flush_interval=0.1, queue_size=1000)
    await writer.start()
    try:
        for row in rows(3):
            writer.submit(row)
        await eventually(lambda: writer.stats.written == 3, timeout=2)
        assert await stored(repo) == 3
        assert writer.stats.queued == 0
    finally:
        await writer.stop()


async def test_stop_flushes_the_rest_and_then_refuses_rows(repo: Repository) -> None:
    writer = StatusWriter(repo, batch_size=1000, flush_interval=60, queue_size=1000)
    await writer.start()
    for row in rows(7):
        writer.submit(row)
    await writer.stop(timeout=5)
    assert await stored(repo) == 7
    assert writer.submit(rows(1, start=100)[0]) is False
    stats = writer.stats
    assert (stats.written, stats.dropped, stats.queued) == (7, 1, 0)
    await writer.stop()  # idempotent


async def test_full_buffer_drops_counts_and_warns_once(repo: Repository) -> None:
    writer = StatusWriter(repo, batch_size=100, flush_interval=60, queue_size=5)
    with capture_logs() as logs:
        accepted = [writer.submit(row) for row in rows(9)]  # not started: nothing drains
    assert accepted == [True] * 5 + [False] * 4
    assert (writer.stats.queued, writer.stats.dropped) == (5, 4)
    full = [e for e in logs if e["event"] == "writer_queue_full"]
    assert len(full) == 1 and full[0]["log_level"] == "warning"
    assert full[0]["queue_size"] == 5
    await writer.start()
    await writer.stop()
    assert await stored(repo) == 5


async def test_submit_never_waits_on_the_database(repo: Repository, admin: Any) -> None:
    writer = StatusWriter(repo, batch_size=10, flush_interval=0.05, queue_size=10_000)
    await writer.start()
    lock = admin.transaction()
    await lock.start()
    await admin.execute("LOCK TABLE statuses IN ACCESS EXCLUSIVE MODE")  # every write blocks
    try:
        started = time.perf_counter()
        for row in rows(5000):
            writer.submit(row)
        assert time.perf_counter() - started < 0.5
        await asyncio.sleep(0.2)
        assert writer.stats.written == 0 and writer.stats.queued == 5000
    finally:
        await lock.rollback()
    await writer.stop(timeout=10)
    assert await stored(repo) == 5000


async def test_survives_its_connection_being_killed_mid_write(repo: Repository, admin: Any) -> None:
    writer = StatusWriter(repo, batch_size=1000, flush_interval=0.05, retry_initial=0.05)
    await writer.start()
    lock = admin.transaction()
    await lock.start()
    await admin.execute("LOCK TABLE statuses IN ACCESS EXCLUSIVE MODE")
    with capture_logs() as logs:
        try:
            for row in rows(3):
                writer.submit(row)

            async def writer_is_blocked() -> bool:
                waiting: int = await admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name = 'availmon' AND wait_event_type = 'Lock'"
                )
                return waiting == 1

            await eventually(writer_is_blocked)
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = 'availmon'"
            )
            assert killed >= 1
            await lock.rollback()
            await eventually(lambda: writer.stats.written == 3)
            for row in rows(4, start=10):
                writer.submit(row)
            await eventually(lambda: writer.stats.written == 7)
        finally:
            await writer.stop()
    events = [e["event"] for e in logs]
    assert events.count("writer_flush_failed") == 1
    assert events.count("writer_recovered") == 1
    assert await stored(repo) == 7


async def test_keeps_rows_while_the_table_is_gone_then_writes_them(
    repo: Repository, admin: Any
) -> None:
    writer = StatusWriter(repo, batch_size=1000, flush_interval=0.05, retry_initial=0.05)
    await admin.execute("ALTER TABLE statuses RENAME TO statuses_away")
    with capture_logs() as logs:
        await writer.start()
        try:
            for row in rows(5):
                writer.submit(row)
            await eventually(lambda: writer.stats.failing)
            await asyncio.sleep(0.3)  # several retries
            assert writer.stats.queued == 5 and writer.stats.written == 0
            assert "statuses" in (writer.stats.last_error or "")
            await admin.execute("ALTER TABLE statuses_away RENAME TO statuses")
            for row in rows(2, start=5):
                writer.submit(row)
            await eventually(lambda: writer.stats.written == 7, timeout=5)
            assert not writer.stats.failing
        finally:
            await writer.stop()
    events = [e["event"] for e in logs]
    assert events.count("writer_flush_failed") == 1  # once per failure episode
    assert events.count("writer_recovered") == 1
    got = await repo.list_statuses(1, limit=10)
    assert [r.checked_at for r in got] == [T0 + timedelta(seconds=i) for i in range(6, -1, -1)]


async def test_bad_rows_are_rejected_without_blocking_the_rest(repo: Repository) -> None:
    writer = StatusWriter(repo, batch_size=100, flush_interval=60)
    good = rows(6)
    bad = rows(1, start=50, attempts=100_000)[0]  # does not fit a smallint
    for row in [*good[:3], bad, *good[3:]]:
        writer.submit(row)
    with capture_logs() as logs:
        await writer.flush()
    assert (writer.stats.written, writer.stats.rejected, writer.stats.queued) == (6, 1, 0)
    assert await stored(repo) == 6
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["writer_row_rejected"]


async def test_stop_gives_up_after_its_timeout(repo: Repository, admin: Any) -> None:
    writer = StatusWriter(repo, batch_size=100, flush_interval=60, retry_initial=0.05)
    await admin.execute("ALTER TABLE statuses RENAME TO statuses_away")
    await writer.start()
    for row in rows(4):
        writer.submit(row)
    started = time.monotonic()
    with capture_logs() as logs:
        await writer.stop(timeout=0.5)
    assert time.monotonic() - started < 2
    assert (writer.stats.dropped, writer.stats.queued) == (4, 0)
    assert "writer_stop_timeout" in [e["event"] for e in logs]


async def test_stop_finishes_the_flush_when_cancelled(repo: Repository, admin: Any) -> None:
    writer = StatusWriter(repo, batch_size=1000, flush_interval=60)
    await writer.start()
    for row in rows(10):
        writer.submit(row)
    lock = admin.transaction()
    await lock.start()
    await admin.execute("LOCK TABLE statuses IN ACCESS EXCLUSIVE MODE")
    stopping = asyncio.create_task(writer.stop(timeout=10))
    await asyncio.sleep(0.2)  # the final flush is now blocked on the lock
    stopping.cancel()
    await asyncio.sleep(0.1)
    await lock.rollback()  # let it through
    with pytest.raises(asyncio.CancelledError):
        await stopping
    assert writer.stats.written == 10
    assert await stored(repo) == 10
