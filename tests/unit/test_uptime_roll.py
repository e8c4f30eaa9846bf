"""Hourly rollups (uptime.roll) agree with coverage() computed from the raw rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from availmon.model import Status
from availmon.uptime import HOUR, Totals, coverage, floor_hour, roll

T0 = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)


@dataclass
class Row:
    endpoint_id: int
    checked_at: datetime
    status: Status


gaps = st.lists(
    st.tuples(st.integers(1, 3 * 3600 * 10**6), st.sampled_from(list(Status))),
    max_size=25,
)


def _sum(totals: list[Totals]) -> Totals:
    out = Totals()
    for t in totals:
        out += t
    return out


@settings(max_examples=200, deadline=None)
@given(steps=gaps, cap_s=st.sampled_from([1, 20, 600, 7200]), split=st.integers(0, 25))
def test_rollups_in_two_batches_sum_to_the_raw_coverage(
    steps: list[tuple[int, Status]], cap_s: int, split: int
) -> None:
    cap = timedelta(seconds=cap_s)
    rows, at = [], T0
    for gap_us, status in steps:
        at += timedelta(microseconds=gap_us)
        rows.append(Row(7, at, status))
    # two commits, the second replaying part of the first (a crash between the commits)
    first = roll(rows[:split], {}, lambda _: cap)
    second = roll(rows[max(0, split - 3) :], first.cursors, lambda _: cap)
    buckets: dict[datetime, list[Totals]] = {}
    for delta in (first, second):
        for (endpoint_id, hour), totals in delta.buckets.items():
            assert endpoint_id == 7 and hour == floor_hour(hour)
            buckets.setdefault(hour, []).append(totals)
    replayed = rows[max(0, split - 3) : split]
    assert second.skipped == len(replayed)
    if not rows:
        assert not buckets
        return
    start, end = floor_hour(rows[0].checked_at), floor_hour(rows[-1].checked_at + cap) + HOUR
    expected = coverage([(r.checked_at, r.status) for r in rows], cap, start, end)
    assert _sum([t for ts in buckets.values() for t in ts]) == expected
    for hour, totals in buckets.items():  # and hour by hour
        assert _sum(totals) == coverage(
            [(r.checked_at, r.status) for r in rows], cap, hour, hour + HOUR
        )
