"""Endpoints: create, change, retire and check them; their statuses and uptime."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError

from availmon.charts import ChartService
from availmon.errors import Conflict, FieldError, NotFound, ValidationFailed, field_errors
from availmon.logs import get_logger
from availmon.maintenance import (
    MaintenanceCalendar,
    MaintenanceStatus,
)
from availmon.model import Endpoint, EndpointSource, ProbeResult, StatusRow
from availmon.runner import Monitor
from availmon.scheduler import CheckScheduler
from availmon.services.maintenance import MaintenanceService
from availmon.specs import ENDPOINT_ADAPTER, AnyEndpoint
from availmon.store import Repository
from availmon.store.rollups import UptimeReader, UptimeRollups
from availmon.uptime import UptimeReport, uptime_range

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


log = get_logger("availmon.fleet")


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
        overrun = endpoint.spec.overrun_warning()
        if overrun is not None:  # at start-up, and when a reload or the API changes it
            log.warning(
                "check_can_outlast_interval",
                endpoint_id=endpoint.id,
                endpoint_name=endpoint.name,
                detail=overrun,
            )
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
    def __init__(
        self,
        repo: Repository,
        fleet: Fleet,
        maintenance: MaintenanceService | None = None,
        rollups: UptimeRollups | None = None,
    ) -> None:
        self._repo = repo
        self._fleet = fleet
        self.maintenance = maintenance or MaintenanceService(repo, MaintenanceCalendar())
        self._rollups = rollups  # uptime figures add what it folded and has not written yet
        # the status page's daily bars and response series
        self.charts = ChartService(repo, cap_of=self._coverage_cap, rollups=rollups)

    def _coverage_cap(self, endpoint_id: int) -> timedelta:
        """How far past its time a check counts in the rollups: 2 x check_interval."""
        monitor = self._fleet.monitor
        if endpoint_id not in monitor:
            return timedelta(0)
        return timedelta(seconds=2 * monitor.get(endpoint_id).endpoint.spec.check_interval)

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

    async def find_endpoint(self, ref: str) -> Endpoint:
        """By id, or by name when no endpoint has that id; NotFound when neither matches or
        when the digits are one endpoint's id and another one's name."""
        by_id = None
        if ref.isascii() and ref.isdigit() and len(ref) < 20 and 0 < int(ref) < 2**63:
            with contextlib.suppress(NotFound):
                by_id = await self._repo.get_endpoint(int(ref))
        by_name = await self._repo.get_endpoint_by_name(ref)
        if by_id is not None and by_name is not None and by_id.id != by_name.id:
            raise NotFound(f"{ref!r} is one endpoint's id and another one's name; use an id")
        found = by_id or by_name
        if found is None:
            raise NotFound(f"no endpoint has the id or name {ref!r}")
        return found

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
                await self._repo.close_outage(
                    outage_id, datetime.now(UTC), resolution="endpoint_inactive"
                )
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

    async def is_in_maintenance(
        self, endpoint_id: int, at: datetime | None = None
    ) -> MaintenanceStatus:
        """Whether the endpoint is in a maintenance window at `at` (default now), and which."""
        endpoint = await self._repo.get_endpoint(endpoint_id)
        return self.maintenance.status(endpoint, at or datetime.now(UTC))

    async def uptime(
        self,
        endpoint_id: int,
        window: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> UptimeReport:
        """Time-based uptime over `window` (24h, 7d, 30d, 90d; default 24h) ending now, or
        over [start, end) (end default now); end is never later than now."""
        endpoint = await self._repo.get_endpoint(endpoint_id)
        start, end = uptime_range(window, start, end, datetime.now(UTC))
        cap = timedelta(seconds=2 * endpoint.spec.check_interval)
        return await UptimeReader(self._repo, self._rollups).uptime(endpoint_id, start, end, cap)

    @staticmethod
    def _refuse_config_owned(endpoint: Endpoint) -> None:
        if endpoint.source is EndpointSource.CONFIG:
            raise Conflict(
                f"endpoint {endpoint.name!r} is defined in the config file; edit the file "
                "(and reload or restart availmon) to change it"
            )
