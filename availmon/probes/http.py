"""HTTP/HTTPS probe: one request per hop on a fresh connection (http_wire), judged by status,
body, time and certificates.

Phase timings live in http_timing. Every hop of a redirect chain is its own connection, verified
under its own host name; each hop's certificate facts are captured when it connects and judged
here (tls.py: expired, not yet valid, expiring).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from urllib.parse import urljoin, urlsplit

from availmon.model import ProbeResult, Reason, Status
from availmon.patterns import Pattern
from availmon.probes import tls
from availmon.probes.base import Probe, ProbeContext, down, elapsed_ms, literal_address
from availmon.probes.http_timing import MARKS, TimedSSLContext, phases, stamp, timeout_phase
from availmon.probes.http_wire import (
    ClosedEarly,
    InvalidBody,
    InvalidResponse,
    WireResponse,
    exchange,
)
from availmon.specs import HttpEndpoint


class _DnsError(OSError):
    """The host name did not resolve (socket.gaierror, kept apart from connect errors)."""


class TooManyRedirects(Exception):
    def __init__(self, history: list[WireResponse]) -> None:
        super().__init__("too many redirects")
        self.history = history


class _BadUrl(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class _Target:
    """One hop's URL, split once: where to connect and what to ask."""

    url: str
    https: bool
    host: str
    port: int
    request_target: str  # path and query
    host_header: str
    literal: tuple[int, str] | None  # (family, address) when the host is an IP address

    @classmethod
    def parse(cls, url: str) -> _Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _BadUrl(f"{url!r} is not an http(s) URL with a host")
        https = parts.scheme == "https"
        try:
            port = parts.port or (443 if https else 80)
        except ValueError as exc:
            raise _BadUrl(str(exc)) from None
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        default = 443 if https else 80
        host_header = shown if port == default else f"{shown}:{port}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(url, https, host, port, target, host_header, literal_address(host))


# Exception -> reason, most specific first: the first row whose type (and errno, when one is
# given) matches wins. `{target}` is host:port, `{detail}` the library's own words for it.
_ERRORS: Final[tuple[tuple[type[BaseException], int | None, Reason, str], ...]] = (
    (
        ssl.SSLCertVerificationError,
        None,
        Reason.TLS_ERROR,
        "TLS certificate verify failed: {detail}",
    ),
    (ssl.SSLError, None, Reason.TLS_ERROR, "TLS handshake with {target} failed: {detail}"),
    (_DnsError, None, Reason.DNS_ERROR, "cannot resolve {host}: {detail}"),
    (TooManyRedirects, None, Reason.TOO_MANY_REDIRECTS, "more than {limit} redirects"),
    (
        ClosedEarly,
        None,
        Reason.RESET,
        "{target} closed the connection before a complete response",
    ),
    (OSError, errno.ECONNREFUSED, Reason.REFUSED, "connection refused by {target}"),
    (OSError, errno.ECONNRESET, Reason.RESET, "connection reset by {target}"),
    (ConnectionResetError, None, Reason.RESET, "connection reset by {target}"),
    (OSError, errno.EPIPE, Reason.RESET, "connection closed by {target} while sending"),
    (OSError, errno.ETIMEDOUT, Reason.TIMEOUT, "connection to {target} timed out"),
    (InvalidBody, None, Reason.INVALID_RESPONSE, "invalid body from {target}: {detail}"),
    (InvalidResponse, None, Reason.INVALID_RESPONSE, "invalid response from {target}: {detail}"),
    (_BadUrl, None, Reason.INVALID_RESPONSE, "invalid URL: {detail}"),
    (TimeoutError, None, Reason.TIMEOUT, "no complete response from {target} within {timeout:g} s"),
    (OSError, None, Reason.NETWORK_ERROR, "network error with {target}: {detail}"),
)
_HANDLED: Final = tuple(row[0] for row in _ERRORS)
_MAX_DETAIL: Final = 300  # characters of a library message kept (parsers quote the input)
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_USER_AGENT: Final = "availmon"


