"""The cyclic garbage collector, set for a daemon whose objects nearly all live long.

A monitoring daemon builds its world at start-up (specs, probes, SSL contexts, state machines:
millions of objects at 10,000 endpoints) and then, check after check, objects that reference
counting frees: a steady run makes next to no cyclic garbage (measured at 5,000 TCP checks a
second: 0-33 objects found per young pass). The collector's passes still walk every tracked
object that is not frozen, and each pass stalls the loop for its whole length, so what it walks
is kept small.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from contextlib import AsyncExitStack

from availmon.logs import get_logger

log = get_logger("availmon.gc")

# Young collections every 700 net allocations promoted the objects of in-flight checks into the
# older generations, whose passes then came every few seconds: measured (10,000 HTTP endpoints)
# 9.7 s of pauses in 50 s at the default (700, 10, 10), 0.8-1.4 s at 20,000 to 100,000.
# Objects freed by reference counting never count toward the threshold.
GC_THRESHOLDS = (50_000, 20, 20)
# after the longest check interval every endpoint has run once, plus this for stragglers
SETTLE_MARGIN_S = 1.0


def freeze_startup_objects(stack: AsyncExitStack) -> int:
    """Keep what start-up built out of the collector's passes. Measured at 10,000 HTTP
    endpoints before this: full collections paused the loop up to 1.3 s each, 17 s in a 50 s
    run, and every timing measured across them was false. Unfrozen at stop, so a process that
    builds daemons again (the tests) can still free them. Returns the frozen count."""
    gc.collect()
    gc.freeze()
    stack.callback(gc.unfreeze)
    before = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    stack.callback(gc.set_threshold, *before)
    return gc.get_freeze_count()


def settle_after(stack: AsyncExitStack, delay_s: float, on_frozen: Callable[[int], None]) -> None:
    """Once every endpoint has run a check, freeze again what the first round built for good.

    Probes and their bound loggers are built at an endpoint's first check, not at start-up (a
    start-up with 10,000 endpoints need not wait for them), so they were born after the freeze:
    at 50,000 TCP endpoints 500,000 objects (probes, loggers, per-endpoint rollup marks) that
    every older-generation pass walked, 0.56 s a pass. No collection first: nearly every young
    object then is one of those, so that pass alone held the loop ~450 ms at 50,000, with
    checks running. What cyclic garbage exists at that instant (a steady run makes a few dozen
    objects between passes, measured) is frozen with them, once."""
    loop = asyncio.get_running_loop()

    def settle() -> None:
        gc.freeze()  # moves the generations' lists: no pass, no pause
        frozen = gc.get_freeze_count()
        log.info("gc_settled", frozen_objects=frozen)
        on_frozen(frozen)

    handle = loop.call_later(delay_s, settle)
    stack.callback(handle.cancel)
