"""Outage state machine: long sequences on a fake clock (millisecond steps), no sleeping."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from availmon.clock import FakeClock
from availmon.model import Outage, Reason, Severity, Status, StatusRow
from availmon.state import (
    HoldReleased,
    OutageClosed,
    OutageOpened,
    OutageSeverityRaised,
    OutageStateMachine,
    StatusChanged,
    Thresholds,
    Transition,
)

U, D, G, N, M = Status.UP, Status.DOWN, Status.DEGRADED, Status.UNKNOWN, Status.MAINTENANCE
STEP_S = 0.001  # one check per millisecond of fake time


class Driver:
    """Feeds statuses one per fake millisecond; `m` marks checks inside a maintenance window."""

    def __init__(
        self, failure: int = 3, recovery: int = 2, severity: Severity = Severity.CRITICAL
    ) -> None:
        self.clock = FakeClock()
        self.machine = OutageStateMachine(Thresholds(failure, recovery, severity))
        self.events: list[Transition] = []
        self.times: list = []

    def feed(self, seq: list[Status], *, maintenance: bool = False) -> list[Transition]:
        new: list[Transition] = []
        for status in seq:
            at = self.clock.advance(STEP_S)
            self.times.append(at)
            reason = "ok" if status is U else "timeout"
            for t in self.machine.observe(status, at, reason, maintenance=maintenance):
                if not isinstance(t, StatusChanged):
                    new.append(t)
        self.events += new
        return new

    def resolve(self) -> list[Transition]:
        out = self.machine.resolve(self.clock.advance(STEP_S))
        self.events += out
        return out

    def kinds(self) -> list[type]:
        return [type(e) for e in self.events]


def run(seq: list[Status], failure: int = 3, recovery: int = 2) -> Driver:
    driver = Driver(failure, recovery)
    driver.feed(seq)
    return driver


# -- thresholds -------------------------------------------------------------------------------


def test_outage_opens_after_exactly_failure_threshold_failures():
    assert run([U, D, D]).events == []
    d = run([U, D, D, D])
    (opened,) = d.events
    assert isinstance(opened, OutageOpened)
    assert opened.started_at == d.times[1]  # first failed check of the episode
    assert opened.opened_at == d.times[3]  # the check that crossed the threshold
    assert opened.severity is Severity.CRITICAL


def test_outage_closes_after_exactly_recovery_threshold_up_checks():
    d = run([D, D, D, U])
    assert d.kinds() == [OutageOpened]
    assert d.machine.state.outage_open
    d = run([D, D, D, U, U])
    assert d.kinds() == [OutageOpened, OutageClosed]
    closed = d.events[1]
    assert closed.started_at == d.times[0]
    assert closed.ended_at == d.times[3]  # first good check of the recovery
    assert not closed.manual
    assert not d.machine.state.outage_open


def test_failure_threshold_one_and_recovery_one():
    d = run([U, D, U, D], failure=1, recovery=1)
    assert d.kinds() == [OutageOpened, OutageClosed, OutageOpened]
    assert d.events[1].ended_at == d.times[2]


def test_unknown_changes_no_counter():
    d = run([D, D, N, N, D])
    (opened,) = d.events
    assert opened.started_at == d.times[0]
    d = run([D, D, D, U, N, U])
    assert d.kinds() == [OutageOpened, OutageClosed]


def test_status_changes_reported_once_per_change():
    clock = FakeClock()
    machine = OutageStateMachine(Thresholds(3, 2, Severity.LOW))
    changes = []
    for status in [U, U, D, D, U, G, G, U]:
        changes += [
            t
            for t in machine.observe(status, clock.advance(STEP_S))
            if isinstance(t, StatusChanged)
        ]
    assert [(c.previous, c.current) for c in changes] == [(None, U), (U, D), (D, U), (U, G), (G, U)]


# -- DEGRADED and severity --------------------------------------------------------------------


def test_a_degraded_run_opens_a_low_outage_starting_at_its_first_check():
    d = run([U, G, G])
    assert d.events == []
    d.feed([G])
    (opened,) = d.events
    assert opened.severity is Severity.LOW and opened.started_at == d.times[1]


def test_mixed_runs_count_as_one_episode_but_page_only_when_down():
    d = run([D, D, G])  # three bad checks, the last DEGRADED: open, but low
    (opened,) = d.events
    assert opened.severity is Severity.LOW and opened.started_at == d.times[0]
    d = run([G, D, D, D])  # opened low at the 3rd check, raised once 3 DOWN in a row
    assert d.kinds() == [OutageOpened, OutageSeverityRaised]
    assert d.events[0].severity is Severity.LOW
    assert d.events[1].at == d.times[3]


def test_degraded_outage_is_raised_in_place_only_after_failure_threshold_downs():
    d = run([G, G, G])
    d.feed([D, G, D, D, G])  # DOWN blips inside the degraded outage: no page at critical
    assert d.kinds() == [OutageOpened]
    assert d.machine.state.outage_severity is Severity.LOW
    raised = d.feed([D, D, D])
    assert [type(e) for e in raised] == [OutageSeverityRaised]
    assert (raised[0].previous, raised[0].severity) == (Severity.LOW, Severity.CRITICAL)
    assert raised[0].at == d.times[-1]
    assert d.feed([D] * 50 + [G] * 20) == []  # raised once; never lowered while open
    assert d.machine.state.outage_severity is Severity.CRITICAL
    closed = d.feed([U, U])
    assert [type(e) for e in closed] == [OutageClosed]
    assert closed[0].started_at == d.times[0]  # the same outage, from its first bad check


def test_degraded_keeps_an_outage_open_and_only_up_recovers():
    d = run([D, D, D] + [G] * 100)
    assert d.kinds() == [OutageOpened]
    d.feed([U, G, U, G, U])
    assert d.kinds() == [OutageOpened]
    d.feed([U, U])
    assert d.kinds() == [OutageOpened, OutageClosed]


def test_no_raise_when_the_endpoint_severity_is_low():
    driver = Driver(3, 2, Severity.LOW)
    driver.feed([G, G, G, D, D, D, D])
    assert driver.kinds() == [OutageOpened]


def test_a_raised_severity_missed_before_a_restart_is_raised_on_the_next_down():
    rows = _rows([D, D, D, D, D])
    outage = Outage(1, 7, Severity.LOW, rows[-1].checked_at, rows[2].checked_at)
    machine = OutageStateMachine.restore(Thresholds(3, 2, Severity.HIGH), outage, rows)
    events = machine.observe(D, rows[0].checked_at + timedelta(milliseconds=1), "timeout")
    assert [type(e) for e in events] == [OutageSeverityRaised]


# -- flapping ---------------------------------------------------------------------------------


def test_flapping_faster_than_thresholds_never_opens():
    assert run([D, U] * 2000 + [D, D, U] * 1000 + [G, U] * 1000 + [G, D, U] * 1000).events == []


def test_flapping_during_outage_keeps_one_outage_open():
    d = run([D, D, D] + [U, D] * 1000 + [U, G] * 1000)
    assert d.kinds() == [OutageOpened]
    assert d.machine.state.outage_open


def test_alternating_slower_than_thresholds_opens_and_closes_once_per_cycle():
    # 3 down, 2 up: exactly the thresholds, so every cycle is one outage - and no more
    d = run([D, D, D, U, U] * 500)
    assert d.kinds() == [OutageOpened, OutageClosed] * 500
    for opened, closed in zip(d.events[::2], d.events[1::2], strict=True):
        assert closed.ended_at - opened.started_at == timedelta(milliseconds=3)


@pytest.mark.parametrize("failure,recovery", [(1, 1), (2, 3), (3, 2), (5, 5)])
def test_many_random_sequences_keep_invariants(failure, recovery):
    rng = random.Random(failure * 100 + recovery)
    for _ in range(300):
        seq = [rng.choice([U, U, D, D, G, N]) for _ in range(80)]
        d = Driver(failure, recovery)
        for status in seq:
            if rng.random() < 0.03:
                d.resolve()
            d.feed([status], maintenance=rng.random() < 0.1)
        kinds = [k for k in d.kinds() if k in (OutageOpened, OutageClosed)]
        # opened and closed strictly alternate, starting with opened
        assert kinds == [OutageOpened, OutageClosed] * (len(kinds) // 2) + (
            [OutageOpened] if len(kinds) % 2 else []
        )
        assert d.machine.state.outage_open == (len(kinds) % 2 == 1)
        # at most one raise per outage, never while none is open
        opened_count = kinds.count(OutageOpened)
        assert d.kinds().count(OutageSeverityRaised) <= opened_count


def test_ten_thousand_checks_take_milliseconds():
    import time

    started = time.perf_counter()
    run([D, D, D, U, U, G, G, G, D, D, D, U, U] * 800)
    assert time.perf_counter() - started < 0.5


# -- manual resolve ---------------------------------------------------------------------------


def test_manual_resolve_while_failing_does_not_reopen_until_recovered_and_failed_again():
    d = run([D, D, D])
    (closed,) = d.resolve()
    assert isinstance(closed, OutageClosed) and closed.manual
    assert closed.started_at == d.times[0] and closed.ended_at == d.clock.now()
    assert d.machine.state.hold
    d.feed([D] * 100 + [U, D, U, D] + [D] * 10)  # still failing, one-off UPs: no recovery
    assert d.kinds() == [OutageOpened, OutageClosed]
    released = d.feed([U, U])  # recovered (recovery_threshold UP in a row)
    assert [type(e) for e in released] == [HoldReleased]
    assert not d.machine.state.hold
    assert d.feed([D, D]) == []
    (reopened,) = d.feed([D])
    assert isinstance(reopened, OutageOpened) and reopened.started_at == d.times[-3]


def test_manual_resolve_during_a_recovery_releases_after_the_run_completes():
    d = run([D, D, D, U])
    d.resolve()
    assert [type(e) for e in d.feed([U])] == [HoldReleased]


def test_resolve_without_an_open_outage_changes_nothing():
    d = run([U, D])
    assert d.resolve() == []
    assert not d.machine.state.hold
    assert d.feed([D, D]) != []


def test_a_stored_hold_survives_a_restart():
    rows = _rows([U, U, D, D, D, D])  # the outage was resolved manually; still failing
    machine = OutageStateMachine.restore(Thresholds(3, 2, Severity.HIGH), None, rows, hold=True)
    assert machine.state.hold
    at = rows[0].checked_at
    events = []
    for i, status in enumerate([D, D, U, U, D, D, D], start=1):
        events += [
            e
            for e in machine.observe(status, at + timedelta(milliseconds=i), "x")
            if not isinstance(e, StatusChanged)
        ]
    assert [type(e) for e in events] == [HoldReleased, OutageOpened]


# -- maintenance ------------------------------------------------------------------------------


def test_failures_inside_a_window_never_open_and_do_not_count_afterwards():
    d = run([U, D, D])  # two failures pending when the window starts
    assert d.feed([D] * 500 + [G] * 50, maintenance=True) == []
    assert d.machine.state.status is M
    assert d.feed([D, D]) == []  # the pending run was dropped at the window's start
    (opened,) = d.feed([D])
    assert opened.started_at == d.times[-3]  # after the window, not inside it


def test_outage_open_when_a_window_starts_stays_open_and_closes_on_recovery_inside():
    d = run([D, D, D])
    assert d.feed([D, D, U, D, U], maintenance=True) == []
    assert d.machine.state.outage_open
    (closed,) = d.feed([U], maintenance=True)  # second UP in a row, still inside the window
    assert isinstance(closed, OutageClosed) and closed.ended_at == d.times[-2]


def test_outage_open_through_a_whole_window_closes_normally_after_it():
    d = run([G, G, G])  # low outage
    assert d.feed([D] * 10, maintenance=True) == []  # no raise inside the window
    assert d.machine.state.outage_severity is Severity.LOW
    assert d.feed([U]) == []
    (closed,) = d.feed([U])
    assert closed.started_at == d.times[0]


def test_status_changes_to_and_from_maintenance():
    clock = FakeClock()
    machine = OutageStateMachine(Thresholds(3, 2, Severity.HIGH))
    seen = []
    for status, window in [(U, False), (D, True), (U, True), (U, False)]:
        for t in machine.observe(status, clock.advance(STEP_S), maintenance=window):
            if isinstance(t, StatusChanged):
                seen.append((t.previous, t.current))
    assert seen == [(None, U), (U, M), (M, U)]


# -- restore ----------------------------------------------------------------------------------


def _rows(statuses: list[Status], raw: list[Status] | None = None) -> list[StatusRow]:
    clock = FakeClock()
    rows = []
    for i, s in enumerate(statuses):
        details = {"raw_status": raw[i].value} if raw and s is M else {}
        rows.append(StatusRow(7, clock.advance(10), s, Reason.OK, None, None, 1, details))
    return list(reversed(rows))  # newest first, as the repository returns them


def test_restore_continues_open_outage_without_reopening():
    rows = _rows([U, D, D, D, D])
    outage = Outage(1, 7, Severity.HIGH, rows[-2].checked_at, rows[1].checked_at)
    machine = OutageStateMachine.restore(Thresholds(3, 2, Severity.HIGH), outage, rows)
    assert machine.state.outage_open and machine.state.consecutive_failures == 4
    after = rows[0].checked_at + timedelta(seconds=10)
    events = machine.observe(D, after, "timeout")
    assert not any(isinstance(e, (OutageOpened, OutageSeverityRaised)) for e in events)
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


def test_restore_reads_raw_status_of_maintenance_rows():
    # the last rows were in a window; the raw UP in it counts toward recovery
    rows = _rows([D, D, D, M, M], raw=[D, D, D, D, U])
    outage = Outage(1, 7, Severity.HIGH, rows[-1].checked_at, rows[2].checked_at)
    machine = OutageStateMachine.restore(Thresholds(3, 2, Severity.HIGH), outage, rows)
    assert machine.state.status is M and machine.state.consecutive_successes == 1
    events = machine.observe(U, rows[0].checked_at + timedelta(seconds=10))
    assert [type(e) for e in events if not isinstance(e, StatusChanged)] == [OutageClosed]
