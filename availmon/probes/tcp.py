"""TCP probe: connect, optionally send bytes, optionally wait for a pattern in what comes back.

The pattern is tested against the bytes received so far after every chunk, so a server that
greets and then keeps the connection open (no newline, no close) is UP as soon as it matches.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Final

from availmon.model import ProbeResult, Reason, TcpEndpoint
from availmon.probes.base import Probe, ProbeContext, down, elapsed_ms

# Exception -> reason, most specific first: the first row whose type matches wins.
# `{target}` is host:port (and the address tried), `{detail}` the OS's words for the error.
# TimeoutError is an OSError, so it must come before the OSError catch-all.
_ERRORS: Final[tuple[tuple[type[OSError], Reason, str], ...]] = (
    (socket.gaierror, Reason.DNS_ERROR, "cannot resolve {host}: {detail}"),
    (ConnectionRefusedError, Reason.REFUSED, "connection refused by {target}"),
    (ConnectionResetError, Reason.RESET, "connection reset by {target}"),
    (ConnectionAbortedError, Reason.RESET, "connection aborted by {target}"),
    (BrokenPipeError, Reason.RESET, "connection closed by {target} while sending"),
    (TimeoutError, Reason.TIMEOUT, "no answer from {target} within {timeout:g} s"),
    (OSError, Reason.NETWORK_ERROR, "network error with {target}: {detail}"),
)
_HANDLED: Final = tuple(row[0] for row in _ERRORS)
_PREVIEW_BYTES: Final = 64


@dataclass(slots=True)
class _Progress:
    """How far one attempt got; perf_counter stamps."""

    started: float
    phase: str = "connect"
    address: str | None = None
    resolved: float | None = None
    connected: float | None = None
    sent: float | None = None
    done: float | None = None
    received: bytearray = field(default_factory=bytearray)


def _ms(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start) * 1000.0, 3)


class TcpProbe(Probe[TcpEndpoint]):
    """Connect to host:port; UP when the connection (and the pattern, if any) succeeds."""

    protocols = ("tcp",)

    def __init__(self, spec: TcpEndpoint, context: ProbeContext) -> None:
        super().__init__(spec, context)
        self._host = spec.host
        self._port = spec.port
        pattern = spec.expected_pattern
        self._pattern = re.compile(pattern.encode("utf-8")) if pattern is not None else None
        self._payload = spec.send.encode("utf-8") if spec.send is not None else None
        self._limit = spec.max_read_bytes
        # An IP literal needs no resolver (a getaddrinfo call would still cost a thread hop).
        self._addresses: list[tuple[int, str]] | None = None
        try:
            ip = ipaddress.ip_address(self._host)
        except ValueError:
            pass
        else:
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            self._addresses = [(family, self._host)]

    async def attempt(self, timeout: float) -> ProbeResult:
        progress = _Progress(time.perf_counter())
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await self._connect(progress)
                return await self._converse(reader, writer, progress)
        except _HANDLED as exc:
            return self._failure(exc, progress, timeout)
        finally:
            if writer is not None:
                transport = writer.transport
                if transport.get_write_buffer_size():
                    transport.abort()  # a peer that does not read would keep it open forever
                else:
                    transport.close()

    async def _connect(
        self, progress: _Progress
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Try each address in turn (asyncio would merge several errors into an errno-less one)."""
        addresses = self._addresses
        if addresses is None:
            progress.phase = "dns"
            infos = await asyncio.get_running_loop().getaddrinfo(
                self._host, self._port, type=socket.SOCK_STREAM
            )
            addresses = [(info[0], str(info[4][0])) for info in infos]
            progress.resolved = time.perf_counter()
        progress.phase = "connect"
        error: OSError | None = None
        for family, address in addresses:
            progress.address = address
            try:
                reader, writer = await asyncio.open_connection(address, self._port, family=family)
            except OSError as exc:
                error = exc  # the next address may answer; else the last error is reported
                continue
            progress.connected = time.perf_counter()
            return reader, writer
        assert error is not None  # getaddrinfo raises rather than return no address
        raise error

    async def _converse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, progress: _Progress
    ) -> ProbeResult:
        if self._payload is not None:
            progress.phase = "send"
            writer.write(self._payload)
            await writer.drain()
            progress.sent = time.perf_counter()
        if self._pattern is None:
            return self.grade(elapsed_ms(progress.started), self._details(progress))
        progress.phase = "read"
        received = progress.received
        while len(received) < self._limit:
            chunk = await reader.read(self._limit - len(received))
            if not chunk:
                break
            received += chunk
            if self._pattern.search(received) is not None:
                progress.done = time.perf_counter()
                return self.grade(elapsed_ms(progress.started), self._details(progress))
        progress.done = time.perf_counter()
        return self._mismatch(progress)

    def _mismatch(self, progress: _Progress) -> ProbeResult:
        received = progress.received
        target = self._describe_target(progress)
        response_time_ms = elapsed_ms(progress.started)
        details = self._details(progress)
        if not received:
            error = f"{target} closed the connection without sending any data"
            return down(Reason.CLOSED_WITHOUT_DATA, error, response_time_ms, details)
        if len(received) >= self._limit:
            where = f"the first {self._limit} bytes (max_read_bytes) from {target}"
        else:
            where = f"{len(received)} bytes from {target} before it closed the connection"
        preview = bytes(received[:_PREVIEW_BYTES])
        error = f"pattern {self.spec.expected_pattern!r} not found in {where}; got {preview!r}"
        if len(received) > _PREVIEW_BYTES:
            error += "..."
        return down(Reason.PATTERN_MISMATCH, error, response_time_ms, details)

    def _failure(self, exc: OSError, progress: _Progress, timeout: float) -> ProbeResult:
        """A failed attempt as data: nothing usable answered, so response_time_ms stays None."""
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
        if reason is Reason.TIMEOUT:
            details["timeout_phase"] = progress.phase
            message += (
                f" (timed out in {progress.phase} phase, {len(progress.received)} bytes received)"
            )
        return down(reason, message, None, details)

    def _describe_target(self, progress: _Progress) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        target = f"{host}:{self._port}"
        if progress.address is not None and progress.address != self._host:
            target += f" ({progress.address})"
        return target

    def _details(self, progress: _Progress) -> dict[str, Any]:
        details: dict[str, Any] = {"bytes_received": len(progress.received)}
        if progress.connected is not None and progress.address is not None:
            details["resolved_address"] = progress.address
        spans = {
            "dns": _ms(progress.started, progress.resolved),
            "connect": _ms(progress.resolved or progress.started, progress.connected),
            "read": _ms(progress.sent or progress.connected, progress.done),
        }
        if phases := {phase: ms for phase, ms in spans.items() if ms is not None}:
            details["phases_ms"] = phases
        return details
