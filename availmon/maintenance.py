"""Maintenance windows: validation and evaluation. Pure: time is always an argument.

A window targets one endpoint, the endpoints carrying any of `tags`, or all endpoints. It is
one-off (`start_time` .. `end_time`) or recurring: a 5-field cron expression, evaluated by
cronsim in the IANA `timezone`, plus a `duration` of elapsed time; `start_time` / `end_time`,
when given, bound a recurring window (it is in effect only between them).

DST rule (cronsim follows Debian cron), for a recurring window whose minute and hour fields are
fixed (e.g. `0 2 * * TUE`): it starts at that local wall-clock time on both sides of a change;
a start that falls in a skipped local hour happens at the first valid moment after the gap
(02:30 on the spring-forward night in Europe/Berlin starts at 03:00 CEST); a start that falls in
a repeated local hour happens once, at its first occurrence (02:30 CEST, not again at 02:30
CET). When the minute or hour field starts with `*` (`*/15 2 * * *`), starts follow elapsed
time: none in a skipped hour, and both occurrences of a repeated hour. The duration is elapsed
time, so a 2 h window is 2 h long on a DST night too.

Evaluation is cheap on the check path: each window keeps the answer for the span of time it
stays true, so a check only compares two datetimes until the window starts or ends.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)

from availmon.clock import in_time_range
from availmon.errors import FieldValueError
from availmon.spectext import Text

MAX_DURATION = timedelta(days=31)
MAX_ID = 2**63 - 1  # PostgreSQL bigint
MAX_CRON_STEPS = 10_000  # starts examined per cache refresh; guards `* * * * *` + long duration
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
_UNIT_S = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def _bounded(seconds: float) -> timedelta:
    # checked before timedelta() is built: 1e21 seconds overflows it (OverflowError, not a
    # ValueError, so pydantic would not report it as a field error); nan fails the test too
    if not 0 < seconds <= MAX_DURATION.total_seconds():
        raise ValueError("must be more than 0 and at most 31 days")
    return timedelta(seconds=seconds)


def parse_duration(value: Any) -> Any:
    """Seconds (a number), or a string like "2h", "90m", "1h30m", "45s", "1d"; more than 0
    and at most MAX_DURATION."""
    if isinstance(value, bool):
        raise ValueError("a duration is seconds or a string like '2h'")
    if isinstance(value, timedelta):
        return _bounded(value.total_seconds())
    if isinstance(value, int | float):
        return _bounded(value)
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if text and _DURATION_PART.sub("", text) == "":
            seconds = sum(float(n) * _UNIT_S[u] for n, u in _DURATION_PART.findall(text))
            return _bounded(seconds)
        raise ValueError(f"{value!r} is not a duration: use seconds or e.g. '2h', '1h30m', '90m'")
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
# stored as timestamptz and used in datetime arithmetic: year 1 or 9999 would overflow it
Instant = Annotated[AwareDatetime, AfterValidator(in_time_range)]


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a path
        raise ValueError(f"{name!r} is not an IANA time zone (e.g. 'Europe/Berlin')") from None


def check_cron(expr: str, tz: tzinfo) -> str:
    expr = " ".join(expr.split())
    if len(expr.split()) != 5:
        raise ValueError(f"{expr!r} must have 5 fields: minute hour day-of-month month weekday")
    try:
        next(CronSim(expr, datetime.now(tz)))
    except CronSimError as exc:
        raise ValueError(f"{expr!r} is not a valid cron expression: {exc}") from None
    except StopIteration:
        raise ValueError(f"{expr!r} never matches") from None
    return expr


class WindowFields(BaseModel):
    """What the TOML `[[maintenance]]` and the API share; targets differ (see subclasses)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    # Text: no U+0000 or lone surrogate, which PostgreSQL would refuse at the first sync
    name: Annotated[Text, Field(min_length=1, max_length=200)]
    description: Annotated[Text, Field(max_length=2000)] | None = None
    start_time: Instant | None = None
    end_time: Instant | None = None
    # strict: `all = 1` or `"endpoint_id": true` (endpoint 1!) are mistakes, not requests
    is_active: StrictBool = True
    tags: tuple[Text, ...] = ()
    applies_to_all: StrictBool = Field(default=False, alias="all")
    cron: Annotated[Text, Field(max_length=200)] | None = None
    duration: Duration | None = None
    timezone: Annotated[Text, Field(max_length=100)] | None = None

    def _targets(self) -> dict[str, bool]:
        """Each way to name a target (by its key) and whether it is given."""
        return {"tags": bool(self.tags), "all": self.applies_to_all}

    @field_validator("name")
    @classmethod
    def _strip_name(cls, name: str) -> str:
        if not name.strip():
            raise ValueError("must not be empty")
        return name.strip()

    @field_validator("tags")
    @classmethod
    def _check_tags(cls, tags: tuple[str, ...]) -> tuple[str, ...]:
        if any(not t or len(t) > 100 for t in tags):
            raise ValueError("each tag must be 1-100 characters")
        return tags

    @field_validator("cron")
    @classmethod
    def _check_cron(cls, cron: str | None) -> str | None:
        return None if cron is None else check_cron(cron, UTC)  # matches in no zone or all

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, name: str | None) -> str | None:
        if name is not None:
            zone(name)
        return name

    @model_validator(mode="after")
    def _check_window(self) -> WindowFields:
        targets = self._targets()
        given = [key for key, present in targets.items() if present]
        if len(given) != 1:
            message = "give exactly one target: an endpoint, tags, or all = true"
            raise FieldValueError(message, *(given or targets))
        start, end = self.start_time, self.end_time
        if start is not None and end is not None and end <= start:
            raise FieldValueError("end_time must be after start_time", "end_time")
        if self.cron is None:
            if start is None or end is None:
                missing = [k for k, v in (("start_time", start), ("end_time", end)) if v is None]
                raise FieldValueError("a one-off window needs start_time and end_time", *missing)
            extra = [k for k in ("duration", "timezone") if getattr(self, k) is not None]
            if extra:
                raise FieldValueError("duration and timezone apply only with cron", *extra)
            return self
        missing = [k for k in ("duration", "timezone") if getattr(self, k) is None]
        if missing:
            raise FieldValueError("a recurring window needs cron, duration and timezone", *missing)
        return self


