"""Run one check: probe (with retries, under the concurrency limit and a deadline) -> state
machine -> writer queue and outage store.

The Monitor holds every watched endpoint's probe and state. It knows nothing of scheduling:
the scheduler (or an API "check now") calls `check(endpoint_id)`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from availmon.clock import Clock
from availmon.logs import get_logger
from availmon.looplag import LoopLagMonitor
from availmon.maintenance import Occurrence
from availmon.model import (
    Endpoint,
    Outage,
    ProbeResult,
    Reason,
    Status,
    StatusRow,
)
from availmon.patterns import PatternTimeout
from availmon.probes import Probe, ProbeContext, build_probe
from availmon.state import (
    RAW_STATUS_KEY,
    OutageStateMachine,
    Thresholds,
    Transition,
)
from availmon.transitions import OutageStore, StatusChangeSink, TransitionRecorder

log = get_logger("availmon.runner")

# A probe that overruns its own per-attempt timeout by this much is cut by the runner.
DEADLINE_GRACE_S = 1.0
# loop stall during one attempt beyond which a timing verdict is distrusted (or timeout/4)
OVERLOAD_STALL_S = 0.25


class ResultSink(Protocol):
    def submit(self, row: StatusRow) -> bool: ...


CheckListener = Callable[["Watched", ProbeResult, list[Transition]], None]
# The maintenance window occurrence an endpoint is in at a time, if any (must be cheap).
MaintenanceLookup = Callable[[Endpoint, datetime], Occurrence | None]


def thresholds_of(endpoint: Endpoint) -> Thresholds:
    spec = endpoint.spec
    return Thresholds(spec.failure_threshold, spec.recovery_threshold, spec.severity)


@dataclass
class Watched:
    endpoint: Endpoint
    machine: OutageStateMachine
    context: ProbeContext
    outage_id: int | None = None
    last_result: ProbeResult | None = None
    last_duration_s: float | None = None  # wall time of the latest check, all attempts
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # held while transitions are applied and stored, and by a manual resolve
    transition_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # transitions not yet stored (PostgreSQL away), retried in order before new ones
    pending: list[Transition] = field(default_factory=list)

    # built on first use and again for a new spec: a start-up with 10,000 endpoints need not
    # build every probe and bound logger before the first check can run (~0.4 s, measured)
    _probe: Probe | None = field(default=None, repr=False)  # type: ignore[type-arg]
    _probe_spec: Any = field(default=None, repr=False)
    _log: Any = field(default=None, repr=False)
    _log_endpoint: Endpoint | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.lock.locked()

    @property
    def probe(self) -> Probe:  # type: ignore[type-arg]
        if self._probe is None or self._probe_spec is not self.endpoint.spec:
            self._probe = build_probe(self.endpoint.spec, self.context)
            self._probe_spec = self.endpoint.spec
        return self._probe

    @property
    def log(self) -> Any:
        """The runner's logger bound to this endpoint's id and name."""
        if self._log_endpoint is not self.endpoint:
            endpoint = self.endpoint
            self._log = log.bind(endpoint_id=endpoint.id, endpoint_name=endpoint.name)
            self._log_endpoint = endpoint
        return self._log


def distrust_if_stalled(
    result: ProbeResult, stalled: float, timeout: float, log: Any
) -> ProbeResult:
    """A verdict that rests on timing (a timeout, a slow answer) is not trusted when the event
    loop itself was stalled for a large part of the check: it becomes UNKNOWN `overloaded`,
    never DOWN or DEGRADED. Verdicts that don't rest on timing (refused, a wrong status) stand."""
    timing_verdict = result.reason in (Reason.TIMEOUT, Reason.SLOW)
    if not timing_verdict or stalled < min(OVERLOAD_STALL_S, timeout / 4):
        return result
    log.warning(
        "check_distrusted_overload",
        raw_status=result.status.value,
        raw_reason=result.reason.value,
        stalled_ms=round(stalled * 1000, 1),
    )
    return ProbeResult(
        Status.UNKNOWN,
        Reason.OVERLOADED,
        None,
        f"availmon's event loop was stalled {stalled * 1000:.0f} ms during this check; "
        f"its {result.reason.value} verdict cannot be trusted",
        attempts=result.attempts,
        details={
            **result.details,
            "raw_status": result.status.value,
            "raw_reason": result.reason.value,
            "loop_stalled_ms": round(stalled * 1000, 1),
        },
    )


