"""HTTP/HTTPS probe: one request on the shared aiohttp session, judged by status, body, time.

Phase timings come from the TraceConfig the shared session carries (base.HTTP_TRACE_CONFIG,
stamping into a dict passed as `trace_request_ctx`) plus one hook aiohttp lacks: the moment the
TCP connection is up and the TLS handshake starts, which our SSLContext subclass records when
asyncio wraps the socket.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import re
import ssl
import time
from contextvars import ContextVar
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

from availmon.model import HttpEndpoint, ProbeResult, Reason
from availmon.probes.base import PeerAddressResponse, Probe, ProbeContext, down, elapsed_ms

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

# The current attempt's phase stamps, for the TLS hook below (it runs inside our task).
_MARKS: ContextVar[dict[str, float] | None] = ContextVar("availmon_http_marks", default=None)


class _TimedSSLContext(ssl.SSLContext):
    """Stamps "tls_start" when asyncio wraps the connected socket: TCP is up, TLS begins."""

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        marks = _MARKS.get()
        if marks is not None:
            marks["tls_start"] = time.perf_counter()
        return super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)


@functools.lru_cache(maxsize=64)
def _ssl_context(verify: bool, ca_file: str | None, ca_mtime_ns: int) -> ssl.SSLContext:
    """Shared per (verify, CA file version): a default context costs ~0.8 MB of memory.

    Equivalent to ssl.create_default_context(cafile=ca_file), or to aiohttp's `ssl=False`
    when not verifying, but of our class so the TLS phase can be timed.
    """
    context = _TimedSSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif ca_file is not None:
        context.load_verify_locations(cafile=ca_file)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    return context


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


def _hop_start(marks: dict[str, float]) -> float:
    """Where the last hop began: with force_close every hop creates its connection afresh."""
    return marks.get("connection_create_start", 0.0)


def _mark(marks: dict[str, float], name: str, since: float) -> float | None:
    """A stamp of the last hop only (a DNS or TLS stamp may be left from an earlier hop)."""
    stamp = marks.get(name)
    return stamp if stamp is not None and stamp >= since else None


def _first(*stamps: float | None) -> float | None:
    return next((stamp for stamp in stamps if stamp is not None), None)


def _phases(marks: dict[str, float]) -> dict[str, float]:
    """Milliseconds per phase of the last hop, for the phases that were seen to begin and end."""
    since = _hop_start(marks)
    dns_start = _mark(marks, "dns_resolvehost_start", since)
    dns_end = _mark(marks, "dns_resolvehost_end", since)
    conn_start = _mark(marks, "connection_create_start", since)
    conn_end = _mark(marks, "connection_create_end", since)
    tls_start = _mark(marks, "tls_start", since)
    sent = _mark(marks, "request_headers_sent", since)
    headers, body_end = marks.get("request_end"), marks.get("body_end")
    spans = {
        "dns": (dns_start, dns_end),
        "connect": (_first(dns_end, conn_start), _first(tls_start, conn_end)),
        "tls": (tls_start, conn_end),
        "first_byte": (_first(sent, conn_end), headers),
        "transfer": (headers, body_end),
    }
    return {
        phase: round((end - start) * 1000.0, 3)
        for phase, (start, end) in spans.items()
        if start is not None and end is not None
    }


def _timeout_phase(marks: dict[str, float]) -> str | None:
    if "request_start" not in marks:
        return None  # a session without our TraceConfig: nothing to tell
    since = _hop_start(marks)
    if "request_end" in marks:
        return "body"
    if _mark(marks, "connection_create_end", since) is not None:
        return "first_byte"
    if _mark(marks, "tls_start", since) is not None:
        return "tls"
    if (
        _mark(marks, "dns_resolvehost_start", since) is not None
        and _mark(marks, "dns_resolvehost_end", since) is None
    ):
        return "dns"
    return "connect"


def _redirects(
    history: tuple[aiohttp.ClientResponse, ...], final: aiohttp.ClientResponse | None = None
) -> list[dict[str, Any]]:
    # aiohttp puts a 3xx without Location into its own history, though it follows nothing.
    return [{"url": str(hop.url), "status": hop.status} for hop in history if hop is not final]


class HttpProbe(Probe[HttpEndpoint]):
    """GET (or the configured method) once; UP when status, body pattern and time are right."""

    protocols = ("http", "https")

    def __init__(self, spec: HttpEndpoint, context: ProbeContext) -> None:
        super().__init__(spec, context)
        pattern = spec.expected_pattern
        self._pattern = re.compile(pattern) if pattern is not None else None
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
            mtime = os.stat(spec.ca_file).st_mtime_ns if spec.ca_file and spec.verify_tls else 0
            self._ssl = _ssl_context(spec.verify_tls, spec.ca_file, mtime)
        except (OSError, ssl.SSLError) as exc:  # a bad ca_file is this endpoint's failure only
            self._config_error = f"cannot load ca_file {spec.ca_file!r}: {_detail(exc)}"

    async def attempt(self, timeout: float) -> ProbeResult:
        if self._ssl is None:
            return down(Reason.INVALID_CONFIG, self._config_error)
        session = await self.context.get_http_session()
        marks: dict[str, float] = {}
        token = _MARKS.set(marks)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                return await self._exchange(session, self._ssl, marks, started)
        except _HANDLED as exc:
            return self._failure(exc, marks, timeout)
        finally:
            _MARKS.reset(token)

    async def _exchange(
        self,
        session: aiohttp.ClientSession,
        ssl_context: ssl.SSLContext,
        marks: dict[str, float],
        started: float,
    ) -> ProbeResult:
        async with session.request(
            self.spec.method,
            self.spec.url,
            headers=self._headers,
            data=self._body,
            allow_redirects=self.spec.follow_redirects,
            max_redirects=self._max_redirects,
            ssl=ssl_context,
            timeout=_NO_CLIENT_TIMEOUT,
            trace_request_ctx=marks,
        ) as response:
            body, size, truncated = await self._read_body(response)
            marks["body_end"] = time.perf_counter()
            response_time_ms = elapsed_ms(started)
            details: dict[str, Any] = {
                "status_code": response.status,
                "body_bytes": size,
                "final_url": str(response.url),
                "redirects": _redirects(response.history, response),
            }
            if truncated:
                details["body_truncated"] = True
            if isinstance(response, PeerAddressResponse) and response.peer_address:
                details["resolved_address"] = response.peer_address
            if phases := _phases(marks):
                details["phases_ms"] = phases
            return self._judge(response, body, truncated, response_time_ms, details)

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
            details["redirects"] = _redirects(exc.history)
        if phases := _phases(marks):
            details["phases_ms"] = phases
        message = summary.format(
            target=target,
            host=host,
            limit=self.spec.max_redirects,
            timeout=timeout,
            detail=_detail(exc),
        )
        if reason is Reason.TIMEOUT and (phase := _timeout_phase(marks)) is not None:
            details["timeout_phase"] = phase
            message = f"{message} (timed out in {phase} phase)"
        return down(reason, message, None, details)
