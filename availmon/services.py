"""The in-process Python API; the HTTP API and the CLI are thin layers over these classes.

    service = AvailabilityService(repo, fleet)
    endpoint = await service.create_endpoint({"name": "web", "url": "https://example.net/"})
    result = await service.check_service(endpoint.id)

Validation errors are `ValidationFailed` with the same field errors the HTTP API returns.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from availmon.errors import Conflict, FieldError, NotFound, ValidationFailed, field_errors
from availmon.model import (
    ENDPOINT_ADAPTER,
    AnyEndpoint,
    Endpoint,
    EndpointSource,
    Outage,
    ProbeResult,
    Severity,
    Status,
    StatusRow,
)
from availmon.runner import Monitor
from availmon.scheduler import CheckScheduler
from availmon.store import Repository

MAX_PAGE = 1000


def validate_endpoint(data: dict[str, Any] | BaseModel) -> AnyEndpoint:
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    if not isinstance(data, dict):
        raise ValidationFailed("endpoint must be a JSON object", [])
    try:
        return ENDPOINT_ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise ValidationFailed("invalid endpoint", field_errors(exc)) from None


class Fleet:
    """Keeps the monitor and the scheduler in step: what is watched is scheduled."""

    def __init__(self, monitor: Monitor, scheduler: CheckScheduler | None) -> None:
        self.monitor = monitor
        self.scheduler = scheduler

    def apply(self, endpoint: Endpoint, *, reschedule: bool = True) -> None:
        if not endpoint.spec.is_active:
            self.remove(endpoint.id)
            return
        self.monitor.watch(endpoint)
        if self.scheduler is not None and (reschedule or endpoint.id not in self.scheduler):
            spec = endpoint.spec
            self.scheduler.schedule(
                endpoint.id, spec.check_interval, spec.effective_recheck_interval
            )

    def remove(self, endpoint_id: int) -> None:
        if self.scheduler is not None:
            self.scheduler.unschedule(endpoint_id)
        self.monitor.unwatch(endpoint_id)


class AvailabilityService:
    def __init__(self, repo: Repository, fleet: Fleet) -> None:
        self._repo = repo
        self._fleet = fleet

    async def create_endpoint(self, data: dict[str, Any] | BaseModel) -> Endpoint:
        spec = validate_endpoint(data)
        endpoint = await self._repo.create_endpoint(spec, EndpointSource.API)
        self._fleet.apply(endpoint)
        return endpoint

    async def update_endpoint(self, endpoint_id: int, data: dict[str, Any] | BaseModel) -> Endpoint:
        """Partial update: the given fields replace the stored ones, then all is revalidated."""
        current = await self._repo.get_endpoint(endpoint_id)
        self._refuse_config_owned(current)
        if isinstance(data, BaseModel):
            data = data.model_dump(mode="json", exclude_unset=True)
        if not isinstance(data, dict):
            raise ValidationFailed("update must be a JSON object", [])
        merged = {**current.spec.model_dump(mode="json", exclude_unset=True), **data}
        if "url" in data and "protocol" not in data:
            merged.pop("protocol", None)  # let a new URL scheme pick the protocol
        spec = validate_endpoint(merged)
        endpoint = await self._repo.update_endpoint(endpoint_id, spec)
        if spec.is_active:
            self._fleet.apply(endpoint)
        else:
            await self.retire_endpoint(endpoint_id)
        return endpoint

    async def get_endpoint(self, endpoint_id: int) -> Endpoint:
        return await self._repo.get_endpoint(endpoint_id)

    async def list_endpoints(self, include_inactive: bool = True) -> list[Endpoint]:
        return await self._repo.list_endpoints(include_inactive=include_inactive)

    async def delete_endpoint(self, endpoint_id: int) -> None:
        """Soft delete (history is kept); an outage still open is closed now, since nobody
        will watch the endpoint recover."""
        current = await self._repo.get_endpoint(endpoint_id)
        self._refuse_config_owned(current)
        await self._repo.delete_endpoint(endpoint_id)
        await self.retire_endpoint(endpoint_id)

    async def retire_endpoint(self, endpoint_id: int) -> None:
        """Stop watching; close its open outage, since nobody will see it recover."""
        if endpoint_id in self._fleet.monitor:
            outage_id = self._fleet.monitor.get(endpoint_id).outage_id
            if outage_id is not None:
                await self._repo.close_outage(outage_id, datetime.now(UTC))
        self._fleet.remove(endpoint_id)

    async def check_service(self, endpoint_id: int) -> ProbeResult:
        """Check now (recorded and fed to the state machine like a scheduled check)."""
        endpoint = await self._repo.get_endpoint(endpoint_id)
        if endpoint_id not in self._fleet.monitor:
            if not endpoint.spec.is_active:
                raise Conflict(f"endpoint {endpoint.name!r} is inactive (is_active = false)")
            self._fleet.apply(endpoint)
        return await self._fleet.monitor.check(endpoint_id)

    async def list_statuses(
        self,
        endpoint_id: int,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        before: datetime | None = None,
    ) -> list[StatusRow]:
        await self._repo.get_endpoint(endpoint_id)
        if not 1 <= limit <= MAX_PAGE:
            raise ValidationFailed(
                "invalid query", [FieldError("limit", f"must be between 1 and {MAX_PAGE}")]
            )
        return await self._repo.list_statuses(endpoint_id, since, until, limit, before)

    @staticmethod
    def _refuse_config_owned(endpoint: Endpoint) -> None:
        if endpoint.source is EndpointSource.CONFIG:
            raise Conflict(
                f"endpoint {endpoint.name!r} is defined in the config file; edit the file "
                "(and reload or restart availmon) to change it"
            )


class ServiceAvailabilityCollector:
    def __init__(self, repo: Repository | None, monitor: Monitor) -> None:
        self._repo = repo
        self._monitor = monitor

    async def collect_all_services(self) -> list[tuple[Endpoint, ProbeResult]]:
        """Check every active endpoint now, concurrently (under the global limit)."""
        watched = self._monitor.all()
        results = await asyncio.gather(*(self._monitor.check(w.endpoint.id) for w in watched))
        return [(w.endpoint, r) for w, r in zip(watched, results, strict=True)]

    def status_counts(self) -> dict[str, int]:
        counts = Counter(
            (w.machine.state.status or Status.UNKNOWN).value for w in self._monitor.all()
        )
        return {status.value: counts.get(status.value, 0) for status in Status}

    def summary(self) -> dict[str, Any]:
        """Counts per status, then every watched endpoint's current state."""
        endpoints = []
        for w in sorted(self._monitor.all(), key=lambda w: w.endpoint.name):
            state = w.machine.state
            last = w.last_result
            endpoints.append(
                {
                    "id": w.endpoint.id,
                    "name": w.endpoint.name,
                    "protocol": w.endpoint.spec.protocol.value,
                    "url": w.endpoint.spec.url,
                    "severity": w.endpoint.spec.severity.value,
                    "tags": list(w.endpoint.spec.tags),
                    "status": state.status.value if state.status else None,
                    "since": _iso(state.status_since),
                    "last_check_at": _iso(state.last_check_at),
                    "response_time_ms": last.response_time_ms if last else None,
                    "reason": last.reason.value if last else None,
                    "error": last.error if last else None,
                    "open_outage": (
                        {
                            "id": w.outage_id,
                            "severity": state.outage_severity.value
                            if state.outage_severity
                            else None,
                            "started_at": _iso(state.outage_started_at),
                        }
                        if state.outage_open
                        else None
                    ),
                }
            )
        return {"counts": self.status_counts(), "total": len(endpoints), "endpoints": endpoints}


class OutageManagementService:
    def __init__(self, repo: Repository) -> None:
        self._repo = repo

    async def list_outages(
        self,
        active: bool | None = None,
        endpoint_id: int | None = None,
        severity: Severity | str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Outage]:
        problems = []
        if severity is not None:
            try:
                severity = Severity(severity)
            except ValueError:
                problems.append(
                    FieldError("severity", "must be one of " + ", ".join(s.value for s in Severity))
                )
        if not 1 <= limit <= MAX_PAGE:
            problems.append(FieldError("limit", f"must be between 1 and {MAX_PAGE}"))
        if offset < 0:
            problems.append(FieldError("offset", "must be >= 0"))
        if problems:
            raise ValidationFailed("invalid query", problems)
        sev = severity.value if isinstance(severity, Severity) else None
        return await self._repo.list_outages(active, endpoint_id, sev, limit, offset)

    async def get_outage(self, outage_id: int) -> Outage:
        return await self._repo.get_outage(outage_id)

    async def open_outages(self) -> list[Outage]:
        return await self._repo.open_outages()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


__all__ = [
    "AvailabilityService",
    "Fleet",
    "NotFound",
    "OutageManagementService",
    "ServiceAvailabilityCollector",
    "validate_endpoint",
]
