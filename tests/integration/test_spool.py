"""The spool: results survive PostgreSQL going away, and a half-written record is skipped."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

from availmon.model import Reason, Status, StatusRow
from availmon.store import EmbeddedPostgres, Repository, StatusWriter, apply_migrations
from availmon.store.spool import Spool, read_segment

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def row(i: int, endpoint_id: int = 1) -> StatusRow:
    down = i % 3 == 0
    return StatusRow(
        endpoint_id,
        T0 + timedelta(seconds=i),
        Status.DOWN if down else Status.UP,
        Reason.REFUSED if down else Reason.OK,
        None if down else 1.5 + i,
        "connection refused" if down else None,
        1,
        {"i": i, "text": "ünïcode"},
    )


def rows(n: int, start: int = 0) -> list[StatusRow]:
    return [row(start + i) for i in range(n)]


async def test_append_and_replay_roundtrip_in_order(tmp_path: Path):
    spool = Spool(tmp_path / "spool", segment_rows=4)
    assert spool.open() == 0
    await spool.append(rows(5))
    await spool.append(rows(5, start=5))
    assert spool.pending == 10 and len(spool.segments()) == 3
    assert Spool(tmp_path / "spool").open() == 10  # a new process counts what is there
    seen: list[StatusRow] = []

    async def write(batch: list[StatusRow]) -> None:
        seen.extend(batch)

    assert await spool.replay(write, batch_size=3) == 10
    assert seen == rows(10)
    assert spool.pending == 0 and spool.segments() == []


async def test_failed_replay_keeps_the_segment(tmp_path: Path):
    spool = Spool(tmp_path, segment_rows=100)
    spool.open()
    await spool.append(rows(10))

    async def broken(batch: list[StatusRow]) -> None:
        raise ConnectionRefusedError("down")

    with pytest.raises(ConnectionRefusedError):
        await spool.replay(broken, batch_size=4)
    assert spool.pending == 10 and len(spool.segments()) == 1


async def test_half_written_record_is_skipped_with_a_warning(tmp_path: Path):
    spool = Spool(tmp_path)
    spool.open()
    await spool.append(rows(3))
    (segment,) = spool.segments()
    data = segment.read_bytes()
    segment.write_bytes(data + data[:20])  # a crash cut the next record short
    with capture_logs() as logs:
        assert [r.details["i"] for r in read_segment(segment)] == [0, 1, 2]
    (warning,) = [e for e in logs if e["event"] == "spool_record_damaged"]
    assert warning["log_level"] == "warning" and warning["problem"] == "truncated record"
    flipped = bytearray(data)
    flipped[-2] ^= 0xFF
    segment.write_bytes(bytes(flipped))
    with capture_logs() as logs:
        assert [r.details["i"] for r in read_segment(segment)] == [0, 1]
    assert logs[0]["problem"] == "checksum mismatch"


async def count_rows(dsn: str) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        total = await conn.fetchval("SELECT count(*) FROM statuses")
        distinct = await conn.fetchval(
            "SELECT count(DISTINCT (endpoint_id, checked_at)) FROM statuses"
        )
        return int(total), int(distinct)
    finally:
        await conn.close()


async def wait_until(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


async def test_postgres_stopped_and_restarted_loses_nothing(pg_state_dir: Path, tmp_path: Path):
    server = EmbeddedPostgres(pg_state_dir, durable=False)
    dsn = await server.start()
    try:
        repo = await Repository.connect(dsn, 2)
        await apply_migrations(repo.pool)
        spool = Spool(tmp_path / "spool")
        spool.open()
        writer = StatusWriter(
            repo,
            batch_size=100,
            flush_interval=0.1,
            spool=spool,
            retry_initial=0.1,
            retry_max=0.5,
        )
        await writer.start()
        for row in rows(300):
            writer.submit(row)
        await wait_until(lambda: _written(writer, 300))
        await server.stop()
        produced = rows(300) + rows(700, start=300)
        for row in produced[300:]:
            writer.submit(row)
            await asyncio.sleep(0)
        await wait_until(lambda: _spooled(writer))
        assert writer.stats.failing and writer.stats.spool_backlog > 0
        assert spool.segments()
        await server.start()
        await wait_until(lambda: _written(writer, 1000))
        await writer.stop()
        assert await count_rows(dsn) == (1000, 1000)
        assert writer.stats.spool_backlog == 0 and spool.segments() == []
        assert writer.stats.dropped == 0
        await repo.close()
    finally:
        await server.stop()


async def test_a_new_writer_replays_what_a_killed_one_spooled(pg_dsn: str, tmp_path: Path):
    spool_dir = tmp_path / "spool"
    first = Spool(spool_dir)
    first.open()
    await first.append(rows(250))  # what a killed daemon had fsynced before it died
    repo = await Repository.connect(pg_dsn, 2)
    await apply_migrations(repo.pool)
    try:
        spool = Spool(spool_dir)
        assert spool.open() == 250
        writer = StatusWriter(repo, batch_size=100, flush_interval=0.1, spool=spool)
        await writer.start()
        writer.submit(rows(1, start=1000)[0])
        await wait_until(lambda: _written(writer, 251))
        await writer.stop()
        assert await count_rows(pg_dsn) == (251, 251)
    finally:
        await repo.close()


async def _written(writer: StatusWriter, n: int) -> bool:
    return writer.stats.written >= n


async def _spooled(writer: StatusWriter) -> bool:
    return writer.stats.spooled >= 700
