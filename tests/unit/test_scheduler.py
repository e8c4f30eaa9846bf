"""The dispatcher on a real event loop with short intervals."""

from __future__ import annotations

import asyncio
import itertools

from availmon.model import ProbeResult, Reason, Status
from availmon.scheduler import CheckScheduler, _Plan, next_due, spread_offset


def test_spread_offsets_cover_the_interval_evenly():
    offsets = sorted(spread_offset(i, 10.0) for i in range(1, 10_001))
    assert offsets[0] >= 0 and offsets[-1] < 10.0
    # every 100 ms bucket gets close to its fair share of 100 starts
    buckets = [0] * 100
    for o in offsets:
        buckets[int(o * 10)] += 1
    assert min(buckets) >= 80 and max(buckets) <= 120


async def test_each_endpoint_runs_every_interval_in_its_own_phase():
    runs: dict[int, list[float]] = {1: [], 2: [], 3: []}
    loop = asyncio.get_running_loop()

    async def check(endpoint_id: int) -> ProbeResult:
        scheduler.check_started()  # as the monitor does when the first attempt starts
        runs[endpoint_id].append(loop.time())
        return ProbeResult(Status.UP, Reason.OK, 1.0)

    scheduler = CheckScheduler(check, tick_interval=0.05)
    for endpoint_id in runs:
        scheduler.schedule(endpoint_id, 0.2, 0.05)
    start = loop.time()
    scheduler.start()
    await asyncio.sleep(1.05)
    await scheduler.stop(1.0)
    for endpoint_id, times in runs.items():
        assert 5 <= len(times) <= 6, (endpoint_id, times)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(abs(g - 0.2) < 0.03 for g in gaps), gaps
        first = times[0] - start
        assert abs(first - spread_offset(endpoint_id, 0.2)) < 0.03
    assert max(scheduler.lags) < 0.03
    assert scheduler.skipped == 0


async def test_failed_check_is_rechecked_soon_then_phase_resumes():
    loop = asyncio.get_running_loop()
    times: list[float] = []

    async def check(endpoint_id: int) -> ProbeResult:
        times.append(loop.time())
        status = Status.DOWN if len(times) in (1, 2) else Status.UP
        return ProbeResult(status, Reason.REFUSED if status is Status.DOWN else Reason.OK)

    scheduler = CheckScheduler(check, tick_interval=0.05)
    scheduler.schedule(1, 0.5, 0.1, first_delay=0.0)
    scheduler.start()
    await asyncio.sleep(1.15)
    await scheduler.stop(1.0)
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(times)]
    # two failures: rechecks after 0.1 s each; then back on the 0.5 s grid (anchor + 0.5)
    assert abs(gaps[0] - 0.1) < 0.03 and abs(gaps[1] - 0.1) < 0.03, gaps
    assert abs(times[3] - times[0] - 0.5) < 0.03, gaps
    assert abs(times[4] - times[0] - 1.0) < 0.03, gaps


async def test_slow_check_is_never_run_twice_at_once():
    active = 0
    peak = 0
    count = 0

    async def check(endpoint_id: int) -> ProbeResult:
        nonlocal active, peak, count
        active += 1
        count += 1
        peak = max(peak, active)
        await asyncio.sleep(0.25)
        active -= 1
        return ProbeResult(Status.UP, Reason.OK)

    scheduler = CheckScheduler(check, tick_interval=0.02)
    scheduler.schedule(1, 0.1, 0.1, first_delay=0.0)
    scheduler.start()
    await asyncio.sleep(0.8)
    await scheduler.stop(1.0)
    assert peak == 1
    assert count in (3, 4)
    # each check that ran on missed the two slots that came meanwhile: counted, not dropped
    assert scheduler.skipped in (2 * (count - 1), 2 * count)


