"""Redis status cache and event publisher (key layout: availmon.cache.layout, README "Redis").

Fed by two listeners that never wait: `on_commit` (rows committed to PostgreSQL, on the writer
task) and `on_check` (the monitor's transitions, after every check). Both only update memory
that is bounded by the number of endpoints (the newest committed row per endpoint and a set of
endpoints to rewrite: the latest wins), plus a bounded queue of events. One background task
writes the changes in a single MULTI/EXEC per round: hashes first, then the events, so a
subscriber that reads the hash on an event sees at least what the event announced, once the
row is committed.

Redis away: checks are not affected; one warning, then retries with backoff. Events of that
time are dropped (counted), never replayed late. When Redis answers again the whole current
view (every watched endpoint) is written at once, stale keys removed, and a `resync` event
published so subscribers know to re-read; then one info line.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from availmon.cache.layout import (
    CommittedState,
    EndpointView,
    KeyLayout,
    encode,
    outage_closed_event,
    outage_opened_event,
    resync_event,
    status_changed_event,
)
from availmon.config import RedisSettings
from availmon.errors import StorageError
from availmon.logs import get_logger
from availmon.model import ProbeResult, StatusRow
from availmon.outputs import Episode
from availmon.runner import Monitor, Watched
from availmon.state import OutageClosed, OutageOpened, StatusChanged, Transition
from availmon.store import Repository, redact_dsn

log = get_logger("availmon.cache")
REDIS_ERRORS = (RedisError, OSError, TimeoutError)
RECONCILE_EVERY_S = 5.0  # also notice endpoints that stopped being watched
FULL_SYNC_EVERY_S = 300.0  # the whole view rewritten: heals a FLUSHALL or a hand edit
STOP_TIMEOUT_S = 5.0


def connect(settings: RedisSettings) -> Redis:
    """A client that fails fast: retries and backoff are ours, not the library's."""
    assert settings.url is not None
    return Redis.from_url(
        settings.url.get_secret_value(),
        decode_responses=True,
        socket_timeout=settings.timeout,
        socket_connect_timeout=settings.timeout,
        retry=Retry(NoBackoff(), 0),
    )


async def write_full_view(
    redis: Redis,
    layout: KeyLayout,
    hashes: dict[int, dict[str, str]],
    reason: str,
    sync_id: str | None = None,
) -> int:
    """Replace the whole view atomically: these endpoints' hashes, no others. Returns the
    number of stale endpoints removed. Publishes a `resync` event in the same transaction
    (`reason` says why), except for the routine periodic rewrite.

    `sync_id` (meta field) names this write: a writer that finds another one there knows
    the view was replaced or lost (a restarted or flushed Redis) since it last wrote it."""
    present = {_str(member) for member in await redis.smembers(layout.index)}
    stale = present - {str(endpoint_id) for endpoint_id in hashes}
    now = datetime.now(UTC)
    async with redis.pipeline(transaction=True) as pipe:
        for endpoint_id, fields in hashes.items():
            key = layout.endpoint(endpoint_id)
            pipe.delete(key)
            pipe.hset(key, mapping=_mapping(fields))
            pipe.sadd(layout.index, str(endpoint_id))
        for member in stale:
            pipe.delete(layout.endpoint(int(member)))
            pipe.srem(layout.index, member)
        meta = {
            "schema_version": "1",
            "synced_at": now.isoformat(),
            "endpoints": str(len(hashes)),
            "sync_id": sync_id or secrets.token_hex(8),
        }
        pipe.hset(layout.meta, mapping=_mapping(meta))
        if reason != "periodic":  # a routine rewrite: nothing was missed, nothing to announce
            pipe.publish(layout.channel, encode(resync_event(len(hashes), reason, now)))
        await pipe.execute()
    return len(stale)


def _mapping(fields: dict[str, str]) -> dict[Any, Any]:
    return fields  # redis-py's Mapping type is invariant in its key type


