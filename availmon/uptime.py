"""Time-based uptime. Pure: rows and times in, microsecond totals out.

Coverage: a stored check covers the time from its `checked_at` until the endpoint's next
check, capped at `cap` (2 x check_interval); time beyond the cap is unobserved, which is also
how a stopped daemon shows up. The status of the check is the status of the time it covers.

Definitions (one endpoint, one window):
- observed time: covered by UP, DEGRADED, DOWN or MAINTENANCE checks. UNKNOWN checks (the
  check itself failed to judge) and uncovered time are unobserved.
- maintenance time: covered by MAINTENANCE checks; excluded from availability.
- down time: covered by DOWN checks *inside confirmed outages* ([started_at, ended_at) of an
  outage). DOWN checks of a blip that never reached failure_threshold ("pending" failures)
  are not down time; they are reported as unconfirmed_down. DEGRADED counts as up.
- availability = 1 - down / (observed - maintenance), null when nothing was observed.

Rollups: each row is credited its full capped coverage when it arrives, and the next row of
the endpoint takes back the part it overlaps, so hourly buckets are final as soon as the next
row arrives and never wait for it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from availmon.errors import FieldError, ValidationFailed
from availmon.model import Status

WINDOWS = {
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "90d": timedelta(days=90),
}
MAX_RANGE = timedelta(days=400)
HOUR = timedelta(hours=1)
ONE_US = timedelta(microseconds=1)
CATEGORIES = ("up", "degraded", "down", "maintenance", "unknown")
_CATEGORY = {
    Status.UP: "up",
    Status.DEGRADED: "degraded",
    Status.DOWN: "down",
    Status.MAINTENANCE: "maintenance",
    Status.UNKNOWN: "unknown",
}


def us(delta: timedelta) -> int:
    return delta // ONE_US


def floor_hour(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def ceil_hour(t: datetime) -> datetime:
    floor = floor_hour(t)
    return floor if floor == t else floor + HOUR


@dataclass(slots=True)
class Totals:
    up_us: int = 0
    degraded_us: int = 0
    down_us: int = 0
    maintenance_us: int = 0
    unknown_us: int = 0
    checks: int = 0

    def add(self, category: str, amount: int) -> None:
        name = f"{category}_us"
        setattr(self, name, getattr(self, name) + amount)

    def __iadd__(self, other: Totals) -> Totals:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    @property
    def judged_us(self) -> int:
        """Observed time outside maintenance: the availability denominator."""
        return self.up_us + self.degraded_us + self.down_us

    @property
    def observed_us(self) -> int:
        return self.judged_us + self.maintenance_us


def split_by_hour(start: datetime, end: datetime) -> Iterable[tuple[datetime, int]]:
    """(hour, microseconds) pieces of [start, end)."""
    cursor = start
    while cursor < end:
        hour = floor_hour(cursor)
        stop = min(end, hour + HOUR)
        yield hour, us(stop - cursor)
        cursor = stop


def coverage(
    rows_oldest_first: Sequence[tuple[datetime, Status]],
    cap: timedelta,
    start: datetime,
    end: datetime,
) -> Totals:
    """Totals over [start, end) from raw rows; pass every row from `start - cap` to `end`."""
    totals = Totals()
    for i, (at, status) in enumerate(rows_oldest_first):
        until = at + cap
        if i + 1 < len(rows_oldest_first):
            until = min(until, rows_oldest_first[i + 1][0])
        lo, hi = max(at, start), min(until, end)
        if lo < hi:
            totals.add(_CATEGORY[status], us(hi - lo))
        if start <= at < end:
            totals.checks += 1
    return totals


@dataclass(frozen=True, slots=True)
class Cursor:
    checked_at: datetime
    status: Status
    covered_until: datetime


@dataclass
class RollupDelta:
    """Bucket changes and new cursors for one batch of rows."""

    buckets: dict[tuple[int, datetime], Totals] = field(default_factory=dict)
    cursors: dict[int, Cursor] = field(default_factory=dict)
    skipped: int = 0

    def _bucket(self, endpoint_id: int, hour: datetime) -> Totals:
        key = (endpoint_id, hour)
        if key not in self.buckets:
            self.buckets[key] = Totals()
        return self.buckets[key]

    def credit(
        self, endpoint_id: int, status: Status, start: datetime, end: datetime, sign: int
    ) -> None:
        for hour, amount in split_by_hour(start, end):
            self._bucket(endpoint_id, hour).add(_CATEGORY[status], sign * amount)


def roll(
    rows: Iterable[Any],
    cursors: dict[int, Cursor],
    cap_of: Callable[[int], timedelta],
) -> RollupDelta:
    """Fold committed rows (anything with endpoint_id, checked_at, status) into bucket
    deltas. Rows at or before an endpoint's cursor are skipped, so a replay is harmless."""
    delta = RollupDelta()
    by_endpoint: dict[int, list[Any]] = defaultdict(list)
    for row in rows:
        by_endpoint[row.endpoint_id].append(row)
    for endpoint_id, items in by_endpoint.items():
        cursor = cursors.get(endpoint_id)
        cap = cap_of(endpoint_id)
        for row in sorted(items, key=lambda r: r.checked_at):
            at = row.checked_at
            if cursor is not None and at <= cursor.checked_at:
                delta.skipped += 1
                continue
            if cursor is not None and at < cursor.covered_until:
                delta.credit(endpoint_id, cursor.status, at, cursor.covered_until, -1)
            delta.credit(endpoint_id, row.status, at, at + cap, +1)
            delta._bucket(endpoint_id, floor_hour(at)).checks += 1
            cursor = Cursor(at, row.status, at + cap)
        if cursor is not None:
            delta.cursors[endpoint_id] = cursor
    return delta


