"""Store a check's transitions (status changes, outages opened, raised, closed) in order.

A transition that cannot be stored (PostgreSQL away) is kept on the endpoint, with everything
after it, and retried before the next check's, so the outage rows catch up with the in-memory
state machine instead of losing an opening. Each is logged once, when it happens.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from availmon.model import Outage, Severity, Status
from availmon.state import (
    HoldReleased,
    OutageClosed,
    OutageOpened,
    OutageSeverityRaised,
    StatusChanged,
    Transition,
)

if TYPE_CHECKING:
    from availmon.runner import Watched

STORE_CALL_TIMEOUT_S = 10.0
MAX_PENDING_TRANSITIONS = 100


class StatusChangeSink(Protocol):
    def record(self, endpoint_id: int, status: Status, since: datetime) -> None: ...


class OutageStore(Protocol):
    async def open_outage(
        self,
        endpoint_id: int,
        severity: Severity,
        started_at: datetime,
        opened_at: datetime,
        reason: str | None,
        error: str | None,
    ) -> Outage: ...

    async def close_outage(self, outage_id: int, ended_at: datetime) -> None: ...

    async def update_outage_severity(self, outage_id: int, severity: Severity) -> None: ...

    async def resolve_outage(
        self, outage_id: int, ended_at: datetime, by: str, notes: str | None = None
    ) -> Outage: ...

    async def release_reopen_hold(self, endpoint_id: int) -> None: ...

    async def record_status_change(
        self, endpoint_id: int, status: Status, since: datetime
    ) -> None: ...


class _Quiet:
    """A logger that drops everything (for transitions being stored on a retry)."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


_QUIET = _Quiet()


class TransitionRecorder:
    def __init__(
        self, store: OutageStore | None, status_changes: StatusChangeSink | None = None
    ) -> None:
        self._store = store
        # batched "status since" writes; without one, each change is its own store call
        self._status_changes = status_changes

    async def store(self, watched: Watched, transitions: list[Transition]) -> None:
        """Store transitions in order. One that cannot be stored (PostgreSQL away) is kept,
        with everything after it, and retried before the next check's transitions, so the
        outage rows catch up with the in-memory state instead of losing an opening."""
        endpoint_id = watched.endpoint.id
        queue = watched.pending + transitions
        watched.pending = []
        for index, transition in enumerate(queue):
            try:
                retry = index < len(queue) - len(transitions)
                await self._store_one(watched, endpoint_id, transition, retry)
            except Exception as exc:
                watched.pending = queue[index:][-MAX_PENDING_TRANSITIONS:]
                if index == 0 and len(queue) > len(transitions):
                    return  # still failing: logged when the episode began
                watched.log.error(
                    "transition_not_stored",
                    transition=type(transition).__name__,
                    error=repr(exc),
                    pending=len(watched.pending),
                )
                return
        if len(queue) > len(transitions):
            watched.log.info("transitions_caught_up", stored=len(queue) - len(transitions))

    async def _store_one(
        self, watched: Watched, endpoint_id: int, transition: Transition, retry: bool = False
    ) -> None:
        # a retried transition was logged when it happened: store it without a second line
        logger = _QUIET if retry else watched.log
        store = self._store
        if isinstance(transition, StatusChanged):
            level = "warning" if transition.current is Status.DOWN else "info"
            getattr(logger, level)(
                "status_changed",
                previous=transition.previous.value if transition.previous else None,
                status=transition.current.value,
            )
            if self._status_changes is not None:
                self._status_changes.record(endpoint_id, transition.current, transition.at)
            elif store is not None:
                async with asyncio.timeout(STORE_CALL_TIMEOUT_S):
                    await store.record_status_change(endpoint_id, transition.current, transition.at)
        elif isinstance(transition, OutageOpened):
            logger.warning(
                "outage_opened",
                severity=transition.severity.value,
                started_at=transition.started_at.isoformat(),
                reason=transition.reason,
            )
            if store is not None:
                async with asyncio.timeout(STORE_CALL_TIMEOUT_S):
                    outage = await store.open_outage(
                        endpoint_id,
                        transition.severity,
                        transition.started_at,
                        transition.opened_at,
                        transition.reason,
                        transition.error,
                    )
                watched.outage_id = outage.id
        elif isinstance(transition, OutageClosed):
            duration = (transition.ended_at - transition.started_at).total_seconds()
            logger.info("outage_closed", outage_id=watched.outage_id, duration_s=duration)
            if store is not None and watched.outage_id is not None:
                async with asyncio.timeout(STORE_CALL_TIMEOUT_S):
                    await store.close_outage(watched.outage_id, transition.ended_at)
            watched.outage_id = None
        else:
            await self._store_outage_update(watched, transition, logger)

    async def _store_outage_update(
        self, watched: Watched, transition: Transition, logger: Any
    ) -> None:
        """Severity raised in place; the hold after a manual resolve released."""
        store = self._store
        if isinstance(transition, OutageSeverityRaised):
            logger.warning(
                "outage_severity_raised",
                outage_id=watched.outage_id,
                previous=transition.previous.value,
                severity=transition.severity.value,
                reason=transition.reason,
            )
            if store is not None and watched.outage_id is not None:
                async with asyncio.timeout(STORE_CALL_TIMEOUT_S):
                    await store.update_outage_severity(watched.outage_id, transition.severity)
        elif isinstance(transition, HoldReleased):
            logger.info("outage_hold_released")
            if store is not None:
                async with asyncio.timeout(STORE_CALL_TIMEOUT_S):
                    await store.release_reopen_hold(watched.endpoint.id)
