"""The status summary served from per-endpoint fragments equals the one built from scratch."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from availmon.clock import SystemClock
from availmon.model import ENDPOINT_ADAPTER, Endpoint, EndpointSource, ProbeResult, Reason, Status
from availmon.probes import ProbeContext
from availmon.runner import Monitor
from availmon.services import ServiceAvailabilityCollector

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def fleet(n: int) -> tuple[Monitor, ServiceAvailabilityCollector, ProbeContext]:
    context = ProbeContext()
    monitor = Monitor(clock=SystemClock(), probe_context=context, max_concurrency=1)
    for i in range(1, n + 1):
        spec = ENDPOINT_ADAPTER.validate_python(
            {"name": f"ep-{n - i:05d}", "url": f"http://127.0.0.1:9/{i}", "tags": ["t"]}
        )
        watched = monitor.watch(Endpoint(i, spec, EndpointSource.CONFIG))
        watched.machine.observe(Status.UP, T0)
        watched.last_result = ProbeResult(Status.UP, Reason.OK, 1.5)
    return monitor, ServiceAvailabilityCollector(None, monitor), context


async def test_fragments_match_a_fresh_build_and_follow_changes():
    monitor, collector, context = fleet(300)
    collector.extra_status["redis"] = lambda: {"available": True}
    assert json.loads(collector.summary_json()) == collector.summary()
    first = collector.summary()["endpoints"]
    assert [e["name"] for e in first] == sorted(e["name"] for e in first)
    for _ in range(3):  # three real checks, refused by the closed port: an outage opens
        await monitor.check(7)
    decoded = json.loads(collector.summary_json())
    assert decoded == collector.summary()
    entry = next(e for e in decoded["endpoints"] if e["id"] == 7)
    assert entry["status"] == "DOWN" and entry["reason"] == "refused"
    assert entry["open_outage"] is not None
    assert decoded["counts"]["DOWN"] == 1 and decoded["counts"]["UP"] == 299
    assert collector.summary_json() == collector.summary_json()  # nothing changed: same body
    await context.close()
    assert decoded["redis"] == {"available": True}
    monitor.unwatch(7)
    decoded = json.loads(collector.summary_json())
    assert decoded["total"] == 299 and all(e["id"] != 7 for e in decoded["endpoints"])
