"""Plain data shared by every layer: endpoint specs, probe results, statuses, outages.

The endpoint spec models are pydantic models because the same validation must hold for the
TOML file, the HTTP API and the in-process Python API. This module imports nothing of ours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)


class Status(StrEnum):
    UP = "UP"
    DOWN = "DOWN"
    DEGRADED = "DEGRADED"
    MAINTENANCE = "MAINTENANCE"
    UNKNOWN = "UNKNOWN"


class Reason(StrEnum):
    """Closed set of reasons a check ended the way it did."""

    OK = "ok"
    SLOW = "slow"  # answered correctly but slower than degraded_threshold_ms
    TIMEOUT = "timeout"
    REFUSED = "refused"
    RESET = "reset"
    DNS_ERROR = "dns_error"
    TLS_ERROR = "tls_error"
    UNEXPECTED_STATUS = "unexpected_status"
    PATTERN_MISMATCH = "pattern_mismatch"
    BODY_TOO_LARGE = "body_too_large"
    TOO_MANY_REDIRECTS = "too_many_redirects"
    CLOSED_WITHOUT_DATA = "closed_without_data"
    INVALID_RESPONSE = "invalid_response"
    NETWORK_ERROR = "network_error"
    INVALID_CONFIG = "invalid_config"
    INTERNAL_ERROR = "internal_error"


class Severity(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class Protocol(StrEnum):
    HTTP = "http"
    HTTPS = "https"
    TCP = "tcp"


class EndpointSource(StrEnum):
    CONFIG = "config"
    API = "api"


_STATUS_CLASS = re.compile(r"^[1-5]xx$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:/@()+-]{0,199}$")


def _status_code_matches(code: int, expected: list[int | str]) -> bool:
    for item in expected:
        if isinstance(item, int):
            if code == item:
                return True
        elif code // 100 == int(item[0]):
            return True
    return False


class EndpointBase(BaseModel):
    """Fields every protocol shares; names follow the design document's data model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Only name and url are stripped: patterns, send and body keep every byte as given.
    name: Annotated[str, StringConstraints(strip_whitespace=True)]
    protocol: Protocol
    url: Annotated[str, StringConstraints(strip_whitespace=True, max_length=2048)]
    check_interval: float = Field(default=60.0, gt=0, le=86400, description="Seconds")
    timeout: float = Field(default=10.0, gt=0, le=3600, description="Seconds, per attempt")
    retries: int = Field(default=0, ge=0, le=10)
    expected_pattern: str | None = None
    degraded_threshold_ms: float | None = Field(default=None, gt=0)
    failure_threshold: int = Field(default=3, ge=1, le=1000)
    recovery_threshold: int = Field(default=2, ge=1, le=1000)
    recheck_interval: float | None = Field(default=None, gt=0, le=86400)
    severity: Severity = Severity.HIGH
    tags: tuple[str, ...] = ()
    is_active: bool = True

    @model_validator(mode="before")
    @classmethod
    def _protocol_from_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and "protocol" not in data and isinstance(data.get("url"), str):
            scheme = urlsplit(data["url"]).scheme.lower()
            if scheme:
                data = {**data, "protocol": scheme}
        return data

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                "must be 1-200 characters: letters, digits, space and ._:/@()+- "
                "(starting with a letter or digit)"
            )
        return value

    @field_validator("expected_pattern")
    @classmethod
    def _check_pattern(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @field_validator("tags")
    @classmethod
    def _check_tags(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for tag in value:
            if not tag or len(tag) > 100:
                raise ValueError("each tag must be 1-100 characters")
        return tuple(dict.fromkeys(value))

    @field_validator("url")
    @classmethod
    def _check_url_scheme(cls, value: str, info: ValidationInfo) -> str:
        protocol = info.data.get("protocol")
        scheme = urlsplit(value).scheme.lower()
        if protocol is not None and scheme != protocol.value:
            raise ValueError(
                f"url scheme {scheme or '(none)'!r} does not match protocol {protocol.value!r}"
            )
        return value

    @field_validator("timeout")
    @classmethod
    def _check_timeout(cls, value: float, info: ValidationInfo) -> float:
        interval = info.data.get("check_interval")
        if interval is not None and value >= interval:
            raise ValueError(
                f"timeout ({value:g} s) must be less than check_interval ({interval:g} s)"
            )
        return value

    @field_validator("recheck_interval")
    @classmethod
    def _check_recheck(cls, value: float | None, info: ValidationInfo) -> float | None:
        interval = info.data.get("check_interval")
        if value is not None and interval is not None and value > interval:
            raise ValueError(
                f"recheck_interval ({value:g} s) must not exceed check_interval ({interval:g} s)"
            )
        return value

    @property
    def effective_recheck_interval(self) -> float:
        if self.recheck_interval is not None:
            return self.recheck_interval
        return min(self.check_interval, 10.0)

    @property
    def max_check_seconds(self) -> float:
        """Upper bound of one whole check, all attempts included."""
        return self.timeout * (self.retries + 1)


StatusCodeSpec = int | str | list[int | str]


class HttpEndpoint(EndpointBase):
    protocol: Literal[Protocol.HTTP, Protocol.HTTPS]
    expected_status_code: StatusCodeSpec = Field(default="2xx", validate_default=True)
    method: Literal["GET", "HEAD", "POST", "PUT", "OPTIONS", "PATCH", "DELETE"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None  # sent byte for byte
    follow_redirects: bool = True
    max_redirects: int = Field(default=10, ge=0, le=50)
    verify_tls: bool = True
    ca_file: str | None = None
    max_body_bytes: int = Field(default=1024 * 1024, ge=0, le=256 * 1024 * 1024)

    @field_validator("expected_status_code")
    @classmethod
    def _check_status(cls, value: StatusCodeSpec) -> list[int | str]:
        items = value if isinstance(value, list) else [value]
        if not items:
            raise ValueError("must name at least one status code or class")
        out: list[int | str] = []
        for item in items:
            if isinstance(item, int):
                if not 100 <= item <= 599:
                    raise ValueError(f"status code {item} is outside 100-599")
                out.append(item)
            elif _STATUS_CLASS.match(item.lower()):
                out.append(item.lower())
            elif item.isdigit() and 100 <= int(item) <= 599:
                out.append(int(item))
            else:
                raise ValueError(f"{item!r} is neither a status code nor a class like '2xx'")
        return out

    @field_validator("url")
    @classmethod
    def _check_http_url(cls, value: str) -> str:
        if not urlsplit(value).hostname:
            raise ValueError(f"url {value!r} has no host")
        return value

    def status_code_ok(self, code: int) -> bool:
        expected = self.expected_status_code
        assert isinstance(expected, list)
        return _status_code_matches(code, expected)


class TcpEndpoint(EndpointBase):
    protocol: Literal[Protocol.TCP]
    send: str | None = None  # sent byte for byte: "PING\r\n" keeps its "\r\n"
    max_read_bytes: int = Field(default=64 * 1024, ge=1, le=16 * 1024 * 1024)

    @field_validator("url")
    @classmethod
    def _check_tcp_url(cls, value: str) -> str:
        parts = urlsplit(value)
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"url {value!r} has an invalid port") from None
        if not parts.hostname or port is None:
            raise ValueError(f"url {value!r} must look like tcp://host:port")
        if parts.path not in ("", "/") or parts.query:
            raise ValueError(f"url {value!r} must not have a path or query")
        return value

    @property
    def host(self) -> str:
        host = urlsplit(self.url).hostname
        assert host is not None
        return host

    @property
    def port(self) -> int:
        port = urlsplit(self.url).port
        assert port is not None
        return port


def _endpoint_tag(data: Any) -> str | None:
    if isinstance(data, BaseModel):
        data = data.model_dump()
    if not isinstance(data, dict):
        return None
    protocol = data.get("protocol")
    if protocol is None and isinstance(data.get("url"), str):
        protocol = urlsplit(data["url"]).scheme.lower()
    protocol = str(protocol).lower() if protocol else None
    if protocol in ("http", "https"):
        return "http"
    if protocol == "tcp":
        return "tcp"
    return None


EndpointSpec = Annotated[
    Annotated[HttpEndpoint, Tag("http")] | Annotated[TcpEndpoint, Tag("tcp")],
    Discriminator(
        _endpoint_tag,
        custom_error_type="invalid_protocol",
        custom_error_message="protocol must be one of: http, https, tcp "
        "(given explicitly or by the url scheme)",
    ),
]
AnyEndpoint = HttpEndpoint | TcpEndpoint
ENDPOINT_ADAPTER: TypeAdapter[AnyEndpoint] = TypeAdapter(EndpointSpec)


@dataclass(slots=True)
class ProbeResult:
    """What one check found. `response_time_ms` is None when nothing answered."""

    status: Status
    reason: Reason
    response_time_ms: float | None = None
    error: str | None = None
    attempts: int = 1
    details: dict[str, Any] = field(default_factory=dict)
    checked_at: datetime | None = None

    @property
    def is_failure(self) -> bool:
        return self.status is Status.DOWN

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "reason": self.reason.value,
            "response_time_ms": self.response_time_ms,
            "error": self.error,
            "attempts": self.attempts,
            "details": self.details,
            "checked_at": self.checked_at.isoformat() if self.checked_at else None,
        }


@dataclass(slots=True, frozen=True)
class Endpoint:
    """An endpoint as the daemon knows it: database identity plus its validated spec."""

    id: int
    spec: AnyEndpoint
    source: EndpointSource

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(slots=True)
class Outage:
    id: int
    endpoint_id: int
    severity: Severity
    started_at: datetime
    opened_at: datetime
    ended_at: datetime | None = None
    reason: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "endpoint_id": self.endpoint_id,
            "severity": self.severity.value,
            "started_at": self.started_at.isoformat(),
            "opened_at": self.opened_at.isoformat(),
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "is_active": self.ended_at is None,
            "reason": self.reason,
            "error": self.error,
        }


@dataclass(slots=True, frozen=True)
class StatusRow:
    """One stored check result, as the writer sends it to PostgreSQL."""

    endpoint_id: int
    checked_at: datetime
    status: Status
    reason: Reason
    response_time_ms: float | None
    error: str | None
    attempts: int
    details: dict[str, Any]
