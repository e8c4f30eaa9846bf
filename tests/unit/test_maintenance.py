"""Maintenance window evaluation: one-off, weekly across both DST changes, tag and global
windows, validation. Pure: every time is an argument."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from availmon.config import load_settings
from availmon.errors import ConfigError, field_errors
from availmon.maintenance import (
    MaintenanceCalendar,
    MaintenanceWindow,
    WindowClock,
    WindowInput,
    window_from_spec,
)

BERLIN = "Europe/Berlin"
S = timedelta(seconds=1)


def z(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def window(window_id: int = 1, **fields: Any) -> MaintenanceWindow:
    fields.setdefault("name", f"w{window_id}")
    if not ({"endpoint_id", "tags", "all"} & fields.keys()):
        fields["endpoint_id"] = 7
    return window_from_spec(window_id, "api", WindowInput(**fields))


def covers(w: MaintenanceWindow, at: datetime) -> bool:
    return WindowClock(w).at(at) is not None


def test_one_off_window_is_start_inclusive_end_exclusive():
    w = window(start_time="2026-05-01T22:00:00+02:00", end_time="2026-05-02T01:30:00Z")
    assert w.start_time == z(2026, 5, 1, 20)
    assert not covers(w, z(2026, 5, 1, 20) - S)
    assert covers(w, z(2026, 5, 1, 20))
    assert covers(w, z(2026, 5, 2, 1, 30) - S)
    assert not covers(w, z(2026, 5, 2, 1, 30))
    inactive = window(start_time=w.start_time, end_time=w.end_time, is_active=False)
    assert not covers(inactive, z(2026, 5, 1, 21))


@pytest.mark.parametrize(
    "local_date,utc_start",
    [
        # Tuesday 02:00 Europe/Berlin for 2 h: the same wall-clock time on both sides of each
        # change, so the UTC start moves by an hour (CET = UTC+1, CEST = UTC+2).
        ("2026-03-24", z(2026, 3, 24, 1)),  # last Tuesday before the spring change (CET)
        ("2026-03-31", z(2026, 3, 31, 0)),  # first Tuesday after it (CEST)
        ("2026-10-20", z(2026, 10, 20, 0)),  # last Tuesday before the autumn change (CEST)
        ("2026-10-27", z(2026, 10, 27, 1)),  # first Tuesday after it (CET)
    ],
)
def test_weekly_window_keeps_local_wall_clock_time_across_both_dst_changes(
    local_date: str, utc_start: datetime
):
    w = window(cron="0 2 * * TUE", duration="2h", timezone=BERLIN)
    clock = WindowClock(w)
    assert clock.at(utc_start - S) is None
    occurrence = clock.at(utc_start)
    assert occurrence is not None
    assert (occurrence.start, occurrence.end) == (utc_start, utc_start + timedelta(hours=2))
    assert occurrence.start.astimezone(w_zone()).strftime("%Y-%m-%d %H:%M") == f"{local_date} 02:00"
    assert clock.at(utc_start + timedelta(hours=2) - S) is not None
    assert clock.at(utc_start + timedelta(hours=2)) is None


def w_zone():
    from zoneinfo import ZoneInfo

    return ZoneInfo(BERLIN)


def test_start_in_the_skipped_hour_moves_to_the_end_of_the_gap():
    # Sunday 29 March 2026: 02:00 CET jumps to 03:00 CEST, so 02:30 does not exist that night.
    w = window(cron="30 2 * * SUN", duration="1h", timezone=BERLIN)
    clock = WindowClock(w)
    assert clock.at(z(2026, 3, 22, 1, 30)) is not None  # the Sunday before: 02:30 CET
    assert clock.at(z(2026, 3, 29, 1) - S) is None  # 01:59:59 CET
    occurrence = clock.at(z(2026, 3, 29, 1))  # 03:00 CEST, first moment after the gap
    assert occurrence is not None
    assert (occurrence.start, occurrence.end) == (z(2026, 3, 29, 1), z(2026, 3, 29, 2))
    assert clock.at(z(2026, 3, 29, 2)) is None
    assert clock.at(z(2026, 4, 5, 0, 30)) is not None  # next Sunday: 02:30 CEST


def test_start_in_the_repeated_hour_happens_once_at_its_first_occurrence():
    # Sunday 25 October 2026: 03:00 CEST falls back to 02:00 CET, so 02:30 happens twice.
    w = window(cron="30 2 * * SUN", duration="1h", timezone=BERLIN)
    clock = WindowClock(w)
    assert clock.at(z(2026, 10, 25, 0, 30) - S) is None
    occurrence = clock.at(z(2026, 10, 25, 0, 30))  # 02:30 CEST
    assert occurrence is not None and occurrence.end == z(2026, 10, 25, 1, 30)
    # 02:10 CET (the second pass through 02:xx) is still inside the window that began at
    # 02:30 CEST; cronsim's reverse iteration would miss that start, forward iteration does not
    assert WindowClock(w).at(z(2026, 10, 25, 1, 10)) == occurrence
    assert clock.at(z(2026, 10, 25, 1, 30)) is None  # 02:30 CET: no second start
    assert clock.at(z(2026, 10, 25, 1, 59)) is None
    assert clock.at(z(2026, 11, 1, 1, 30)) is not None  # next Sunday: 02:30 CET


def test_star_minute_field_follows_elapsed_time_on_dst_nights():
    w = window(cron="*/30 2 * * *", duration="10m", timezone=BERLIN)
    autumn = [
        z(2026, 10, 25, 0, 0),
        z(2026, 10, 25, 0, 30),
        z(2026, 10, 25, 1),
        z(2026, 10, 25, 1, 30),
    ]
    assert all(covers(w, t + timedelta(minutes=5)) for t in autumn)  # both passes of 02:xx
    spring = [z(2026, 3, 29, 0) + timedelta(minutes=m) for m in range(0, 180, 5)]
    assert not any(covers(w, t) for t in spring)  # 02:xx never happens that night


def test_recurring_window_bounded_by_start_and_end_time():
    w = window(
        cron="0 2 * * *",
        duration="1h",
        timezone="UTC",
        start_time="2026-06-03T02:30:00Z",
        end_time="2026-06-05T02:30:00Z",
    )
    clock = WindowClock(w)
    assert clock.at(z(2026, 6, 2, 2, 15)) is None  # before the bounds
    first = clock.at(z(2026, 6, 3, 2, 45))
    assert first is not None and first.start == z(2026, 6, 3, 2, 30)  # clipped to the bound
    assert clock.at(z(2026, 6, 4, 2, 10)) is not None
    last = clock.at(z(2026, 6, 5, 2, 10))
    assert last is not None and last.end == z(2026, 6, 5, 2, 30)
    assert clock.at(z(2026, 6, 5, 2, 40)) is None
    assert clock.at(z(2026, 6, 6, 2, 10)) is None


def test_overlapping_occurrences_cover_the_gap_between_them():
    w = window(cron="0 * * * *", duration="90m", timezone="UTC")
    occurrence = WindowClock(w).at(z(2026, 1, 1, 5, 10))
    assert occurrence is not None and occurrence.start == z(2026, 1, 1, 5)


def test_tag_global_and_endpoint_windows_in_a_calendar():
    one_off = {"start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-01T01:00:00Z"}
    calendar = MaintenanceCalendar(
        [
            window(1, tags=["core", "dc1"], **one_off),
            window(2, all=True, start_time="2026-01-01T00:30:00Z", end_time="2026-01-01T02:00:00Z"),
            window(3, endpoint_id=42, cron="0 3 * * *", duration="30m", timezone="UTC"),
        ]
    )
    at = z(2026, 1, 1, 0, 10)
    assert calendar.match(5, ["dc1"], at).window.id == 1  # type: ignore[union-attr]
    assert calendar.match(5, ["web"], at) is None
    later = z(2026, 1, 1, 0, 45)
    assert calendar.match(5, ["dc1"], later).window.id == 1  # type: ignore[union-attr]
    assert calendar.match(5, ["web"], later).window.id == 2  # type: ignore[union-attr]
    assert calendar.match(42, [], z(2026, 1, 1, 3, 5)).window.id == 3  # type: ignore[union-attr]
    assert calendar.match(43, [], z(2026, 1, 1, 3, 5)) is None
    upcoming = calendar.next_occurrence(42, [], z(2026, 1, 1, 2, 30))
    assert upcoming is not None and (upcoming.window.id, upcoming.start) == (3, z(2026, 1, 1, 3))
    calendar.remove(2)
    assert calendar.match(5, ["web"], later) is None
    calendar.put(window(2, tags=["web"], **one_off))
    assert calendar.match(5, ["web"], at).window.id == 2  # type: ignore[union-attr]


def test_occurrences_in_a_range_running_now_and_upcoming_soonest_first():
    calendar = MaintenanceCalendar(
        [
            window(1, all=True, start_time="2026-01-01T09:00:00Z", end_time="2026-01-01T11:00:00Z"),
            window(2, tags=["db"], cron="0 3 * * *", duration="1h", timezone="UTC"),
            window(3, all=True, start_time="2026-01-20T00:00:00Z", end_time="2026-01-21T00:00:00Z"),
            window(4, all=True, is_active=False, cron="0 * * * *", duration="5m", timezone="UTC"),
            window(5, all=True, cron="*/5 * * * *", duration="1m", timezone="UTC"),
        ]
    )
    found = calendar.occurrences(z(2026, 1, 1, 10), z(2026, 1, 4, 10))
    five = [o for o in found if o.window.id == 5]
    assert len(five) == 20  # capped per window
    assert [(o.window.id, o.start, o.end) for o in found if o.window.id != 5] == [
        (1, z(2026, 1, 1, 9), z(2026, 1, 1, 11)),  # running at the start of the range
        (2, z(2026, 1, 2, 3), z(2026, 1, 2, 4)),
        (2, z(2026, 1, 3, 3), z(2026, 1, 3, 4)),
        (2, z(2026, 1, 4, 3), z(2026, 1, 4, 4)),
    ]
    assert calendar.occurrences(z(2026, 1, 1, 3, 30), z(2026, 1, 1, 3, 31), per_window=3)[0] == (
        calendar.match(1, ["db"], z(2026, 1, 1, 3, 30))
    )


def test_a_thousand_endpoints_checking_every_second_cost_microseconds():
    calendar = MaintenanceCalendar(
        [
            window(1, tags=["core"], cron="0 2 * * TUE", duration="2h", timezone=BERLIN),
            window(2, all=True, cron="30 3 1 * *", duration="1h", timezone="America/New_York"),
            window(
                3,
                endpoint_id=17,
                start_time="2026-03-31T00:30:00Z",
                end_time="2026-03-31T01:00:00Z",
            ),
        ]
    )
    t0 = z(2026, 3, 30, 23, 0)
    calls = 0
    started = time.perf_counter()
    for second in range(0, 3 * 3600, 30):  # 3 h, crossing the start and end of window 1
        at = t0 + timedelta(seconds=second)
        for endpoint_id in range(1000):
            calendar.match(endpoint_id, ["core"] if endpoint_id % 2 else ["web"], at)
            calls += 1
    per_call_us = (time.perf_counter() - started) / calls * 1e6
    assert calls == 360_000
    assert per_call_us < 20, per_call_us  # ~1-2 us measured; 1,000 checks/s need < 1,000 us


def errors(**fields: Any) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        WindowInput(**fields)
    return {e.field: e.message for e in field_errors(info.value)}


TARGET = "give exactly one target: an endpoint, tags, or all = true"


def test_validation_names_the_problem():
    base = {"name": "x", "endpoint_id": 1}
    assert errors(name="x", start_time="2026-01-01T00:00:00Z", end_time="2026-01-02T00:00:00Z") == {
        "endpoint_id": TARGET,
        "tags": TARGET,
        "all": TARGET,
    }
    span = {"start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-02T00:00:00Z"}
    assert errors(**base, all=True, **span) == {"endpoint_id": TARGET, "all": TARGET}
    assert errors(**base, start_time="2026-01-01T00:00:00Z") == {
        "end_time": "a one-off window needs start_time and end_time"
    }
    assert errors(**base, start_time="2026-01-02T00:00:00Z", end_time="2026-01-01T00:00:00Z") == {
        "end_time": "end_time must be after start_time"
    }
    assert errors(**base, cron="0 2 * * TUE", duration="2h") == {
        "timezone": "a recurring window needs cron, duration and timezone"
    }
    assert errors(**base, cron="0 2 * *", duration="2h", timezone=BERLIN) == {
        "cron": "'0 2 * *' must have 5 fields: minute hour day-of-month month weekday"
    }
    assert errors(**base, cron="0 25 * * *", duration="2h", timezone=BERLIN) == {
        "cron": "'0 25 * * *' is not a valid cron expression: Bad hour"
    }
    assert errors(**base, cron="0 2 * * *", duration="2h", timezone="Mars/Olympus") == {
        "timezone": "'Mars/Olympus' is not an IANA time zone (e.g. 'Europe/Berlin')"
    }
    assert errors(**base, cron="0 2 * * *", duration="2 fortnights", timezone=BERLIN) == {
        "duration": "'2 fortnights' is not a duration: use seconds or e.g. '2h', '1h30m', '90m'"
    }
    assert errors(**base, start_time="2026-01-01T00:00:00", end_time="2026-01-02T00:00:00Z") == {
        "start_time": "Input should have timezone info"
    }
    ok = WindowInput(**base, cron="0 2 * * tue", duration="1h30m", timezone=BERLIN)
    assert ok.duration == timedelta(minutes=90)


def test_maintenance_and_webhooks_in_the_toml(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text(
        """
