"""Phase timings of one HTTP attempt: where the stamps come from, and what they add up to.

The attempt puts a dict in MARKS (a context variable, so only its own task and the tasks it
starts see it) and stamps `request_start`; each hop stamps `connection_create_start` before it
resolves a name (`dns_resolvehost_start/end`, only when it really resolves, not from its
cache), `connection_create_end` once connected, `request_end` when the status line and headers
are in (http_wire), `body_end`; the SSLContext subclass below stamps `tls_start` when asyncio
wraps the connected socket.
"""

from __future__ import annotations

import ssl
import time
from contextvars import ContextVar

# The current attempt's phase stamps (set by the HTTP probe for the length of one attempt).
MARKS: ContextVar[dict[str, float] | None] = ContextVar("availmon_http_marks", default=None)


def stamp(event: str) -> None:
    """Stamp `event` now into the current attempt's marks; nothing outside an attempt."""
    marks = MARKS.get()
    if marks is not None:
        marks[event] = time.perf_counter()


class TimedSSLContext(ssl.SSLContext):
    """Stamps "tls_start" when asyncio wraps the connected socket: TCP is up, TLS begins."""

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        stamp("tls_start")
        return super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)


def _hop_start(marks: dict[str, float]) -> float:
    """Where the last hop began: with force_close every hop creates its connection afresh."""
    return marks.get("connection_create_start", 0.0)


def _mark(marks: dict[str, float], name: str, since: float) -> float | None:
    """A stamp of the last hop only (a DNS or TLS stamp may be left from an earlier hop)."""
    stamp = marks.get(name)
    return stamp if stamp is not None and stamp >= since else None


def _first(*stamps: float | None) -> float | None:
    return next((stamp for stamp in stamps if stamp is not None), None)


def phases(marks: dict[str, float]) -> dict[str, float]:
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


def timeout_phase(marks: dict[str, float]) -> str | None:
    if "request_start" not in marks:
        return None  # not stamped by the probe: nothing to tell
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