@dataclass
class UptimeReport:
    endpoint_id: int
    start: datetime
    end: datetime
    totals: Totals
    downtime_us: int
    outage_count: int
    outages_by_severity: dict[str, int]
    mttr_s: float | None

    def to_json(self) -> dict[str, Any]:
        t = self.totals
        window_us = us(self.end - self.start)
        judged = t.judged_us
        return {
            "endpoint_id": self.endpoint_id,
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "window_s": window_us / 1e6,
            "availability": None if judged <= 0 else 1 - self.downtime_us / judged,
            "observed_s": t.observed_us / 1e6,
            "maintenance_s": t.maintenance_us / 1e6,
            "unobserved_s": (window_us - t.observed_us) / 1e6,
            "up_s": t.up_us / 1e6,
            "degraded_s": t.degraded_us / 1e6,
            "downtime_s": self.downtime_us / 1e6,
            "unconfirmed_down_s": (t.down_us - self.downtime_us) / 1e6,
            "unknown_s": t.unknown_us / 1e6,
            "checks": t.checks,
            "outage_count": self.outage_count,
            "outages_by_severity": self.outages_by_severity,
            "mttr_s": self.mttr_s,
        }


def uptime_range(
    window: str | None, start: datetime | None, end: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    """[start, end) of an uptime query: `window` ending now (default 24h), or from/to with
    `to` defaulting to now; `to` is never later than now. ValidationFailed names the field."""
    problems = []
    if window is not None and (start is not None or end is not None):
        problems.append(FieldError("window", "give either window or from/to, not both"))
    elif window is not None and window not in WINDOWS:
        problems.append(FieldError("window", "must be one of " + ", ".join(WINDOWS)))
    if start is None and end is not None:
        problems.append(FieldError("from", "is required with to"))
    end = min(end or now, now)
    start = start or end - WINDOWS.get(window or "24h", WINDOWS["24h"])
    if not problems and not start < end:
        problems.append(FieldError("from", "must be before to (and before now)"))
    if not problems and end - start > MAX_RANGE:
        problems.append(FieldError("from", "the range may span at most 400 days"))
    if problems:
        raise ValidationFailed("invalid query", problems)
    return start, end