class MaintenanceConfig(WindowFields):
    """`[[maintenance]]` in the TOML: the endpoint is named, since ids are not known there."""

    endpoint: Text | None = None

    def _targets(self) -> dict[str, bool]:
        return {"endpoint": self.endpoint is not None, **super()._targets()}


class WindowInput(WindowFields):
    """A window created or replaced through the API."""

    endpoint_id: Annotated[StrictInt, Field(ge=1, le=MAX_ID)] | None = None

    def _targets(self) -> dict[str, bool]:
        return {"endpoint_id": self.endpoint_id is not None, **super()._targets()}


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    id: int
    name: str
    source: str  # "config" or "api"
    start_time: datetime | None
    end_time: datetime | None
    description: str | None = None
    is_active: bool = True
    endpoint_id: int | None = None
    tags: tuple[Text, ...] = ()
    applies_to_all: bool = False
    cron: str | None = None
    duration: timedelta | None = None
    timezone: str | None = None

    def applies_to(self, endpoint_id: int, tags: Iterable[str]) -> bool:
        if self.applies_to_all:
            return True
        if self.endpoint_id is not None:
            return self.endpoint_id == endpoint_id
        return not set(self.tags).isdisjoint(tags)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "is_active": self.is_active,
            "endpoint_id": self.endpoint_id,
            "tags": list(self.tags),
            "all": self.applies_to_all,
            "start_time": _iso(self.start_time),
            "end_time": _iso(self.end_time),
            "cron": self.cron,
            "duration_s": self.duration.total_seconds() if self.duration else None,
            "timezone": self.timezone,
        }