[[endpoints]]
name = "web"
url = "https://web.example.net/"

[[maintenance]]
name = "patch-tuesday"
endpoint = "web"
cron = "0 2 * * TUE"
duration = "2h"
timezone = "Europe/Berlin"

[[maintenance]]
name = "core-swap"
tags = ["core"]
start_time = 2026-05-01T22:00:00Z
end_time = 2026-05-02T02:00:00Z

[notifications]
retry_max = 600

[[notifications.webhook]]
name = "noc"
url = "https://hooks.example.net/availmon"
secret = "hush"
severities = ["critical", "high"]
reminder_interval = 3600
"""
    )
    settings = load_settings(path)
    assert [m.name for m in settings.maintenance] == ["patch-tuesday", "core-swap"]
    assert settings.maintenance[0].endpoint == "web"
    (hook,) = settings.notifications.webhook
    assert hook.secret is not None and hook.secret.get_secret_value() == "hush"
    assert "hush" not in repr(settings)


@pytest.mark.parametrize(
    "body,expected",
    [
        (
            '[[maintenance]]\nname = "a"\nall = true\nstart_time = 2026-05-01T22:00:00Z\n',
            "maintenance[0].end_time: a one-off window needs start_time and end_time",
        ),
        (
            '[[maintenance]]\nname = "a"\nall = true\ncron = "0 2 * * *"\nduration = 1e30\n'
            'timezone = "UTC"\n',
            "maintenance[0].duration: must be more than 0 and at most 31 days",
        ),
        (
            '[[maintenance]]\nname = "a"\nall = true\ncron = "0 2 * * *"\nduration = "1h"\n'
            'timezone = "Europe"\n',  # a directory of the tz database: was an OSError
            "maintenance[0].timezone: 'Europe' is not an IANA time zone (e.g. 'Europe/Berlin')",
        ),
        (
            '[[maintenance]]\nname = "a"\nendpoint = "web"\ntags = ["x"]\n'
            "start_time = 0001-01-01T00:00:00+05:00\nend_time = 2026-01-01T00:00:00Z\n",
            "maintenance[0].start_time: must be between 1970-01-01T00:00:00Z and "
            "9000-01-01T00:00:00Z",
        ),
        (
            '[[maintenance]]\nname = "a"\nall = true\ncron = "0 2 * * *"\nduration = "1h"\n'
            'timezone = "Europe/Berlin"\n[[maintenance]]\nname = "a"\ntags = ["x"]\n'
            'cron = "0 3 * * *"\nduration = 60\ntimezone = "UTC"\n',
            "maintenance[1].name: duplicate name 'a' (also maintenance[0])",
        ),
        (
            '[[notifications.webhook]]\nname = "n"\nurl = "ftp://x.example.net/"\n',
            "notifications.webhook[0].url: must be an http:// or https:// URL with a host",
        ),
        (
            '[[notifications.webhook]]\nname = "n"\nurl = "https://x.example.net/"\n'
            '[[notifications.webhook]]\nname = "n"\nurl = "https://y.example.net/"\n',
            "notifications.webhook: webhook names must be unique: 'n'",
        ),
    ],
)
def test_bad_maintenance_and_webhook_config(tmp_path: Path, body: str, expected: str):
    path = tmp_path / "c.toml"
    path.write_text(body)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.lines == [f"{path}: {expected}"]
