"""HTTP/HTTPS probe: one request on the shared aiohttp session, judged by status, body, time
and certificates.

Phase timings live in http_timing. Every hop of a redirect chain is its own connection, verified
under its own host name; each hop's certificate facts are captured by the session's response
class (base.PeerAddressResponse) and judged here (tls.py: expired, not yet valid, expiring).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ssl
import time
from datetime import datetime
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import yarl

from availmon.model import HttpEndpoint, ProbeResult, Reason, Status
from availmon.patterns import Pattern
from availmon.probes import tls
from availmon.probes.base import PeerAddressResponse, Probe, ProbeContext, down, elapsed_ms
from availmon.probes.http_timing import MARKS, TimedSSLContext, phases, timeout_phase

# Exception -> reason, most specific first: the first row whose type (and errno, when one is
# given) matches wins. `{target}` is host:port, `{detail}` the library's own words for it.
_ERRORS: Final[tuple[tuple[type[BaseException], int | None, Reason, str], ...]] = (
    (
        ssl.SSLCertVerificationError,
        None,
        Reason.TLS_ERROR,
        "TLS certificate verify failed: {detail}",
    ),
    (
        aiohttp.ClientConnectorCertificateError,
        None,
        Reason.TLS_ERROR,
        "TLS certificate verify failed: {detail}",
    ),
    (
        aiohttp.ClientSSLError,
        None,
        Reason.TLS_ERROR,
        "TLS handshake with {target} failed: {detail}",
    ),
    (ssl.SSLError, None, Reason.TLS_ERROR, "TLS error with {target}: {detail}"),
    (aiohttp.ClientConnectorDNSError, None, Reason.DNS_ERROR, "cannot resolve {host}: {detail}"),
    (aiohttp.TooManyRedirects, None, Reason.TOO_MANY_REDIRECTS, "more than {limit} redirects"),
    (
        aiohttp.ServerDisconnectedError,
        None,
        Reason.RESET,
        "{target} closed the connection before a complete response",
    ),
    (OSError, errno.ECONNREFUSED, Reason.REFUSED, "connection refused by {target}"),
    (OSError, errno.ECONNRESET, Reason.RESET, "connection reset by {target}"),
    (ConnectionResetError, None, Reason.RESET, "connection reset by {target}"),
    (OSError, errno.EPIPE, Reason.RESET, "connection closed by {target} while sending"),
    (OSError, errno.ETIMEDOUT, Reason.TIMEOUT, "connection to {target} timed out"),
    (
        aiohttp.ClientPayloadError,
        None,
        Reason.INVALID_RESPONSE,
        "invalid body from {target}: {detail}",
    ),
    (
        aiohttp.ClientResponseError,
        None,
        Reason.INVALID_RESPONSE,
        "invalid response from {target}: {detail}",
    ),
    (aiohttp.InvalidURL, None, Reason.INVALID_RESPONSE, "invalid URL: {detail}"),
    (TimeoutError, None, Reason.TIMEOUT, "no complete response from {target} within {timeout:g} s"),
    (OSError, None, Reason.NETWORK_ERROR, "network error with {target}: {detail}"),
    (aiohttp.ClientError, None, Reason.NETWORK_ERROR, "HTTP client error with {target}: {detail}"),
)
_HANDLED: Final = tuple(row[0] for row in _ERRORS)
_MAX_DETAIL: Final = 300  # characters of a library message kept (parsers quote the input)

# Only our asyncio.timeout() bounds an attempt; aiohttp's defaults (300 s total) would not.
_NO_CLIENT_TIMEOUT: Final = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=None)


def _host_port(host: str, port: int | None) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _detail(exc: BaseException) -> str:
    """The library's own words for what went wrong, on one line, without our wrapper's noise."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        exc = exc.certificate_error
    elif isinstance(exc, aiohttp.ClientConnectorError):
        exc = exc.os_error
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        text = str(exc.verify_message)
    elif isinstance(exc, aiohttp.ClientResponseError) and exc.message:
        text = exc.message
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:_MAX_DETAIL]