def window_from_spec(
    window_id: int, source: str, spec: WindowFields, endpoint_id: int | None = None
) -> MaintenanceWindow:
    """A window from validated fields; `endpoint_id` resolves a config window's endpoint name."""
    if isinstance(spec, WindowInput):
        endpoint_id = spec.endpoint_id
    return MaintenanceWindow(
        id=window_id,
        name=spec.name,
        source=source,
        start_time=spec.start_time.astimezone(UTC) if spec.start_time else None,
        end_time=spec.end_time.astimezone(UTC) if spec.end_time else None,
        description=spec.description,
        is_active=spec.is_active,
        endpoint_id=endpoint_id,
        tags=tuple(spec.tags),
        applies_to_all=spec.applies_to_all,
        cron=spec.cron,
        duration=spec.duration,
        timezone=spec.timezone,
    )


@dataclass(frozen=True, slots=True)
class Occurrence:
    window: MaintenanceWindow
    start: datetime
    end: datetime

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


class WindowClock:
    """Answers "is `window` on at t?" and remembers the span over which the answer holds."""

    def __init__(self, window: MaintenanceWindow) -> None:
        self.window = window
        self._zone = zone(window.timezone) if window.cron and window.timezone else None
        self._valid_from: datetime | None = None
        self._valid_until: datetime | None = None
        self._value: Occurrence | None = None

    def at(self, t: datetime) -> Occurrence | None:
        w = self.window
        if not w.is_active:
            return None
        if (w.start_time is not None and t < w.start_time) or (
            w.end_time is not None and t >= w.end_time
        ):
            return None
        if w.cron is None:
            assert w.start_time is not None and w.end_time is not None
            return Occurrence(w, w.start_time, w.end_time)
        lo, hi = self._valid_from, self._valid_until
        if lo is None or hi is None or not lo <= t < hi:
            self._refresh(t)
        return self._value

    def _refresh(self, t: datetime) -> None:
        self._value, until = self._compute(t)
        self._valid_from, self._valid_until = t, until

    def _compute(self, t: datetime) -> tuple[Occurrence | None, datetime]:
        """The occurrence covering `t` (bounds not applied) and when that answer may change."""
        w = self.window
        assert w.cron is not None and w.duration is not None and self._zone is not None
        latest = following = None
        # Any start covering t lies in (t - duration, t]. Forward iteration only: cronsim's
        # reverse iteration misses a start in the first pass of a repeated hour.
        starts = CronSim(w.cron, (t - w.duration).astimezone(self._zone))
        for _ in range(MAX_CRON_STEPS):
            try:
                start = next(starts).astimezone(UTC)
            except StopIteration:
                break
            if start > t:
                following = start
                break
            latest = start
        until = following or t + timedelta(days=3660)
        if latest is None or t >= latest + w.duration:
            return None, until
        end = latest + w.duration
        bounded = Occurrence(
            w,
            max(latest, w.start_time) if w.start_time else latest,
            min(end, w.end_time) if w.end_time else end,
        )
        return bounded, min(end, until)

    def next_occurrence(self, t: datetime) -> Occurrence | None:
        """The first occurrence that starts after `t` (None when there is none)."""
        w = self.window
        if not w.is_active:
            return None
        if w.cron is None:
            assert w.start_time is not None and w.end_time is not None
            return Occurrence(w, w.start_time, w.end_time) if w.start_time > t else None
        assert w.duration is not None and self._zone is not None
        begin = t
        if w.start_time is not None and w.start_time > t:
            running, _ = self._compute(w.start_time)  # already running when the bound begins
            if running is not None:
                return running
            begin = w.start_time
        try:
            start = next(CronSim(w.cron, begin.astimezone(self._zone))).astimezone(UTC)
        except StopIteration:
            return None
        if w.end_time is not None and start >= w.end_time:
            return None
        end = start + w.duration
        return Occurrence(w, start, min(end, w.end_time) if w.end_time else end)


