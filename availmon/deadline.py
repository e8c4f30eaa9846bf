"""Deadlines for checks that share one loop timer: `with deadlines.at(when): ...`.

Why not `asyncio.timeout_at()`: it arms and cancels a loop timer of its own for every use and
keeps its state in Python, 9-12 us a use on uvloop (measured on the 2-core bench host); a
check used two (the runner's and the probe's), about 0.1 core at 5,000 checks a second.

Here every deadline is filed in a SLOT_S (1 ms) slot and one timer serves the earliest slot that
still holds a pending one. A block that ends in time takes its entry out of its slot, so a
finished check's deadline is freed at once rather than held until its time (held, they were
two objects per check for the cyclic collector to walk: 50,000 of them in each young pass at
5,000 checks a second). When the timer runs, slots left empty are dropped without waiting for
their time, so the timer runs about once per timeout rather than once per slot (checks end long
before their deadlines). A deadline fires within about a millisecond after its time (uvloop's
timers count whole milliseconds anyway), never early: as precise as asyncio's own timers on
uvloop.

The semantics are those of `asyncio.timeout_at()`: when the deadline passes the task is
cancelled and the block raises TimeoutError; a cancellation from outside stays a CancelledError
(the task's cancelling() count tells the two apart, as asyncio's does). Imports nothing of ours.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from types import TracebackType

SLOT_S = 0.001


class Deadlines:
    """The deadlines of one event loop (bound on first use)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: dict[int, set[Deadline]] = {}
        self._order: list[int] = []  # heap of the slot numbers in _slots
        self._timer: asyncio.TimerHandle | None = None
        self._timer_slot: int | None = None

    def at(self, when: float) -> Deadline:
        """A deadline at loop time `when`, for one `with` block in a task."""
        return Deadline(self, when)

    def after(self, seconds: float) -> Deadline:
        return Deadline(self, self.loop.time() + seconds)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        # asyncio.get_running_loop() costs a getpid() on 3.11: once, not per deadline
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = asyncio.get_running_loop()
            if self._loop is not None:  # the old loop's entries and timer died with it
                self._slots, self._order = {}, []
                self._timer = self._timer_slot = None
            self._loop = loop
        return loop

    @property
    def pending(self) -> int:
        """Deadlines filed whose blocks are still running: for tests and metrics."""
        return sum(len(entries) for entries in self._slots.values())

    def _file(self, entry: Deadline) -> None:
        slot = entry.slot = math.ceil(entry.when / SLOT_S)
        entries = self._slots.get(slot)
        if entries is not None:
            entries.add(entry)
            return
        self._slots[slot] = {entry}
        heapq.heappush(self._order, slot)
        if self._timer_slot is None or slot < self._timer_slot:
            self._arm(slot)

    def _arm(self, slot: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_slot = slot
        self._timer = self.loop.call_at(slot * SLOT_S, self._fire)

    def _fire(self) -> None:
        self._timer = self._timer_slot = None
        now = self.loop.time()
        order, slots = self._order, self._slots
        late: list[Deadline] = []
        while order and order[0] * SLOT_S <= now:
            for entry in slots.pop(heapq.heappop(order)):
                if entry.when > now:  # float rounding of the slot: never early
                    late.append(entry)
                else:
                    entry.expire()
        while order and not slots[order[0]]:
            del slots[heapq.heappop(order)]  # nothing left to time out there
        for entry in late:
            self._file(entry)
        # uvloop's clock counts whole ms, so a timer can run just before its slot: armed again
        if order and self._timer_slot is None:
            self._arm(order[0])


class Deadline:
    """One deadline; a context manager for one block, like asyncio.timeout_at()'s."""

    __slots__ = ("_cancelling", "_deadlines", "_task", "done", "expired", "slot", "when")

    def __init__(self, deadlines: Deadlines, when: float) -> None:
        self._deadlines = deadlines
        self.when = when
        self.slot = 0  # set when filed
        self.done = False
        self.expired = False
        self._task: asyncio.Task[object] | None = None
        self._cancelling = 0

    def __enter__(self) -> Deadline:
        task = asyncio.current_task(self._deadlines.loop)  # with a loop given: no getpid()
        if task is None:
            raise RuntimeError("a deadline must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._deadlines._file(self)
        return self

    def expire(self) -> None:
        assert self._task is not None
        self.expired = True
        self._task.cancel()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.done = True
        task, self._task = self._task, None
        if not self.expired:
            entries = self._deadlines._slots.get(self.slot)
            if entries is not None:  # None: its slot's timer ran (this exit is that timeout's)
                entries.discard(self)
        if (
            self.expired
            and task is not None
            and task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc
