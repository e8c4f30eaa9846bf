"""Outages: open, raise, acknowledge, resolve, close; each change and its notification event
are committed in one transaction (mixed into Repository).

When `events` is set (an OutageEvents, see availmon.notify.outbox), every method that changes
an outage in a way a receiver cares about calls `events.record(conn, kind, outage, extra)` on
the same connection inside the same transaction, then `events.committed()` after the commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import asyncpg

from availmon.errors import Conflict, NotFound, StorageError
from availmon.model import Outage, Severity
from availmon.store.pg import storage_errors

_RANK = {Severity.LOW: 0, Severity.MEDIUM: 1, Severity.HIGH: 2, Severity.CRITICAL: 3}
OUTAGE_COLUMNS = (
    "id, endpoint_id, severity, started_at, opened_at, ended_at, reason, error, "
    "acknowledged_at, acknowledged_by, resolved_by, notes, resolution, reopen_hold"
)


@dataclass(slots=True)
class OutageRecord(Outage):
    """An outage with its management fields (what the API and the notifications show)."""

    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    resolved_by: str | None = None
    notes: str | None = None
    resolution: str | None = None
    reopen_hold: bool = False

    def to_json(self) -> dict[str, Any]:
        ended = self.ended_at
        return {
            **Outage.to_json(self),
            "duration_s": (ended - self.started_at).total_seconds() if ended else None,
            "acknowledged_at": _iso(self.acknowledged_at),
            "acknowledged_by": self.acknowledged_by,
            "resolved_by": self.resolved_by,
            "resolution": self.resolution,
            "notes": self.notes,
            "reopen_hold": self.reopen_hold,
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


class OutageEvents(Protocol):
    async def record(
        self, conn: Any, kind: str, outage: OutageRecord, extra: dict[str, Any]
    ) -> str | None: ...

    def committed(self) -> None: ...


def outage_from_row(row: Any) -> OutageRecord:
    return OutageRecord(**{**dict(row), "severity": Severity(row["severity"])})


class OutageHistory:
    """The outages half of the repository."""

    _pool: Any
    events: OutageEvents | None = None

    async def _emit(
        self, conn: Any, kind: str, outage: OutageRecord, extra: dict[str, Any] | None = None
    ) -> None:
        if self.events is not None:
            await self.events.record(conn, kind, outage, extra or {})

    def _committed(self) -> None:
        if self.events is not None:
            self.events.committed()

    @storage_errors
    async def open_outage(
        self,
        endpoint_id: int,
        severity: Severity,
        started_at: datetime,
        opened_at: datetime,
        reason: str | None = None,
        error: str | None = None,
    ) -> OutageRecord:
        """Open an outage, or return the one already open for the endpoint."""
        async with self._pool.acquire() as conn:
            # The open outage found by the conflict may close before the SELECT sees it;
            # then the INSERT succeeds on the next round.
            for _ in range(5):
                created = await self._insert_outage(
                    conn, endpoint_id, severity, started_at, opened_at, reason, error
                )
                if created is not None:
                    self._committed()
                    return created
                row = await conn.fetchrow(
                    f"SELECT {OUTAGE_COLUMNS} FROM outages "
                    "WHERE endpoint_id = $1 AND ended_at IS NULL",
                    endpoint_id,
                )
                if row is not None:
                    return outage_from_row(row)
        raise StorageError(f"could not open an outage for endpoint {endpoint_id}")

    async def _insert_outage(
        self,
        conn: Any,
        endpoint_id: int,
        severity: Severity,
        started_at: datetime,
        opened_at: datetime,
        reason: str | None,
        error: str | None,
    ) -> OutageRecord | None:
        async with conn.transaction():
            try:
                row = await conn.fetchrow(
                    "INSERT INTO outages (endpoint_id, severity, started_at, opened_at, "
                    "reason, error) VALUES ($1, $2, $3, $4, $5, $6) "
                    "ON CONFLICT (endpoint_id) WHERE ended_at IS NULL DO NOTHING "
                    f"RETURNING {OUTAGE_COLUMNS}",
                    endpoint_id, Severity(severity).value, started_at, opened_at, reason, error,
                )  # fmt: skip
            except asyncpg.ForeignKeyViolationError:
                raise NotFound(f"endpoint {endpoint_id} does not exist") from None
            if row is None:
                return None
            # a hold not cleared (a crash before HoldReleased was stored) ends here
            await conn.execute(
                "UPDATE outages SET reopen_hold = false WHERE endpoint_id = $1 AND reopen_hold",
                endpoint_id,
            )
            outage = outage_from_row(row)
            await self._emit(conn, "outage.opened", outage)
            return outage

    @storage_errors
    async def close_outage(
        self, outage_id: int, ended_at: datetime, *, resolution: str = "recovered"
    ) -> None:
        """End an open outage; closing one that is already closed changes nothing."""
        async with self._pool.acquire() as conn:
            async with conn.transaction():
                row = await conn.fetchrow(
                    "UPDATE outages SET ended_at = $2, resolution = $3, updated_at = now() "
                    f"WHERE id = $1 AND ended_at IS NULL RETURNING {OUTAGE_COLUMNS}",
                    outage_id,
                    ended_at,
                    resolution,
                )
                if row is not None:
                    await self._emit(conn, "outage.resolved", outage_from_row(row))
            if row is None:
                await self.get_outage(outage_id)  # NotFound when it does not exist at all
                return
        self._committed()

    @storage_errors
    async def update_outage_severity(self, outage_id: int, severity: Severity) -> None:
        """Set the severity; a raise is reported as outage.severity_raised."""
        async with self._pool.acquire() as conn, conn.transaction():
            previous = await conn.fetchval(
                "SELECT severity FROM outages WHERE id = $1 FOR UPDATE", outage_id
            )
            if previous is None:
                raise NotFound(f"outage {outage_id} does not exist")
            row = await conn.fetchrow(
                "UPDATE outages SET severity = $2, updated_at = now() WHERE id = $1 "
                f"RETURNING {OUTAGE_COLUMNS}",
                outage_id,
                Severity(severity).value,
            )
            raised = _RANK[Severity(severity)] > _RANK[Severity(previous)]
            if raised:
                extra = {"previous_severity": previous}
                await self._emit(conn, "outage.severity_raised", outage_from_row(row), extra)
        if raised:
            self._committed()

    @storage_errors
    async def acknowledge_outage(self, outage_id: int, by: str, at: datetime) -> OutageRecord:
        """Record who acknowledged an open outage; Conflict when it ended or was already."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE outages SET acknowledged_at = $2, acknowledged_by = $3, "
                "updated_at = now() WHERE id = $1 AND ended_at IS NULL "
                f"AND acknowledged_at IS NULL RETURNING {OUTAGE_COLUMNS}",
                outage_id,
                at,
                by,
            )
            if row is None:
                current = await self.get_outage(outage_id)
                if current.ended_at is not None:
                    raise Conflict(f"outage {outage_id} already ended; nothing to acknowledge")
                raise Conflict(
                    f"outage {outage_id} was already acknowledged by "
                    f"{current.acknowledged_by!r} at {_iso(current.acknowledged_at)}"
                )
            outage = outage_from_row(row)
            await self._emit(conn, "outage.acknowledged", outage)
        self._committed()
        return outage

    @storage_errors
    async def resolve_outage(
        self,
        outage_id: int,
        ended_at: datetime,
        by: str,
        notes: str | None = None,
        *,
        hold: bool = True,
    ) -> OutageRecord:
        """An operator ends an open outage now; `hold`: no reopen before a recovery."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE outages SET ended_at = $2, resolved_by = $3, "
                "notes = coalesce($4, notes), resolution = 'manual', reopen_hold = $5, "
                f"updated_at = now() WHERE id = $1 AND ended_at IS NULL "
                f"RETURNING {OUTAGE_COLUMNS}",
                outage_id, ended_at, by, notes, hold,
            )  # fmt: skip
            if row is None:
                current = await self.get_outage(outage_id)
                raise Conflict(f"outage {outage_id} already ended at {_iso(current.ended_at)}")
            outage = outage_from_row(row)
            await self._emit(conn, "outage.resolved", outage)
        self._committed()
        return outage

    @storage_errors
    async def set_outage_notes(self, outage_id: int, notes: str | None) -> OutageRecord:
        row = await self._pool.fetchrow(
            "UPDATE outages SET notes = $2, updated_at = now() WHERE id = $1 "
            f"RETURNING {OUTAGE_COLUMNS}",
            outage_id,
            notes,
        )
        if row is None:
            raise NotFound(f"outage {outage_id} does not exist")
        return outage_from_row(row)

    @storage_errors
    async def release_reopen_hold(self, endpoint_id: int) -> None:
        await self._pool.execute(
            "UPDATE outages SET reopen_hold = false, updated_at = now() "
            "WHERE endpoint_id = $1 AND reopen_hold",
            endpoint_id,
        )

    @storage_errors
    async def reopen_holds(self) -> set[int]:
        """Endpoints whose last outage was resolved by hand and that have not recovered since."""
        rows = await self._pool.fetch("SELECT DISTINCT endpoint_id FROM outages WHERE reopen_hold")
        return {row["endpoint_id"] for row in rows}

    @storage_errors
    async def get_outage(self, outage_id: int) -> OutageRecord:
        row = await self._pool.fetchrow(
            f"SELECT {OUTAGE_COLUMNS} FROM outages WHERE id = $1", outage_id
        )
        if row is None:
            raise NotFound(f"outage {outage_id} does not exist")
        return outage_from_row(row)

    @storage_errors
    async def list_outages(
        self,
        active: bool | None = None,
        endpoint_id: int | None = None,
        severity: Severity | str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[OutageRecord]:
        """Newest first. `active` True: open only; False: ended only; None: both."""
        args: list[Any] = []
        where = ["true"]
        if active is not None:
            where.append("ended_at IS NULL" if active else "ended_at IS NOT NULL")
        if endpoint_id is not None:
            args.append(endpoint_id)
            where.append(f"endpoint_id = ${len(args)}")
        if severity is not None:
            args.append(str(severity))
            where.append(f"severity = ${len(args)}")
        args += [limit, offset]
        rows = await self._pool.fetch(
            f"SELECT {OUTAGE_COLUMNS} FROM outages WHERE {' AND '.join(where)} "
            f"ORDER BY started_at DESC, id DESC LIMIT ${len(args) - 1} OFFSET ${len(args)}",
            *args,
        )
        return [outage_from_row(row) for row in rows]

    @storage_errors
    async def open_outages(self) -> list[OutageRecord]:
        rows = await self._pool.fetch(
            f"SELECT {OUTAGE_COLUMNS} FROM outages WHERE ended_at IS NULL ORDER BY started_at, id"
        )
        return [outage_from_row(row) for row in rows]

    @storage_errors
    async def outages_between(
        self, endpoint_id: int, start: datetime, end: datetime
    ) -> list[OutageRecord]:
        """Outages of the endpoint that overlap [start, end), oldest first."""
        rows = await self._pool.fetch(
            f"SELECT {OUTAGE_COLUMNS} FROM outages WHERE endpoint_id = $1 "
            "AND started_at < $3 AND (ended_at IS NULL OR ended_at > $2) ORDER BY started_at",
            endpoint_id,
            start,
            end,
        )
        return [outage_from_row(row) for row in rows]
