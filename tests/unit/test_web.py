"""The status page's pure parts: day figures, words and numbers, SVG, grouping and paging."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta

from availmon.charts import DayFigure, day_figures, series_start
from availmon.model import Outage, Severity, Status
from availmon.status_view import EndpointNow
from availmon.uptime import Totals
from availmon.web.board import Filters, build_board
from availmon.web.fmt import day_class, day_title, duration, pct
from availmon.web.svg import badge, sparkline, uptime_colour

H = 3_600_000_000  # an hour in microseconds
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def z(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def outage(start: datetime, end: datetime | None, severity: Severity = Severity.HIGH) -> Outage:
    return Outage(1, 7, severity, start, start, end)


def test_a_day_counts_down_time_only_inside_confirmed_outages():
    days = [date(2026, 3, 7), date(2026, 3, 8), date(2026, 3, 9), date(2026, 3, 10)]
    totals = {
        date(2026, 3, 7): Totals(up_us=24 * H - H // 12, down_us=H // 12),  # a 5 min blip
        date(2026, 3, 8): Totals(up_us=21 * H, down_us=3 * H),  # 3 h DOWN, 2 h under outages
        date(2026, 3, 9): Totals(up_us=20 * H, maintenance_us=4 * H),
        # nothing on the 10th: not observed
    }
    outages = [
        outage(z(2026, 3, 8, 20), z(2026, 3, 8, 21), Severity.LOW),
        outage(z(2026, 3, 8, 23), z(2026, 3, 9, 1), Severity.CRITICAL),  # into the 9th
    ]
    blip, bad, maint, empty = day_figures(days, totals, outages, NOW)
    assert (blip.availability, blip.downtime_s, blip.outages) == (1.0, 0.0, 0)
    assert bad.downtime_s == 2 * 3600  # min(3 h DOWN, 2 h under outages)
    assert bad.availability == 1 - 2 / 24 and (bad.outages, bad.worst) == (2, Severity.CRITICAL)
    # the 9th: an outage covered an hour, but no DOWN time was observed then
    assert maint.availability == 1.0 and maint.outages == 1 and maint.maintenance_s == 4 * 3600
    assert maint.judged_s == 20 * 3600
    assert empty.availability is None and empty.judged_s == 0


def test_an_open_outage_covers_until_now():
    (today,) = day_figures(
        [date(2026, 3, 10)], {date(2026, 3, 10): Totals(up_us=10 * H, down_us=2 * H)},
        [outage(z(2026, 3, 10, 11), None)], NOW,
    )  # fmt: skip
    assert today.downtime_s == 3600 and today.availability == 1 - 1 / 12


def test_down_all_along_reads_zero_though_the_rollups_run_past_now():
    # DOWN since 11:00, checked every 10 s: the rollups credit the latest check 20 s past now
    cap = timedelta(seconds=20)
    totals = {date(2026, 3, 10): Totals(up_us=11 * H, down_us=H + cap // timedelta(microseconds=1))}
    (today,) = day_figures(
        [date(2026, 3, 10)], totals, [outage(z(2026, 3, 10, 11), None)], NOW, cap
    )
    assert today.downtime_s == 3600 + 20 and today.availability == 1 - (3620 / (12 * 3600 + 20))


def test_words_and_numbers():
    assert pct(0.99999) == "99.99%" and pct(1.0) == "100%" and pct(None) == "no data"
    assert pct(0.91666) == "91.66%" and pct(-0.1) == "0.00%"
    assert [duration(s) for s in (0, 59, 61, 600, 3600, 3 * 3600 + 300, 2 * 86400 + 3600)] == [
        "0 s", "59 s", "1 min 1 s", "10 min", "1 h", "3 h 5 min", "2 d 1 h",
    ]  # fmt: skip
    day = DayFigure(date(2026, 3, 8), 0.875, 21 * 3600, 3 * 3600, 0, 2, Severity.HIGH)
    assert day_title(day) == "2026-03-08: 87.50% available; 2 outages, worst high, 3 h down"
    assert day_class(day) == "c3"
    quiet = DayFigure(date(2026, 3, 9), None, 0, 0, 3600, 0, None)
    assert (day_title(quiet), day_class(quiet)) == ("2026-03-09: maintenance only", "m")
    nothing = DayFigure(date(2026, 3, 9), None, 0, 0, 0, 0, None)
    assert (day_title(nothing), day_class(nothing)) == ("2026-03-09: no data", "n")


def test_series_buckets_stay_on_the_half_hour():
    assert series_start(z(2026, 3, 10, 12, 10)) == z(2026, 3, 9, 12, 30)
    assert series_start(z(2026, 3, 10, 12, 30)) == z(2026, 3, 9, 12, 30)


def test_badges_are_well_formed_svg_with_escaped_text():
    svg = badge("a<b>&c", "99.5%", "green")
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{ns}svg" and root.attrib["aria-label"] == "a<b>&c: 99.5%"
    assert root.find(f"{ns}title").text == "a<b>&c: 99.5%"  # type: ignore[union-attr]
    assert [t.text for t in root.iter(f"{ns}text")] == ["a<b>&c", "a<b>&c", "99.5%", "99.5%"]
    assert int(root.attrib["width"]) > 60
    assert [uptime_colour(a) for a in (None, 1.0, 0.995, 0.96, 0.91, 0.5)] == [
        "lightgrey", "brightgreen", "green", "yellow", "orange", "red",
    ]  # fmt: skip


def test_a_sparkline_breaks_where_nothing_answered():
    svg = sparkline([10.0, 20.0, None, None, 40.0, None, 5.0, 5.0], "t", 120, 24)
    path = ET.fromstring(svg).find("{http://www.w3.org/2000/svg}path")
    assert path is not None
    d = path.attrib["d"]
    assert d.count("M") == 3 and d.startswith("M2.0 ")  # three runs; the 40 ms one a dot
    assert " 2.0h0.01" in d  # the highest value is at the top (y = 2)
    assert "<path" not in sparkline([None, None], "t")


def now_of(
    i: int, status: Status | None, severity: Severity = Severity.HIGH, **kw: object
) -> EndpointNow:
    values: dict[str, object] = {
        "id": i, "name": f"ep-{i:03d}", "protocol": "tcp", "url": "tcp://h:1",
        "severity": severity, "tags": ("a",) if i % 2 else ("b",), "status": status,
        "since": z(2026, 3, 10) - timedelta(minutes=i), "last_check_at": None,
        "response_time_ms": None, "reason": None, "error": None, "outage_id": None,
        "outage_severity": None, "outage_started_at": None,
    }  # fmt: skip
    values.update(kw)
    return EndpointNow(**values)  # type: ignore[arg-type]


def test_groups_put_failing_first_most_severe_and_longest_failing_first():
    fleet = [now_of(i, Status.UP) for i in range(1, 8)]
    fleet += [
        now_of(10, Status.DOWN, Severity.LOW),
        now_of(11, Status.DOWN, Severity.CRITICAL),
        now_of(12, Status.DOWN, Severity.CRITICAL),  # down 1 min longer than 11
        now_of(13, None),  # never checked: shown with UNKNOWN
        now_of(14, Status.MAINTENANCE),
    ]
    board = build_board(fleet, Filters())
    assert [g.status for g in board.groups] == ["DOWN", "UNKNOWN", "MAINTENANCE", "UP"]
    assert [r.e.id for r in board.groups[0].rows] == [12, 11, 10]
    assert board.counts == {"DOWN": 3, "DEGRADED": 0, "UNKNOWN": 1, "MAINTENANCE": 1, "UP": 7}
    assert all(g.open for g in board.groups)
    tagged = build_board(fleet, Filters(tag="b"))
    assert sorted(board.rows_by_id) != sorted(tagged.rows_by_id)
    assert all("b" in r.e.tags for g in tagged.groups for r in g.rows)


def test_large_views_collapse_healthy_groups_and_page_through_one_group():
    fleet = [now_of(i, Status.UP) for i in range(1, 131)] + [now_of(200, Status.DOWN)]
    board = build_board(fleet, Filters(), per_page=50, open_limit=100)
    down, up = board.groups
    assert down.open and not up.open
    assert (up.total, len(up.rows), up.pages, up.more) == (130, 50, 3, 80)
    assert len(board.shown_ids) == 51
    third = build_board(fleet, Filters(status="UP", page=3), per_page=50, open_limit=100)
    (only,) = third.groups
    assert only.open and only.page == 3 and only.rows[0].e.name == "ep-101"
    assert len(only.rows) == 30
    beyond = build_board(fleet, Filters(status="UP", page=99), per_page=50)
    assert beyond.groups[0].page == 3
    assert Filters(tag="x y", status="UP", page=2).query(page=3) == "?tag=x+y&status=UP&page=3"
    assert Filters(tag="x").query(tag=None) == "?"
