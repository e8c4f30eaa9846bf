"""One HTTP/1.1 exchange on a fresh connection: send the request, read one response, close.

The HTTP probe's own client. aiohttp's ClientSession did the same through a general-purpose
request path (connector pools, cookie jars, signals, timers) that cost more than the rest of
a check: bench/probe_bench.py measured 0.23-0.32 ms of CPU per plain check through it and
~0.1 ms for the exchange alone. The response is parsed by httptools (llhttp, the parser
aiohttp and Node.js use); bodies are decoded (gzip, deflate, br) and counted after decoding,
and kept only when a pattern needs them. Redirects are the probe's business (one exchange per
hop, each on its own connection).
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from dataclasses import dataclass, field
from typing import Any

import httptools
from multidict import CIMultiDict

from availmon.probes.http_timing import stamp
from availmon.probes.tls import TlsPeer, capture

try:  # Brotli is a dependency; without it a br body is an error, never undecoded bytes
    import brotli  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover
    brotli = None

_MAX_HEADER_BYTES = 64 * 1024  # status line and headers; more is an invalid response


class WireError(Exception):
    """The peer's answer was not a complete, valid HTTP response (see subclasses)."""


class InvalidResponse(WireError):
    pass


class InvalidBody(WireError):
    pass


class ClosedEarly(WireError):
    pass


@dataclass
class WireResponse:
    url: str
    status: int = 0
    headers: CIMultiDict[str] = field(default_factory=CIMultiDict)
    body: bytes = b""  # kept only when asked (keep_body)
    size: int = 0  # decoded bytes read, up to the limit
    truncated: bool = False
    peer_address: str | None = None
    tls_peer: TlsPeer | None = None

    @property
    def charset(self) -> str | None:
        content_type = self.headers.get("Content-Type", "")
        for part in content_type.split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "charset" and value:
                return value.strip().strip('"')
        return None


def _decoder(encoding: str) -> Any:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return _Deflate()
    if encoding == "br":
        if brotli is None:
            raise InvalidBody("cannot decode Content-Encoding: br (no brotli decoder installed)")
        return _Brotli()
    raise InvalidBody(f"unsupported Content-Encoding: {encoding}")


class _Deflate:
    """zlib-wrapped deflate as the RFC says, or raw deflate as some servers send."""

    def __init__(self) -> None:
        self._inner: Any = None

    def decompress(self, data: bytes) -> bytes:
        if self._inner is None:
            raw = not (data[:1] and data[0] & 0x0F == 8)
            self._inner = zlib.decompressobj(-zlib.MAX_WBITS if raw else zlib.MAX_WBITS)
        return bytes(self._inner.decompress(data))


class _Brotli:
    def __init__(self) -> None:
        self._inner = brotli.Decompressor()

    def decompress(self, data: bytes) -> bytes:
        return bytes(self._inner.process(data))


