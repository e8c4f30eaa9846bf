"""Run `availmon` with a watchdog thread that records what the event loop was doing when it stalled.

    python bench/stalltrace.py OUT.json --config F run

A sampling profiler (py-spy) tells where CPU goes on average; it cannot tell which code held the
loop for 150 ms in one go, which is what inflates the API's tail and the schedule lag. The
watchdog posts a no-op to the loop every POST_S; when one waits longer than STALL_S it samples
the main thread's stack every SAMPLE_S until the loop runs it, and keeps those samples with the
stall's length. At exit OUT.json holds the stalls, longest first, each with its most frequent
stacks, and the functions seen across all stall samples, inclusive.

Blind spot: the watchdog needs the GIL, so a stall in C code that holds it (the cyclic garbage
collector, above all) shows as a stall with no samples; `gc.callbacks` tells those apart.
"""

from __future__ import annotations

import atexit
import collections
import json
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

POST_S = 0.005
STALL_S = 0.04  # a posted no-op this late starts a stall
SAMPLE_S = 0.002
KEEP_FRAMES = 14


def _stack(frame: FrameType | None) -> tuple[str, ...]:
    frames = []
    while frame is not None:
        code = frame.f_code
        frames.append(f"{Path(code.co_filename).name}:{frame.f_lineno} {code.co_name}")
        frame = frame.f_back
    return tuple(frames[:KEEP_FRAMES])  # innermost first


class Watchdog:
    def __init__(self, main_id: int) -> None:
        self.main_id = main_id
        self.loop: Any = None
        self.stalls: list[dict[str, Any]] = []
        self.inclusive: collections.Counter[str] = collections.Counter()
        self.samples = 0
        self._ran = threading.Event()

    def _mark(self) -> None:
        self._ran.set()

    def run(self) -> None:
        while True:
            loop = self.loop
            if loop is None or loop.is_closed():
                time.sleep(0.05)
                continue
            self._ran.clear()
            posted = time.perf_counter()
            try:
                loop.call_soon_threadsafe(self._mark)
            except RuntimeError:  # closed between the check and the call
                continue
            if not self._ran.wait(STALL_S):
                self._sample_until_ran(posted)
            time.sleep(POST_S)

    def _sample_until_ran(self, posted: float) -> None:
        stacks: collections.Counter[tuple[str, ...]] = collections.Counter()
        while not self._ran.wait(SAMPLE_S):
            frame = sys._current_frames().get(self.main_id)
            stack = _stack(frame)
            stacks[stack] += 1
            for name in set(stack):
                self.inclusive[name] += 1
            self.samples += 1
        self.stalls.append(
            {
                "ms": round((time.perf_counter() - posted) * 1000, 1),
                "at": round(time.time(), 3),
                "samples": sum(stacks.values()),
                "stacks": [{"n": n, "stack": list(s)} for s, n in stacks.most_common(3)],
            }
        )

    def report(self) -> dict[str, Any]:
        stalls = sorted(self.stalls, key=lambda s: -s["ms"])
        return {
            "stalls": len(stalls),
            "stalled_ms": round(sum(s["ms"] for s in stalls), 1),
            "samples": self.samples,
            "inclusive_top": self.inclusive.most_common(60),
            "longest": stalls[:40],
        }


def main() -> None:
    out = Path(sys.argv[1])
    watchdog = Watchdog(threading.main_thread().ident or 0)

    import uvloop

    new_loop = uvloop.new_event_loop

    def recording_loop() -> Any:
        watchdog.loop = new_loop()
        return watchdog.loop

    uvloop.new_event_loop = recording_loop  # cli.run_on_loop reads the attribute when it runs
    threading.Thread(target=watchdog.run, name="stall-watchdog", daemon=True).start()
    atexit.register(lambda: out.write_text(json.dumps(watchdog.report(), indent=1) + "\n"))

    from availmon.cli import main as availmon_main

    sys.argv = ["availmon", *sys.argv[2:]]
    raise SystemExit(availmon_main())


if __name__ == "__main__":
    main()
