"""The outage state machine: pure, synchronous, no I/O; time comes in as an argument.

Rules:
- UP is good. DOWN and DEGRADED are bad. UNKNOWN (a check whose timing could not be trusted,
  or an internal error) changes no counter: it is neither evidence of failure nor of recovery.
- `failure_threshold` consecutive bad checks open an outage whose start is the first bad check
  of the episode (not the check that crossed the threshold). Its severity is the endpoint's
  when the last `failure_threshold` checks were all DOWN, else `low` (a run of DEGRADED, or a
  mixed run that ends in DEGRADED).
- Severity is raised in place (same outage) once the endpoint "goes DOWN": `failure_threshold`
  consecutive DOWN checks while a lower-severity outage is open. One DOWN blip in a DEGRADED
  run does not page at the endpoint's severity. Severity is never lowered while open.
- Only UP counts toward recovery: `recovery_threshold` consecutive UP checks close an open
  outage, which ends at the first UP check of that run. DEGRADED keeps an outage open.
- Flapping faster than the thresholds (bad, UP, bad, UP, ...) never opens an outage, and an open
  outage stays open until `recovery_threshold` UP checks in a row: no open/close storm.
- Manual resolve (`resolve`) closes the open outage now and puts a hold on the endpoint: no new
  outage opens until it has recovered (`recovery_threshold` consecutive UP checks, reported as
  `HoldReleased`) and then failed again (`failure_threshold` new bad checks).
- Maintenance (`observe(..., maintenance=True)`): the recorded status is MAINTENANCE. Bad
  checks inside a window never count toward `failure_threshold` and a failure run pending when
  the window starts is dropped, so no outage opens and no severity is raised. An outage already
  open stays open: UP checks count toward its recovery and bad ones reset that count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from availmon.model import Outage, Severity, Status, StatusRow

NEUTRAL = frozenset({Status.UNKNOWN, Status.MAINTENANCE})
BAD = frozenset({Status.DOWN, Status.DEGRADED})
SEVERITY_RANK = {Severity.LOW: 0, Severity.MEDIUM: 1, Severity.HIGH: 2, Severity.CRITICAL: 3}
RAW_STATUS_KEY = "raw_status"  # a MAINTENANCE row's details keep what the check really saw


@dataclass(frozen=True, slots=True)
class Thresholds:
    failure_threshold: int
    recovery_threshold: int
    severity: Severity


@dataclass(frozen=True, slots=True)
class StatusChanged:
    previous: Status | None
    current: Status
    at: datetime


@dataclass(frozen=True, slots=True)
class OutageOpened:
    started_at: datetime
    opened_at: datetime
    severity: Severity
    reason: str
    error: str | None


@dataclass(frozen=True, slots=True)
class OutageSeverityRaised:
    previous: Severity
    severity: Severity
    at: datetime
    reason: str
    error: str | None


@dataclass(frozen=True, slots=True)
class OutageClosed:
    started_at: datetime
    ended_at: datetime
    manual: bool = False


@dataclass(frozen=True, slots=True)
class HoldReleased:
    """After a manual resolve the endpoint recovered: its next failure may open an outage."""

    at: datetime


Transition = StatusChanged | OutageOpened | OutageSeverityRaised | OutageClosed | HoldReleased


@dataclass(slots=True)
class EndpointState:
    status: Status | None = None
    status_since: datetime | None = None
    last_check_at: datetime | None = None
    consecutive_failures: int = 0  # bad checks (DOWN or DEGRADED) in a row
    consecutive_down: int = 0  # DOWN checks in a row
    consecutive_successes: int = 0  # UP checks in a row
    episode_started_at: datetime | None = None
    recovery_started_at: datetime | None = None
    outage_started_at: datetime | None = None
    outage_severity: Severity | None = None
    hold: bool = False  # manually resolved while failing: no reopen before a recovery
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def outage_open(self) -> bool:
        return self.outage_started_at is not None


class OutageStateMachine:
    def __init__(self, thresholds: Thresholds, state: EndpointState | None = None) -> None:
        self.thresholds = thresholds
        self.state = state or EndpointState()

    def observe(
        self,
        status: Status,
        at: datetime,
        reason: str = "",
        error: str | None = None,
        *,
        maintenance: bool = False,
    ) -> list[Transition]:
        """Feed one check's (raw) status observed at `at`; return what changed, in order.

        `maintenance`: the check ran inside a maintenance window; the recorded status is then
        MAINTENANCE and `status` is what the probe saw.
        """
        state = self.state
        transitions: list[Transition] = []
        state.last_check_at = at
        recorded = Status.MAINTENANCE if maintenance else status
        if recorded != state.status:
            transitions.append(StatusChanged(state.status, recorded, at))
            state.status = recorded
            state.status_since = at
        if maintenance:
            self._in_window(status, at, transitions)
        elif status is Status.UP:
            self._on_success(at, transitions)
        elif status in BAD:
            self._on_failure(status, at, reason, error, transitions)
        return transitions

    def resolve(self, at: datetime) -> list[Transition]:
        """An operator resolved the open outage at `at`; hold reopening until a recovery."""
        state = self.state
        if not state.outage_open:
            return []
        started = state.outage_started_at
        assert started is not None
        state.outage_started_at = None
        state.outage_severity = None
        state.hold = True
        return [OutageClosed(started, at, manual=True)]

    def _in_window(self, raw: Status, at: datetime, out: list[Transition]) -> None:
        state = self.state
        # failures inside a window never count; one pending at its start is dropped
        state.consecutive_failures = 0
        state.consecutive_down = 0
        state.episode_started_at = None
        if raw is Status.UP:
            self._on_success(at, out)
        elif raw in BAD:
            state.consecutive_successes = 0
            state.recovery_started_at = None

    def _on_failure(
        self, status: Status, at: datetime, reason: str, error: str | None, out: list[Transition]
    ) -> None:
        state = self.state
        threshold = self.thresholds.failure_threshold
        state.consecutive_successes = 0
        state.recovery_started_at = None
        state.consecutive_failures += 1
        if state.consecutive_failures == 1:
            state.episode_started_at = at
        state.consecutive_down = state.consecutive_down + 1 if status is Status.DOWN else 0
        if state.hold:
            return
        went_down = state.consecutive_down >= threshold
        if not state.outage_open:
            if state.consecutive_failures >= threshold:
                severity = self.thresholds.severity if went_down else Severity.LOW
                started = state.episode_started_at or at
                state.outage_started_at = started
                state.outage_severity = severity
                out.append(OutageOpened(started, at, severity, reason, error))
            return
        current = state.outage_severity or Severity.LOW
        wanted = self.thresholds.severity
        if went_down and SEVERITY_RANK[current] < SEVERITY_RANK[wanted]:
            state.outage_severity = wanted
            out.append(OutageSeverityRaised(current, wanted, at, reason, error))

    def _on_success(self, at: datetime, out: list[Transition]) -> None:
        state = self.state
        state.consecutive_failures = 0
        state.consecutive_down = 0
        state.episode_started_at = None
        state.consecutive_successes += 1
        if state.consecutive_successes == 1:
            state.recovery_started_at = at
        recovered = state.consecutive_successes >= self.thresholds.recovery_threshold
        if state.outage_open and recovered:
            started = state.outage_started_at
            assert started is not None
            ended = state.recovery_started_at or at
            state.outage_started_at = None
            state.outage_severity = None
            out.append(OutageClosed(started, ended))
        if state.hold and recovered:
            state.hold = False
            out.append(HoldReleased(at))

    @classmethod
    def restore(
        cls,
        thresholds: Thresholds,
        open_outage: Outage | None,
        recent_newest_first: Sequence[StatusRow],
        status_since: datetime | None = None,
        *,
        hold: bool = False,
    ) -> OutageStateMachine:
        """Rebuild counters after a restart from the stored outage, the stored hold and the
        latest status rows.

        The rows are replayed oldest first; the outage (open or not, and its severity) and the
        hold are then taken from the database, so a restart continues the same episode instead
        of opening a second outage for it.
        """
        machine = cls(thresholds)
        state = machine.state
        if open_outage is not None:
            state.outage_started_at = open_outage.started_at
            state.outage_severity = open_outage.severity
        for row in reversed(recent_newest_first):
            raw = row.status
            in_window = raw is Status.MAINTENANCE
            if in_window:
                raw = _raw_status(row)
            machine.observe(raw, row.checked_at, row.reason.value, row.error, maintenance=in_window)
        # The stored hold wins: rows replayed from before the resolve cannot release it, and a
        # release that was not stored fires again on the next UP (the counts use >=).
        state.hold = hold
        state.outage_started_at = open_outage.started_at if open_outage else None
        state.outage_severity = open_outage.severity if open_outage else None
        if open_outage is not None and state.consecutive_failures:
            state.episode_started_at = open_outage.started_at
        if recent_newest_first:
            state.status_since = status_since or _run_start(recent_newest_first)
        return machine


def _raw_status(row: StatusRow) -> Status:
    try:
        return Status(str(row.details.get(RAW_STATUS_KEY)))
    except ValueError:
        return Status.UNKNOWN


def _run_start(rows_newest_first: Sequence[StatusRow]) -> datetime:
    current = rows_newest_first[0].status
    since = rows_newest_first[0].checked_at
    for row in rows_newest_first:
        if row.status != current:
            break
        since = row.checked_at
    return since