@dataclass(frozen=True, slots=True)
class MaintenanceStatus:
    """Answer to "is this endpoint in maintenance at `at`?" (and what comes next)."""

    endpoint_id: int
    at: datetime
    current: Occurrence | None
    upcoming: Occurrence | None

    @property
    def in_maintenance(self) -> bool:
        return self.current is not None

    def to_json(self) -> dict[str, Any]:
        def occurrence(o: Occurrence | None) -> dict[str, Any] | None:
            return None if o is None else {"window": o.window.to_json(), **o.to_json()}

        return {
            "endpoint_id": self.endpoint_id,
            "at": self.at.isoformat(),
            "in_maintenance": self.in_maintenance,
            "current": occurrence(self.current),
            "next": occurrence(self.upcoming),
        }


class MaintenanceCalendar:
    """All windows, with the list that applies to each endpoint cached until a change."""

    def __init__(self, windows: Sequence[MaintenanceWindow] = ()) -> None:
        self._clocks: dict[int, WindowClock] = {}
        self._by_target: dict[tuple[int, tuple[str, ...]], list[WindowClock]] = {}
        self.replace(windows)

    def replace(self, windows: Iterable[MaintenanceWindow]) -> None:
        self._clocks = {w.id: WindowClock(w) for w in windows}
        self._by_target.clear()

    def put(self, window: MaintenanceWindow) -> None:
        self._clocks[window.id] = WindowClock(window)
        self._by_target.clear()

    def remove(self, window_id: int) -> None:
        self._clocks.pop(window_id, None)
        self._by_target.clear()

    def windows(self) -> list[MaintenanceWindow]:
        return [c.window for c in sorted(self._clocks.values(), key=lambda c: c.window.id)]

    def _for(self, endpoint_id: int, tags: Sequence[str]) -> list[WindowClock]:
        key = (endpoint_id, tuple(tags))
        found = self._by_target.get(key)
        if found is None:
            found = [
                c
                for _, c in sorted(self._clocks.items())
                if c.window.is_active and c.window.applies_to(endpoint_id, tags)
            ]
            self._by_target[key] = found
        return found

    def match(self, endpoint_id: int, tags: Sequence[str], at: datetime) -> Occurrence | None:
        """The window (lowest id first) the endpoint is in at `at`, with that occurrence."""
        for clock in self._for(endpoint_id, tags):
            occurrence = clock.at(at)
            if occurrence is not None:
                return occurrence
        return None

    def next_occurrence(
        self, endpoint_id: int, tags: Sequence[str], at: datetime
    ) -> Occurrence | None:
        """The next window occurrence that starts after `at` for this endpoint."""
        best: Occurrence | None = None
        for clock in self._for(endpoint_id, tags):
            occurrence = clock.next_occurrence(at)
            if occurrence is not None and (best is None or occurrence.start < best.start):
                best = occurrence
        return best

    def occurrences(self, start: datetime, end: datetime, per_window: int = 20) -> list[Occurrence]:
        """Occurrences of every active window that overlap [start, end), soonest first (at
        most `per_window` of each: a `*/5 * * * *` window must not list 2,000 entries)."""
        found: list[Occurrence] = []
        for _, clock in sorted(self._clocks.items()):
            occurrence = clock.at(start) or clock.next_occurrence(start)
            for _ in range(per_window):
                if occurrence is None or occurrence.start >= end:
                    break
                found.append(occurrence)
                occurrence = clock.next_occurrence(occurrence.start)
        return sorted(found, key=lambda o: (o.start, o.window.id))


def window_input(window: MaintenanceWindow) -> dict[str, Any]:
    """A stored window as WindowInput fields (what a PATCH is merged into)."""
    return {
        "name": window.name,
        "description": window.description,
        "start_time": window.start_time,
        "end_time": window.end_time,
        "is_active": window.is_active,
        "endpoint_id": window.endpoint_id,
        "tags": list(window.tags),
        "all": window.applies_to_all,
        "cron": window.cron,
        "duration": window.duration,
        "timezone": window.timezone,
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