class _Exchange(asyncio.Protocol):
    def __init__(self, request: bytes, response: WireResponse, limit: int, keep: bool, head: bool):
        self._request = request
        self._response = response
        self._limit = limit
        self._keep = keep
        self._head = head
        self._parser: Any = httptools.HttpResponseParser(self)
        self._kept = bytearray()
        self._decoder: Any = None
        self._header_bytes = 0
        self._headers_done = False
        self._first_line = b""
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._transport: Any = None

    # -- transport side ----------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:  # uvloop's is no asyncio.Transport
        self._transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self._response.peer_address = str(peer[0])
        self._response.tls_peer = capture(transport.get_extra_info("ssl_object"))
        transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return
        if not self._headers_done:
            self._header_bytes += len(data)
            if not self._first_line:
                self._first_line = data.split(b"\n", 1)[0][:200]
        if self._parser is None:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, WireError):
                self._fail(exc.__context__)
            elif not self._first_line.startswith(b"HTTP/"):
                line = self._first_line.decode("latin-1").strip()
                self._fail(InvalidResponse(f"Bad status line {line!r}"))
            else:
                self._fail(InvalidResponse(" ".join(str(exc).split()) or "unparsable response"))
            return
        if not self._headers_done and self._header_bytes > _MAX_HEADER_BYTES:
            self._fail(InvalidResponse("status line and headers over 64 KiB"))

    def eof_received(self) -> bool | None:
        return None  # close: connection_lost decides whether the response was complete

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self._connection_lost(exc)
        finally:
            self._release()

    def _connection_lost(self, exc: Exception | None) -> None:
        if self.done.done():
            return
        if self._headers_done and (self._head or self._close_delimited()):
            self._finish()
        elif isinstance(exc, OSError):
            self.done.set_exception(exc)
        elif self._headers_done:
            self._fail(InvalidBody("Response payload is not completed"))
        else:
            self._fail(ClosedEarly())

    def _close_delimited(self) -> bool:
        headers = self._response.headers
        return (
            "Content-Length" not in headers
            and "chunked" not in headers.get("Transfer-Encoding", "").lower()
        )

    # -- parser callbacks ----------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._response.headers.add(name.decode("latin-1"), value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        self._headers_done = True
        assert self._parser is not None
        self._response.status = self._parser.get_status_code()
        stamp("request_end")
        if self._head or self._response.status in (204, 304) or 100 <= self._response.status < 200:
            self._finish()
            return
        try:
            self._decoder = _decoder(self._response.headers.get("Content-Encoding", ""))
        except WireError as exc:
            self._fail(exc)
            raise

    def on_body(self, chunk: bytes) -> None:
        if self.done.done():
            return
        if self._decoder is not None:
            try:
                chunk = self._decoder.decompress(chunk)
            except Exception as exc:  # zlib.error, brotli.error
                self._fail(InvalidBody(f"cannot decode the body: {exc}"))
                raise
        response = self._response
        room = self._limit - response.size
        if len(chunk) > room:
            response.size = self._limit
            response.truncated = True
            if self._keep:
                self._kept += chunk[:room]
            self._finish()
            return
        response.size += len(chunk)
        if self._keep:
            self._kept += chunk

    def on_message_complete(self) -> None:
        self._finish()

    # -- endings -----------------------------------------------------------------------------
    def _finish(self) -> None:
        if not self.done.done():
            self._response.body = bytes(self._kept)
            self.done.set_result(None)
        self._close()

    def _fail(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(exc)
        self._close()

    def _close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def _release(self) -> None:
        """Break the protocol <-> parser <-> transport cycle, so reference counting frees an
        exchange as soon as it ends: left to the cyclic collector, 1,000 of them a second
        made its passes 3 s of loop time in a 75 s run (measured)."""
        self._parser = None
        self._transport = None
        self._decoder = None


async def exchange(
    addresses: list[tuple[int, str]],
    port: int,
    request: bytes,
    response: WireResponse,
    *,
    ssl_context: Any = None,
    server_hostname: str | None = None,
    limit: int,
    keep_body: bool,
    head: bool,
) -> WireResponse:
    """Connect to the first of `addresses` ((family, address), in the resolver's order) that
    accepts on `port`, send `request`, read the response into `response`.

    A name with A and AAAA records may listen on one family only: a refused or unreachable
    address moves on to the next, as aiohttp did; a TLS failure or anything after the
    connection is up does not (no second request). The caller stamps connection_create_start
    (before it resolved the name). Raises OSError and ssl errors from the connection,
    WireError for a bad answer; the caller's deadline (asyncio.timeout) bounds it all."""
    loop = asyncio.get_running_loop()
    last: OSError | None = None
    for family, address in addresses:
        try:
            transport, protocol = await loop.create_connection(
                lambda: _Exchange(request, response, limit, keep_body, head),
                host=address,
                port=port,
                family=family,
                ssl=ssl_context,
                server_hostname=server_hostname if ssl_context is not None else None,
            )
        except ssl.SSLError:
            raise
        except OSError as exc:
            last = exc
            continue
        break
    else:
        assert last is not None
        raise last
    stamp("connection_create_end")
    try:
        await protocol.done
    finally:
        transport.close()
    stamp("body_end")
    return response