async def test_unschedule_and_stop_drain():
    started: list[int] = []

    async def check(endpoint_id: int) -> ProbeResult:
        started.append(endpoint_id)
        await asyncio.sleep(0.1)
        return ProbeResult(Status.UP, Reason.OK)

    scheduler = CheckScheduler(check, tick_interval=0.02)
    scheduler.schedule(1, 0.2, 0.2, first_delay=0.0)
    scheduler.schedule(2, 0.2, 0.2, first_delay=0.0)
    scheduler.unschedule(2)
    scheduler.start()
    await asyncio.sleep(0.05)
    cancelled = await scheduler.stop(1.0)
    assert cancelled == 0
    assert started == [1]
    assert scheduler.executed == 1


def test_the_next_slot_is_always_after_the_planned_one():
    plan = _Plan(interval=10.0, recheck=2.0, anchor=3.0, generation=1)
    planned = 3.0 + 4 * 10.0  # the 5th slot: 43 s
    # uvloop's cached millisecond clock: the check started, and ended, "before" its slot
    assert next_due(plan, now=planned - 0.0005, planned=planned, failed=False) == 53.0
    assert next_due(plan, now=planned + 0.004, planned=planned, failed=False) == 53.0
    # a check that overran its interval goes to the next slot after now, keeping the phase
    assert next_due(plan, now=planned + 12.5, planned=planned, failed=False) == 63.0
    # after a DOWN the recheck comes first, counted from the end of the check
    assert next_due(plan, now=planned + 0.5, planned=planned, failed=True) == planned + 2.5
    # float slots (0.1 s intervals): never the same slot twice
    fine = _Plan(interval=0.1, recheck=0.1, anchor=0.7, generation=1)
    slot = 0.7
    for _ in range(1000):
        after = next_due(fine, now=slot - 0.0009, planned=slot, failed=False)
        assert 0.099 < after - slot < 0.101
        slot = after


async def test_the_lag_counts_the_wait_for_a_full_concurrency_limit():
    limit = asyncio.Semaphore(1)  # one check at a time, as a full max_concurrency would

    async def check(endpoint_id: int) -> ProbeResult:
        async with limit:
            scheduler.check_started()
            await asyncio.sleep(0.15)
        return ProbeResult(Status.UP, Reason.OK, 1.0)

    scheduler = CheckScheduler(check, tick_interval=0.02)
    for endpoint_id in (1, 2, 3):  # all due at once
        scheduler.schedule(endpoint_id, 10.0, 10.0, first_delay=0.0)
    scheduler.start()
    await asyncio.sleep(0.6)
    await scheduler.stop(1.0)
    lags = sorted(scheduler.lags)
    assert len(lags) == 3
    assert lags[0] < 0.05  # the first ran at once
    assert 0.13 < lags[1] < 0.25 and 0.28 < lags[2] < 0.4, lags  # the others waited their turn


async def test_a_check_not_started_by_the_scheduler_adds_no_lag():
    async def check(endpoint_id: int) -> ProbeResult:
        return ProbeResult(Status.UP, Reason.OK, 1.0)

    scheduler = CheckScheduler(check, tick_interval=0.02)
    scheduler.start()
    scheduler.check_started()  # an API "check now" runs in the request's task
    await scheduler.stop(1.0)
    assert list(scheduler.lags) == []


async def test_recent_lags_hold_only_the_checks_started_within_the_window():
    async def check(endpoint_id: int) -> ProbeResult:
        scheduler.check_started()
        return ProbeResult(Status.UP, Reason.OK, 1.0)

    scheduler = CheckScheduler(check, tick_interval=0.02)
    scheduler.schedule(1, 0.05, 0.05, first_delay=0.0)
    scheduler.start()
    await asyncio.sleep(0.32)
    await scheduler.stop(1.0)
    everything = len(scheduler.lags)
    assert everything >= 5
    recent = scheduler.recent_lags(0.12)  # about the last two or three of them
    assert 1 <= len(recent) < everything
    assert recent == list(reversed(scheduler.lags))[: len(recent)]
    assert scheduler.recent_lags(10.0) == list(reversed(scheduler.lags))
