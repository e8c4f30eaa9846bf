"""The outage state machine: pure, synchronous, no I/O; time comes in as an argument.

Rules (core):
- A DOWN check is a failure. `failure_threshold` consecutive failures open an outage whose start
  is the first failed check of the episode (not the check that crossed the threshold).
- UP and DEGRADED checks are good: they reset the failure run; while an outage is open,
  `recovery_threshold` consecutive good checks close it, ending at the first good check.
- UNKNOWN (a check whose timing could not be trusted, or an internal error) and MAINTENANCE
  change no counter: they are neither evidence of failure nor of recovery.
- Flapping faster than the thresholds (fail, ok, fail, ok, ...) never opens an outage, and an
  open outage stays open until `recovery_threshold` good checks in a row: no open/close storm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from availmon.model import Outage, Severity, Status, StatusRow

NEUTRAL = frozenset({Status.UNKNOWN, Status.MAINTENANCE})


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
class OutageClosed:
    started_at: datetime
    ended_at: datetime


Transition = StatusChanged | OutageOpened | OutageClosed


@dataclass(slots=True)
class EndpointState:
    status: Status | None = None
    status_since: datetime | None = None
    last_check_at: datetime | None = None
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    episode_started_at: datetime | None = None
    recovery_started_at: datetime | None = None
    outage_started_at: datetime | None = None
    outage_severity: Severity | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def outage_open(self) -> bool:
        return self.outage_started_at is not None


class OutageStateMachine:
    def __init__(self, thresholds: Thresholds, state: EndpointState | None = None) -> None:
        self.thresholds = thresholds
        self.state = state or EndpointState()

    def observe(
        self, status: Status, at: datetime, reason: str = "", error: str | None = None
    ) -> list[Transition]:
        """Feed one check's status observed at `at`; return what changed, in order."""
        state = self.state
        transitions: list[Transition] = []
        state.last_check_at = at
        if status != state.status:
            transitions.append(StatusChanged(state.status, status, at))
            state.status = status
            state.status_since = at
        if status in NEUTRAL:
            return transitions
        if status is Status.DOWN:
            self._on_failure(at, reason, error, transitions)
        else:
            self._on_success(at, transitions)
        return transitions

    def _on_failure(
        self, at: datetime, reason: str, error: str | None, out: list[Transition]
    ) -> None:
        state = self.state
        state.consecutive_successes = 0
        state.recovery_started_at = None
        state.consecutive_failures += 1
        if state.consecutive_failures == 1:
            state.episode_started_at = at
        if (
            not state.outage_open
            and state.consecutive_failures >= self.thresholds.failure_threshold
        ):
            started = state.episode_started_at or at
            state.outage_started_at = started
            state.outage_severity = self.thresholds.severity
            out.append(OutageOpened(started, at, self.thresholds.severity, reason, error))

    def _on_success(self, at: datetime, out: list[Transition]) -> None:
        state = self.state
        state.consecutive_failures = 0
        state.episode_started_at = None
        state.consecutive_successes += 1
        if state.consecutive_successes == 1:
            state.recovery_started_at = at
        if state.outage_open and state.consecutive_successes >= self.thresholds.recovery_threshold:
            started = state.outage_started_at
            assert started is not None
            ended = state.recovery_started_at or at
            state.outage_started_at = None
            state.outage_severity = None
            out.append(OutageClosed(started, ended))

    @classmethod
    def restore(
        cls,
        thresholds: Thresholds,
        open_outage: Outage | None,
        recent_newest_first: Sequence[StatusRow],
        status_since: datetime | None = None,
    ) -> OutageStateMachine:
        """Rebuild counters after a restart from the stored outage and the latest status rows.

        The open outage comes from the database, so a restart continues the same episode
        instead of opening a second outage for it.
        """
        state = EndpointState()
        if open_outage is not None:
            state.outage_started_at = open_outage.started_at
            state.outage_severity = open_outage.severity
        counted = [row for row in recent_newest_first if row.status not in NEUTRAL]
        if recent_newest_first:
            latest = recent_newest_first[0]
            state.status = latest.status
            state.last_check_at = latest.checked_at
            state.status_since = status_since or _run_start(recent_newest_first)
        run: list[StatusRow] = []
        for row in counted:
            if run and (row.status is Status.DOWN) != (run[0].status is Status.DOWN):
                break
            run.append(row)
        if run and run[0].status is Status.DOWN:
            state.consecutive_failures = len(run)
            state.episode_started_at = run[-1].checked_at
            if open_outage is not None:
                state.episode_started_at = open_outage.started_at
        elif run:
            state.consecutive_successes = len(run)
            state.recovery_started_at = run[-1].checked_at
        return cls(thresholds, state)


def _run_start(rows_newest_first: Sequence[StatusRow]) -> datetime:
    current = rows_newest_first[0].status
    since = rows_newest_first[0].checked_at
    for row in rows_newest_first:
        if row.status != current:
            break
        since = row.checked_at
    return since
