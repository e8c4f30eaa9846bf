"""The durable outbox: events are inserted on the outage change's own connection, inside its
transaction (Repository calls `record`); the deliverer reads and marks them here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from availmon.clock import Clock, SystemClock
from availmon.notify.config import WebhookSettings
from availmon.notify.events import new_event, route
from availmon.store.outages import OUTAGE_COLUMNS, OutageRecord, outage_from_row
from availmon.store.pg import storage_errors


@dataclass(frozen=True, slots=True)
class Pending:
    seq: int
    event_id: str
    kind: str
    payload: dict[str, Any]
    created_at: datetime
    attempts: int
    next_attempt_at: datetime
    endpoint_id: int
    endpoint_name: str
    outage_id: int


_PENDING = (
    "SELECT d.event_seq, d.attempts, d.next_attempt_at, e.id, e.kind, e.payload, e.created_at, "
    "e.endpoint_id, e.endpoint_name, e.outage_id FROM notification_deliveries d "
    "JOIN notification_events e ON e.seq = d.event_seq WHERE d.sink = $1 "
    "AND d.delivered_at IS NULL AND d.abandoned_at IS NULL ORDER BY d.event_seq LIMIT $2"
)


def _endpoint_json(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "url": row["url"],
        "protocol": row["protocol"],
        "severity": row["severity"],
        "tags": list(row["tags"]),
    }


class Outbox:
    """Implements store.outages.OutageEvents; `on_commit` wakes the deliverer."""

    def __init__(
        self, pool: Any, sinks: Sequence[WebhookSettings], clock: Clock | None = None
    ) -> None:
        self._pool = pool
        self.sinks = list(sinks)
        self._clock = clock or SystemClock()
        self.on_commit: Callable[[], None] | None = None

    async def record(
        self,
        conn: Any,
        kind: str,
        outage: OutageRecord,
        extra: dict[str, Any],
        only_sink: str | None = None,
    ) -> str | None:
        """Insert the event and one delivery per sink whose filters it passes; return its id
        (None when no sink wants it: nothing is stored then)."""
        endpoint = await conn.fetchrow(
            "SELECT id, name, url, protocol, severity, tags FROM endpoints WHERE id = $1",
            outage.endpoint_id,
        )
        sinks = route(self.sinks, kind, outage.severity.value, endpoint["tags"])
        if only_sink is not None:
            sinks = [s for s in sinks if s == only_sink]
        if not sinks:
            return None
        now = self._clock.now()
        payload = new_event(kind, now, outage.to_json(), _endpoint_json(endpoint), extra)
        seq = await conn.fetchval(
            "INSERT INTO notification_events (id, kind, outage_id, endpoint_id, endpoint_name, "
            "payload, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING seq",
            payload["id"], kind, outage.id, outage.endpoint_id, endpoint["name"], payload, now,
        )  # fmt: skip
        await conn.executemany(
            "INSERT INTO notification_deliveries (sink, event_seq, next_attempt_at) "
            "VALUES ($1, $2, $3)",
            [(sink, seq, now) for sink in sinks],
        )
        return str(payload["id"])

    def committed(self) -> None:
        if self.on_commit is not None:
            self.on_commit()

    @storage_errors
    async def pending(self, sink: str, limit: int = 20) -> list[Pending]:
        """The sink's undelivered events in delivery order."""
        rows = await self._pool.fetch(_PENDING, sink, limit)
        return [
            Pending(
                seq=row["event_seq"],
                event_id=str(row["id"]),
                kind=row["kind"],
                payload=row["payload"],
                created_at=row["created_at"],
                attempts=row["attempts"],
                next_attempt_at=row["next_attempt_at"],
                endpoint_id=row["endpoint_id"],
                endpoint_name=row["endpoint_name"],
                outage_id=row["outage_id"],
            )
            for row in rows
        ]

    @storage_errors
    async def delivered(self, sink: str, seq: int, attempts: int, at: datetime) -> None:
        await self._pool.execute(
            "UPDATE notification_deliveries SET delivered_at = $3, attempts = $4, "
            "last_error = NULL WHERE sink = $1 AND event_seq = $2",
            sink, seq, at, attempts,
        )  # fmt: skip

    @storage_errors
    async def failed(
        self,
        sink: str,
        seq: int,
        attempts: int,
        error: str,
        retry_at: datetime | None,
        at: datetime,
    ) -> None:
        """Record a failed attempt; `retry_at` None abandons the delivery."""
        await self._pool.execute(
            "UPDATE notification_deliveries SET attempts = $3, last_error = $4, "
            "next_attempt_at = coalesce($5, next_attempt_at), "
            "abandoned_at = CASE WHEN $5::timestamptz IS NULL THEN $6::timestamptz END "
            "WHERE sink = $1 AND event_seq = $2",
            sink, seq, attempts, error, retry_at, at,
        )  # fmt: skip

    @storage_errors
    async def remind(
        self, sink: WebhookSettings, now: datetime, skip: Callable[[int], bool]
    ) -> int:
        """Queue a reminder to `sink` for each open, unacknowledged outage whose last event to
        this sink is at least `reminder_interval` old; return how many were queued."""
        assert sink.reminder_interval is not None
        queued = 0
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT {', '.join('o.' + c for c in OUTAGE_COLUMNS.split(', '))}, "
                "max(e.created_at) AS last_sent FROM outages o "
                "JOIN notification_events e ON e.outage_id = o.id "
                "JOIN notification_deliveries d ON d.event_seq = e.seq AND d.sink = $1 "
                "WHERE o.ended_at IS NULL AND o.acknowledged_at IS NULL GROUP BY o.id",
                sink.name,
            )
            for row in rows:
                outage = outage_from_row({k: v for k, v in dict(row).items() if k != "last_sent"})
                age = (now - row["last_sent"]).total_seconds()
                if age < sink.reminder_interval or skip(outage.endpoint_id):
                    continue
                open_for = (now - outage.started_at).total_seconds()
                async with conn.transaction():
                    event = await self.record(
                        conn, "outage.reminder", outage, {"open_for_s": open_for}, sink.name
                    )
                queued += event is not None
        if queued:
            self.committed()
        return queued
