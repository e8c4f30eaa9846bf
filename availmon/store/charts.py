"""Queries behind the status page's charts, each one statement for many endpoints at once
(mixed into Repository): daily totals from the hourly rollups, outages overlapping a range,
and response times bucketed in SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

from availmon.store.outages import OUTAGE_COLUMNS, OutageRecord, outage_from_row
from availmon.store.pg import storage_errors
from availmon.uptime import CATEGORIES, Totals

_DAILY_TOTALS = (
    "SELECT endpoint_id, (hour AT TIME ZONE 'UTC')::date AS day, "
    + ", ".join(f"sum({c}_us)::bigint AS {c}_us" for c in CATEGORIES)
    + ", sum(checks)::bigint AS checks FROM uptime_hourly "
    "WHERE endpoint_id = ANY($1::bigint[]) AND hour >= $2 AND hour < $3 GROUP BY 1, 2"
)
# bucket i covers [start + i * width, start + (i + 1) * width)
_RESPONSE_BUCKETS = (
    "SELECT endpoint_id, floor(extract(epoch FROM checked_at - $2) / $4)::int AS bucket, "
    "avg(response_time_ms)::float8 AS avg_ms FROM statuses "
    "WHERE endpoint_id = ANY($1::bigint[]) AND checked_at >= $2 AND checked_at < $3 "
    "AND response_time_ms IS NOT NULL GROUP BY 1, 2"
)


class ChartQueries:
    """The chart half of the repository."""

    _pool: Any

    @storage_errors
    async def daily_totals(
        self, endpoint_ids: Sequence[int], start: datetime, end: datetime
    ) -> dict[int, dict[date, Totals]]:
        """Per endpoint, per UTC day: the sum of its hourly rollups in [start, end)."""
        rows = await self._pool.fetch(_DAILY_TOTALS, list(endpoint_ids), start, end)
        result: dict[int, dict[date, Totals]] = {i: {} for i in endpoint_ids}
        for row in rows:
            values = dict(row)
            endpoint_id, day = values.pop("endpoint_id"), values.pop("day")
            result[endpoint_id][day] = Totals(**values)
        return result

    @storage_errors
    async def outages_overlapping(
        self, endpoint_ids: Sequence[int], start: datetime, end: datetime
    ) -> list[OutageRecord]:
        """Outages of these endpoints that were open at some time in [start, end)."""
        rows = await self._pool.fetch(
            f"SELECT {OUTAGE_COLUMNS} FROM outages WHERE endpoint_id = ANY($1::bigint[]) "
            "AND started_at < $3 AND (ended_at IS NULL OR ended_at > $2) ORDER BY started_at",
            list(endpoint_ids),
            start,
            end,
        )
        return [outage_from_row(row) for row in rows]

    @storage_errors
    async def response_buckets(
        self, endpoint_ids: Sequence[int], start: datetime, end: datetime, width: timedelta
    ) -> dict[int, dict[int, float]]:
        """Per endpoint: bucket index -> mean response time (ms) of the checks in it; buckets
        without an answer are absent."""
        rows = await self._pool.fetch(
            _RESPONSE_BUCKETS, list(endpoint_ids), start, end, width.total_seconds()
        )
        result: dict[int, dict[int, float]] = {i: {} for i in endpoint_ids}
        for row in rows:
            result[row["endpoint_id"]][row["bucket"]] = row["avg_ms"]
        return result
