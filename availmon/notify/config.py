"""`[notifications]` and `[[notifications.webhook]]`: typed, validated once at load."""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from availmon.model import Severity

EventKind = Literal[
    "outage.opened",
    "outage.severity_raised",
    "outage.acknowledged",
    "outage.resolved",
    "outage.reminder",
]
_SINK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class WebhookSettings(BaseModel):
    """One webhook sink. Empty filters let everything through; given filters must all pass."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = Field(description="Stable id of the sink: deliveries are tracked by it")
    url: Annotated[str, Field(max_length=2048)]
    secret: SecretStr | None = Field(default=None, description="HMAC-SHA256 signing key")
    severities: tuple[Severity, ...] = ()
    tags: tuple[str, ...] = Field(default=(), description="Endpoint carries any of these")
    events: tuple[EventKind, ...] = ()
    reminder_interval: float | None = Field(
        default=None, ge=1, le=7 * 86400, description="Seconds; remind while unacknowledged"
    )
    timeout: float = Field(default=10.0, gt=0, le=120, description="Seconds per POST")

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _SINK_NAME.match(value):
            raise ValueError("must be 1-100 characters: letters, digits and ._- ")
        return value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value


class NotificationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    webhook: list[WebhookSettings] = Field(default_factory=list)
    retry_initial: float = Field(default=5.0, gt=0, le=3600, description="Seconds")
    retry_max: float = Field(default=3600.0, gt=0, le=86400, description="Backoff cap, seconds")
    give_up_after: float = Field(
        default=48 * 3600, gt=0, le=30 * 86400, description="Seconds after the event"
    )
    poll_interval: float = Field(default=5.0, gt=0, le=300, description="Outbox re-read, s")
    reminder_check_interval: float = Field(default=30.0, gt=0, le=3600)

    @field_validator("webhook")
    @classmethod
    def _unique_names(cls, value: list[WebhookSettings]) -> list[WebhookSettings]:
        names = [w.name for w in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError("webhook names must be unique: " + ", ".join(map(repr, twice)))
        return value

    @model_validator(mode="after")
    def _check_backoff(self) -> NotificationSettings:
        if self.retry_max < self.retry_initial:
            raise ValueError("retry_max must be at least retry_initial")
        return self
