"""Shared-timer deadlines (availmon.deadline): asyncio.timeout_at's semantics, one timer."""

from __future__ import annotations

import asyncio

import pytest

from availmon.deadline import SLOT_S, Deadlines


async def test_an_overrunning_block_raises_timeout_error_never_early_at_most_a_slot_late() -> None:
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    when = loop.time() + 0.05
    with pytest.raises(TimeoutError), deadlines.at(when):
        await asyncio.sleep(5)
    ended = loop.time()
    assert when <= ended < when + SLOT_S + 0.02  # 20 ms for a busy CI loop


async def test_a_block_that_ends_in_time_is_not_cancelled_later() -> None:
    deadlines = Deadlines()
    with deadlines.after(0.02) as deadline:
        await asyncio.sleep(0)
        assert deadlines.pending == 1
    assert deadline.done and not deadline.expired
    assert deadlines.pending == 0  # taken out of its slot at exit, not held until its time
    await asyncio.sleep(0.05)  # its slot comes round: the entry is dropped, nothing cancelled
    assert not deadline.expired
    assert deadlines.pending == 0
    assert asyncio.current_task() is not None
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    deadlines = Deadlines()

    async def guarded() -> None:
        with deadlines.after(5):
            await asyncio.sleep(5)

    task = asyncio.get_running_loop().create_task(guarded())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_nested_deadlines_the_inner_fires_first_and_the_outer_stays() -> None:
    deadlines = Deadlines()
    inner_fired = False
    with deadlines.after(1.0) as outer:
        try:
            with deadlines.after(0.03):
                await asyncio.sleep(5)
        except TimeoutError:
            inner_fired = True
        await asyncio.sleep(0)
    assert inner_fired
    assert not outer.expired


async def test_an_earlier_deadline_filed_after_a_later_one_rearms_the_timer() -> None:
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    fired: list[str] = []

    async def wait(name: str, seconds: float) -> None:
        try:
            with deadlines.after(seconds):
                await asyncio.sleep(5)
        except TimeoutError:
            fired.append(name)

    late = loop.create_task(wait("late", 0.3))
    await asyncio.sleep(0)
    started = loop.time()
    early = loop.create_task(wait("early", 0.03))
    await early
    assert fired == ["early"]
    assert loop.time() - started < 0.2
    await late
    assert fired == ["early", "late"]


async def test_thousands_of_deadlines_each_fires_once_and_only_the_overrunning_ones() -> None:
    deadlines = Deadlines()
    outcomes: dict[int, str] = {}

    async def run(index: int) -> None:
        try:
            with deadlines.after(0.2 + (index % 7) * 0.01):
                await asyncio.sleep(0.001 if index % 2 else 5)
            outcomes[index] = "done"
        except TimeoutError:
            outcomes[index] = "timeout"

    await asyncio.gather(*(run(i) for i in range(2000)))
    assert sorted(i for i, outcome in outcomes.items() if outcome == "timeout") == list(
        range(0, 2000, 2)
    )
    await asyncio.sleep(0.3)  # past every slot
    assert deadlines.pending == 0


async def test_a_deadline_already_past_fires_at_the_first_await() -> None:
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError), deadlines.at(loop.time() - 1):
        await asyncio.sleep(1)


async def test_a_deadline_outside_a_task_is_a_programming_error() -> None:
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    raised: asyncio.Future[BaseException] = loop.create_future()

    def in_a_callback() -> None:  # a loop callback runs in no task
        try:
            deadlines.at(0).__enter__()
        except RuntimeError as exc:
            raised.set_result(exc)

    loop.call_soon(in_a_callback)
    assert "inside a task" in str(await raised)


def test_deadlines_outlive_a_closed_loop_and_serve_the_next_one() -> None:
    deadlines = Deadlines()

    async def overrun(seconds: float) -> bool:
        try:
            with deadlines.after(seconds):
                await asyncio.sleep(5)
        except TimeoutError:
            return True
        return False

    async def abandon() -> None:  # a loop closed while a deadline was still pending
        task = asyncio.get_running_loop().create_task(overrun(0.05))
        await asyncio.sleep(0.01)
        task.cancel()  # its slot's timer is armed and never runs: the loop closes first

    first = asyncio.new_event_loop()
    first.run_until_complete(abandon())
    first.close()
    second = asyncio.new_event_loop()
    try:
        assert second.run_until_complete(asyncio.wait_for(overrun(0.2), 2)) is True
    finally:
        second.close()
