"""Hourly uptime rollups: maintained from committed status rows, read by uptime queries.

The writer hands every committed batch to `UptimeRollups.on_commit` (never blocks: rows go to
a bounded queue); a task folds them into `uptime_hourly` and `uptime_cursor` in one
transaction per batch. At start, rows committed after the stored cursors (a crash between the
status commit and the rollup commit) are replayed first; replay skips what is already counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from availmon.model import Status, StatusRow
from availmon.store.pg import storage_errors
from availmon.uptime import (
    CATEGORIES,
    Cursor,
    RollupDelta,
    Totals,
    UptimeReport,
    ceil_hour,
    coverage,
    floor_hour,
    roll,
    us,
)

if TYPE_CHECKING:
    from availmon.store.repository import Repository

log = structlog.get_logger("availmon.rollups")

REPLAY_LIMIT = timedelta(days=1)
BATCH = 1_000  # rows folded per transaction: a fold holds the loop ~10 ms, not 100+
_UPSERT_BUCKETS = (
    "INSERT INTO uptime_hourly (endpoint_id, hour, up_us, degraded_us, down_us, maintenance_us, "
    "unknown_us, checks) SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::bigint[], "
    "$4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[], $8::int[]) "
    "ON CONFLICT (endpoint_id, hour) DO UPDATE SET "
    + ", ".join(f"{c}_us = uptime_hourly.{c}_us + EXCLUDED.{c}_us" for c in CATEGORIES)
    + ", checks = uptime_hourly.checks + EXCLUDED.checks"
)
_UPSERT_CURSORS = (
    "INSERT INTO uptime_cursor (endpoint_id, checked_at, status, covered_until) "
    "SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::status_kind[], "
    "$4::timestamptz[]) ON CONFLICT (endpoint_id) DO UPDATE SET checked_at = "
    "EXCLUDED.checked_at, status = EXCLUDED.status, covered_until = EXCLUDED.covered_until"
)


class UptimeRollups:
    def __init__(
        self,
        pool: Any,
        cap_of: Callable[[int], timedelta],
        queue_size: int = 200_000,
        retry_max: float = 30.0,
    ) -> None:
        self._pool = pool
        self._cap_of = cap_of
        self._queue: deque[StatusRow] = deque()
        self._queue_size = queue_size
        self._retry_max = retry_max
        self._cursors: dict[int, Cursor] = {}
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.dropped = 0
        self.applied = 0

    def on_commit(self, rows: Sequence[StatusRow]) -> None:
        """The writer's commit listener: queue, never wait."""
        room = self._queue_size - len(self._queue)
        if room < len(rows):
            if self.dropped == 0:
                log.warning("rollup_queue_full", queue_size=self._queue_size)
            self.dropped += len(rows) - max(room, 0)
            rows = rows[: max(room, 0)]
        self._queue.extend(rows)
        self._wake.set()

    async def start(self) -> None:
        rows = await self._load_and_replay_rows()
        if rows:
            await self._apply(rows)
            log.info("rollups_replayed", rows=len(rows))
        self._task = asyncio.create_task(self._run(), name="availmon-uptime-rollups")

    async def stop(self) -> None:
        """Fold what is queued (the writer has flushed by now), then stop."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 10.0)
            except TimeoutError:
                self._task.cancel()
                log.error("rollups_stop_timeout", rows_lost=len(self._queue))
            self._task = None

    async def flush(self) -> None:
        """Fold everything queued now (tests and shutdown); raises when PostgreSQL fails."""
        while self._queue:
            await self._fold_some()

    async def _fold_some(self) -> None:
        async with self._lock:  # the task and flush() never fold the same rows twice
            batch = list(itertools.islice(self._queue, BATCH))
            if batch:
                await self._apply(batch)
                for _ in range(len(batch)):  # only folders remove rows: these are `batch`
                    self._queue.popleft()

    async def _run(self) -> None:
        delay = 0.5
        while True:
            if not self._queue:
                if self._stopping:
                    return
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 5.0)
                continue
            try:
                await self._fold_some()
            except Exception as exc:  # keep the rows and retry: PostgreSQL may be away
                log.warning("rollup_failed", error=repr(exc), queued=len(self._queue))
                await asyncio.sleep(delay if not self._stopping else 0.1)
                delay = min(delay * 2, self._retry_max)
                continue
            delay = 0.5

    @storage_errors
    async def _apply(self, rows: Sequence[Any]) -> None:
        delta = roll(rows, self._cursors, self._cap_of)
        if not delta.cursors:
            return
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(_UPSERT_BUCKETS, *_bucket_columns(delta))
            ids = list(delta.cursors)
            await conn.execute(
                _UPSERT_CURSORS,
                ids,
                [delta.cursors[i].checked_at for i in ids],
                [delta.cursors[i].status.value for i in ids],
                [delta.cursors[i].covered_until for i in ids],
            )
        self._cursors.update(delta.cursors)
        self.applied += len(rows) - delta.skipped

    @storage_errors
    async def _load_and_replay_rows(self) -> list[Any]:
        rows = await self._pool.fetch(
            "SELECT endpoint_id, checked_at, status, covered_until FROM uptime_cursor"
        )
        self._cursors = {
            r["endpoint_id"]: Cursor(r["checked_at"], Status(r["status"]), r["covered_until"])
            for r in rows
        }
        if not self._cursors:
            return []
        missed = await self._pool.fetch(
            "SELECT s.endpoint_id, s.checked_at, s.status FROM uptime_cursor c "
            "CROSS JOIN LATERAL (SELECT endpoint_id, checked_at, status FROM statuses "
            "  WHERE endpoint_id = c.endpoint_id AND checked_at > c.checked_at "
            "  AND checked_at > now() - $1::interval ORDER BY checked_at) AS s",
            REPLAY_LIMIT,
        )
        return [_Row(r["endpoint_id"], r["checked_at"], Status(r["status"])) for r in missed]


class _Row:
    __slots__ = ("checked_at", "endpoint_id", "status")

    def __init__(self, endpoint_id: int, checked_at: datetime, status: Status) -> None:
        self.endpoint_id, self.checked_at, self.status = endpoint_id, checked_at, status


def _bucket_columns(delta: RollupDelta) -> list[list[Any]]:
    keys = list(delta.buckets)
    columns: list[list[Any]] = [[k[0] for k in keys], [k[1] for k in keys]]
    for category in CATEGORIES:
        columns.append([getattr(delta.buckets[k], f"{category}_us") for k in keys])
    columns.append([delta.buckets[k].checks for k in keys])
    return columns


class UptimeReader:
    """One endpoint's uptime over a window: rollups for whole hours, raw rows for the rest."""

    def __init__(self, repo: Repository) -> None:
        self._repo = repo
        self._pool = repo.pool

    @storage_errors
    async def hourly_totals(self, endpoint_id: int, start: datetime, end: datetime) -> Totals:
        """Sum of whole-hour buckets in [start, end) (both on hour boundaries)."""
        row = await self._pool.fetchrow(
            "SELECT "
            + ", ".join(f"coalesce(sum({c}_us), 0)::bigint AS {c}_us" for c in CATEGORIES)
            + ", coalesce(sum(checks), 0)::bigint AS checks FROM uptime_hourly "
            "WHERE endpoint_id = $1 AND hour >= $2 AND hour < $3",
            endpoint_id,
            start,
            end,
        )
        return Totals(**dict(row))

    @storage_errors
    async def raw_coverage(
        self, endpoint_id: int, start: datetime, end: datetime, cap: timedelta
    ) -> Totals:
        rows = await self._pool.fetch(
            "SELECT checked_at, status FROM statuses WHERE endpoint_id = $1 "
            "AND checked_at >= $2 AND checked_at < $3 ORDER BY checked_at",
            endpoint_id,
            start - cap,
            end,
        )
        return coverage([(r["checked_at"], Status(r["status"])) for r in rows], cap, start, end)

    async def covered(
        self, endpoint_id: int, start: datetime, end: datetime, cap: timedelta
    ) -> Totals:
        """Totals over [start, end): whole hours from rollups, the partial ends from rows."""
        first, last = ceil_hour(start), floor_hour(end)
        if first >= last:
            return await self.raw_coverage(endpoint_id, start, end, cap)
        totals = await self.hourly_totals(endpoint_id, first, last)
        if start < first:
            totals += await self.raw_coverage(endpoint_id, start, first, cap)
        if last < end:
            totals += await self.raw_coverage(endpoint_id, last, end, cap)
        return totals

    async def uptime(
        self, endpoint_id: int, start: datetime, end: datetime, cap: timedelta
    ) -> UptimeReport:
        totals = await self.covered(endpoint_id, start, end, cap)
        downtime = 0
        outages = await self._repo.outages_between(endpoint_id, start, end)
        for outage in outages:
            lo = max(outage.started_at, start)
            hi = min(outage.ended_at or end, end)
            if lo < hi:
                downtime += (await self.covered(endpoint_id, lo, hi, cap)).down_us
        started_inside = [o for o in outages if start <= o.started_at < end]
        ended = [o for o in started_inside if o.ended_at is not None]
        by_severity: dict[str, int] = {}
        for outage in started_inside:
            by_severity[outage.severity.value] = by_severity.get(outage.severity.value, 0) + 1
        mttr = (
            sum(us(o.ended_at - o.started_at) for o in ended if o.ended_at) / len(ended) / 1e6
            if ended
            else None
        )
        return UptimeReport(
            endpoint_id, start, end, totals, downtime, len(started_inside), by_severity, mttr
        )
