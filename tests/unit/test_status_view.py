"""The status summary served from per-endpoint fragments equals the one built from scratch."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest

from availmon.clock import SystemClock
from availmon.model import Endpoint, EndpointSource, ProbeResult, Reason, Status
from availmon.probes import ProbeContext
from availmon.runner import Monitor
from availmon.services import ServiceAvailabilityCollector
from availmon.specs import ENDPOINT_ADAPTER

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


@pytest.mark.parametrize("size", [0, 1, 2])
async def test_the_document_is_joined_right_at_every_size(size: int):
    _, collector, context = fleet(size)
    for extra in ({}, {"redis": {"available": False}}):
        collector.extra_status = {name: (lambda v=v: v) for name, v in extra.items()}
        body = collector.summary_json()
        assert json.loads(body) == collector.summary()
        assert body.count(b'"endpoints":[') == 1
    await context.close()


async def test_status_counts_follow_checks_and_count_the_never_checked_unknown():
    monitor, collector, context = fleet(5)
    never = monitor.get(1)
    never.machine = type(never.machine)(never.machine.thresholds)  # not checked yet
    assert collector.status_counts() == {s.value: 0 for s in Status} | {"UP": 4, "UNKNOWN": 1}
    for _ in range(3):  # refused by the closed port: DOWN
        await monitor.check(2)
    independent = {s.value: 0 for s in Status}
    for w in monitor.all():
        independent[(w.machine.state.status or Status.UNKNOWN).value] += 1
    assert collector.status_counts() == independent
    assert independent["DOWN"] == 1 and independent["UP"] == 3
    await context.close()


def test_the_written_out_fragment_is_byte_for_byte_the_encoded_dict():
    from availmon.model import Severity
    from availmon.status_view import _dumps, _dynamic, _dynamic_json

    monitor, _, _ = fleet(6)
    never, up, down, odd, opened, nan = (monitor.get(i) for i in range(1, 7))
    never.last_result = None
    never.machine = type(never.machine)(never.machine.thresholds)  # not checked yet
    up.last_result = ProbeResult(Status.UP, Reason.OK, 12.25)
    down.last_result = ProbeResult(Status.DOWN, Reason.REFUSED, None, 'refused "quoted" \\ é ☃\n')
    odd.last_result = ProbeResult(Status.DEGRADED, Reason.SLOW, 900)  # an int of ms
    for _ in range(3):
        opened.machine.observe(Status.DOWN, T0, "timeout", "no answer")
    opened.outage_id = 41
    opened.last_result = ProbeResult(Status.DOWN, Reason.TIMEOUT, None, "no answer")
    state = opened.machine.state
    assert state.outage_open and state.outage_severity is Severity.HIGH
    nan.last_result = ProbeResult(Status.UP, Reason.OK, float("nan"))
    for w in (never, up, down, odd, opened, nan):
        assert _dynamic_json(w) == _dumps(_dynamic(w))[1:], w.endpoint.name
    opened.outage_id = None  # stored outage id not known yet (PostgreSQL away)
    assert _dynamic_json(opened) == _dumps(_dynamic(opened))[1:]


async def test_the_background_refresh_leaves_a_request_nothing_to_rebuild():
    import asyncio

    from availmon.status_view import StatusView

    monitor, collector, context = fleet(2_500)  # three slices
    view = StatusView()
    monitor.add_change_listener(view.changed)
    task = asyncio.create_task(view.keep_current(lambda: (monitor.all(), monitor.generation), 0.01))
    try:
        for _ in range(100):
            await asyncio.sleep(0.01)
            if view._generation == monitor.generation:
                break
        assert view._generation == monitor.generation  # built in the background, in slices
        await monitor.check(9)  # refused: a change notice
        assert view._dirty == {9}
        for _ in range(100):
            await asyncio.sleep(0.01)
            if not view._dirty:
                break
        assert not view._dirty
        counts = view.bring_current(monitor.all(), monitor.generation)
        body = view.joined(b"", b"")
        assert json.loads(body) == collector.summary()["endpoints"]
        entry = next(e for e in json.loads(body) if e["id"] == 9)
        assert entry["reason"] == "refused"
        assert counts["DOWN"] == 1 and counts["UP"] == 2_499
    finally:
        task.cancel()
        await context.close()


async def test_status_counts_do_not_rebuild_an_out_of_date_view_at_once():
    monitor, collector, context = fleet(20)
    collector.summary_json()  # the view is built
    built = collector._view.generation
    monitor.unwatch(3)  # a new generation: the refresher rebuilds it, in slices
    counts = collector.status_counts()
    assert collector._view.generation == built  # not rebuilt here
    assert counts["UP"] == 19 and sum(counts.values()) == 19
    await context.close()


class _HangingPostgres:
    """An outage store whose server never answers (a PostgreSQL that hangs)."""

    async def open_outage(self, *args: object) -> object:
        await asyncio.Event().wait()

    async def close_outage(self, *args: object) -> object:
        await asyncio.Event().wait()

    async def record_status_change(self, *args: object) -> None:
        await asyncio.Event().wait()


async def test_a_check_cancelled_while_storing_still_shows_its_new_state():
    context = ProbeContext()
    monitor = Monitor(
        clock=SystemClock(), probe_context=context, max_concurrency=1, store=_HangingPostgres()
    )
    spec = ENDPOINT_ADAPTER.validate_python(
        {"name": "gone", "url": "tcp://127.0.0.1:9", "failure_threshold": 1}
    )
    monitor.watch(Endpoint(1, spec, EndpointSource.CONFIG))
    collector = ServiceAvailabilityCollector(None, monitor)
    collector.summary_json()  # the view is current
    check = asyncio.ensure_future(monitor.check(1))
    watched = monitor.get(1)
    for _ in range(200):  # refused at once; then the opening outage waits for the store
        await asyncio.sleep(0.01)
        if watched.machine.state.status is Status.DOWN:
            break
    check.cancel()
    with pytest.raises(asyncio.CancelledError):
        await check
    assert watched.machine.state.status is Status.DOWN
    assert collector.status_counts()["DOWN"] == 1
    assert json.loads(collector.summary_json())["endpoints"][0]["status"] == "DOWN"
    await context.close()
