"""Clock seam: the state machine and maintenance logic read time only through a Clock."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Aware UTC wall-clock time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told to; tests drive long sequences without sleeping."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._mono = 1000.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> datetime:
        self._now += timedelta(seconds=seconds)
        self._mono += seconds
        return self._now


# The instants the API and the config accept. Python's datetime ends at year 9999 and the
# maintenance and uptime arithmetic adds up to ~10 years to a time, so the upper bound keeps
# well clear of it; nothing availmon watches happened before 1970.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
TIME_RANGE_MESSAGE = "must be between 1970-01-01T00:00:00Z and 9000-01-01T00:00:00Z"


def in_time_range(value: datetime) -> datetime:
    """`value` (aware) if it lies in [EARLIEST, LATEST]; ValueError otherwise. Comparing
    aware datetimes does not overflow even at year 1 or 9999 with an offset."""
    if not EARLIEST <= value <= LATEST:
        raise ValueError(TIME_RANGE_MESSAGE)
    return value
