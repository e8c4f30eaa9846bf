"""Outage state machine: long sequences on a fake clock, no sleeping."""

from __future__ import annotations

from datetime import timedelta

import pytest

from availmon.clock import FakeClock
from availmon.model import Outage, Reason, Severity, Status, StatusRow
from availmon.state import (
    OutageClosed,
    OutageOpened,
    OutageStateMachine,
    StatusChanged,
    Thresholds,
)

U, D, G, N, M = Status.UP, Status.DOWN, Status.DEGRADED, Status.UNKNOWN, Status.MAINTENANCE


def run(seq: list[Status], failure: int = 3, recovery: int = 2, step: float = 10.0):
    clock = FakeClock()
    machine = OutageStateMachine(Thresholds(failure, recovery, Severity.CRITICAL))
    events = []
    times = []
    for status in seq:
        at = clock.advance(step)
        times.append(at)
        for t in machine.observe(status, at, "timeout" if status is D else "ok"):
            if not isinstance(t, StatusChanged):
                events.append(t)
    return machine, events, times


def test_outage_opens_after_exactly_failure_threshold_failures():
    _, events, _ = run([U, D, D])
    assert events == []
    _, events, times = run([U, D, D, D])
    assert len(events) == 1
    opened = events[0]
    assert isinstance(opened, OutageOpened)
    assert opened.started_at == times[1]  # first failed check of the episode
    assert opened.opened_at == times[3]  # the check that crossed the threshold
    assert opened.severity is Severity.CRITICAL


def test_outage_closes_after_exactly_recovery_threshold_successes():
    machine, events, times = run([D, D, D, U])
    assert [type(e) for e in events] == [OutageOpened]
    assert machine.state.outage_open
    machine, events, times = run([D, D, D, U, U])
    assert [type(e) for e in events] == [OutageOpened, OutageClosed]
    closed = events[1]
    assert closed.started_at == times[0]
    assert closed.ended_at == times[3]  # first good check of the recovery
    assert not machine.state.outage_open


def test_degraded_is_not_a_failure_and_counts_toward_recovery():
    _, events, _ = run([D, D, G, D, D, G])
    assert events == []
    _, events, _ = run([D, D, D, G, G])
    assert [type(e) for e in events] == [OutageOpened, OutageClosed]


def test_flapping_faster_than_thresholds_never_opens():
    _, events, _ = run([D, U] * 200 + [D, D, U] * 100)
    assert events == []


def test_flapping_during_outage_keeps_one_outage_open():
    machine, events, _ = run([D, D, D] + [U, D] * 100)
    assert [type(e) for e in events] == [OutageOpened]
    assert machine.state.outage_open


def test_unknown_and_maintenance_change_no_counter():
    _, events, times = run([D, D, N, M, N, D])
    assert len(events) == 1 and isinstance(events[0], OutageOpened)
    assert events[0].started_at == times[0]
    _, events, _ = run([D, D, D, U, N, U])
    assert [type(e) for e in events] == [OutageOpened, OutageClosed]


def test_failure_threshold_one_and_recovery_one():
    _, events, times = run([U, D, U, D], failure=1, recovery=1)
    assert [type(e) for e in events] == [OutageOpened, OutageClosed, OutageOpened]
    assert events[1].ended_at == times[2]


def test_status_changes_reported_once_per_change():
    clock = FakeClock()
    machine = OutageStateMachine(Thresholds(3, 2, Severity.LOW))
    changes = []
    for status in [U, U, D, D, U, G, G, U]:
        changes += [
            t for t in machine.observe(status, clock.advance(1)) if isinstance(t, StatusChanged)
        ]
    assert [(c.previous, c.current) for c in changes] == [(None, U), (U, D), (D, U), (U, G), (G, U)]


@pytest.mark.parametrize("failure,recovery", [(1, 1), (2, 3), (3, 2), (5, 5)])
def test_many_random_sequences_keep_invariants(failure, recovery):
    import random

    rng = random.Random(failure * 100 + recovery)
    for _ in range(200):
        seq = [rng.choice([U, D, D, G, N]) for _ in range(60)]
        machine, events, _ = run(seq, failure, recovery)
        # opened and closed strictly alternate, starting with opened
        kinds = [type(e) for e in events]
        assert kinds == [OutageOpened, OutageClosed] * (len(kinds) // 2) + (
            [OutageOpened] if len(kinds) % 2 else []
        )
        assert machine.state.outage_open == (len(kinds) % 2 == 1)


def _rows(statuses: list[Status]) -> list[StatusRow]:
    clock = FakeClock()
    rows = [StatusRow(7, clock.advance(10), s, Reason.OK, None, None, 1, {}) for s in statuses]
    return list(reversed(rows))  # newest first, as the repository returns them


def test_restore_continues_open_outage_without_reopening():
    rows = _rows([U, D, D, D, D])
    outage = Outage(1, 7, Severity.HIGH, rows[-2].checked_at, rows[1].checked_at)
    machine = OutageStateMachine.restore(Thresholds(3, 2, Severity.HIGH), outage, rows)
    assert machine.state.outage_open and machine.state.consecutive_failures == 4
    after = rows[0].checked_at + timedelta(seconds=10)
    events = machine.observe(D, after, "timeout")
    assert not any(isinstance(e, OutageOpened) for e in events)
    events = machine.observe(U, after + timedelta(seconds=10))
    events += machine.observe(U, after + timedelta(seconds=20))
    closed = [e for e in events if isinstance(e, OutageClosed)]
    assert len(closed) == 1 and closed[0].started_at == outage.started_at


def test_restore_counts_pending_failures_toward_threshold():
    rows = _rows([U, U, D, D])
    machine = OutageStateMachine.restore(Thresholds(3, 2, Severity.HIGH), None, rows)
    assert machine.state.consecutive_failures == 2
    assert machine.state.status is D and machine.state.status_since == rows[1].checked_at
    events = machine.observe(D, rows[0].checked_at + timedelta(seconds=10), "refused")
    opened = [e for e in events if isinstance(e, OutageOpened)]
    assert len(opened) == 1 and opened[0].started_at == rows[1].checked_at


def test_restore_counts_recovery_in_progress():
    rows = _rows([D, D, D, U])
    outage = Outage(1, 7, Severity.HIGH, rows[-1].checked_at, rows[1].checked_at)
    machine = OutageStateMachine.restore(Thresholds(3, 2, Severity.HIGH), outage, rows)
    events = machine.observe(U, rows[0].checked_at + timedelta(seconds=10))
    closed = [e for e in events if isinstance(e, OutageClosed)]
    assert len(closed) == 1 and closed[0].ended_at == rows[0].checked_at
