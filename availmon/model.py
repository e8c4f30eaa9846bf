"""Plain data shared by every layer: statuses, reasons, probe results, outages, stored rows.

The endpoint specs (pydantic models, one per protocol) are in `specs`. This module imports
nothing of ours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from availmon.specs import AnyEndpoint


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
    PATTERN_TIMEOUT = "pattern_timeout"  # expected_pattern ran too long: UNKNOWN, not DOWN
    BODY_TOO_LARGE = "body_too_large"
    TOO_MANY_REDIRECTS = "too_many_redirects"
    CLOSED_WITHOUT_DATA = "closed_without_data"
    INVALID_RESPONSE = "invalid_response"
    NO_RESPONSE = "no_response"  # UDP, DNS, ICMP: nothing came back before the deadline
    NXDOMAIN = "nxdomain"
    NO_DATA = "no_data"  # NOERROR, but no record of the queried type (at the end of any CNAMEs)
    SERVFAIL = "servfail"
    DNS_REFUSED = "dns_refused"  # the server answered with rcode REFUSED
    UNEXPECTED_RCODE = "unexpected_rcode"
    ANSWER_MISMATCH = "answer_mismatch"  # an expected DNS answer is missing
    PACKET_LOSS = "packet_loss"
    CERT_EXPIRED = "cert_expired"
    CERT_NOT_YET_VALID = "cert_not_yet_valid"
    CERT_EXPIRING = "cert_expiring"  # valid, but for fewer than cert_expiry_warning_days
    NETWORK_ERROR = "network_error"
    INVALID_CONFIG = "invalid_config"
    INTERNAL_ERROR = "internal_error"
    OVERLOADED = "overloaded"  # the daemon itself was too busy to time this check: UNKNOWN


class Severity(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class Protocol(StrEnum):
    HTTP = "http"
    HTTPS = "https"
    TCP = "tcp"
    UDP = "udp"
    ICMP = "icmp"
    DNS = "dns"


class EndpointSource(StrEnum):
    CONFIG = "config"
    API = "api"


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