def _host_port(host: str, port: int | None) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _detail(exc: BaseException) -> str:
    """The library's own words for what went wrong, on one line, without our wrapper's noise."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        text = str(exc.verify_message)
    elif isinstance(exc, _DnsError | socket.gaierror):
        text = str(exc.strerror or exc)
    elif isinstance(exc, ssl.SSLError):
        text = str(exc)
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:_MAX_DETAIL]


def _redirects(history: list[WireResponse], now: datetime) -> list[dict[str, Any]]:
    """Each hop followed: url, status, and for HTTPS the certificate that hop presented."""
    hops = []
    for hop in history:
        entry: dict[str, Any] = {"url": hop.url, "status": hop.status}
        if hop.tls_peer is not None:
            entry["tls"] = tls.describe(hop.tls_peer, now)
        hops.append(entry)
    return hops


class HttpProbe(Probe[HttpEndpoint]):
    """GET (or the configured method) once; UP when status, body pattern and time are right."""

    protocols = ("http", "https")

    def __init__(self, spec: HttpEndpoint, context: ProbeContext) -> None:
        super().__init__(spec, context)
        pattern = spec.expected_pattern
        self._pattern = Pattern(pattern) if pattern is not None else None
        self._body = spec.body.encode("utf-8") if spec.body is not None else None
        assert isinstance(spec.expected_status_code, list)
        self._expected = ", ".join(str(item) for item in spec.expected_status_code)
        self._config_error = ""
        try:
            self._first = _Target.parse(spec.url)  # parsed once: most checks have one hop
        except _BadUrl as exc:
            self._config_error = f"invalid URL: {exc}"
        self._ssl: ssl.SSLContext | None = None
        try:
            self._ssl = tls.client_context(spec.verify_tls, spec.ca_file, TimedSSLContext)
        except (OSError, ssl.SSLError) as exc:  # a bad ca_file is this endpoint's failure only
            self._config_error = f"cannot load ca_file {spec.ca_file!r}: {_detail(exc)}"
        self._resolved: dict[str, tuple[float, list[tuple[int, str]]]] = {}
        if not self._config_error:
            self._first_request = self._request(self._first, spec.method, self._body)

    async def attempt(self, timeout: float) -> ProbeResult:
        if self._ssl is None or self._config_error:
            return down(Reason.INVALID_CONFIG, self._config_error)
        started = time.perf_counter()
        marks: dict[str, float] = {"request_start": started}
        token = MARKS.set(marks)
        deadline = self.context.loop.time() + timeout
        # the hop being tried, for the error message: attempts of one endpoint never overlap
        # (the Monitor holds the endpoint's lock for a whole check)
        self._hop = self._first
        history: list[WireResponse] = []
        try:
            with self.context.deadlines.at(deadline):
                return await self._follow(self._ssl, history, marks)
        except _HANDLED as exc:
            result, error = self._failure(exc, marks, timeout, history), exc
        finally:
            MARKS.reset(token)
        if isinstance(error, ssl.SSLCertVerificationError):
            reason = tls.date_error(error)
            if reason is not None:
                return await self._date_failure(reason, result, deadline)
        return result

    async def _date_failure(
        self, reason: Reason, result: ProbeResult, deadline: float
    ) -> ProbeResult:
        """An expired or not-yet-valid certificate: DOWN with that reason and, when one more
        (unverified) handshake within the deadline can read it, the leaf's dates."""
        hop = self._hop
        peer = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                peer = await tls.fetch_unverified(hop.host, hop.port, hop.host)
        now = tls.now_utc()
        details = dict(result.details)
        details["tls_error_host"] = _host_port(hop.host, hop.port)
        if peer is not None:
            details["tls"] = tls.describe(peer, now)
        return down(reason, tls.date_message(reason, peer, now), None, details)

    async def _follow(
        self, ssl_context: ssl.SSLContext, history: list[WireResponse], marks: dict[str, float]
    ) -> ProbeResult:
        spec = self.spec
        method, body = spec.method, self._body
        while True:
            response = await self._one_hop(self._hop, method, body, ssl_context)
            location = response.headers.get("Location")
            if not (spec.follow_redirects and response.status in _REDIRECTS and location):
                break
            history.append(response)
            if len(history) > spec.max_redirects:
                raise TooManyRedirects(history)
            if (response.status == 303 and method != "HEAD") or (
                response.status in (301, 302) and method == "POST"
            ):
                method, body = "GET", None  # as browsers (and aiohttp) do
            self._hop = _Target.parse(urljoin(response.url, location))
        response_time_ms = elapsed_ms(marks["request_start"])
        now = tls.now_utc()
        details: dict[str, Any] = {
            "status_code": response.status,
            "body_bytes": response.size,
            "final_url": response.url,
            "redirects": _redirects(history, now),
        }
        if response.truncated:
            details["body_truncated"] = True
        if response.peer_address:
            details["resolved_address"] = response.peer_address
        if response.tls_peer is not None:
            details["tls"] = tls.describe(response.tls_peer, now)
        if timings := phases(marks):
            details["phases_ms"] = timings
        result = self._judge(response, response_time_ms, details)
        if result.status is Status.DOWN:
            return result
        return self._certificate_warning([*history, response], now, result)

    async def _one_hop(
        self, hop: _Target, method: str, body: bytes | None, ssl_context: ssl.SSLContext
    ) -> WireResponse:
        stamp("connection_create_start")
        addresses = await self._addresses(hop)
        if hop is self._first and method == self.spec.method:
            request = self._first_request  # built once: most checks are one hop
        else:
            request = self._request(hop, method, body)
        return await exchange(
            addresses,
            hop.port,
            request,
            WireResponse(url=hop.url),
            ssl_context=ssl_context if hop.https else None,
            server_hostname=hop.host if hop.https else None,
            limit=self.spec.max_body_bytes,
            keep_body=self._pattern is not None,
            head=method == "HEAD",
        )

    def _request(self, hop: _Target, method: str, body: bytes | None) -> bytes:
        headers = {
            "Host": hop.host_header,
            "User-Agent": _USER_AGENT,
            "Accept": "*/*",
            "Accept-Encoding": "gzip, deflate, br",
        }
        for name, value in self.spec.headers.items():  # the endpoint's own win, by any case
            for existing in [k for k in headers if k.lower() == name.lower()]:
                del headers[existing]
            headers[name] = value
        if body is not None:
            headers["Content-Length"] = str(len(body))
        headers["Connection"] = "close"
        lines = [f"{method} {hop.request_target} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + (body or b"")

    async def _addresses(self, hop: _Target) -> list[tuple[int, str]]:
        """Where to connect: an IP literal as it is, a name's addresses (cached 10 s)."""
        if hop.literal is not None:
            return [hop.literal]
        loop = asyncio.get_running_loop()
        cached = self._resolved.get(hop.host)
        if cached is not None and cached[0] > loop.time():
            return cached[1]
        stamp("dns_resolvehost_start")
        try:
            infos = await loop.getaddrinfo(hop.host, hop.port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise _DnsError(exc.errno, exc.strerror) from None
        stamp("dns_resolvehost_end")
        addresses = [(int(info[0]), str(info[4][0])) for info in infos]
        if not addresses:
            raise _DnsError(0, "no address")
        self._resolved[hop.host] = (loop.time() + 10.0, addresses)
        return addresses

    def _certificate_warning(
        self, hops: list[WireResponse], now: datetime, result: ProbeResult
    ) -> ProbeResult:
        """DEGRADED when any hop's verified certificate expires within the warning period."""
        for hop in hops:
            peer = hop.tls_peer
            warning = peer and tls.expiry_warning(peer, now, self.spec.cert_expiry_warning_days)
            if warning:
                if result.reason is Reason.SLOW:
                    warning = f"{warning}; {result.error}"
                return ProbeResult(
                    Status.DEGRADED,
                    Reason.CERT_EXPIRING,
                    result.response_time_ms,
                    warning,
                    details=result.details,
                )
        return result

    def _judge(
        self, response: WireResponse, response_time_ms: float, details: dict[str, Any]
    ) -> ProbeResult:
        status = response.status
        if not self.spec.status_code_ok(status):
            error = f"status {status} not in expected {self._expected}"
            return down(Reason.UNEXPECTED_STATUS, error, response_time_ms, details)
        if self._pattern is not None:
            if response.truncated:
                error = (
                    f"body is larger than max_body_bytes ({self.spec.max_body_bytes} bytes);"
                    f" expected_pattern needs the whole body"
                )
                return down(Reason.BODY_TOO_LARGE, error, response_time_ms, details)
            body = response.body
            try:
                text = body.decode(response.charset or "utf-8", errors="replace")
            except LookupError:  # a charset Python does not know
                text = body.decode("utf-8", errors="replace")
            if self._pattern.search(text) is None:
                error = f"pattern {self._pattern.pattern!r} not found in {len(body)}-byte body"
                return down(Reason.PATTERN_MISMATCH, error, response_time_ms, details)
        return self.grade(response_time_ms, details)

    def _failure(
        self,
        exc: BaseException,
        marks: dict[str, float],
        timeout: float,
        history: list[WireResponse],
    ) -> ProbeResult:
        """A failed attempt as data: no complete response, so response_time_ms stays None."""
        reason, summary = next(
            (reason, summary)
            for kind, code, reason, summary in _ERRORS
            if isinstance(exc, kind) and (code is None or getattr(exc, "errno", None) == code)
        )
        hop = self._hop
        details: dict[str, Any] = {}
        if history:
            details["redirects"] = _redirects(history, tls.now_utc())
        if timings := phases(marks):
            details["phases_ms"] = timings
        message = summary.format(
            target=_host_port(hop.host, hop.port),
            host=hop.host,
            limit=self.spec.max_redirects,
            timeout=timeout,
            detail=_detail(exc),
        )
        if reason is Reason.TIMEOUT and (phase := timeout_phase(marks)) is not None:
            details["timeout_phase"] = phase
            message = f"{message} (timed out in {phase} phase)"
        return down(reason, message, None, details)
