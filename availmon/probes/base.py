"""The probe interface: a probe gets its validated spec once and a timeout per attempt.

A probe is built once per endpoint (so patterns, SSL contexts and request data are prepared
once, not on every check) and its `attempt()` is called for each attempt of each check. It
returns a ProbeResult and never raises for a failed check: failure is data. It knows nothing
of scheduling, storage or outages. Retries and the outer deadline belong to the runner.
"""

from __future__ import annotations

import abc
import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from availmon.deadline import Deadlines
from availmon.model import ProbeResult, Reason, Status
from availmon.specs import AnyEndpoint

SpecT = TypeVar("SpecT", bound=AnyEndpoint)


@dataclass
class ProbeContext:
    """Shared, long-lived resources probes may use; created inside the running loop."""

    extra: dict[str, Any] = field(default_factory=dict)
    # the attempts' deadlines, and the runner's around them, share one loop timer
    deadlines: Deadlines = field(default_factory=Deadlines)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, looked up once (asyncio.get_running_loop() costs a getpid())."""
        return self.deadlines.loop

    async def close(self) -> None:
        """Nothing is pooled today: every check opens and closes its own connection."""


class Probe(abc.ABC, Generic[SpecT]):
    protocols: ClassVar[tuple[str, ...]]

    def __init__(self, spec: SpecT, context: ProbeContext) -> None:
        self.spec = spec
        self.context = context

    @abc.abstractmethod
    async def attempt(self, timeout: float) -> ProbeResult:
        """One attempt, bounded by `timeout` seconds; a timeout is reported as Reason.TIMEOUT."""

    def grade(self, response_time_ms: float | None, details: dict[str, Any]) -> ProbeResult:
        """A correct answer: UP, or DEGRADED when slower than degraded_threshold_ms."""
        threshold = self.spec.degraded_threshold_ms
        if threshold is not None and response_time_ms is not None and response_time_ms > threshold:
            return ProbeResult(
                Status.DEGRADED,
                Reason.SLOW,
                response_time_ms,
                f"response took {response_time_ms:.1f} ms (degraded above {threshold:g} ms)",
                details=details,
            )
        return ProbeResult(Status.UP, Reason.OK, response_time_ms, None, details=details)


def span_ms(start: float | None, end: float | None) -> float | None:
    """Milliseconds between two perf_counter stamps; None when either is missing."""
    if start is None or end is None:
        return None
    return round((end - start) * 1000.0, 3)


def literal_address(host: str) -> tuple[int, str] | None:
    """(family, host) for an IP literal, which needs no resolver; None for a name."""
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        return None
    return (socket.AF_INET6 if version == 6 else socket.AF_INET, host)


async def resolve(host: str, port: int, kind: int) -> list[tuple[int, str]]:
    """Every (family, address) the system resolver gives for host:port and socket `kind`."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=kind)
    return [(info[0], str(info[4][0])) for info in infos]


def elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)


def down(
    reason: Reason,
    error: str,
    response_time_ms: float | None = None,
    details: dict[str, Any] | None = None,
) -> ProbeResult:
    return ProbeResult(Status.DOWN, reason, response_time_ms, error, details=details or {})
