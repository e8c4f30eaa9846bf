"""The in-process Python API; the HTTP API and the CLI are thin layers over these classes.

    service = AvailabilityService(repo, fleet)
    endpoint = await service.create_endpoint({"name": "web", "url": "https://example.net/"})
    result = await service.check_service(endpoint.id)

Validation errors are `ValidationFailed` with the same field errors the HTTP API returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from availmon.charts import ChartService
from availmon.errors import Conflict, FieldError, NotFound, ValidationFailed, field_errors
from availmon.maintenance import (
    MaintenanceCalendar,
    MaintenanceStatus,
    MaintenanceWindow,
    Occurrence,
    WindowInput,
    window_input,
)
from availmon.model import Endpoint, EndpointSource, ProbeResult, Severity, Status, StatusRow
from availmon.runner import Monitor, Watched
from availmon.scheduler import CheckScheduler
from availmon.specs import ENDPOINT_ADAPTER, AnyEndpoint
from availmon.status_view import (
    EndpointNow,
    NowView,
    StatusView,
    endpoint_now,
    endpoint_status,
)
from availmon.store import Repository
from availmon.store.outages import OutageRecord
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


class ServiceAvailabilityCollector:
    def __init__(self, repo: Repository | None, monitor: Monitor) -> None:
        self._repo = repo
        self._monitor = monitor
        # side outputs (Redis, Elasticsearch) add a section each to summary(); never blocking
        self.extra_status: dict[str, Callable[[], dict[str, Any]]] = {}
        self._view = StatusView()
        monitor.add_change_listener(self._view.changed)
        self._now = NowView()
        monitor.add_change_listener(self._now.changed)
        self._refresher: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Keep the status summary current in the background (StatusView.keep_current)."""
        monitor = self._monitor
        self._refresher = asyncio.get_running_loop().create_task(
            self._view.keep_current(lambda: (monitor.all(), monitor.generation)),
            name="status-view",
        )

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
            self._refresher = None

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

    def snapshot(self) -> list[EndpointNow]:
        """Every watched endpoint's current state, typed, in no particular order."""
        return self._now.snapshot(self._monitor.all(), self._monitor.generation)

    def current(self, endpoint_id: int) -> EndpointNow | None:
        """One endpoint's current state; None when it is not watched (inactive)."""
        if endpoint_id not in self._monitor:
            return None
        return endpoint_now(self._monitor.get(endpoint_id))

    def summary(self) -> dict[str, Any]:
        """Counts per status, then every watched endpoint's current state."""
        endpoints = [endpoint_status(w) for w in sorted(self._monitor.all(), key=_by_name)]
        summary = {"counts": self.status_counts(), "total": len(endpoints), "endpoints": endpoints}
        return summary | {name: section() for name, section in self.extra_status.items()}

    def summary_json(self) -> bytes:
        """summary() encoded, from per-endpoint fragments that are rebuilt only on change."""
        watched = self._monitor.all()
        endpoints, counts = self._view.endpoints_json(watched, self._monitor.generation)
        head = {
            "counts": {status.value: counts.get(status.value, 0) for status in Status},
            "total": len(watched),
        }
        extra = {name: section() for name, section in self.extra_status.items()}
        pieces = [
            json.dumps(head, separators=(",", ":")).encode()[:-1],
            b',"endpoints":',
            endpoints,
        ]
        if extra:
            pieces += [b",", json.dumps(extra, separators=(",", ":")).encode()[1:-1]]
        pieces.append(b"}")
        return b"".join(pieces)  # one copy of the array (14.5 MB at 50,000), not three


def _by_name(w: Watched) -> str:
    return w.endpoint.name


class OutagePatch(BaseModel):
    """PATCH /api/v1/outages/{id}: acknowledge, resolve, or set notes (server sets times)."""

    model_config = ConfigDict(extra="forbid")

    acknowledged_by: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    resolved_by: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    notes: Annotated[str, Field(max_length=10_000)] | None = None


