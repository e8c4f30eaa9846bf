"""Overload never lies: a timing verdict taken while the loop was stalled is UNKNOWN."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from availmon.clock import SystemClock
from availmon.looplag import LoopLagMonitor
from availmon.model import Endpoint, EndpointSource, ProbeResult, Reason, Status
from availmon.probes import ProbeContext
from availmon.runner import Monitor
from availmon.specs import ENDPOINT_ADAPTER


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """Accepts connections and never says a word."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def check_with_stall(port: int, stall_s: float) -> tuple[ProbeResult, LoopLagMonitor]:
    context = ProbeContext()
    lag = LoopLagMonitor()
    lag.start()
    try:
        spec = ENDPOINT_ADAPTER.validate_python(
            {"name": "quiet", "url": f"tcp://127.0.0.1:{port}", "expected_pattern": "hello",
             "timeout": 0.6}
        )  # fmt: skip
        monitor = Monitor(clock=SystemClock(), probe_context=context, max_concurrency=1)
        monitor.looplag = lag
        monitor.watch(Endpoint(1, spec, EndpointSource.API))
        await asyncio.sleep(0.1)
        if stall_s:
            # something else in the process hogs the loop while the check waits
            asyncio.get_running_loop().call_later(0.1, time.sleep, stall_s)
        result = await monitor.check(1)
    finally:
        await lag.stop()
        await context.close()
    return result, lag


async def test_timeout_during_a_stalled_loop_is_unknown_overloaded(silent_port: int):
    with capture_logs() as logs:
        result, lag = await check_with_stall(silent_port, 0.4)
    assert result.status is Status.UNKNOWN and result.reason is Reason.OVERLOADED
    assert result.details["raw_reason"] == "timeout"
    assert result.details["loop_stalled_ms"] >= 300
    assert result.response_time_ms is None
    assert lag.overloaded and lag.episodes == 1
    events = [e["event"] for e in logs]
    assert events.count("event_loop_overloaded") == 1
    assert "check_distrusted_overload" in events


async def test_timeout_with_a_healthy_loop_stays_a_timeout(silent_port: int):
    result, lag = await check_with_stall(silent_port, 0.0)
    assert result.status is Status.DOWN and result.reason is Reason.TIMEOUT
    assert not lag.overloaded and lag.stalled_total < 0.1


async def test_lag_monitor_recovers_after_the_stall():
    lag = LoopLagMonitor()
    lag.start()
    try:
        await asyncio.sleep(0.06)
        time.sleep(0.2)
        await asyncio.sleep(0.1)
        assert lag.overloaded and lag.stalled_total >= 0.15
        lag.recent.clear()
        await asyncio.sleep(0.12)
        assert not lag.overloaded
    finally:
        await lag.stop()
