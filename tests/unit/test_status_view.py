"""The status summary served from per-endpoint fragments equals the one built from scratch."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from availmon.clock import SystemClock
from availmon.model import ENDPOINT_ADAPTER, Endpoint, EndpointSource, ProbeResult, Reason, Status
from availmon.probes import ProbeContext
from availmon.runner import Monitor
from availmon.services import ServiceAvailabilityCollector

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def fleet(n: int) -> tuple[Monitor, ServiceAvailabilityCollector]:
    monitor = Monitor(clock=SystemClock(), probe_context=ProbeContext(), max_concurrency=1)
    for i in range(1, n + 1):
        spec = ENDPOINT_ADAPTER.validate_python(
            {"name": f"ep-{n - i:05d}", "url": f"http://127.0.0.1:9/{i}", "tags": ["t"]}
        )
        watched = monitor.watch(Endpoint(i, spec, EndpointSource.CONFIG))
        watched.machine.observe(Status.UP, T0)
        watched.last_result = ProbeResult(Status.UP, Reason.OK, 1.5)
    return monitor, ServiceAvailabilityCollector(None, monitor)


def test_fragments_match_a_fresh_build_and_follow_changes():
    monitor, collector = fleet(300)
    collector.extra_status["redis"] = lambda: {"available": True}
    assert json.loads(collector.summary_json()) == collector.summary()
    first = collector.summary()["endpoints"]
    assert [e["name"] for e in first] == sorted(e["name"] for e in first)
    w = monitor.get(7)
    for k in range(3):  # three DOWN checks open an outage
        w.machine.observe(Status.DOWN, T0 + timedelta(seconds=10 * (k + 1)), "refused")
        w.last_result = ProbeResult(Status.DOWN, Reason.REFUSED, None, "refused")
    w.outage_id = 42
    decoded = json.loads(collector.summary_json())
    assert decoded == collector.summary()
    entry = next(e for e in decoded["endpoints"] if e["id"] == 7)
    assert entry["status"] == "DOWN" and entry["open_outage"]["id"] == 42
    assert decoded["counts"]["DOWN"] == 1 and decoded["counts"]["UP"] == 299
    assert decoded["redis"] == {"available": True}
    monitor.unwatch(7)
    decoded = json.loads(collector.summary_json())
    assert decoded["total"] == 299 and all(e["id"] != 7 for e in decoded["endpoints"])
