"""Side outputs (Redis status cache, Elasticsearch index): attached to a built daemon.

They hang off two seams and nothing else: `StatusWriter.add_commit_listener` (rows after they
are committed to PostgreSQL) and `Monitor.add_listener` (state after each check). Neither may
block or fail a check; each owns its bounded in-memory state, retries and logging, and reports
a section of `GET /api/v1/status` through `ServiceAvailabilityCollector.extra_status`.

`Episode` is the shared failure bookkeeping: one warning when a peer starts failing, one info
line when it answers again, and the backoff between the two.
"""

from __future__ import annotations

import asyncio
import random
import time
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from availmon.errors import StorageError
from availmon.logs import get_logger

if TYPE_CHECKING:
    from availmon.app import Daemon

log = get_logger("availmon.outputs")
FINAL_FLUSH_TIMEOUT_S = 5.0


class Episode:
    """A failing period of one peer: a warning at its start, an info line at its end."""

    def __init__(self, logger: Any, peer: str, *, initial: float = 0.5, maximum: float = 30.0):
        self._log = logger
        self._peer = peer
        self._initial = initial
        self._maximum = maximum
        self._backoff = initial
        self.failing_since: float | None = None  # monotonic
        self.since: datetime | None = None  # the same moment, for humans
        self.failures = 0
        self.errors = 0  # every failure ever, for metrics (`failures` counts this episode's)
        self.last_error: str | None = None

    @property
    def failing(self) -> bool:
        return self.failing_since is not None

    def failed(self, error: BaseException | str, **context: Any) -> float:
        """Record a failure; return the seconds to wait before the next attempt."""
        self.last_error = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self.failures += 1
        self.errors += 1
        delay = self._backoff * random.uniform(0.8, 1.0)
        self._backoff = min(self._backoff * 2, self._maximum)
        if self.failing_since is None:
            self.failing_since = time.monotonic()
            self.since = datetime.now(UTC)
            self._log.warning(
                f"{self._peer}_unavailable",
                error=self.last_error,
                retry_in_s=round(delay, 3),
                **context,
            )
        return delay

    def succeeded(self, **context: Any) -> bool:
        """Record a success; True (and the recovery line logged) when it ends an episode."""
        self._backoff = self._initial
        if self.failing_since is None:
            return False
        self._log.info(
            f"{self._peer}_recovered",
            down_for_s=round(time.monotonic() - self.failing_since, 3),
            failed_attempts=self.failures,
            last_error=self.last_error,
            **context,
        )
        self.failing_since = self.since = None
        self.failures = 0
        return True


async def attach_side_outputs(stack: AsyncExitStack, daemon: Daemon) -> None:
    """Start the configured side outputs; their shutdown is pushed on `stack`."""
    settings = daemon.settings
    redis_on = settings.redis.enabled
    es_on = settings.elasticsearch.enabled
    if not es_on:
        await _stop_commit_tracking(daemon)
    if not redis_on and not es_on:
        log.info("side_outputs_disabled", redis="no [redis] url", elasticsearch="no hosts")
        return
    if redis_on:
        from availmon.cache import RedisCache

        cache = RedisCache(settings.redis, daemon.monitor, daemon.repo)
        await cache.start()
        stack.push_async_callback(cache.stop)
        daemon.writer.add_commit_listener(cache.on_commit)
        daemon.monitor.add_listener(cache.on_check)
        daemon.collector.extra_status["redis"] = cache.status
        daemon.redis_cache = cache
    if es_on:
        from availmon.search import EsSync

        sync = EsSync(settings.elasticsearch, daemon.repo, daemon.monitor)
        await sync.start()
        stack.push_async_callback(sync.stop)
        daemon.writer.add_commit_listener(sync.on_commit)
        daemon.collector.extra_status["elasticsearch"] = sync.status
        daemon.es_sync = sync
    # Unwound first (before the outputs stop, after the checks stopped): the last results are
    # committed while the outputs still listen, so they reach Redis and Elasticsearch now
    # rather than at the next start.
    stack.push_async_callback(_final_flush, daemon)
    log.info("side_outputs_started", redis=redis_on, elasticsearch=es_on)


async def _stop_commit_tracking(daemon: Daemon) -> None:
    from availmon.search.outbox import Outbox

    try:
        await Outbox(daemon.repo.pool).set_tracking(False)
    except StorageError as exc:  # not fatal: tracking is turned off at the next start
        log.warning("es_tracking_not_disabled", error=str(exc))


async def _final_flush(daemon: Daemon) -> None:
    try:
        async with asyncio.timeout(FINAL_FLUSH_TIMEOUT_S):
            await daemon.writer.flush()
    except Exception as exc:  # PostgreSQL away: the writer's own stop keeps (spools) the rows
        log.debug("side_outputs_final_flush_failed", error=repr(exc))
