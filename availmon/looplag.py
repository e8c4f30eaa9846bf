"""Event-loop lag: how late the loop runs what it was asked to run.

When the process is saturated, every timing it measures is inflated: a probe that waited
200 ms for the loop reports 200 ms of "response time", and a timeout can fire because the loop,
not the target, was slow. The monitor wakes every INTERVAL_S and adds any lateness beyond
TOLERANCE_S to a running total of stalled time; a check compares the total before and after
itself to learn how much of its own duration the loop was stalled.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import deque
from typing import Any

from availmon.logs import get_logger

log = get_logger("availmon.looplag")

INTERVAL_S = 0.05
TOLERANCE_S = 0.005
OVERLOAD_LAG_S = 0.1  # a single wake-up this late means timings can't be trusted


class LoopLagMonitor:
    def __init__(self) -> None:
        self.stalled_total = 0.0
        self.recent: deque[float] = deque(maxlen=200)  # last ~10 s of lateness, seconds
        self.overloaded = False
        self.episodes = 0
        self._task: asyncio.Task[None] | None = None
        self.gc = GcPauses()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="looplag")
            self.gc.install()

    async def stop(self) -> None:
        self.gc.uninstall()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    @property
    def max_recent_ms(self) -> float:
        return round(max(self.recent, default=0.0) * 1000, 1)

    def record(self, lateness: float) -> None:
        self.recent.append(lateness)
        if lateness > TOLERANCE_S:
            self.stalled_total += lateness - TOLERANCE_S
        overloaded = max(self.recent) > OVERLOAD_LAG_S
        if overloaded and not self.overloaded:
            self.episodes += 1
            log.warning("event_loop_overloaded", lag_ms=round(lateness * 1000, 1))
        elif self.overloaded and not overloaded:
            log.info("event_loop_recovered")
        self.overloaded = overloaded

    async def _run(self) -> None:
        while True:
            planned = time.perf_counter() + INTERVAL_S
            await asyncio.sleep(INTERVAL_S)
            self.record(max(0.0, time.perf_counter() - planned))


class GcPauses:
    """The cyclic garbage collector's pauses: each one stalls the loop for its whole length."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.total_s = 0.0
        self.max_s = 0.0
        self.frozen_objects = 0  # set by whoever froze them: counting walks the whole list
        self._started = 0.0

    def set_frozen(self, count: int) -> None:
        self.frozen_objects = count

    def install(self) -> None:
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def uninstall(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        self.collections[info["generation"]] += 1
        self.total_s += pause
        self.max_s = max(self.max_s, pause)

    def facts(self) -> dict[str, Any]:
        return {
            "collections": list(self.collections),
            "pause_total_s": round(self.total_s, 3),
            "pause_max_ms": round(self.max_s * 1000, 1),
            "frozen_objects": self.frozen_objects,
        }
