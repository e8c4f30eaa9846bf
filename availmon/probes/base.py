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
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import aiohttp
from aiohttp.client_exceptions import (
    ClientConnectorCertificateError,
    ClientConnectorError,
    ClientConnectorSSLError,
)
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import Connection
from aiohttp.resolver import DefaultResolver

from availmon.model import AnyEndpoint, ProbeResult, Reason, Status
from availmon.probes.http_timing import stamp
from availmon.probes.tls import TlsPeer, capture

SpecT = TypeVar("SpecT", bound=AnyEndpoint)


class TimedResolver(DefaultResolver):  # type: ignore[misc,valid-type]
    """aiohttp's default resolver, stamping the DNS phase when a name is really resolved."""

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> Any:
        stamp("dns_resolvehost_start")
        try:
            return await super().resolve(host, port, family)
        finally:
            stamp("dns_resolvehost_end")


class PeerAddressResponse(aiohttp.ClientResponse):
    """Remembers the peer's IP and TLS handshake: with force_close the connection is gone
    once the body is in. Every hop of a redirect chain is one such response."""

    peer_address: str | None = None
    tls_peer: TlsPeer | None = None

    async def start(self, connection: Connection) -> aiohttp.ClientResponse:
        transport = connection.transport
        if transport is not None:
            peer = transport.get_extra_info("peername")
            if isinstance(peer, tuple) and peer:
                self.peer_address = str(peer[0])
            self.tls_peer = capture(transport.get_extra_info("ssl_object"))
        response = await super().start(connection)
        stamp("request_end")  # the status line and headers are in
        return response


class DirectConnector(aiohttp.TCPConnector):
    """A TCPConnector that connects to a single address with loop.create_connection().

    aiohttp hands every connection to aiohappyeyeballs, which builds the socket in Python and
    connects it with loop.sock_connect(): about a fifth of an HTTP check's CPU in the profile
    (bench/probe_bench.py). With one address there is nothing to race, and the loop's own
    create_connection() does the same connect in C on uvloop. Several addresses (a name with
    A and AAAA records, say) still go through happy eyeballs.
    """

    async def _create_connection(
        self, req: ClientRequest, traces: list[Any], timeout: aiohttp.ClientTimeout
    ) -> Any:
        stamp("connection_create_start")  # name resolution, TCP, TLS: all of it
        connection = await super()._create_connection(req, traces, timeout)
        stamp("connection_create_end")
        return connection

    async def _wrap_create_connection(
        self,
        *args: Any,
        addr_infos: list[Any],
        req: ClientRequest,
        timeout: aiohttp.ClientTimeout,
        client_error: type[Exception] = ClientConnectorError,
        **kwargs: Any,
    ) -> tuple[asyncio.Transport, Any]:
        if len(addr_infos) != 1 or len(addr_infos[0][4]) != 2:  # IPv6 scope ids: the slow path
            return await super()._wrap_create_connection(
                *args,
                addr_infos=addr_infos,
                req=req,
                timeout=timeout,
                client_error=client_error,
                **kwargs,
            )
        family, _, proto, _, (host, port) = addr_infos[0]
        factory: Callable[[], asyncio.BaseProtocol] = args[0]
        loop: asyncio.AbstractEventLoop = self._loop
        try:
            # the runner's asyncio.timeout() bounds the whole attempt; aiohttp's are off
            connected: tuple[asyncio.Transport, Any] = await loop.create_connection(
                factory, host=host, port=port, family=family, proto=proto, **kwargs
            )
        # the same translation as aiohttp's own (connector.py), most specific first
        except ssl.CertificateError as exc:
            raise ClientConnectorCertificateError(req.connection_key, exc) from exc
        except ssl.SSLError as exc:
            raise ClientConnectorSSLError(req.connection_key, exc) from exc
        except OSError as exc:
            if exc.errno is None and isinstance(exc, asyncio.TimeoutError):
                raise
            raise client_error(req.connection_key, exc) from exc
        return connected


@dataclass
class ProbeContext:
    """Shared, long-lived resources probes may use; created inside the running loop."""

    http_session: aiohttp.ClientSession | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    async def get_http_session(self) -> aiohttp.ClientSession:
        if self.http_session is None or self.http_session.closed:
            # force_close: a fresh connection (and TLS handshake) on every check, so a rotated
            # certificate or a dead backend is never hidden behind a pooled connection.
            connector = DirectConnector(
                force_close=True,
                limit=0,
                ttl_dns_cache=10,
                enable_cleanup_closed=True,
                resolver=TimedResolver(),
            )
            self.http_session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=True,
                trust_env=False,
                cookie_jar=None,
                response_class=PeerAddressResponse,
            )
        return self.http_session

    async def close(self) -> None:
        if self.http_session is not None and not self.http_session.closed:
            await self.http_session.close()


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
