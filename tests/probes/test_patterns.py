"""A catastrophic expected_pattern costs one check, never the event loop."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from availmon.clock import SystemClock
from availmon.model import Endpoint, EndpointSource, Reason, Status
from availmon.patterns import PATTERN_TIMEOUT_S, Pattern, PatternTimeout, check_syntax
from availmon.probes import ProbeContext
from availmon.runner import Monitor
from availmon.specs import ENDPOINT_ADAPTER

EVIL = r"(x+x+)+y"


def test_pattern_search_is_bounded():
    started = time.perf_counter()
    with pytest.raises(PatternTimeout, match="ran longer than"):
        Pattern(EVIL).search("x" * 5000)
    assert time.perf_counter() - started < PATTERN_TIMEOUT_S * 5
    assert Pattern(b"PONG").search(bytearray(b"+PONG\r\n")) is not None


def test_syntax_errors_name_the_problem():
    with pytest.raises(ValueError, match="not a valid regular expression: missing \\)"):
        check_syntax("(abc")


async def test_tcp_check_with_catastrophic_pattern_is_unknown_and_loop_keeps_running():
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"x" * 5000)
        await writer.drain()
        await reader.read()  # until the probe hangs up
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    context = ProbeContext()
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.01)

    tick_task = asyncio.create_task(ticker())
    try:
        spec = ENDPOINT_ADAPTER.validate_python(
            {"name": "evil", "url": f"tcp://127.0.0.1:{port}", "expected_pattern": EVIL,
             "max_read_bytes": 5000, "timeout": 2}
        )  # fmt: skip
        monitor = Monitor(clock=SystemClock(), probe_context=context, max_concurrency=1)
        monitor.watch(Endpoint(1, spec, EndpointSource.API))
        started = time.perf_counter()
        result = await monitor.check(1)
        elapsed = time.perf_counter() - started
        await asyncio.sleep(0.05)
    finally:
        tick_task.cancel()
        server.close()
        await server.wait_closed()
        await context.close()
    assert result.status is Status.UNKNOWN and result.reason is Reason.PATTERN_TIMEOUT
    assert "ran longer than" in (result.error or "")
    assert elapsed < 1.0
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    # each search is cut at PATTERN_TIMEOUT_S, so the loop is never held much longer than that
    assert max(gaps) < PATTERN_TIMEOUT_S * 3
