"""Words and numbers for the page (registered as jinja2 filters in web/__init__.py)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from availmon.charts import DayFigure

# status key -> (css class, words); None (never checked) is shown as UNKNOWN "not checked yet"
STATUS_WORDS = {
    "DOWN": "Down",
    "DEGRADED": "Degraded",
    "UNKNOWN": "Unknown",
    "MAINTENANCE": "Maintenance",
    "UP": "Up",
}


def pct(value: float | None, digits: int = 2) -> str:
    """99.987 % -> "99.98%": truncated, so anything short of 100 % never reads as 100."""
    if value is None:
        return "no data"
    if value >= 1.0:
        return "100%"
    scale = 10**digits
    return f"{math.floor(max(value, 0.0) * 100 * scale) / scale:.{digits}f}%"


def ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


def duration(seconds: float) -> str:
    """Two units at most: 45 s, 12 min, 3 h 5 min, 2 d 4 h."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    minutes, s = divmod(s, 60)
    if minutes < 60:
        return f"{minutes} min" + (f" {s} s" if s and minutes < 10 else "")
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    days, hours = divmod(hours, 24)
    return f"{days} d" + (f" {hours} h" if hours else "")


def utc(value: datetime | None, seconds: bool = False) -> str:
    if value is None:
        return "—"
    pattern = "%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC"
    return value.astimezone(UTC).strftime(pattern)


def iso(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).isoformat(timespec="seconds")


def ago(value: datetime | None, now: datetime) -> str:
    return "—" if value is None else duration((now - value).total_seconds())


def day_class(day: DayFigure) -> str:
    a = day.availability
    if a is None:
        return "m" if day.maintenance_s > 0 else "n"
    if a >= 0.999:
        return "c0"
    if a >= 0.99:
        return "c1"
    if a >= 0.95:
        return "c2"
    return "c3"


def day_title(day: DayFigure) -> str:
    """The hover text of one day cell: its figure, then its outages and maintenance."""
    parts = [f"{day.day.isoformat()}: "]
    if day.availability is None:
        parts.append("maintenance only" if day.maintenance_s > 0 else "no data")
    else:
        parts.append(f"{pct(day.availability)} available")
    if day.outages:
        noun = "outage" if day.outages == 1 else "outages"
        worst = f", worst {day.worst.value}" if day.worst else ""
        parts.append(f"; {day.outages} {noun}{worst}, {duration(day.downtime_s)} down")
    if day.maintenance_s > 0 and day.availability is not None:
        parts.append(f"; {duration(day.maintenance_s)} maintenance")
    return "".join(parts)
