"""Check scheduling: the only module that imports APScheduler.

Layout, chosen by measurement (see README "Scheduling"): ONE APScheduler interval job, the
dispatcher, runs every `tick_interval` seconds; it takes the millisecond slots that fall due
before the next tick and arms one `loop.call_at` per slot, which starts every check due in that
millisecond. One interval job per endpoint costs more CPU per run and APScheduler drops runs as
"missed" when thousands fall due in the same instant; the dispatcher keeps millisecond
precision at any count. Slots, not a heap of checks with a timer each: uvloop's timers count
whole milliseconds anyway, and at 5,000 checks/s a heap pop and a timer per check were 6 % of
the daemon's CPU (measured); a check is filed with one dict lookup and one list append.

- First checks are spread across each endpoint's interval (a fixed golden-ratio offset by id),
  so 10,000 endpoints never fall due in the same instant, and the phase survives rechecks.
- One check per endpoint at a time: a check still running when the next falls due makes that
  slot "skipped" (counted), never a second concurrent check.
- After a failed (DOWN) check the next one comes after `recheck_interval` instead of a whole
  interval, so an outage is confirmed in seconds; afterwards the endpoint returns to its phase.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from availmon.logs import get_logger
from availmon.model import ProbeResult, Status

log = get_logger("availmon.scheduler")

_GOLDEN = (math.sqrt(5) - 1) / 2
LAG_SAMPLES = 10_000
# the planned start of the scheduled check running in this task (each check is its own task)
_PLANNED: ContextVar[float | None] = ContextVar("availmon_planned_start", default=None)


@dataclass
class _Plan:
    interval: float
    recheck: float
    anchor: float
    generation: int


def next_due(plan: _Plan, now: float, planned: float, failed: bool) -> float:
    """The next start after a check planned for `planned` ended (or was skipped) at `now`.

    The next slot of the endpoint's phase after both: uvloop's clock is cached per loop
    iteration in milliseconds, so a timer can fire, and a fast check end, with `now` a little
    before `planned`; counting slots from `now` alone then gave the same slot again, and the
    bench saw 35 % more TCP checks than due. After a DOWN, the recheck comes sooner."""
    reference = max(now, planned + plan.interval / 2)
    steps = math.floor((reference - plan.anchor) / plan.interval) + 1
    due = plan.anchor + max(steps, 1) * plan.interval
    if failed:
        due = min(due, now + plan.recheck)
    return due


def spread_offset(endpoint_id: int, interval: float) -> float:
    """A stable offset in [0, interval): consecutive ids land far apart (golden-ratio walk)."""
    return ((endpoint_id * _GOLDEN) % 1.0) * interval


class CheckScheduler:
    def __init__(
        self,
        run_check: Callable[[int], Awaitable[ProbeResult]],
        *,
        tick_interval: float = 0.5,
    ) -> None:
        self._run_check = run_check
        self._tick_interval = tick_interval
        self._plans: dict[int, _Plan] = {}
        # (due, generation, endpoint id) by millisecond slot: slots not yet armed, and slots
        # armed (a timer waits for them) to which a check can still be added
        self._slots: dict[int, list[tuple[float, int, int]]] = {}
        self._armed: dict[int, list[tuple[float, int, int]]] = {}
        self._next_slot: int | None = None  # the first slot the dispatcher has not armed yet
        # the in-flight check of each endpoint; a dict entry dropped by the check itself, not
        # a task set with a done callback (one loop callback more per check)
        self._running: dict[int, asyncio.Task[None]] = {}
        self._generation = 0
        self._stopping = False
        self._aps = AsyncIOScheduler(timezone="UTC")
        self._loop: asyncio.AbstractEventLoop | None = None
        self.lags: deque[float] = deque(maxlen=LAG_SAMPLES)
        self.lag_times: deque[float] = deque(maxlen=LAG_SAMPLES)  # loop time of each lag
        self.executed = 0
        self.skipped = 0

    # -- plan management -------------------------------------------------------------------
    def schedule(
        self,
        endpoint_id: int,
        check_interval: float,
        recheck_interval: float,
        first_delay: float | None = None,
    ) -> None:
        """Add or reschedule an endpoint; a changed endpoint gets a fresh slot."""
        now = self._now()
        self._generation += 1
        delay = spread_offset(endpoint_id, check_interval) if first_delay is None else first_delay
        plan = _Plan(check_interval, recheck_interval, now + delay, self._generation)
        self._plans[endpoint_id] = plan
        if endpoint_id not in self._running:
            self._file(plan.anchor, plan.generation, endpoint_id)

    def unschedule(self, endpoint_id: int) -> None:
        self._plans.pop(endpoint_id, None)

    def __contains__(self, endpoint_id: int) -> bool:
        return endpoint_id in self._plans

    @property
    def running(self) -> bool:
        return bool(self._aps.running) and not self._stopping

    @property
    def scheduled_count(self) -> int:
        return len(self._plans)

    def recent_lags(self, within_s: float) -> list[float]:
        """The schedule lags of the checks that started in the last `within_s` seconds."""
        if self._loop is None:
            return []
        since = self._loop.time() - within_s
        recent = []
        for started, lag in zip(reversed(self.lag_times), reversed(self.lags), strict=False):
            if started < since:
                break
            recent.append(lag)
        return recent

    def check_started(self) -> None:
        """The monitor calls this when a check's first attempt starts, past the concurrency
        limit and the endpoint's lock: the schedule lag is the time from the planned start to
        here, so checks waiting for a full `max_concurrency` show as lag, not as on time. A
        check not started by the scheduler (an API "check now") is not counted."""
        planned = _PLANNED.get()
        if planned is not None and self._loop is not None:
            now = self._loop.time()
            self.lags.append(now - planned)
            self.lag_times.append(now)  # floats: nothing for the cyclic collector to walk

    def add_job(self, func: Callable[..., Any], trigger: str, **kwargs: Any) -> None:
        """Housekeeping jobs (partition upkeep, ...) run on the same APScheduler."""
        self._aps.add_job(func, trigger, **kwargs)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._aps.add_job(
            self._dispatch,
            "interval",
            seconds=self._tick_interval,
            id="availmon-dispatch",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
        self._aps.start()
        # the first tick would come one interval late; dispatch what is due right away
        self._dispatch_sync()

    async def stop(self, drain_timeout: float) -> int:
        """Start no new check; wait up to `drain_timeout` for in-flight ones, cancel the rest.

        Returns the number of checks that had to be cancelled."""
        self._stopping = True
        if self._aps.running:
            self._aps.shutdown(wait=False)
        pending = set(self._running.values())
        if pending:
            _, still = await asyncio.wait(pending, timeout=drain_timeout)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=1.0)
            return len(still)
        return 0

    # -- dispatching -----------------------------------------------------------------------
    def _now(self) -> float:
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()

    async def _dispatch(self) -> None:
        self._dispatch_sync()

    def _dispatch_sync(self) -> None:
        if self._stopping:
            return
        loop = self._loop
        assert loop is not None
        # half a tick more than the next tick needs: a tick that runs a little late (its own
        # timer's jitter) finds the next slots armed already
        horizon = math.ceil((loop.time() + 1.5 * self._tick_interval) * 1000)
        first = self._next_slot
        if first is None:
            first = min(self._slots, default=horizon + 1)
        slots, armed = self._slots, self._armed
        for slot in range(first, horizon + 1):
            entries = slots.pop(slot, None)
            if entries is not None:
                armed[slot] = entries
                loop.call_at(slot / 1000, self._launch_slot, slot)
        self._next_slot = horizon + 1

    def _file(self, due: float, generation: int, endpoint_id: int) -> None:
        """File a check due at `due` in its millisecond slot (never early: rounded up)."""
        slot = math.ceil(due * 1000)
        entry = (due, generation, endpoint_id)
        next_slot = self._next_slot
        if next_slot is None or slot >= next_slot:
            entries = self._slots.get(slot)
            if entries is None:
                self._slots[slot] = [entry]
            else:
                entries.append(entry)
            return
        entries = self._armed.get(slot)  # in the range the dispatcher has armed already
        if entries is not None:
            entries.append(entry)
        else:
            self._armed[slot] = [entry]
            assert self._loop is not None
            self._loop.call_at(slot / 1000, self._launch_slot, slot)

    def _launch_slot(self, slot: int) -> None:
        for due, generation, endpoint_id in self._armed.pop(slot, ()):
            self._launch(endpoint_id, generation, due)

    def _launch(self, endpoint_id: int, generation: int, planned: float) -> None:
        plan = self._plans.get(endpoint_id)
        if self._stopping or plan is None or plan.generation != generation:
            return
        assert self._loop is not None
        if endpoint_id in self._running:
            self.skipped += 1
            self._push_next(endpoint_id, plan, planned, failed=False)
            return
        self._running[endpoint_id] = self._loop.create_task(self._run(endpoint_id, planned))

    async def _run(self, endpoint_id: int, planned: float) -> None:
        _PLANNED.set(planned)  # this task's own context: read by check_started()
        failed = False
        try:
            result = await self._run_check(endpoint_id)
            failed = result.status is Status.DOWN
            self.executed += 1
        except asyncio.CancelledError:
            raise
        except KeyError:
            return  # endpoint removed while its check was due
        except Exception:
            log.exception("check_crashed", endpoint_id=endpoint_id)
        finally:
            del self._running[endpoint_id]
        plan = self._plans.get(endpoint_id)
        if plan is not None and not self._stopping:
            self._push_next(endpoint_id, plan, planned, failed)

    def _push_next(self, endpoint_id: int, plan: _Plan, planned: float, failed: bool) -> None:
        now = self._now()
        # the endpoint's slots that came while this check ran (or waited for its turn): none
        # is run late, and each is counted as skipped
        self.skipped += max(0, math.floor((now - planned) / plan.interval))
        due = next_due(plan, now, planned, failed)
        self._file(due, plan.generation, endpoint_id)