class OutageManagementService:
    def __init__(self, repo: Repository, monitor: Monitor | None = None) -> None:
        self._repo = repo
        self._monitor = monitor

    async def acknowledge(self, outage_id: int, by: str) -> OutageRecord:
        """Record who acknowledged the open outage (now); Conflict when ended or already."""
        return await self._repo.acknowledge_outage(outage_id, by, datetime.now(UTC))

    async def resolve(self, outage_id: int, by: str, notes: str | None = None) -> OutageRecord:
        """End the open outage now. While the endpoint keeps failing no new outage opens;
        it must recover (recovery_threshold UP checks) and fail again."""
        outage = await self._repo.get_outage(outage_id)
        if self._monitor is not None:
            done = await self._monitor.resolve_outage(outage.endpoint_id, outage_id, by, notes)
            if done is not None:
                return await self._repo.get_outage(outage_id)
        return await self._repo.resolve_outage(outage_id, datetime.now(UTC), by, notes)

    async def update_outage(self, outage_id: int, data: dict[str, Any]) -> OutageRecord:
        """Apply a PATCH body: acknowledged_by, then resolved_by (+ notes), or notes alone."""
        try:
            patch = OutagePatch.model_validate(data)
        except ValidationError as exc:
            raise ValidationFailed("invalid outage update", field_errors(exc)) from None
        given = patch.model_fields_set
        if not given:
            raise ValidationFailed(
                "invalid outage update",
                [FieldError("", "give acknowledged_by, resolved_by or notes")],
            )
        outage = await self._repo.get_outage(outage_id)
        if patch.acknowledged_by is not None:
            outage = await self.acknowledge(outage_id, patch.acknowledged_by)
        if patch.resolved_by is not None:
            return await self.resolve(outage_id, patch.resolved_by, patch.notes)
        if "notes" in given:
            outage = await self._repo.set_outage_notes(outage_id, patch.notes)
        return outage

    async def list_outages(
        self,
        active: bool | None = None,
        endpoint_id: int | None = None,
        severity: Severity | str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[OutageRecord]:
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

    async def get_outage(self, outage_id: int) -> OutageRecord:
        return await self._repo.get_outage(outage_id)

    async def open_outages(self) -> list[OutageRecord]:
        return await self._repo.open_outages()


class MaintenanceService:
    """Maintenance windows: stored in PostgreSQL, evaluated from the in-memory calendar."""

    def __init__(self, repo: Repository, calendar: MaintenanceCalendar) -> None:
        self._repo = repo
        self.calendar = calendar

    def status(self, endpoint: Endpoint, at: datetime) -> MaintenanceStatus:
        tags = endpoint.spec.tags
        current = self.calendar.match(endpoint.id, tags, at)
        upcoming = self.calendar.next_occurrence(endpoint.id, tags, at)
        return MaintenanceStatus(endpoint.id, at, current, upcoming)

    def occurrences(self, start: datetime, end: datetime) -> list[Occurrence]:
        """Window occurrences overlapping [start, end), soonest first (running ones first)."""
        return self.calendar.occurrences(start, end)

    async def list_windows(self) -> list[MaintenanceWindow]:
        return await self._repo.list_windows()

    async def get_window(self, window_id: int) -> MaintenanceWindow:
        return await self._repo.get_window(window_id)

    async def create_window(self, data: dict[str, Any] | BaseModel) -> MaintenanceWindow:
        window = await self._repo.create_window(_window_spec(data))
        self.calendar.put(window)
        return window

    async def update_window(self, window_id: int, data: dict[str, Any]) -> MaintenanceWindow:
        """Partial update: given fields replace the stored ones (a new target replaces the old
        one), then the whole window is validated again."""
        current = await self._repo.get_window(window_id)
        _refuse_config_window(current)
        merged = window_input(current)
        if "applies_to_all" in data:
            data = {**data, "all": data["applies_to_all"]}
            del data["applies_to_all"]
        if {"endpoint_id", "tags", "all"} & data.keys():
            merged.update(endpoint_id=None, tags=[], all=False)
        window = await self._repo.update_window(window_id, _window_spec({**merged, **data}))
        self.calendar.put(window)
        return window

    async def delete_window(self, window_id: int) -> None:
        _refuse_config_window(await self._repo.get_window(window_id))
        await self._repo.delete_window(window_id)
        self.calendar.remove(window_id)


def _window_spec(data: dict[str, Any] | BaseModel) -> WindowInput:
    if isinstance(data, WindowInput):
        return data
    if isinstance(data, BaseModel):
        data = data.model_dump()
    try:
        return WindowInput.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed("invalid maintenance window", field_errors(exc)) from None


def _refuse_config_window(window: MaintenanceWindow) -> None:
    if window.source == "config":
        raise Conflict(
            f"maintenance window {window.name!r} is defined in the config file; edit the file "
            "(and restart availmon) to change it"
        )


__all__ = [
    "AvailabilityService",
    "Fleet",
    "MaintenanceService",
    "NotFound",
    "OutageManagementService",
    "ServiceAvailabilityCollector",
    "validate_endpoint",
]
