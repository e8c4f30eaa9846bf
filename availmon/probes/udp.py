"""UDP probe: send the configured bytes in one datagram, wait for one datagram back.

The socket is connected to the peer, so only the peer's datagrams reach it and the kernel
reports an ICMP port-unreachable answer as ECONNREFUSED: that is `refused`, while silence until
the deadline is `no_response`. The first datagram decides: UP when it matches expected_pattern
(or when there is no pattern), else `pattern_mismatch`.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass
from typing import Any, Final

from availmon.model import ProbeResult, Reason
from availmon.patterns import Pattern
from availmon.probes.base import (
    Probe,
    ProbeContext,
    down,
    elapsed_ms,
    literal_address,
    resolve,
    span_ms,
)
from availmon.specs import UdpEndpoint

# Exception -> reason, most specific first. TimeoutError and the others are OSErrors.
_ERRORS: Final[tuple[tuple[type[OSError], Reason, str], ...]] = (
    (socket.gaierror, Reason.DNS_ERROR, "cannot resolve {host}: {detail}"),
    (
        ConnectionRefusedError,
        Reason.REFUSED,
        "{target} answered ICMP port unreachable: nothing listens on that UDP port",
    ),
    (TimeoutError, Reason.NO_RESPONSE, "no datagram from {target} within {timeout:g} s"),
    (OSError, Reason.NETWORK_ERROR, "network error with {target}: {detail}"),
)
_HANDLED: Final = tuple(row[0] for row in _ERRORS)
_PREVIEW_BYTES: Final = 64


class _FirstDatagram(asyncio.DatagramProtocol):
    """Resolves `answer` with the first datagram, or with the error the kernel reported."""

    def __init__(self) -> None:
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.answer.done():
            self.answer.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


@dataclass(slots=True)
class _Progress:
    started: float
    phase: str = "dns"
    address: str | None = None
    resolved: float | None = None
    sent: float | None = None
    done: float | None = None
    received: int = 0


class UdpProbe(Probe[UdpEndpoint]):
    """One datagram out, one datagram back; UP when it comes back (and matches)."""

    protocols = ("udp",)

    def __init__(self, spec: UdpEndpoint, context: ProbeContext) -> None:
        super().__init__(spec, context)
        self._host = spec.host
        self._port = spec.port
        self._payload = spec.payload
        pattern = spec.expected_pattern
        self._pattern = Pattern(pattern.encode("utf-8")) if pattern is not None else None
        self._address = literal_address(self._host)

    async def attempt(self, timeout: float) -> ProbeResult:
        progress = _Progress(time.perf_counter())
        transport: asyncio.DatagramTransport | None = None
        try:
            with self.context.deadlines.after(timeout):
                family, address = await self._resolve(progress)
                transport, protocol = await self.context.loop.create_datagram_endpoint(
                    _FirstDatagram, remote_addr=(address, self._port), family=family
                )
                progress.phase = "read"
                transport.sendto(self._payload)
                progress.sent = time.perf_counter()
                datagram = await protocol.answer
                progress.done = time.perf_counter()
                progress.received = len(datagram)
                return self._judge(datagram, progress)
        except _HANDLED as exc:
            return self._failure(exc, progress, timeout)
        finally:
            if transport is not None:
                transport.close()

    async def _resolve(self, progress: _Progress) -> tuple[int, str]:
        if self._address is not None:
            family, address = self._address
        else:
            family, address = (await resolve(self._host, self._port, socket.SOCK_DGRAM))[0]
            progress.resolved = time.perf_counter()
        progress.address = address
        return family, address

    def _judge(self, datagram: bytes, progress: _Progress) -> ProbeResult:
        response_time_ms = elapsed_ms(progress.started)
        details = self._details(progress)
        if self._pattern is not None and self._pattern.search(datagram) is None:
            preview = datagram[:_PREVIEW_BYTES]
            error = (
                f"pattern {self.spec.expected_pattern!r} not found in the {len(datagram)}-byte"
                f" datagram from {self._describe_target(progress)}; got {preview!r}"
            )
            if len(datagram) > _PREVIEW_BYTES:
                error += "..."
            return down(Reason.PATTERN_MISMATCH, error, response_time_ms, details)
        return self.grade(response_time_ms, details)

    def _failure(self, exc: OSError, progress: _Progress, timeout: float) -> ProbeResult:
        """Silence, refusal or an error: nothing answered, so response_time_ms stays None."""
        reason, summary = next(
            (reason, summary) for kind, reason, summary in _ERRORS if isinstance(exc, kind)
        )
        details = self._details(progress)
        message = summary.format(
            target=self._describe_target(progress),
            host=self._host,
            timeout=timeout,
            detail=exc.strerror or str(exc) or type(exc).__name__,
        )
        if isinstance(exc, TimeoutError):
            details["timeout_phase"] = progress.phase
            if progress.phase == "dns":  # the peer was never asked: not its silence
                reason, message = (
                    Reason.TIMEOUT,
                    f"cannot resolve {self._host} within {timeout:g} s",
                )
        return down(reason, message, None, details)

    def _describe_target(self, progress: _Progress) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        target = f"{host}:{self._port}"
        if progress.address is not None and progress.address != self._host:
            target += f" ({progress.address})"
        return target

    def _details(self, progress: _Progress) -> dict[str, Any]:
        details: dict[str, Any] = {
            "bytes_sent": len(self._payload) if progress.sent is not None else 0,
            "bytes_received": progress.received,
        }
        if progress.address is not None:
            details["resolved_address"] = progress.address
        spans = {
            "dns": span_ms(progress.started, progress.resolved),
            "read": span_ms(progress.sent, progress.done),
        }
        if phases := {phase: ms for phase, ms in spans.items() if ms is not None}:
            details["phases_ms"] = phases
        return details
