"""Hourly uptime rollups: maintained from committed status rows, read by uptime queries.

The writer hands every committed batch to `UptimeRollups.on_commit` (never blocks: rows go to
a bounded queue); a task folds them into memory at once and writes `uptime_hourly` and
`uptime_cursor` together, in one transaction, every WRITE_INTERVAL_S. At start, rows committed
after the stored cursors (a crash before the rollups were written) are replayed first; replay
skips what is already counted. Readers add the folded, unwritten part (`consistent`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from availmon.errors import StorageError
from availmon.model import Status, StatusRow
from availmon.store.pg import storage_errors
from availmon.uptime import (
    CATEGORIES,
    Buckets,
    Cursor,
    Mark,
    Totals,
    UptimeReport,
    ceil_hour,
    coverage,
    cursor_columns,
    floor_hour,
    fold,
    hour_number,
    hour_start,
    marks_of,
    us,
)

if TYPE_CHECKING:
    from availmon.store.repository import Repository

log = structlog.get_logger("availmon.rollups")

REPLAY_LIMIT = timedelta(days=1)
BATCH = 1_000  # rows folded between two turns of the loop (a few ms)
WRITE_INTERVAL_S = 30.0
WRITE_SLICE = 5_000  # bucket or cursor rows per statement
MAX_UNWRITTEN = 1_000_000  # buckets held (zeroed ones too) before a write comes early
CONSISTENT_TRIES = 5
_ZEROS = [0] * (len(CATEGORIES) + 1)
T = TypeVar("T")
R = TypeVar("R")
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
    """Rows are folded into memory as they are committed; what is folded is written (buckets
    and cursors, one transaction) every `write_interval` s. Writing each batch's buckets as it
    came upserted two rows per check: at 5,000 checks/s that was 11 % of the daemon's CPU and
    most of PostgreSQL's (measured). Readers add the unwritten part (`consistent`), so uptime
    figures are as current as before; a crash loses only memory, replayed from the rows."""

    def __init__(
        self,
        pool: Any,
        cap_of: Callable[[int], timedelta],
        queue_size: int = 200_000,
        retry_max: float = 30.0,
        write_interval: float = WRITE_INTERVAL_S,
    ) -> None:
        self._pool = pool
        self._cap_of = cap_of
        # the caps looked up (one lookup a row was 1 % of the daemon's CPU at 25,000 TCP
        # endpoints); forgotten at each write, so a changed interval counts from then on
        self._caps: dict[int, int] = {}
        self._queue: deque[StatusRow] = deque()
        self._queue_size = queue_size
        self._retry_max = retry_max
        self._write_interval = write_interval
        self._marks: dict[int, Mark] = {}  # as folded, ahead of the stored cursors
        self._unwritten: Buckets = {}  # written ones are zeroed, past hours dropped
        self._unwritten_cursors: set[int] = set()  # endpoints whose mark moved since
        self._pruned_hour = -1
        # a write in flight is in neither the database (not committed) nor _unwritten
        self._writes_started = 0
        self._writes_ended = 0
        self._write_done = asyncio.Event()
        self._write_done.set()
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
            self._fold(rows)
            await self._write()
            log.info("rollups_replayed", rows=len(rows))
        self._task = asyncio.create_task(self._run(), name="availmon-uptime-rollups")

    async def stop(self) -> None:
        """Fold and write what is queued (the writer has flushed by now), then stop."""
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
        """Fold everything queued and write it now (tests and shutdown); raises when
        PostgreSQL fails."""
        async with self._lock:
            await self._fold_queued()
            await self._write()

    async def consistent(self, read: Callable[[], Awaitable[T]], combine: Callable[[T], R]) -> R:
        """`combine(await read())`, where `read` reads stored rollups and `combine` adds the
        unwritten part (unwritten_totals, unwritten_days) right after it, with no write
        committed in between: a write that began or ended during the read means it is read
        again once that write is done, so nothing is counted twice or missed."""
        for _ in range(CONSISTENT_TRIES):
            await self._write_done.wait()
            mark = self._writes_started
            value = await read()
            if self._writes_started == mark and self._writes_ended == mark:
                return combine(value)
        raise StorageError("uptime rollups were being written throughout the read; try again")

    def unwritten_totals(self, endpoint_id: int, start: datetime, end: datetime) -> Totals:
        """Folded, unwritten bucket deltas of one endpoint in the hours [start, end)."""
        first, last = hour_number(start), hour_number(end)
        totals = Totals()
        if last - first <= len(self._unwritten):
            hours = ((endpoint_id, h) for h in range(first, last))
            found = [self._unwritten[k] for k in hours if k in self._unwritten]
        else:
            found = [
                v for (i, h), v in self._unwritten.items() if i == endpoint_id and first <= h < last
            ]
        for values in found:
            totals += Totals(*values)
        return totals

    def unwritten_days(
        self, endpoint_ids: Sequence[int], start: datetime, end: datetime
    ) -> dict[int, dict[date, Totals]]:
        """Folded, unwritten bucket deltas in [start, end), per endpoint, per UTC day."""
        wanted, first, last = set(endpoint_ids), hour_number(start), hour_number(end)
        result: dict[int, dict[date, Totals]] = {}
        for (endpoint_id, hour), values in self._unwritten.items():
            if endpoint_id in wanted and first <= hour < last:
                days = result.setdefault(endpoint_id, {})
                day = hour_start(hour).date()
                days[day] = days.get(day, Totals()) + Totals(*values)
        return result

    async def _fold_queued(self) -> None:
        """Fold the queue in slices of BATCH, the loop running other work in between."""
        while self._queue:
            batch = list(itertools.islice(self._queue, BATCH))
            for _ in range(len(batch)):
                self._queue.popleft()
            self._fold(batch)
            await asyncio.sleep(0)

    def _fold(self, rows: Sequence[Any]) -> None:
        touched, skipped = fold(rows, self._marks, self._cap_of, self._unwritten, self._caps)
        self._unwritten_cursors |= touched
        self.applied += len(rows) - skipped

    async def _run(self) -> None:
        delay = 0.5
        loop = asyncio.get_running_loop()
        next_write = loop.time() + self._write_interval
        while True:
            async with self._lock:
                await self._fold_queued()
                due = loop.time() >= next_write or len(self._unwritten) > MAX_UNWRITTEN
                if due or self._stopping:
                    try:
                        await self._write()
                    except Exception as exc:  # kept in memory and retried: PostgreSQL away
                        log.warning(
                            "rollup_failed", error=repr(exc), unwritten=len(self._unwritten)
                        )
                        if self._stopping:
                            return
                        next_write = loop.time() + delay
                        delay = min(delay * 2, self._retry_max)
                    else:
                        if self._stopping and not self._queue:
                            return
                        next_write = loop.time() + self._write_interval
                        delay = 0.5
            if self._queue:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_write - loop.time()))

    async def _write(self) -> None:
        """Store what was folded since the last write, then zero those buckets in place. The
        buckets are kept, not replaced by a new dict: 100,000 new lists every write outlived
        several young collections and made the older generations' passes long (measured at
        50,000 TCP endpoints). Runs under the lock, so no fold moves a bucket or mark
        meanwhile; readers wait for it (the seqlock) until the zeroing is done too."""
        buckets, touched = self._unwritten, self._unwritten_cursors
        self._caps = {}
        if not touched:  # a fold that changes a bucket moves that endpoint's mark too
            return
        self._writes_started += 1
        self._write_done.clear()
        try:
            written = await self._store(buckets, sorted(touched))
            for lo in range(0, len(written), WRITE_SLICE):  # committed: no longer unwritten
                for key in written[lo : lo + WRITE_SLICE]:
                    values = buckets[key]
                    values[:] = _ZEROS
                await asyncio.sleep(0)
            self._unwritten_cursors = set()
            self._drop_past_hours()
        finally:  # a failed write leaves both as they were: the next one writes them again
            self._writes_ended += 1
            self._write_done.set()

    def _drop_past_hours(self) -> None:
        """Forget the zeroed buckets of past hours, once an hour (memory only: a bucket holds a
        delta, so a late fold into a dropped hour starts it again from zero, correctly)."""
        hour = hour_number(datetime.now(UTC))
        if hour == self._pruned_hour:
            return
        self._pruned_hour = hour
        stale = [k for k, v in self._unwritten.items() if k[1] < hour - 1 and not any(v)]
        for key in stale:
            del self._unwritten[key]

    @storage_errors
    async def _store(self, buckets: Buckets, touched: list[int]) -> list[tuple[int, int]]:
        """The buckets that hold something, then the cursors of the endpoints whose marks
        moved, in one transaction and in slices: encoding (or building) 50,000 rows at once
        held the loop 100-250 ms. Returns the keys of the buckets written."""
        keys = list(buckets)
        written: list[tuple[int, int]] = []
        async with self._pool.acquire() as conn, conn.transaction():
            for lo in range(0, len(keys), WRITE_SLICE):
                part = [k for k in keys[lo : lo + WRITE_SLICE] if any(buckets[k])]
                if part:
                    await conn.execute(_UPSERT_BUCKETS, *_bucket_columns(buckets, part))
                    written += part
            for lo in range(0, len(touched), WRITE_SLICE):
                part_ids = touched[lo : lo + WRITE_SLICE]
                await conn.execute(
                    _UPSERT_CURSORS, part_ids, *cursor_columns(self._marks, part_ids)
                )
        return written

    @storage_errors
    async def _load_and_replay_rows(self) -> list[Any]:
        rows = await self._pool.fetch(
            "SELECT endpoint_id, checked_at, status, covered_until FROM uptime_cursor"
        )
        self._marks = marks_of(
            {
                r["endpoint_id"]: Cursor(r["checked_at"], Status(r["status"]), r["covered_until"])
                for r in rows
            }
        )
        if not self._marks:
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


def _bucket_columns(buckets: Buckets, keys: list[tuple[int, int]]) -> list[list[Any]]:
    columns: list[list[Any]] = [[k[0] for k in keys], [hour_start(k[1]) for k in keys]]
    rows = [buckets[k] for k in keys]
    columns.extend([row[slot] for row in rows] for slot in range(len(CATEGORIES) + 1))
    return columns


class UptimeReader:
    """One endpoint's uptime over a window: rollups for whole hours, raw rows for the rest."""

    def __init__(self, repo: Repository, rollups: UptimeRollups | None = None) -> None:
        self._repo = repo
        self._pool = repo.pool
        self._rollups = rollups  # None: what is stored only

    async def hourly_totals(self, endpoint_id: int, start: datetime, end: datetime) -> Totals:
        """Sum of whole-hour buckets in [start, end) (both on hour boundaries)."""
        rollups = self._rollups
        if rollups is None:
            return await self._stored_totals(endpoint_id, start, end)
        return await rollups.consistent(
            lambda: self._stored_totals(endpoint_id, start, end),
            lambda stored: stored + rollups.unwritten_totals(endpoint_id, start, end),
        )

    @storage_errors
    async def _stored_totals(self, endpoint_id: int, start: datetime, end: datetime) -> Totals:
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