def _str(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisCache:
    def __init__(
        self,
        settings: RedisSettings,
        monitor: Monitor,
        repo: Repository | None = None,
        *,
        client: Redis | None = None,
    ) -> None:
        self._settings = settings
        self._layout = KeyLayout(settings.key_prefix, settings.events_channel)
        self._redis = client or connect(settings)
        self._where = redact_dsn(settings.url.get_secret_value()) if settings.url else None
        self._monitor = monitor
        self._repo = repo
        self._committed = CommittedState()
        self._dirty: set[int] = set()
        self._events: deque[dict[str, Any]] = deque()
        self._outage_ids: dict[int, int] = {}  # for close events: the runner clears its copy
        # what each endpoint's hash holds now: an update sends only the fields that changed
        # (one HSET), an HDEL for fields that went away, an SADD for a new endpoint
        self._written: dict[int, dict[str, str]] = {}
        self._last_full_sync = 0.0
        self._sync_id = ""  # ours, in {prefix}meta; another value there: the view was lost
        self._full_sync_due: str | None = "daemon_started"  # why the whole view is due
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._episode = Episode(log, "redis", maximum=settings.retry_max)
        self.hash_writes = self.published = self.events_dropped = self.full_syncs = 0

    @property
    def layout(self) -> KeyLayout:
        return self._layout

    # -- listeners (never wait) ---------------------------------------------------------------

    def on_commit(self, rows: Sequence[StatusRow]) -> None:
        changed = self._committed.apply(rows)
        if changed:
            self._dirty |= changed
            self._wake.set()

    def on_check(
        self, watched: Watched, result: ProbeResult, transitions: list[Transition]
    ) -> None:
        endpoint = watched.endpoint
        if watched.outage_id is not None:
            self._outage_ids[endpoint.id] = watched.outage_id
        for transition in transitions:
            if isinstance(transition, StatusChanged):
                payload = status_changed_event(endpoint, transition, result)
            elif isinstance(transition, OutageOpened):
                payload = outage_opened_event(endpoint, watched.outage_id, transition)
            elif isinstance(transition, OutageClosed):
                outage_id = self._outage_ids.pop(endpoint.id, None)
                at = result.checked_at or datetime.now(UTC)
                payload = outage_closed_event(endpoint, outage_id, transition, at)
            else:  # other transitions are not part of the channel's documented events
                continue
            self._queue_event(payload)

    def _queue_event(self, payload: dict[str, Any]) -> None:
        if self._episode.failing:  # Redis is away: such events are never replayed late
            self.events_dropped += 1
            return
        if len(self._events) >= self._settings.event_queue_size:
            self._events.popleft()
            self.events_dropped += 1
        self._events.append(payload)
        self._wake.set()

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Seed from PostgreSQL's newest rows (the listeners may already be attached) and start
        the writer task; never waits for Redis itself."""
        if self._repo is not None:
            try:
                latest = await self._repo.latest_statuses()
            except StorageError as exc:  # the view fills from the next commits instead
                log.warning("redis_seed_failed", error=str(exc))
                latest = {}
            for endpoint_id, row in latest.items():
                current = self._committed.row(endpoint_id)
                if current is None or current.checked_at < row.checked_at:
                    self._committed.seed(row, self._restored_since(row))
        for watched in self._monitor.all():
            if watched.outage_id is not None:
                self._outage_ids[watched.endpoint.id] = watched.outage_id
        self._task = asyncio.create_task(self._run(), name="availmon-redis-cache")

    def _restored_since(self, row: StatusRow) -> datetime | None:
        if row.endpoint_id not in self._monitor:
            return None
        state = self._monitor.get(row.endpoint_id).machine.state
        return state.status_since if state.status is row.status else None

    async def stop(self) -> None:
        """One last round (when Redis answers), then close the connection."""
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            done, _ = await asyncio.wait([self._task], timeout=STOP_TIMEOUT_S)
            if not done:
                self._task.cancel()
                await asyncio.wait([self._task])
        with contextlib.suppress(*REDIS_ERRORS):
            await self._redis.aclose()
        log.info(
            "redis_cache_stopped",
            hash_writes=self.hash_writes,
            published=self.published,
            events_dropped=self.events_dropped,
        )

    @property
    def pending_endpoints(self) -> int:
        """Endpoints whose hash is due to be written."""
        return len(self._dirty)

    @property
    def queued_events(self) -> int:
        return len(self._events)

    @property
    def errors(self) -> int:
        """Failed attempts to write to Redis, ever."""
        return self._episode.errors

    def status(self) -> dict[str, Any]:
        """The "redis" section of GET /api/v1/status."""
        episode = self._episode
        return {
            "connected": not episode.failing and self.full_syncs > 0,
            "failing_since": episode.since.isoformat() if episode.since else None,
            "last_error": episode.last_error if episode.failing else None,
            "pending_endpoints": len(self._dirty),
            "queued_events": len(self._events),
            "hash_writes": self.hash_writes,
            "published": self.published,
            "events_dropped": self.events_dropped,
            "full_syncs": self.full_syncs,
        }

    # -- the writer task ----------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RECONCILE_EVERY_S):
                        await self._wake.wait()
            self._wake.clear()
            if self._stop.is_set() and self._episode.failing:
                return  # no last attempt at a Redis that is away
            delay = await self._round()
            if self._stop.is_set():
                return
            if delay:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stop.wait()
                self._wake.set()

    async def _round(self) -> float:
        """One write; the seconds to wait before retrying when Redis failed, else 0."""
        try:
            periodic = time.monotonic() - self._last_full_sync >= FULL_SYNC_EVERY_S
            if self._full_sync_due or periodic:
                await self._full_sync(self._full_sync_due or "periodic")
            else:
                await self._write_changes()
        except REDIS_ERRORS as exc:
            self._full_sync_due = "redis_recovered"
            self.events_dropped += len(self._events)
            self._events.clear()
            return self._episode.failed(exc, redis=self._where)
        return 0.0

    async def _full_sync(self, reason: str) -> None:
        self._dirty = set()  # the views below are built from everything committed so far
        now = datetime.now(UTC)
        hashes = {w.endpoint.id: self._view(w).fields(now) for w in self._monitor.all()}
        self._sync_id = secrets.token_hex(8)
        removed = await write_full_view(self._redis, self._layout, hashes, reason, self._sync_id)
        self._written = hashes
        self._full_sync_due = None
        self._last_full_sync = time.monotonic()
        self.full_syncs += 1
        self.hash_writes += len(hashes)
        self._episode.succeeded(endpoints=len(hashes), events_dropped=self.events_dropped)
        if reason != "periodic":
            self.published += 1
            log.info(
                "redis_view_synced", endpoints=len(hashes), stale_removed=removed, reason=reason
            )

    async def _write_changes(self) -> None:
        watched_ids = {w.endpoint.id for w in self._monitor.all()}
        ids, self._dirty = self._dirty, set()
        events = list(self._events)
        self._events.clear()
        stale = [i for i in self._written if i not in watched_ids]
        now = datetime.now(UTC)
        hashes = {i: self._view(self._monitor.get(i)).fields(now) for i in ids if i in watched_ids}
        if not hashes and not stale and not events:
            return
        try:
            # not a transaction: one connection keeps the order (hashes, then events), and a
            # reader may at worst see one hash half-updated for a moment
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hget(self._layout.meta, "sync_id")
                for endpoint_id, fields in hashes.items():
                    self._queue_update(pipe, endpoint_id, fields)
                for endpoint_id in stale:
                    pipe.delete(self._layout.endpoint(endpoint_id))
                    pipe.srem(self._layout.index, str(endpoint_id))
                for payload in events:
                    pipe.publish(self._layout.channel, encode(payload))
                results = await pipe.execute()
        except REDIS_ERRORS:
            self.events_dropped += len(events)
            raise
        if results[0] != self._sync_id:
            # Redis restarted (the client reconnects without an error), was flushed, or
            # rebuild-redis ran: what this round wrote is partial, so rewrite everything now
            log.info("redis_view_replaced", found_sync_id=results[0])
            self._full_sync_due = "view_replaced"
            self._wake.set()
        self._written.update(hashes)
        for endpoint_id in stale:
            del self._written[endpoint_id]
        self.hash_writes += len(hashes)
        self.published += len(events)

    def _queue_update(self, pipe: Any, endpoint_id: int, fields: dict[str, str]) -> None:
        key = self._layout.endpoint(endpoint_id)
        before = self._written.get(endpoint_id)
        if before is None:
            pipe.hset(key, mapping=_mapping(fields))
            pipe.sadd(self._layout.index, str(endpoint_id))
            return
        changed = {k: v for k, v in fields.items() if before.get(k) != v}
        if changed:
            pipe.hset(key, mapping=_mapping(changed))
        if gone := before.keys() - fields.keys():
            pipe.hdel(key, *gone)

    def _view(self, watched: Watched) -> EndpointView:
        endpoint_id = watched.endpoint.id
        state = watched.machine.state
        severity = state.outage_severity
        return EndpointView(
            endpoint=watched.endpoint,
            row=self._committed.row(endpoint_id),
            since=self._committed.since(endpoint_id),
            outage_id=watched.outage_id if state.outage_open else None,
            outage_started_at=state.outage_started_at,
            outage_severity=severity.value if severity else None,
        )
