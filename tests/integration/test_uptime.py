"""Uptime: figures from rollups match a hand-computed timeline, rollups match the raw rows
after a crash and replay, and 90 days read fast."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from availmon.app import build_daemon
from availmon.errors import StorageError
from availmon.model import Reason, Severity, Status, StatusRow
from availmon.store import Repository
from availmon.store.rollups import UptimeReader, UptimeRollups
from availmon.uptime import Totals, coverage, floor_hour

from .test_daemon import db_rows
from .test_outages import call, settings

U, D, G, M, N = Status.UP, Status.DOWN, Status.DEGRADED, Status.MAINTENANCE, Status.UNKNOWN
CAP = timedelta(seconds=20)  # check_interval 10 s


def timeline() -> list[tuple[int, Status]]:
    """(second, status) of one endpoint checked every 10 s for 3 hours (see the test)."""
    rows: list[tuple[int, Status]] = []

    def every(start: int, stop: int, status: Status) -> None:
        rows.extend((t, status) for t in range(start, stop, 10))

    every(0, 600, U)
    every(600, 620, D)  # a blip: two DOWN checks, fewer than failure_threshold (3)
    every(620, 1800, U)
    every(1800, 2400, G)  # a DEGRADED run: a low outage [1800, 2400), but DEGRADED is up
    every(2400, 3000, U)
    every(3000, 4800, D)  # outage [3000, 7800): DOWN ...
    every(4800, 5400, M)  # ... through a maintenance window (raw DOWN) ...
    every(5400, 7800, D)  # ... and DOWN again until the recovery at 7800
    every(7800, 9000, U)  # last check at 8990, then the daemon is down until 9600
    every(9600, 9610, N)  # one UNKNOWN check (overloaded, say)
    every(9610, 10800, U)
    return rows


def status_rows(endpoint_id: int, t0: datetime) -> list[StatusRow]:
    return [
        StatusRow(
            endpoint_id,
            t0 + timedelta(seconds=t),
            status,
            Reason.OK if status is U else Reason.TIMEOUT,
            None,
            None,
            1,
            {"raw_status": "DOWN"} if status is M else {},
        )
        for t, status in timeline()
    ]


async def test_uptime_matches_a_hand_computed_timeline(pg_dsn: str):
    t0 = floor_hour(datetime.now(UTC)) - timedelta(hours=4)
    ledger = {"name": "ledger", "url": "tcp://127.0.0.1:9", "check_interval": 10, "timeout": 1,
              "is_active": False}  # fmt: skip
    async with build_daemon(settings(pg_dsn, [ledger])) as daemon:
        endpoint_id = (await daemon.availability.list_endpoints())[0].id
        for row in status_rows(endpoint_id, t0):
            assert daemon.writer.submit(row)
        await daemon.writer.flush()
        assert daemon.rollups is not None
        await daemon.rollups.flush()
        repo = daemon.repo
        low = await repo.open_outage(
            endpoint_id, Severity.LOW, t0 + timedelta(seconds=1800), t0 + timedelta(seconds=1820)
        )
        await repo.close_outage(low.id, t0 + timedelta(seconds=2400))
        high = await repo.open_outage(
            endpoint_id, Severity.HIGH, t0 + timedelta(seconds=3000), t0 + timedelta(seconds=3020)
        )
        await repo.close_outage(high.id, t0 + timedelta(seconds=7800))

        def q(a: int, b: int) -> str:
            lo = (t0 + timedelta(seconds=a)).isoformat().replace("+00:00", "Z")
            hi = (t0 + timedelta(seconds=b)).isoformat().replace("+00:00", "Z")
            return f"/api/v1/endpoints/{endpoint_id}/uptime?from={lo}&to={hi}"

        status, whole = await call(daemon, "GET", q(0, 10800))  # three whole hours: rollups
        assert status == 200, whole
        status, inner = await call(daemon, "GET", q(300, 10500))  # partial hours at both ends
        assert status == 200, inner
        for bad, field in [
            ("?window=5h", "window"),
            (f"?window=24h&from={t0.isoformat().replace('+00:00', 'Z')}", "window"),
            ("?to=2026-01-01T00:00:00Z", "from"),
            ("?from=2030-01-01T00:00:00Z", "from"),
        ]:
            status, body = await call(daemon, "GET", f"/api/v1/endpoints/{endpoint_id}/uptime{bad}")
            assert status == 422 and body["error"]["fields"][0]["field"] == field, (bad, body)
        status, day = await call(daemon, "GET", f"/api/v1/endpoints/{endpoint_id}/uptime")
        assert status == 200 and day["window_s"] == pytest.approx(86400, abs=1)
    # By hand, window [0, 10800) s; each check covers until the next one, at most 20 s:
    #   up        [0,600) 600 + [620,1800) 1180 + [2400,3000) 600 + [7800,9010) 1210
    #             + [9610,10800) 1190                                    = 4780
    #   degraded  [1800,2400)                                              =  600 (counts as up)
    #   down      blip [600,620) 20 + outage [3000,4800) 1800 + [5400,7800) 2400 = 4220
    #   maintenance [4800,5400)                                            =  600 (excluded)
    #   unobserved  daemon down [9010,9600) 590 + UNKNOWN [9600,9610) 10  =  600
    # downtime = DOWN time inside confirmed outages = 4200 (the 20 s blip was "pending":
    # counting it, as a peer does, would give 4220); availability = 1 - 4200 / 9600.
    assert whole["window_s"] == 10800
    assert (whole["up_s"], whole["degraded_s"], whole["maintenance_s"]) == (4780, 600, 600)
    assert (whole["downtime_s"], whole["unconfirmed_down_s"]) == (4200, 20)
    assert (whole["unobserved_s"], whole["unknown_s"]) == (600, 10)
    assert whole["observed_s"] == 4780 + 600 + 4220 + 600
    assert whole["availability"] == 1 - 4200 / 9600 == 0.5625
    assert whole["availability"] != 1 - 4220 / 9600  # what counting pending time would give
    assert whole["checks"] == len(timeline())
    assert whole["outage_count"] == 2 and whole["outages_by_severity"] == {"low": 1, "high": 1}
    assert whole["mttr_s"] == (600 + 4800) / 2
    # [300, 10500): up loses [0,300) and [10500,10800): 4780 - 600 = 4180
    assert (inner["up_s"], inner["degraded_s"], inner["maintenance_s"]) == (4180, 600, 600)
    assert (inner["downtime_s"], inner["unobserved_s"]) == (4200, 600)
    assert inner["availability"] == pytest.approx(1 - 4200 / (4180 + 600 + 4220))
    hours = await db_rows(
        pg_dsn,
        "SELECT hour, up_us, down_us, maintenance_us FROM uptime_hourly ORDER BY hour",
    )
    second_hour = next(h for h in hours if h["hour"] == t0 + timedelta(hours=1))
    assert (second_hour["down_us"], second_hour["maintenance_us"]) == (3000 * 10**6, 600 * 10**6)


async def test_rollups_equal_the_raw_rows_after_a_crash_and_replay(repo: Repository):
    endpoint_id = await _endpoint(repo, "r")
    rows = random_rows(endpoint_id, seed=4, hours=5)  # irregular, with daemon-down gaps
    t0, rng = rows[0].checked_at, random.Random(4)
    await repo.write_statuses(rows)
    first = UptimeRollups(repo.pool, lambda _: CAP)
    await first.start()
    cut = len(rows) * 2 // 3
    for i in range(0, cut, 97):
        first.on_commit(rows[i : min(i + 97, cut)])
    await first.flush()
    await first.stop()
    # "crash": the last third was committed to statuses but never rolled up
    second = UptimeRollups(repo.pool, lambda _: CAP)
    await second.start()  # replays rows after the stored cursor
    second.on_commit(rows[cut - 5 :])  # and rows it has already seen are skipped
    await second.flush()
    await second.stop()
    reader = UptimeReader(repo)
    raw = [(r.checked_at, r.status) for r in rows]
    for _ in range(25):
        a = rng.uniform(0, 5 * 3600)
        b = rng.uniform(a, 5 * 3600 + 100)
        start, end = t0 + timedelta(seconds=a), t0 + timedelta(seconds=b)
        assert await reader.covered(endpoint_id, start, end, CAP) == coverage(raw, CAP, start, end)


async def test_ninety_days_of_rollups_read_in_milliseconds(repo: Repository):
    from availmon.specs import ENDPOINT_ADAPTER

    spec = {"name": "busy", "url": "tcp://127.0.0.1:9", "check_interval": 10, "timeout": 1}
    endpoint = await repo.create_endpoint(ENDPOINT_ADAPTER.validate_python(spec))
    end = floor_hour(datetime.now(UTC))
    start = end - timedelta(days=90)
    await repo.pool.execute(
        "INSERT INTO uptime_hourly (endpoint_id, hour, up_us, down_us, checks) "
        "SELECT $1, h, 3590000000, 10000000, 360 FROM generate_series($2::timestamptz, "
        "$3::timestamptz - interval '1 hour', interval '1 hour') AS h",
        endpoint.id,
        start,
        end,
    )
    for day in range(0, 90, 3):  # 30 outages, each 10 minutes starting mid-hour
        began = start + timedelta(days=day, hours=5, minutes=25)
        outage = await repo.open_outage(endpoint.id, Severity.HIGH, began, began)
        await repo.close_outage(outage.id, began + timedelta(minutes=10))
    reader = UptimeReader(repo)
    await reader.uptime(endpoint.id, start, end, CAP)  # warm the pool and plans
    began = time.perf_counter()
    report = await reader.uptime(endpoint.id, start, end, CAP)
    elapsed = time.perf_counter() - began
    assert report.totals.checks == 90 * 24 * 360
    assert report.outage_count == 30
    assert elapsed < 1.0, elapsed  # ~20-60 ms measured on the development machine


def random_rows(endpoint_id: int, seed: int, hours: float = 3) -> list[StatusRow]:
    rng = random.Random(seed)
    t0 = floor_hour(datetime.now(UTC)) - timedelta(hours=hours + 1)
    t, rows = 0.0, []
    while t < hours * 3600:
        rows.append(
            StatusRow(endpoint_id, t0 + timedelta(seconds=t), rng.choice([U, U, D, G, M, N]),
                      Reason.OK, None, None, 1, {})
        )  # fmt: skip
        t += rng.choice([3.5, 10, 10, 10, 17, 45, 600])
    return rows


async def _endpoint(repo: Repository, name: str) -> int:
    from availmon.specs import ENDPOINT_ADAPTER

    spec = {"name": name, "url": "tcp://127.0.0.1:9", "check_interval": 10, "timeout": 1}
    return (await repo.create_endpoint(ENDPOINT_ADAPTER.validate_python(spec))).id


async def _until(predicate, what: str) -> None:
    import asyncio

    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.asynccontextmanager
async def lazy_rollups(repo: Repository) -> AsyncIterator[UptimeRollups]:
    """Rollups that write only when flushed within a test (their write interval is an hour)."""
    rollups = UptimeRollups(repo.pool, lambda _: CAP, write_interval=3600)
    await rollups.start()
    try:
        yield rollups
    finally:
        await rollups.stop()


async def fold_now(rollups: UptimeRollups, rows: list[StatusRow]) -> None:
    """Hand the rows over as committed and wait until they are folded (in memory)."""
    target = rollups.applied + len(rows)
    rollups.on_commit(rows)
    await _until(lambda: rollups.applied == target, "the rows to be folded")


async def test_uptime_counts_what_is_folded_and_not_yet_written_exactly_once(repo: Repository):
    """Rollups are written every write_interval; until then readers add the folded part, and
    reads racing a write neither miss it nor count it twice."""
    import asyncio

    endpoint_id = await _endpoint(repo, "folded")
    rows = random_rows(endpoint_id, seed=7)
    await repo.write_statuses(rows)
    async with lazy_rollups(repo) as rollups:
        await fold_now(rollups, rows)
        assert await repo.pool.fetchval("SELECT count(*) FROM uptime_hourly") == 0  # not yet
        reader = UptimeReader(repo, rollups)
        raw = [(r.checked_at, r.status) for r in rows]
        start, end = rows[0].checked_at - timedelta(minutes=7), rows[-1].checked_at + CAP
        expected = coverage(raw, CAP, start, end)
        assert await reader.covered(endpoint_id, start, end, CAP) == expected
        assert await UptimeReader(repo).covered(endpoint_id, start, end, CAP) != expected

        reads = [reader.covered(endpoint_id, start, end, CAP) for _ in range(30)]
        results = await asyncio.gather(rollups.flush(), *reads)  # the write and reads interleave
        assert all(r == expected for r in results[1:])
        assert await repo.pool.fetchval("SELECT count(*) FROM uptime_hourly") > 0
        assert rollups.unwritten_totals(endpoint_id, start, end) == Totals()
        assert await UptimeReader(repo).covered(endpoint_id, start, end, CAP) == expected


async def test_a_failed_rollup_write_is_kept_and_written_later(repo: Repository):
    endpoint_id = await _endpoint(repo, "kept")
    rows = random_rows(endpoint_id, seed=11)
    await repo.write_statuses(rows)
    async with lazy_rollups(repo) as rollups:
        half = len(rows) // 2
        await fold_now(rollups, rows[:half])
        await repo.pool.execute("ALTER TABLE uptime_hourly RENAME TO uptime_hourly_away")
        try:
            with pytest.raises(StorageError):
                await rollups.flush()
        finally:
            await repo.pool.execute("ALTER TABLE uptime_hourly_away RENAME TO uptime_hourly")
        rollups.on_commit(rows[half:])  # folded on top of what the failed write gave back
        await rollups.flush()
    raw = [(r.checked_at, r.status) for r in rows]
    start, end = (
        floor_hour(rows[0].checked_at),
        floor_hour(rows[-1].checked_at) + timedelta(hours=1),
    )
    stored = await UptimeReader(repo).hourly_totals(endpoint_id, start, end)
    assert stored == coverage(raw, CAP, start, end)


async def test_the_status_page_days_add_the_unwritten_rollups(repo: Repository):
    from availmon.charts import ChartService

    endpoint_id = await _endpoint(repo, "days")
    rows = random_rows(endpoint_id, seed=5, hours=30)  # across a UTC midnight
    await repo.write_statuses(rows)
    async with lazy_rollups(repo) as rollups:
        await fold_now(rollups, rows)
        charts = ChartService(repo, rollups=rollups)
        first = floor_hour(rows[0].checked_at) - timedelta(days=1)
        end = floor_hour(rows[-1].checked_at) + timedelta(days=1)
        before = await charts._daily_totals([endpoint_id], first, end)  # nothing written yet
        assert (await repo.daily_totals([endpoint_id], first, end))[endpoint_id] == {}
        await rollups.flush()
        stored = await repo.daily_totals([endpoint_id], first, end)
    assert len(stored[endpoint_id]) >= 2
    assert before == stored
    assert sum(t.checks for t in stored[endpoint_id].values()) == len(rows)
