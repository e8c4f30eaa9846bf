"""The batched "status since" writes against a real PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from availmon.errors import StorageError
from availmon.model import Status
from availmon.specs import ENDPOINT_ADAPTER
from availmon.store import Repository
from availmon.store.state_changes import StatusChangeBuffer

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


async def endpoints(repo: Repository, n: int) -> list[int]:
    specs = [
        ENDPOINT_ADAPTER.validate_python({"name": f"e{i}", "url": "http://127.0.0.1:9/"})
        for i in range(n)
    ]
    return [e.id for e in await repo.sync_config_endpoints(specs)]


async def test_one_flush_writes_the_latest_change_of_each_endpoint(repo: Repository):
    a, b, c = await endpoints(repo, 3)
    buffer = StatusChangeBuffer(repo.pool)
    buffer.record(a, Status.UP, T0)
    buffer.record(b, Status.DOWN, T0)
    buffer.record(a, Status.DOWN, T0 + timedelta(seconds=5))  # replaces a's first change
    buffer.record(c, Status.DEGRADED, T0 + timedelta(seconds=1))
    buffer.record(987_654, Status.UP, T0)  # no such endpoint: skipped, not an error
    assert buffer.pending == 4
    await buffer.flush()
    assert buffer.pending == 0 and buffer.written == 4
    assert await repo.status_since() == {
        a: (Status.DOWN, T0 + timedelta(seconds=5)),
        b: (Status.DOWN, T0),
        c: (Status.DEGRADED, T0 + timedelta(seconds=1)),
    }
    buffer.record(b, Status.UP, T0 + timedelta(seconds=9))
    await buffer.flush()
    assert (await repo.status_since())[b] == (Status.UP, T0 + timedelta(seconds=9))


async def test_a_failed_flush_keeps_the_changes_and_newer_ones_win(repo: Repository, pg_dsn: str):
    a, b = await endpoints(repo, 2)
    broken = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=1)
    await broken.close()
    buffer = StatusChangeBuffer(broken)
    buffer.record(a, Status.DOWN, T0)
    buffer.record(b, Status.DOWN, T0)
    with pytest.raises(StorageError):
        await buffer.flush()
    buffer.record(a, Status.UP, T0 + timedelta(seconds=3))
    assert buffer.pending == 2 and buffer.written == 0
    # the same changes through a working pool: the newer change of `a` survived the failure
    buffer._pool = repo.pool  # the one seam: which pool it writes through
    await buffer.stop()
    assert await repo.status_since() == {
        a: (Status.UP, T0 + timedelta(seconds=3)),
        b: (Status.DOWN, T0),
    }


async def test_the_background_task_flushes_every_interval(repo: Repository):
    (a,) = await endpoints(repo, 1)
    buffer = StatusChangeBuffer(repo.pool, flush_interval=0.05)
    await buffer.start()
    try:
        buffer.record(a, Status.UP, T0)
        for _ in range(100):
            if buffer.written:
                break
            await asyncio.sleep(0.02)
        assert await repo.status_since() == {a: (Status.UP, T0)}
    finally:
        await buffer.stop()
