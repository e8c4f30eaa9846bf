"""Webhook delivery from the outbox: one task per sink sends its events in order, one at a
time, retrying with exponential backoff; a reminder task queues reminders for open outages.

Delivery is at least once: an event is marked delivered right after a 2xx answer, so only a
crash between that answer and the mark can send it again (with the same event id). A failed
attempt blocks the sink's later events, so a receiver sees an outage's events in order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta

import aiohttp

from availmon.clock import Clock, SystemClock
from availmon.logs import get_logger
from availmon.notify.config import NotificationSettings, WebhookSettings
from availmon.notify.events import body_bytes, headers
from availmon.notify.outbox import Outbox, Pending

log = get_logger("availmon.notify")

BATCH = 20  # deliveries read per query
STOP_GRACE_S = 2.0  # an in-flight POST may finish (and be marked) after stop() is called


def backoff(attempts: int, initial: float, cap: float) -> float:
    """Seconds before attempt `attempts + 1`: initial, 2x, 4x, ... up to `cap`."""
    return float(min(initial * 2 ** max(attempts - 1, 0), cap))


class WebhookDeliverer:
    def __init__(
        self,
        outbox: Outbox,
        settings: NotificationSettings,
        clock: Clock | None = None,
        in_maintenance: Callable[[int], bool] | None = None,
    ) -> None:
        self._outbox = outbox
        self._settings = settings
        self._clock = clock or SystemClock()
        self._in_maintenance = in_maintenance or (lambda endpoint_id: False)
        self._wake: dict[str, asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._stopping = asyncio.Event()
        self.sent = 0

    def wake(self) -> None:
        for event in self._wake.values():
            event.set()

    async def start(self) -> None:
        sinks = self._settings.webhook
        if not sinks:
            return
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit_per_host=2), trust_env=False
        )
        self._outbox.on_commit = self.wake
        for sink in sinks:
            self._wake[sink.name] = asyncio.Event()
            self._tasks.append(asyncio.create_task(self._run(sink), name=f"webhook-{sink.name}"))
        if any(s.reminder_interval for s in sinks):
            self._tasks.append(asyncio.create_task(self._reminders(), name="webhook-reminders"))
        log.info("notifications_started", sinks=[s.name for s in sinks])

    async def stop(self) -> None:
        self._stopping.set()
        self.wake()
        if self._tasks:
            _, running = await asyncio.wait(self._tasks, timeout=STOP_GRACE_S)
            for task in running:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _sleep(self, sink: str, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake[sink].wait(), max(seconds, 0.0))

    async def _run(self, sink: WebhookSettings) -> None:
        poll = self._settings.poll_interval
        while not self._stopping.is_set():
            self._wake[sink.name].clear()
            try:
                wait = await self._deliver_due(sink)
            except Exception as exc:  # the database is away: try again later
                log.warning("notification_outbox_unavailable", sink=sink.name, error=repr(exc))
                wait = poll
            if not self._stopping.is_set():
                await self._sleep(sink.name, min(wait, poll))

    async def _deliver_due(self, sink: WebhookSettings) -> float:
        """Send what is due, in order; return seconds until the head of the queue is due."""
        items = await self._outbox.pending(sink.name, BATCH)
        for item in items:
            due_in = (item.next_attempt_at - self._clock.now()).total_seconds()
            if due_in > 0:
                return due_in
            if self._stopping.is_set() or not await self._attempt(sink, item):
                return 0.0  # the failed head was rescheduled; re-read the queue
        return 0.0 if len(items) == BATCH else self._settings.poll_interval

    async def _attempt(self, sink: WebhookSettings, item: Pending) -> bool:
        assert self._session is not None
        attempt = item.attempts + 1
        body = body_bytes(item.payload)
        now = self._clock.now()
        secret = sink.secret.get_secret_value() if sink.secret else None
        sent_headers = headers(item.payload, body, int(now.timestamp()), attempt, secret)
        context = {
            "sink": sink.name,
            "event_id": item.event_id,
            "event_type": item.kind,
            "outage_id": item.outage_id,
            "endpoint_id": item.endpoint_id,
            "endpoint_name": item.endpoint_name,
            "attempt": attempt,
        }
        error: str | None = None
        try:
            async with self._session.post(
                sink.url,
                data=body,
                headers=sent_headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=sink.timeout),
            ) as response:
                if not 200 <= response.status < 300:
                    error = f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        finished = self._clock.now()
        if error is None:
            await self._outbox.delivered(sink.name, item.seq, attempt, finished)
            self.sent += 1
            log.info("notification_delivered", **context)
            return True
        await self._record_failure(sink, item, attempt, error, finished, context)
        return False

    async def _record_failure(
        self,
        sink: WebhookSettings,
        item: Pending,
        attempt: int,
        error: str,
        now: datetime,
        context: dict[str, object],
    ) -> None:
        settings = self._settings
        delay = backoff(attempt, settings.retry_initial, settings.retry_max)
        age = (now - item.created_at).total_seconds()
        if age + delay > settings.give_up_after:
            await self._outbox.failed(sink.name, item.seq, attempt, error, None, now)
            log.error("notification_abandoned", error=error, age_s=round(age, 1), **context)
            return
        retry_at = now + timedelta(seconds=delay)
        await self._outbox.failed(sink.name, item.seq, attempt, error, retry_at, now)
        log.warning("notification_failed", error=error, retry_in_s=delay, **context)

    async def _reminders(self) -> None:
        interval = self._settings.reminder_check_interval
        while not self._stopping.is_set():
            for sink in self._settings.webhook:
                if sink.reminder_interval is None:
                    continue
                try:
                    await self._outbox.remind(sink, self._clock.now(), self._in_maintenance)
                except Exception as exc:
                    log.warning("notification_reminders_failed", sink=sink.name, error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), interval)
