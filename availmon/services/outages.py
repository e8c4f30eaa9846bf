"""Outages: list, acknowledge, resolve and annotate them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from availmon.errors import FieldError, ValidationFailed, field_errors
from availmon.model import Severity
from availmon.runner import Monitor
from availmon.services.availability import MAX_PAGE
from availmon.store import Repository
from availmon.store.outages import OutageRecord


class OutagePatch(BaseModel):
    """PATCH /api/v1/outages/{id}: acknowledge, resolve, set notes, or several of them at once
    (the server sets the times)."""

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
        """Apply a PATCH body: any of acknowledged_by, resolved_by and notes, in that order
        (acknowledge, then resolve with the notes; notes alone set them). A 409 from the
        acknowledgement stops there: nothing else is changed."""
        try:
            patch = OutagePatch.model_validate(data)
        except ValidationError as exc:
            raise ValidationFailed("invalid outage update", field_errors(exc)) from None
        given = patch.model_fields_set
        if not given:
            raise ValidationFailed(
                "invalid outage update",
                [FieldError("body", "give at least one of acknowledged_by, resolved_by, notes")],
            )
        nulls = [k for k in ("acknowledged_by", "resolved_by") if k in given and not data[k]]
        if nulls:  # a null would do nothing, silently; notes = null clears the notes
            raise ValidationFailed(
                "invalid outage update", [FieldError(k, "must be a name, not null") for k in nulls]
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
