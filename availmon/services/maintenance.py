"""Maintenance windows: create, change and delete them; whether an endpoint is in one."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from availmon.errors import Conflict, ValidationFailed, field_errors
from availmon.maintenance import (
    MaintenanceCalendar,
    MaintenanceStatus,
    MaintenanceWindow,
    Occurrence,
    WindowInput,
    window_input,
)
from availmon.model import Endpoint
from availmon.store import Repository


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
