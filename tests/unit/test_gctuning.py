"""The collector's settings for a long-lived daemon (availmon.gctuning)."""

from __future__ import annotations

import asyncio
import gc
from contextlib import AsyncExitStack

from availmon.gctuning import GC_THRESHOLDS, freeze_startup_objects, settle_after


def _collected_generations_hold(obj: object) -> bool:
    return any(o is obj for o in gc.get_objects())  # every generation but the frozen one


async def test_settling_freezes_what_the_first_round_kept_without_a_pass() -> None:
    before = gc.get_threshold()
    passes: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            passes.append(info["generation"])

    async with AsyncExitStack() as stack:
        startup = freeze_startup_objects(stack)
        assert startup > 0 and gc.get_threshold() == GC_THRESHOLDS
        kept = [[i] for i in range(1000)]  # built after the freeze, alive for good (probes)
        assert _collected_generations_hold(kept[0])
        frozen: list[int] = []
        gc.callbacks.append(count)
        try:
            settle_after(stack, 0.02, frozen.append)
            await asyncio.sleep(0.2)
        finally:
            gc.callbacks.remove(count)
        assert len(frozen) == 1 and frozen[0] >= startup + len(kept)
        assert not _collected_generations_hold(kept[0])
        assert passes == []  # the freeze moved them: no collection held the loop
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == before


async def test_a_daemon_stopped_before_settling_does_not_settle_later() -> None:
    frozen: list[int] = []
    async with AsyncExitStack() as stack:
        freeze_startup_objects(stack)
        settle_after(stack, 0.05, frozen.append)
    await asyncio.sleep(0.1)
    assert frozen == [] and gc.get_freeze_count() == 0