def _tls_peer(response: aiohttp.ClientResponse) -> tls.TlsPeer | None:
    return response.tls_peer if isinstance(response, PeerAddressResponse) else None


def _redirects(
    history: tuple[aiohttp.ClientResponse, ...],
    now: datetime,
    final: aiohttp.ClientResponse | None = None,
) -> list[dict[str, Any]]:
    """Each hop followed: url, status, and for HTTPS the certificate that hop presented."""
    hops = []
    for hop in history:
        if hop is final:  # aiohttp puts a 3xx without Location into its history, too
            continue
        entry: dict[str, Any] = {"url": str(hop.url), "status": hop.status}
        if (peer := _tls_peer(hop)) is not None:
            entry["tls"] = tls.describe(peer, now)
        hops.append(entry)
    return hops


class HttpProbe(Probe[HttpEndpoint]):
    """GET (or the configured method) once; UP when status, body pattern and time are right."""

    protocols = ("http", "https")

    def __init__(self, spec: HttpEndpoint, context: ProbeContext) -> None:
        super().__init__(spec, context)
        pattern = spec.expected_pattern
        self._pattern = Pattern(pattern) if pattern is not None else None
        # parsed once: aiohttp would build a yarl.URL from the string on every check
        self._url = yarl.URL(spec.url)
        self._headers = dict(spec.headers)
        self._body = spec.body.encode("utf-8") if spec.body is not None else None
        # aiohttp raises on the redirect that reaches its limit (and 0 means no limit there),
        # so one more lets exactly max_redirects redirects be followed.
        self._max_redirects = spec.max_redirects + 1
        assert isinstance(spec.expected_status_code, list)
        self._expected = ", ".join(str(item) for item in spec.expected_status_code)
        parts = urlsplit(spec.url)
        self._host = parts.hostname or ""
        default_port = 443 if parts.scheme == "https" else 80
        self._target = _host_port(self._host, parts.port or default_port)
        self._config_error = ""
        self._ssl: ssl.SSLContext | None = None
        try:
            self._ssl = tls.client_context(spec.verify_tls, spec.ca_file, TimedSSLContext)
        except (OSError, ssl.SSLError) as exc:  # a bad ca_file is this endpoint's failure only
            self._config_error = f"cannot load ca_file {spec.ca_file!r}: {_detail(exc)}"

    async def attempt(self, timeout: float) -> ProbeResult:
        if self._ssl is None:
            return down(Reason.INVALID_CONFIG, self._config_error)
        session = await self.context.get_http_session()
        started = time.perf_counter()
        marks: dict[str, float] = {"request_start": started}
        token = MARKS.set(marks)
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                return await self._exchange(session, self._ssl, marks, started)
        except _HANDLED as exc:
            result, error = self._failure(exc, marks, timeout), exc
        finally:
            MARKS.reset(token)
        if isinstance(error, aiohttp.ClientConnectorCertificateError):
            reason = tls.date_error(error.certificate_error)
            if reason is not None:
                return await self._date_failure(error, reason, result, deadline)
        return result

    async def _date_failure(
        self,
        exc: aiohttp.ClientConnectorCertificateError,
        reason: Reason,
        result: ProbeResult,
        deadline: float,
    ) -> ProbeResult:
        """An expired or not-yet-valid certificate: DOWN with that reason and, when one more
        (unverified) handshake within the deadline can read it, the leaf's dates."""
        peer = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                peer = await tls.fetch_unverified(exc.host, exc.port or 443, exc.host)
        now = tls.now_utc()
        details = dict(result.details)
        details["tls_error_host"] = _host_port(exc.host, exc.port)
        if peer is not None:
            details["tls"] = tls.describe(peer, now)
        return down(reason, tls.date_message(reason, peer, now), None, details)

    async def _exchange(
        self,
        session: aiohttp.ClientSession,
        ssl_context: ssl.SSLContext,
        marks: dict[str, float],
        started: float,
    ) -> ProbeResult:
        async with session.request(
            self.spec.method,
            self._url,
            headers=self._headers,
            data=self._body,
            allow_redirects=self.spec.follow_redirects,
            max_redirects=self._max_redirects,
            ssl=ssl_context,
            timeout=_NO_CLIENT_TIMEOUT,
        ) as response:
            body, size, truncated = await self._read_body(response)
            marks["body_end"] = time.perf_counter()
            response_time_ms = elapsed_ms(started)
            now = tls.now_utc()
            details: dict[str, Any] = {
                "status_code": response.status,
                "body_bytes": size,
                "final_url": str(response.url),
                "redirects": _redirects(response.history, now, response),
            }
            if truncated:
                details["body_truncated"] = True
            if isinstance(response, PeerAddressResponse) and response.peer_address:
                details["resolved_address"] = response.peer_address
            if (peer := _tls_peer(response)) is not None:
                details["tls"] = tls.describe(peer, now)
            if timings := phases(marks):
                details["phases_ms"] = timings
            result = self._judge(response, body, truncated, response_time_ms, details)
            if result.status is Status.DOWN:
                return result
            return self._certificate_warning(response, now, result)

    def _certificate_warning(
        self, response: aiohttp.ClientResponse, now: datetime, result: ProbeResult
    ) -> ProbeResult:
        """DEGRADED when any hop's verified certificate expires within the warning period."""
        hops = [*response.history, response]
        for hop in hops:
            peer = _tls_peer(hop)
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

    async def _read_body(self, response: aiohttp.ClientResponse) -> tuple[bytes, int, bool]:
        """(kept bytes, bytes read up to the limit, whether there was more than the limit).

        Bytes are counted after decompression, and kept only when a pattern needs them.
        """
        limit = self.spec.max_body_bytes
        keep = self._pattern is not None
        kept = bytearray()
        size = 0
        while chunk := await response.content.read(limit - size + 1):
            size += len(chunk)
            if size > limit:
                return bytes(kept), limit, True
            if keep:
                kept += chunk
        return bytes(kept), size, False

    def _judge(
        self,
        response: aiohttp.ClientResponse,
        body: bytes,
        truncated: bool,
        response_time_ms: float,
        details: dict[str, Any],
    ) -> ProbeResult:
        status = response.status
        if not self.spec.status_code_ok(status):
            error = f"status {status} not in expected {self._expected}"
            return down(Reason.UNEXPECTED_STATUS, error, response_time_ms, details)
        if self._pattern is not None:
            if truncated:
                error = (
                    f"body is larger than max_body_bytes ({self.spec.max_body_bytes} bytes);"
                    f" expected_pattern needs the whole body"
                )
                return down(Reason.BODY_TOO_LARGE, error, response_time_ms, details)
            try:
                text = body.decode(response.charset or "utf-8", errors="replace")
            except LookupError:  # a charset Python does not know
                text = body.decode("utf-8", errors="replace")
            if self._pattern.search(text) is None:
                error = f"pattern {self._pattern.pattern!r} not found in {len(body)}-byte body"
                return down(Reason.PATTERN_MISMATCH, error, response_time_ms, details)
        return self.grade(response_time_ms, details)

    def _failure(self, exc: BaseException, marks: dict[str, float], timeout: float) -> ProbeResult:
        """A failed attempt as data: no complete response, so response_time_ms stays None."""
        reason, summary = next(
            (reason, summary)
            for kind, code, reason, summary in _ERRORS
            if isinstance(exc, kind) and (code is None or getattr(exc, "errno", None) == code)
        )
        host, target = self._host, self._target
        if isinstance(exc, aiohttp.ClientConnectorError):  # after a redirect: another host
            host, target = exc.host, _host_port(exc.host, exc.port)
        details: dict[str, Any] = {}
        if isinstance(exc, aiohttp.ClientResponseError) and exc.history:
            details["redirects"] = _redirects(exc.history, tls.now_utc())
        if timings := phases(marks):
            details["phases_ms"] = timings
        message = summary.format(
            target=target,
            host=host,
            limit=self.spec.max_redirects,
            timeout=timeout,
            detail=_detail(exc),
        )
        if reason is Reason.TIMEOUT and (phase := timeout_phase(marks)) is not None:
            details["timeout_phase"] = phase
            message = f"{message} (timed out in {phase} phase)"
        return down(reason, message, None, details)
