"""The batched status writer: checks hand rows over without ever waiting on PostgreSQL.

`submit()` only appends to a bounded in-memory buffer. A background task writes the buffer in
order, in batches (when `batch_size` rows are waiting, or every `flush_interval` seconds), and
keeps the rows through database failures, retrying with backoff; only when the buffer is full
are new rows dropped (and counted). A row PostgreSQL refuses because of its content (a value
out of range, say) is set aside as rejected so it cannot block the rows behind it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from availmon.model import StatusRow
from availmon.store.pg import is_bad_data
from availmon.store.repository import Repository
from availmon.store.spool import Spool

log = structlog.get_logger("availmon.writer")

CommitListener = Callable[[Sequence[StatusRow]], None]
DROP_LOG_INTERVAL = 10.0  # seconds between two "queue full" warnings
# A write that hangs (a network cut, not a refusal) is abandoned after this and retried, so
# spooling never waits behind it for longer; generous, since an overloaded event loop makes a
# healthy database look slow.
WRITE_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class WriterStats:
    written: int
    dropped: int  # refused by submit() (buffer full or writer stopped), or lost at stop timeout
    rejected: int  # refused by PostgreSQL for their content
    queued: int
    flushes: int
    last_flush_seconds: float | None
    last_error: str | None
    failing: bool
    spooled: int = 0  # rows ever written to the spool
    spool_backlog: int = 0  # rows in the spool now, waiting for PostgreSQL


class StatusWriter:
    def __init__(
        self,
        repo: Repository,
        batch_size: int = 1000,
        flush_interval: float = 1.0,
        queue_size: int = 200_000,
        *,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        spool: Spool | None = None,
        spool_after: float = 5.0,
    ) -> None:
        if batch_size < 1 or queue_size < 1 or flush_interval <= 0:
            raise ValueError("batch_size and queue_size must be >= 1, flush_interval > 0")
        self._repo = repo
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._queue_size = queue_size
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._buffer: deque[StatusRow] = deque()
        self._wake = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._written = self._dropped = self._rejected = self._flushes = 0
        self._last_flush_seconds: float | None = None
        self._last_error: str | None = None
        self._failing_since: float | None = None
        self._last_drop_log = -DROP_LOG_INTERVAL
        self._drops_since_log = 0
        self._listeners: list[CommitListener] = []
        self._spool = spool
        self._spool_after = spool_after
        self._spooled = 0

    @property
    def stats(self) -> WriterStats:
        return WriterStats(
            written=self._written,
            dropped=self._dropped,
            rejected=self._rejected,
            queued=len(self._buffer),
            flushes=self._flushes,
            last_flush_seconds=self._last_flush_seconds,
            last_error=self._last_error,
            failing=self._failing_since is not None,
            spooled=self._spooled,
            spool_backlog=self._spool.pending if self._spool else 0,
        )

    def submit(self, row: StatusRow) -> bool:
        """Buffer one row; False (and counted as dropped) when the buffer is full. Never waits."""
        if self._closed or len(self._buffer) >= self._queue_size:
            self._dropped += 1
            self._note_drop()
            return False
        self._buffer.append(row)
        if len(self._buffer) >= self._batch_size:
            self._wake.set()
        return True

    async def start(self) -> None:
        if self._task is None or self._task.done():
            self._closed = False
            self._stop_requested.clear()
            self._task = asyncio.create_task(self._run(), name="availmon-status-writer")

    async def flush(self) -> None:
        """Write everything buffered now; raises the database error if a write fails."""
        async with self._write_lock:
            while self._buffer:
                await self._write_batch()

    async def stop(self, timeout: float = 10.0) -> None:
        """Write what is still buffered (retrying for up to `timeout` s), then stop.

        The final flush is shielded: cancelling the caller does not interrupt it (the
        cancellation is re-raised once the flush ended or timed out). Rows still unwritten at
        the timeout are counted as dropped.
        """
        if self._closed:
            return
        self._stop_requested.set()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="availmon-status-writer")
        task = self._task
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        cancelled = False
        while not task.done() and (remaining := deadline - loop.time()) > 0:
            try:
                await asyncio.wait([task], timeout=remaining)  # never cancels `task` itself
            except asyncio.CancelledError:
                cancelled = True
        self._closed = True
        if not task.done():
            task.cancel()
            await asyncio.wait([task])
            if self._spool is not None and self._buffer:
                try:  # PostgreSQL is away: keep the rows for the next start
                    await asyncio.shield(self._spill())
                except Exception as exc:
                    log.error("spool_failed", error=f"{type(exc).__name__}: {exc}")
            lost = len(self._buffer)
            self._buffer.clear()
            self._dropped += lost
            if lost:
                log.error("writer_stop_timeout", rows_lost=lost, error=self._last_error)
        log.info(
            "writer_stopped",
            written=self._written,
            dropped=self._dropped,
            rejected=self._rejected,
        )
        if cancelled:
            raise asyncio.CancelledError

    # -- internals ----------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = self._retry_initial
        while True:
            if not self._stop_requested.is_set() and len(self._buffer) < self._batch_size:
                try:
                    async with asyncio.timeout(self._flush_interval):
                        await self._wake.wait()
                except TimeoutError:
                    pass
            self._wake.clear()
            try:
                await self._spool_if_needed()
                async with asyncio.timeout(WRITE_TIMEOUT):
                    await self.flush()
            except Exception as exc:  # every database failure is retried
                self._note_failure(exc, backoff)
                # while spooling, wake every flush interval so new rows reach the disk
                spooling = self._spool is not None and self._spool.pending > 0
                await self._pause(min(backoff, self._flush_interval) if spooling else backoff)
                backoff = min(backoff * 2, self._retry_max)
                continue
            backoff = self._retry_initial
            if self._stop_requested.is_set() and not self._buffer:
                return

    async def _spool_if_needed(self) -> None:
        """Once PostgreSQL has failed for `spool_after` s, buffered rows go to the spool
        (fsynced) so a crash cannot take them; the spool is replayed, oldest first, before
        any newer row is written, which keeps rows in order."""
        spool = self._spool
        if spool is None:
            return
        failing_long = (
            self._failing_since is not None
            and time.monotonic() - self._failing_since >= self._spool_after
        )
        if (failing_long or spool.pending) and self._buffer:
            await self._spill()
        if spool.pending:
            async with self._write_lock, asyncio.timeout(WRITE_TIMEOUT):
                replayed = await spool.replay(self._write_replayed, self._batch_size)
            if replayed:
                log.info("spool_replayed", rows=replayed)

    async def _spill(self) -> None:
        assert self._spool is not None
        rows = list(self._buffer)
        await self._spool.append(rows)
        for _ in range(len(rows)):
            self._buffer.popleft()
        self._spooled += len(rows)
        log.warning("writer_spooled", rows=len(rows), spool_backlog=self._spool.pending)

    async def _write_replayed(self, rows: list[StatusRow]) -> None:
        rejected = await self._write_isolating(rows)
        self._written += len(rows) - rejected
        self._rejected += rejected
        self._flushes += 1
        self._notify_committed(rows)
        if self._failing_since is not None:
            log.info(
                "writer_recovered", failed_for_s=round(time.monotonic() - self._failing_since, 3)
            )
            self._failing_since = None

    async def _pause(self, backoff: float) -> None:
        """Wait before a retry; a stop request shortens the wait but never skips it."""
        if self._stop_requested.is_set():
            await asyncio.sleep(min(backoff, 0.5))
            return
        try:
            async with asyncio.timeout(backoff):
                await self._stop_requested.wait()
        except TimeoutError:
            pass

    async def _write_batch(self) -> None:
        count = min(self._batch_size, len(self._buffer))
        batch = list(itertools.islice(self._buffer, count))
        started = time.perf_counter()
        rejected = await self._write_isolating(batch)
        for _ in range(count):  # only this task removes rows, so the first `count` are `batch`
            self._buffer.popleft()
        self._last_flush_seconds = time.perf_counter() - started
        self._flushes += 1
        self._written += count - rejected
        self._rejected += rejected
        self._notify_committed(batch)
        if self._failing_since is not None:
            log.info(
                "writer_recovered",
                failed_for_s=round(time.monotonic() - self._failing_since, 3),
                queued=len(self._buffer),
            )
            self._failing_since = None

    async def _write_isolating(self, rows: Sequence[StatusRow]) -> int:
        """Write `rows`; when some are bad data, bisect to find and reject just those."""
        try:
            await self._repo.write_statuses(rows)
            return 0
        except Exception as exc:
            if not is_bad_data(exc):
                raise
            if len(rows) == 1:
                row = rows[0]
                log.error(
                    "writer_row_rejected",
                    endpoint_id=row.endpoint_id,
                    checked_at=row.checked_at.isoformat(),
                    error=f"{type(exc.__cause__ or exc).__name__}: {exc.__cause__ or exc}",
                )
                return 1
        middle = len(rows) // 2
        # Rows of the first half written before a failure in the second are written again on
        # retry; write_statuses skips the duplicates.
        return await self._write_isolating(rows[:middle]) + await self._write_isolating(
            rows[middle:]
        )

    def add_commit_listener(self, listener: CommitListener) -> None:
        """Call `listener(rows)` after each batch is committed (side outputs: cache, index).

        Listeners run on the writer task and must not block: hand the rows to a queue."""
        self._listeners.append(listener)

    def _notify_committed(self, rows: Sequence[StatusRow]) -> None:
        for listener in self._listeners:
            try:
                listener(rows)
            except Exception:  # a side output must never stop the writer
                log.exception("writer_listener_failed", listener=repr(listener))

    def _note_failure(self, exc: BaseException, retry_in: float) -> None:
        self._last_error = f"{type(exc).__name__}: {exc}"
        if self._failing_since is None:  # once per failure episode
            self._failing_since = time.monotonic()
            log.warning(
                "writer_flush_failed",
                error=self._last_error,
                queued=len(self._buffer),
                retry_in_s=retry_in,
            )

    def _note_drop(self) -> None:
        self._drops_since_log += 1
        now = time.monotonic()
        if now - self._last_drop_log >= DROP_LOG_INTERVAL:
            log.warning(
                "writer_closed_drop" if self._closed else "writer_queue_full",
                dropped=self._drops_since_log,
                dropped_total=self._dropped,
                queue_size=self._queue_size,
            )
            self._last_drop_log = now
            self._drops_since_log = 0
