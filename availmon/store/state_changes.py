"""Each endpoint's "status since" (endpoint_state), written in batches, latest change wins.

One upsert per status change cost a pool round trip per endpoint: at start-up 10,000 endpoints
change from nothing to UP within seconds, and the bench saw hundreds of those calls time out
behind each other in a 5-connection pool. Only the latest change of an endpoint matters (the
table holds one row per endpoint), so changes are kept in a dict and written together, one
statement per flush; a failed flush keeps them and the next one retries, without ever putting
an older change over a newer one.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import Any

import structlog

from availmon.model import Status
from availmon.store.pg import is_bad_data, storage_errors

log = structlog.get_logger("availmon.store")

# an endpoint deleted while its change waited is skipped (endpoint_state references endpoints)
_UPSERT = (
    "INSERT INTO endpoint_state (endpoint_id, status, since) "
    "SELECT c.id, c.status, c.since FROM unnest($1::bigint[], $2::status_kind[], "
    "$3::timestamptz[]) AS c(id, status, since) JOIN endpoints e ON e.id = c.id "
    "ON CONFLICT (endpoint_id) DO UPDATE SET status = EXCLUDED.status, "
    "since = EXCLUDED.since, updated_at = now()"
)


class StatusChangeBuffer:
    def __init__(self, pool: Any, flush_interval: float = 1.0, retry_max: float = 30.0) -> None:
        self._pool = pool
        self._flush_interval = flush_interval
        self._retry_max = retry_max
        self._pending: dict[int, tuple[Status, datetime]] = {}
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._failing = False
        self.written = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def record(self, endpoint_id: int, status: Status, since: datetime) -> None:
        """Remember the change; never waits. A later change of the endpoint replaces it."""
        self._pending[endpoint_id] = (status, since)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="availmon-status-changes")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.flush()
        except Exception as exc:  # restore_state then falls back to "since unknown"
            log.error("status_changes_lost", endpoints=len(self._pending), error=repr(exc))

    async def flush(self) -> None:
        """Write every pending change; on failure they stay pending (newer ones win)."""
        async with self._lock:
            if not self._pending:
                return
            batch, self._pending = self._pending, {}
            try:
                await self._write(batch)
            except Exception as exc:
                if is_bad_data(exc):  # retrying the same changes cannot help: drop them
                    log.error("status_changes_rejected", endpoints=len(batch), error=repr(exc))
                    return
                self._pending = batch | self._pending  # changes made meanwhile are newer
                raise
            except BaseException:
                self._pending = batch | self._pending
                raise
            self.written += len(batch)

    @storage_errors
    async def _write(self, batch: dict[int, tuple[Status, datetime]]) -> None:
        ids = list(batch)
        await self._pool.execute(
            _UPSERT, ids, [batch[i][0].value for i in ids], [batch[i][1] for i in ids]
        )

    async def _run(self) -> None:
        delay = self._flush_interval
        while True:
            await asyncio.sleep(delay)
            try:
                await self.flush()
            except Exception as exc:
                if not self._failing:
                    log.warning("status_changes_flush_failed", error=repr(exc))
                    self._failing = True
                delay = min(delay * 2, self._retry_max)
                continue
            if self._failing:
                log.info("status_changes_flush_recovered")
                self._failing = False
            delay = self._flush_interval
