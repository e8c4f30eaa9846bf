"""Status history: binary COPY into daily partitions, time-ordered reads."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import structlog

from availmon.model import Reason, Status, StatusRow
from availmon.store.pg import storage_errors

log = structlog.get_logger("availmon.store")

PARTITION_LOCK_KEY = 0x61766D6E_70617274  # "avmnpart": one partition creator at a time
STATUS_COLUMNS = (
    "endpoint_id", "checked_at", "status", "reason",
    "response_time_ms", "error", "attempts", "details",
)  # fmt: skip
_STATUS_SELECT = ", ".join(STATUS_COLUMNS)
_STATUS_SELECT_MAINTENANCE_DETAILS = _STATUS_SELECT.replace(
    "details", "CASE WHEN status = 'MAINTENANCE' THEN details ELSE '{}'::jsonb END AS details"
)
_PARTITION_NAME = re.compile(r"^statuses_(\d{8})$")
_INSERT_STATUS_IGNORING_DUPLICATES = (
    f"INSERT INTO statuses ({_STATUS_SELECT}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
    "ON CONFLICT (endpoint_id, checked_at) DO NOTHING"
)


def partition_name(day: date) -> str:
    return f"statuses_{day:%Y%m%d}"


def _utc_day(moment: datetime) -> date:
    if moment.tzinfo is None:  # asyncpg stores naive datetimes as UTC; partition the same way
        return moment.date()
    return moment.astimezone(UTC).date()


def _real(value: float | None) -> float | None:
    # float4 read back as a double shows noise (123.4 -> 123.40000152587891); 7 significant
    # digits is what a real holds, so print-and-parse restores the value that was written.
    return None if value is None else float(f"{value:.7g}")


def _status(row: Any) -> StatusRow:
    values = dict(row)  # the selected columns are exactly StatusRow's fields
    values.update(
        status=Status(row["status"]),
        reason=Reason(row["reason"]),
        response_time_ms=_real(row["response_time_ms"]),
    )
    return StatusRow(**values)


class StatusHistory:
    """The statuses half of the repository (mixed into Repository)."""

    _pool: Any

    @storage_errors
    async def write_statuses(self, rows: Sequence[StatusRow]) -> None:
        """Write rows with binary COPY; creates missing day partitions and retries once.

        A batch containing rows that are already stored (same endpoint and checked_at) is
        rewritten with INSERT ... ON CONFLICT DO NOTHING, so writing a batch twice is harmless.
        """
        if not rows:
            return
        records = [
            (
                r.endpoint_id, r.checked_at, str(r.status), str(r.reason),
                r.response_time_ms, r.error, r.attempts, r.details,
            )
            for r in rows
        ]  # fmt: skip
        partitions_created = idempotent = False
        async with self._pool.acquire() as conn:
            while True:
                try:
                    if idempotent:
                        await conn.executemany(_INSERT_STATUS_IGNORING_DUPLICATES, records)
                    else:
                        await conn.copy_records_to_table(
                            "statuses", records=records, columns=STATUS_COLUMNS
                        )
                    return
                except asyncpg.CheckViolationError as exc:
                    # "no partition of relation ... found for row" names no constraint; a real
                    # CHECK does. The message itself may be translated, so it is not used.
                    if partitions_created or exc.constraint_name is not None:
                        raise
                    await self._create_partitions(conn, {_utc_day(r.checked_at) for r in rows})
                    partitions_created = True
                except asyncpg.UniqueViolationError:
                    if idempotent:
                        raise
                    idempotent = True

    @storage_errors
    async def ensure_partitions(self, start: date, days_ahead: int) -> list[str]:
        """Create the daily partitions for `start` .. `start + days_ahead`; return new names."""
        days = {start + timedelta(days=i) for i in range(days_ahead + 1)}
        async with self._pool.acquire() as conn:
            return await self._create_partitions(conn, days)

    @storage_errors
    async def drop_partitions_before(self, cutoff: date) -> list[str]:
        """Drop whole days of history older than `cutoff`; return the dropped partitions."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", PARTITION_LOCK_KEY)
            names = await conn.fetch(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'statuses'::regclass ORDER BY c.relname"
            )
            dropped = []
            for (name,) in names:
                match = _PARTITION_NAME.match(name)
                if match and datetime.strptime(match[1], "%Y%m%d").date() < cutoff:
                    await conn.execute(f"DROP TABLE {name}")
                    dropped.append(name)
        if dropped:
            log.info("partitions_dropped", partitions=dropped)
        return dropped

    async def ensure_partitions_for_today(
        self, days_ahead: int = 3, today: date | None = None
    ) -> list[str]:
        """Partitions from yesterday (late rows near midnight) to today + days_ahead (UTC)."""
        today = today or datetime.now(UTC).date()
        return await self.ensure_partitions(today - timedelta(days=1), days_ahead + 1)

    async def _create_partitions(self, conn: Any, days: set[date]) -> list[str]:
        created = []
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", PARTITION_LOCK_KEY)
            for day in sorted(days):
                name = partition_name(day)
                if await conn.fetchval("SELECT to_regclass($1)", name) is not None:
                    continue
                await conn.execute(
                    f"CREATE TABLE {name} PARTITION OF statuses FOR VALUES "
                    f"FROM ('{day.isoformat()} 00:00:00+00') "
                    f"TO ('{(day + timedelta(days=1)).isoformat()} 00:00:00+00')"
                )
                created.append(name)
        if created:
            log.info("partitions_created", partitions=created)
        return created

    @storage_errors
    async def list_statuses(
        self,
        endpoint_id: int,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        before: datetime | None = None,
    ) -> list[StatusRow]:
        """Newest first; since <= checked_at <= until; `before` (exclusive) is the page cursor:
        pass the checked_at of the last row of a page to get the next one."""
        args: list[Any] = [endpoint_id]
        where = ["endpoint_id = $1"]
        for value, condition in ((since, ">="), (until, "<="), (before, "<")):
            if value is not None:
                args.append(value)
                where.append(f"checked_at {condition} ${len(args)}")
        args.append(limit)
        rows = await self._pool.fetch(
            f"SELECT {_STATUS_SELECT} FROM statuses WHERE {' AND '.join(where)} "
            f"ORDER BY checked_at DESC LIMIT ${len(args)}",
            *args,
        )
        return [_status(row) for row in rows]

    @storage_errors
    async def recent_statuses(
        self, endpoint_ids: Sequence[int], per_endpoint: int, *, all_details: bool = True
    ) -> dict[int, list[StatusRow]]:
        """The last `per_endpoint` rows of each endpoint, newest first (every id is a key).

        all_details=False: `details` only of MAINTENANCE rows (they hold the raw status), {}
        for the rest; decoding every row's jsonb was 0.6 s of a 10,000-endpoint start-up."""
        select = _STATUS_SELECT if all_details else _STATUS_SELECT_MAINTENANCE_DETAILS
        rows = await self._pool.fetch(
            f"SELECT s.* FROM unnest($1::bigint[]) AS e(id) CROSS JOIN LATERAL ("
            f"  SELECT {select} FROM statuses WHERE endpoint_id = e.id"
            "   ORDER BY checked_at DESC LIMIT $2"
            ") AS s ORDER BY s.endpoint_id, s.checked_at DESC",
            list(dict.fromkeys(endpoint_ids)),
            per_endpoint,
        )
        result: dict[int, list[StatusRow]] = {endpoint_id: [] for endpoint_id in endpoint_ids}
        for row in rows:
            result[row["endpoint_id"]].append(_status(row))
        return result

    @storage_errors
    async def latest_statuses(self) -> dict[int, StatusRow]:
        """The newest row of every live endpoint that has one."""
        rows = await self._pool.fetch(
            "SELECT s.* FROM endpoints e CROSS JOIN LATERAL ("
            f"  SELECT {_STATUS_SELECT} FROM statuses WHERE endpoint_id = e.id"
            "   ORDER BY checked_at DESC LIMIT 1"
            ") AS s WHERE e.deleted_at IS NULL"
        )
        return {row["endpoint_id"]: _status(row) for row in rows}

    @storage_errors
    async def record_status_change(self, endpoint_id: int, status: Status, since: datetime) -> None:
        """Remember when the endpoint's current status began (called on changes only)."""
        await self._pool.execute(
            "INSERT INTO endpoint_state (endpoint_id, status, since) VALUES ($1, $2, $3) "
            "ON CONFLICT (endpoint_id) DO UPDATE SET status = EXCLUDED.status, "
            "since = EXCLUDED.since, updated_at = now()",
            endpoint_id,
            status.value,
            since,
        )

    @storage_errors
    async def status_since(self) -> dict[int, tuple[Status, datetime]]:
        """Each endpoint's last recorded status change: (status, since)."""
        rows = await self._pool.fetch("SELECT endpoint_id, status, since FROM endpoint_state")
        return {row["endpoint_id"]: (Status(row["status"]), row["since"]) for row in rows}