class Monitor:
    # set by the composition root; None (tests, `availmon check`) trusts every timing
    looplag: LoopLagMonitor | None = None
    # called as a check's first attempt starts (the scheduler measures its lag there)
    on_check_start: Callable[[], None] | None = None

    def __init__(
        self,
        *,
        clock: Clock,
        probe_context: ProbeContext,
        max_concurrency: int,
        sink: ResultSink | None = None,
        store: OutageStore | None = None,
        maintenance: MaintenanceLookup | None = None,
        status_changes: StatusChangeSink | None = None,
    ) -> None:
        self._clock = clock
        self._transitions = TransitionRecorder(store, status_changes)
        self._maintenance = maintenance
        self._context = probe_context
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._sink = sink
        self._store = store
        self._watched: dict[int, Watched] = {}
        self._listeners: list[CheckListener] = []
        self._change_listeners: list[Callable[[int], None]] = []
        self.generation = 0
        self.checks_executed = 0
        self.in_flight = 0

    def __contains__(self, endpoint_id: int) -> bool:
        return endpoint_id in self._watched

    def __len__(self) -> int:
        return len(self._watched)

    def get(self, endpoint_id: int) -> Watched:
        return self._watched[endpoint_id]

    def all(self) -> list[Watched]:
        return list(self._watched.values())

    def watch(
        self,
        endpoint: Endpoint,
        machine: OutageStateMachine | None = None,
        outage_id: int | None = None,
    ) -> Watched:
        """Start watching an endpoint, or swap in a changed spec keeping its state."""
        existing = self._watched.get(endpoint.id)
        self.generation += 1  # the set or the specs changed (views keyed on it rebuild)
        if existing is not None and machine is None:
            existing.endpoint = endpoint  # a new spec gets a new probe at its next check
            existing.machine.thresholds = thresholds_of(endpoint)
            return existing
        watched = Watched(
            endpoint=endpoint,
            machine=machine or OutageStateMachine(thresholds_of(endpoint)),
            context=self._context,
            outage_id=outage_id,
        )
        self._watched[endpoint.id] = watched
        return watched

    def unwatch(self, endpoint_id: int) -> None:
        self._watched.pop(endpoint_id, None)
        self.generation += 1

    async def check(self, endpoint_id: int) -> ProbeResult:
        """One full check now: wait for any in-flight check of the same endpoint first.

        The locks are taken with acquire()/release(), not `async with`: the context manager
        adds two coroutines per lock, and this runs 5,000 times a second at 50,000 endpoints.
        For the same reason the check is one coroutine above the attempts, not one per lock:
        every coroutine in the chain is resumed again each time the probe's I/O completes."""
        watched = self._watched[endpoint_id]
        lock = watched.lock
        await lock.acquire()
        try:
            semaphore = self._semaphore
            await semaphore.acquire()
            self.in_flight += 1
            try:
                if self.on_check_start is not None:
                    self.on_check_start()
                checked_at = self._clock.now()
                started = time.perf_counter()
                result = await self._attempts(watched)
                duration = time.perf_counter() - started
            finally:
                self.in_flight -= 1
                semaphore.release()
            transition_lock = watched.transition_lock  # held while transitions are stored
            await transition_lock.acquire()
            try:
                transitions = self._observe(watched, result, checked_at, duration)
                if transitions or watched.pending:
                    await self._transitions.store(watched, transitions)
            finally:
                transition_lock.release()
                # also when storing was cancelled or recording failed: the state has moved
                self._changed(watched)
            self._tell(watched, result, transitions)
            return result
        finally:
            lock.release()

    def _observe(
        self, watched: Watched, result: ProbeResult, checked_at: datetime, duration: float
    ) -> list[Transition]:
        """A finished check, recorded: maintenance, the state machine, the status row."""
        result.checked_at = checked_at
        self.checks_executed += 1
        watched.last_result = result
        watched.last_duration_s = duration
        raw = result.status
        window = self._maintenance(watched.endpoint, checked_at) if self._maintenance else None
        if window is not None:  # the check ran and its raw result is kept; recorded: MAINTENANCE
            result.status = Status.MAINTENANCE
            result.details = {
                **result.details,
                RAW_STATUS_KEY: raw.value,
                "maintenance_window_id": window.window.id,
            }
        transitions = watched.machine.observe(
            raw, checked_at, result.reason.value, result.error, maintenance=window is not None
        )
        self._record(watched, result, raw, checked_at)
        return transitions

    def _tell(self, watched: Watched, result: ProbeResult, transitions: list[Transition]) -> None:
        for listener in self._listeners:
            try:
                listener(watched, result, transitions)
            except Exception:  # a side output must never fail a check
                watched.log.exception("check_listener_failed", listener=repr(listener))

    def _record(
        self, watched: Watched, result: ProbeResult, raw: Status, checked_at: datetime
    ) -> None:
        endpoint_log = watched.log
        if endpoint_log.is_enabled_for(logging.DEBUG):  # building the call: 0.9 us a check
            endpoint_log.debug(
                "check_done",
                status=result.status.value,
                raw_status=raw.value,
                reason=result.reason.value,
                response_time_ms=result.response_time_ms,
                attempts=result.attempts,
            )
        if self._sink is not None:
            self._sink.submit(
                StatusRow(
                    endpoint_id=watched.endpoint.id,
                    checked_at=checked_at,
                    status=result.status,
                    reason=result.reason,
                    response_time_ms=result.response_time_ms,
                    error=result.error,
                    attempts=result.attempts,
                    details=result.details,
                )
            )

    def add_change_listener(self, listener: Callable[[int], None]) -> None:
        """Call `listener(endpoint_id)` whenever a watched endpoint's visible state changed
        (a check finished, an outage was resolved by hand); a new set of endpoints or a new
        spec shows as a new `generation` instead. Must be cheap: it runs on every check."""
        self._change_listeners.append(listener)

    def _changed(self, watched: Watched) -> None:
        for listener in self._change_listeners:
            listener(watched.endpoint.id)

    def add_listener(self, listener: CheckListener) -> None:
        """Call `listener(watched, result, transitions)` after every check, once its
        transitions are stored. Listeners must not block: hand the data to a queue."""
        self._listeners.append(listener)

    async def _attempts(self, watched: Watched) -> ProbeResult:
        """Up to retries + 1 attempts, each under the runner's deadline (the probe's own plus
        DEADLINE_GRACE_S), until one is not DOWN. The attempt is awaited here, not in a helper
        coroutine: each level of awaiting is resumed again when the probe's I/O completes."""
        spec = watched.endpoint.spec
        timeout, looplag = spec.timeout, self.looplag
        deadlines = self._context.deadlines
        for attempt in range(1, spec.retries + 2):
            stalled_before = looplag.stalled_total if looplag else 0.0
            try:
                with deadlines.after(timeout + DEADLINE_GRACE_S):
                    result = await watched.probe.attempt(timeout)
            except Exception as exc:  # a probe bug must cost one check, never the daemon
                result = self._attempt_failed(watched, exc, timeout)
            result.attempts = attempt
            if looplag is not None:
                stalled = looplag.stalled_total - stalled_before
                result = distrust_if_stalled(result, stalled, timeout, watched.log)
            if result.status is not Status.DOWN:
                break
        return result

    @staticmethod
    def _attempt_failed(watched: Watched, exc: Exception, timeout: float) -> ProbeResult:
        """An attempt that raised, as data: the probe overran the deadline, a pattern ran too
        long, or a bug."""
        if isinstance(exc, TimeoutError):
            return ProbeResult(
                Status.DOWN,
                Reason.TIMEOUT,
                None,
                f"no result within {timeout:g} s (probe overran its deadline)",
            )
        if isinstance(exc, PatternTimeout):
            watched.log.warning("pattern_timeout", error=str(exc))
            return ProbeResult(Status.UNKNOWN, Reason.PATTERN_TIMEOUT, None, str(exc))
        watched.log.error("probe_crashed", exc_info=exc)
        return ProbeResult(Status.UNKNOWN, Reason.INTERNAL_ERROR, None, repr(exc))

    async def resolve_outage(
        self, endpoint_id: int, outage_id: int, by: str, notes: str | None = None
    ) -> Outage | None:
        """An operator resolves the endpoint's open outage now: stored first, then the state
        machine holds reopening until the endpoint recovers. None when `outage_id` is not the
        outage this monitor has open for the endpoint (the caller then goes to the store)."""
        watched = self._watched.get(endpoint_id)
        if watched is None or self._store is None:
            return None
        async with watched.transition_lock:
            if watched.outage_id != outage_id or not watched.machine.state.outage_open:
                return None
            at = self._clock.now()
            outage = await self._store.resolve_outage(outage_id, at, by, notes)
            watched.machine.resolve(at)
            watched.outage_id = None
            self._changed(watched)
        watched.log.info("outage_resolved_manually", outage_id=outage_id, resolved_by=by)
        return outage
