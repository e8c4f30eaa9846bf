"""The status page's history per endpoint: 90 daily availability figures and a 24-hour
response-time series, for many endpoints in three queries, kept for `ttl` seconds.

A day's figure follows the uptime definition (availmon/uptime.py) at day resolution: down time
is DOWN time on that day, capped at the time the endpoint's confirmed outages cover that day, so
a day without a confirmed outage is 100 % whatever blips it had; maintenance and unobserved time
are left out of the denominator; a day with nothing observed has no figure. Days are UTC days.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from availmon.model import Outage, Severity, StatusRow
from availmon.uptime import Totals, us

if TYPE_CHECKING:
    from availmon.store import Repository
    from availmon.store.rollups import UptimeRollups

DAYS = 90
DAY = timedelta(days=1)
SERIES_SPAN = timedelta(hours=24)
SERIES_BUCKET = timedelta(minutes=30)
SERIES_POINTS = SERIES_SPAN // SERIES_BUCKET
_RANK = {Severity.LOW: 0, Severity.MEDIUM: 1, Severity.HIGH: 2, Severity.CRITICAL: 3}


@dataclass(frozen=True, slots=True)
class DayFigure:
    day: date
    availability: float | None  # None: nothing observed that day
    judged_s: float  # observed time outside maintenance: the denominator
    downtime_s: float
    maintenance_s: float
    outages: int  # outages open at some time that day
    worst: Severity | None  # the highest severity among them


@dataclass(frozen=True, slots=True)
class History:
    days: tuple[DayFigure, ...]  # DAYS figures, oldest first; the last is today (so far)
    response_ms: tuple[float | None, ...]  # SERIES_POINTS means, oldest first; None: no answer
    series_start: datetime

    @property
    def availability(self) -> float | None:
        """Over all the days shown, weighted by judged time (None: nothing observed)."""
        judged = sum(d.judged_s for d in self.days)
        return None if judged <= 0 else 1 - sum(d.downtime_s for d in self.days) / judged


def day_range(now: datetime, days: int = DAYS) -> list[date]:
    today = now.astimezone(UTC).date()
    return [today - timedelta(days=days - 1 - i) for i in range(days)]


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def day_figures(
    days: Sequence[date],
    totals: Mapping[date, Totals],
    outages: Sequence[Outage],
    now: datetime,
    cap: timedelta = timedelta(0),
) -> tuple[DayFigure, ...]:
    """One figure per day in `days` from its rollup totals and the outages of the endpoint."""
    figures = []
    for day in days:
        lo_day = day_start(day)
        hi_day = lo_day + DAY
        covered_us, count, worst = 0, 0, None
        for outage in outages:
            # an open outage runs on past `now` by the coverage the rollups already credit
            # to the latest check (`cap`), else an endpoint DOWN all along read 14-28 %
            # available early in its outage
            end = outage.ended_at or now + cap
            lo, hi = max(outage.started_at, lo_day), min(end, hi_day)
            if lo < hi:
                covered_us += us(hi - lo)
                count += 1
                if worst is None or _RANK[outage.severity] > _RANK[worst]:
                    worst = outage.severity
        t = totals.get(day, Totals())
        downtime_us = min(t.down_us, covered_us)
        judged = t.judged_us
        figures.append(
            DayFigure(
                day,
                None if judged <= 0 else 1 - downtime_us / judged,
                judged / 1e6,
                downtime_us / 1e6,
                t.maintenance_us / 1e6,
                count,
                worst,
            )
        )
    return tuple(figures)


def series_start(now: datetime) -> datetime:
    """Start of the 24-hour series: buckets stay on :00 and :30 so cached series line up."""
    width = us(SERIES_BUCKET)
    end_us = -(-us(now - datetime(1970, 1, 1, tzinfo=UTC)) // width) * width
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=end_us) - SERIES_SPAN


class ChartService:
    """History for the endpoints a page shows. Each endpoint's is reused for `ttl` seconds;
    completed days change only when late rows arrive (a spool replay), so they are kept for
    `past_ttl` seconds and each refresh reads today's rollups alone."""

    def __init__(
        self,
        repo: Repository,
        ttl: float = 60.0,
        past_ttl: float = 3600.0,
        monotonic: Callable[[], float] = time.monotonic,
        cap_of: Callable[[int], timedelta] = lambda endpoint_id: timedelta(0),
        rollups: UptimeRollups | None = None,
    ) -> None:
        self._repo = repo
        self._rollups = rollups  # its folded, unwritten part is added to the stored days
        self._cap_of = cap_of  # how far past its time a check's coverage runs (rollups)
        self._ttl = ttl
        self._past_ttl = past_ttl
        self._monotonic = monotonic
        self._recent: dict[int, tuple[float, History]] = {}
        self._past: dict[int, tuple[float, tuple[DayFigure, ...]]] = {}

    async def history(self, endpoint_ids: Sequence[int], now: datetime) -> dict[int, History]:
        days = day_range(now)
        clock = self._monotonic()
        found: dict[int, History] = {}
        for endpoint_id in endpoint_ids:
            cached = self._recent.get(endpoint_id)
            if cached and clock - cached[0] < self._ttl and cached[1].days[-1].day == days[-1]:
                found[endpoint_id] = cached[1]
        missing = [i for i in dict.fromkeys(endpoint_ids) if i not in found]
        if not missing:
            return found
        self._forget_old(clock, len(endpoint_ids))
        fresh = await self._load(missing, days, now, clock)
        for endpoint_id, item in fresh.items():
            self._recent[endpoint_id] = (clock, item)
        return found | fresh

    async def latest(self, endpoint_ids: Sequence[int]) -> dict[int, StatusRow]:
        """The newest stored check of each endpoint that has one."""
        if not endpoint_ids:
            return {}
        recent = await self._repo.recent_statuses(list(endpoint_ids), 1)
        return {i: rows[0] for i, rows in recent.items() if rows}

    def _forget_old(self, clock: float, asked: int) -> None:
        if len(self._recent) > 4 * asked + 1000:
            self._recent = {k: v for k, v in self._recent.items() if clock - v[0] < self._ttl}
            self._past = {k: v for k, v in self._past.items() if clock - v[0] < self._past_ttl}

    def _past_of(self, endpoint_id: int, first: date, clock: float) -> tuple[DayFigure, ...] | None:
        cached = self._past.get(endpoint_id)
        if cached and clock - cached[0] < self._past_ttl and cached[1][0].day == first:
            return cached[1]
        return None

    async def _load(
        self, ids: list[int], days: list[date], now: datetime, clock: float
    ) -> dict[int, History]:
        past = {i: self._past_of(i, days[0], clock) for i in ids}
        unknown = [i for i, figures in past.items() if figures is None]
        start = series_start(now)
        # concurrent: each statement runs on a connection (and a PostgreSQL core) of its own
        today, buckets, earlier = await asyncio.gather(
            self._days(ids, days[-1:], now),
            self._repo.response_buckets(ids, start, now, SERIES_BUCKET),
            self._days(unknown, days[:-1], now) if unknown else _nothing(),
        )
        for endpoint_id, figures in earlier.items():
            self._past[endpoint_id] = (clock, figures)
            past[endpoint_id] = figures
        return {
            i: History(
                (past[i] or ()) + today[i],
                tuple(buckets[i].get(b) for b in range(SERIES_POINTS)),
                start,
            )
            for i in ids
        }

    async def _days(
        self, ids: list[int], days: list[date], now: datetime
    ) -> dict[int, tuple[DayFigure, ...]]:
        first, end = day_start(days[0]), day_start(days[-1]) + DAY
        totals, outages = await asyncio.gather(
            self._daily_totals(ids, first, end),
            self._repo.outages_overlapping(ids, first, min(end, now)),
        )
        outages_of: dict[int, list[Outage]] = {i: [] for i in ids}
        for outage in outages:
            outages_of[outage.endpoint_id].append(outage)
        return {i: day_figures(days, totals[i], outages_of[i], now, self._cap_of(i)) for i in ids}

    async def _daily_totals(
        self, ids: list[int], first: datetime, end: datetime
    ) -> dict[int, dict[date, Totals]]:
        rollups = self._rollups
        if rollups is None:
            return await self._repo.daily_totals(ids, first, end)

        def add_unwritten(stored: dict[int, dict[date, Totals]]) -> dict[int, dict[date, Totals]]:
            for endpoint_id, days in rollups.unwritten_days(ids, first, end).items():
                for day, totals in days.items():
                    stored[endpoint_id][day] = stored[endpoint_id].get(day, Totals()) + totals
            return stored

        return await rollups.consistent(
            lambda: self._repo.daily_totals(ids, first, end), add_unwritten
        )


async def _nothing() -> dict[int, tuple[DayFigure, ...]]:
    return {}
