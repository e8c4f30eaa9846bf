"""HttpProbe against real aiohttp servers and raw misbehaving peers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gzip
import importlib
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.compression_utils import HAS_BROTLI

from availmon.model import Reason, Status
from availmon.probes import build_probe
from availmon.probes.base import Probe, ProbeContext
from availmon.probes.http import HttpProbe

from .conftest import (
    RawServer,
    StartApp,
    Tls,
    hang,
    make_spec,
    reset_connection,
)

brotli: Any = importlib.import_module("brotli") if HAS_BROTLI else None

MakeProbe = Callable[..., Probe[Any]]

BIG = b"a" * 10_000


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="hello world")


async def _big(request: web.Request) -> web.Response:
    return web.Response(body=BIG)


async def _loop(request: web.Request) -> web.Response:
    raise web.HTTPFound("/loop")


async def _status(request: web.Request) -> web.Response:
    return web.Response(status=int(request.match_info["code"]), text="status page")


async def _redirect(request: web.Request) -> web.Response:
    left = int(request.match_info["n"])
    if left == 0:
        return web.Response(text="landed")
    raise web.HTTPFound(f"/redirect/{left - 1}")


async def _gzip(request: web.Request) -> web.Response:
    body = gzip.compress(b"a needle in a haystack " * 100)
    return web.Response(body=body, headers={"Content-Encoding": "gzip"}, content_type="text/plain")


async def _latin1(request: web.Request) -> web.Response:
    body = "café crème".encode("latin-1")
    return web.Response(body=body, content_type="text/plain", charset="iso-8859-1")


async def _sleep(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.match_info["seconds"]))
    return web.Response(text="finally")


async def _echo(request: web.Request) -> web.Response:
    payload = {
        "method": request.method,
        "x_test": request.headers.get("X-Test"),
        "body": (await request.read()).decode(),
    }
    return web.json_response(payload)


def _app() -> web.Application:
    app = web.Application()
    app.router.add_get("/ok", _ok)
    app.router.add_get("/status/{code}", _status)
    app.router.add_get("/redirect/{n}", _redirect)
    app.router.add_get("/loop", _loop)
    app.router.add_get("/gzip", _gzip)
    app.router.add_get("/latin1", _latin1)
    app.router.add_get("/big", _big)
    app.router.add_get("/sleep/{seconds}", _sleep)
    app.router.add_route("*", "/echo", _echo)
    return app


@pytest.fixture
async def base(start_app: StartApp) -> str:
    return await start_app(_app())


async def test_200_is_up_with_details(make_probe: MakeProbe, base: str) -> None:
    result = await make_probe(f"{base}/ok", expected_pattern="hello").attempt(2.0)
    assert (result.status, result.reason, result.error) == (Status.UP, Reason.OK, None)
    assert result.response_time_ms is not None and result.response_time_ms > 0
    details = result.details
    assert details["status_code"] == 200
    assert details["body_bytes"] == len("hello world")
    assert details["final_url"] == f"{base}/ok"
    assert details["redirects"] == []
    assert details["resolved_address"] == "127.0.0.1"
    assert set(details["phases_ms"]) == {"connect", "first_byte", "transfer"}
    assert "body_truncated" not in details


async def test_body_bytes_counted_without_pattern(make_probe: MakeProbe, base: str) -> None:
    result = await make_probe(f"{base}/big").attempt(2.0)
    assert (result.status, result.reason) == (Status.UP, Reason.OK)
    assert result.details["body_bytes"] == len(BIG)


async def test_head_is_up_and_still_knows_the_peer(make_probe: MakeProbe, base: str) -> None:
    result = await make_probe(f"{base}/ok", method="HEAD").attempt(2.0)
    assert (result.status, result.reason) == (Status.UP, Reason.OK)
    assert result.details["body_bytes"] == 0
    assert result.details["resolved_address"] == "127.0.0.1"


async def test_503_is_down_unexpected_status(make_probe: MakeProbe, base: str) -> None:
    result = await make_probe(f"{base}/status/503").attempt(2.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.UNEXPECTED_STATUS)
    assert result.error == "status 503 not in expected 2xx"
    assert result.response_time_ms is not None
    assert result.details["status_code"] == 503


@pytest.mark.parametrize(
    ("code", "expected", "status"),
    [
        (404, [200, 404], Status.UP),
        (500, [200, 404], Status.DOWN),
        (302, "3xx", Status.UP),
        (200, "3xx", Status.DOWN),
    ],
)
async def test_expected_status_code(
    make_probe: MakeProbe, base: str, code: int, expected: Any, status: Status
) -> None:
    probe = make_probe(f"{base}/status/{code}", expected_status_code=expected)
    result = await probe.attempt(2.0)
    assert result.status is status
    assert result.reason is (Reason.OK if status is Status.UP else Reason.UNEXPECTED_STATUS)
    assert result.details["status_code"] == code
    assert result.details["redirects"] == []  # a 3xx without Location is not a redirect
    assert set(result.details["phases_ms"]) == {"connect", "first_byte", "transfer"}


async def test_redirect_chain_followed_and_recorded(make_probe: MakeProbe, base: str) -> None:
    result = await make_probe(f"{base}/redirect/3", max_redirects=3).attempt(2.0)
    assert (result.status, result.reason) == (Status.UP, Reason.OK)
    assert result.details["redirects"] == [
        {"url": f"{base}/redirect/3", "status": 302},
        {"url": f"{base}/redirect/2", "status": 302},
        {"url": f"{base}/redirect/1", "status": 302},
    ]
    assert result.details["final_url"] == f"{base}/redirect/0"
    assert result.details["status_code"] == 200
    assert set(result.details["phases_ms"]) == {"connect", "first_byte", "transfer"}


async def test_one_redirect_over_the_limit(make_probe: MakeProbe, base: str) -> None:
    result = await make_probe(f"{base}/redirect/3", max_redirects=2).attempt(2.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.TOO_MANY_REDIRECTS)
    assert result.error == "more than 2 redirects"
    assert len(result.details["redirects"]) == 3


async def test_redirect_loop_is_too_many_redirects(make_probe: MakeProbe, base: str) -> None:
    result = await make_probe(f"{base}/loop").attempt(2.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.TOO_MANY_REDIRECTS)
    assert result.error == "more than 10 redirects"
    assert result.response_time_ms is None
    assert result.details["redirects"][0] == {"url": f"{base}/loop", "status": 302}


async def test_max_redirects_zero_refuses_any_redirect(make_probe: MakeProbe, base: str) -> None:
    result = await make_probe(f"{base}/redirect/1", max_redirects=0).attempt(2.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.TOO_MANY_REDIRECTS)


async def test_redirects_off_checks_the_302_itself(make_probe: MakeProbe, base: str) -> None:
    probe = make_probe(f"{base}/redirect/1", follow_redirects=False)
    result = await probe.attempt(2.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.UNEXPECTED_STATUS)
    assert result.error == "status 302 not in expected 2xx"
    assert result.details["redirects"] == []
    probe = make_probe(f"{base}/redirect/1", follow_redirects=False, expected_status_code=302)
    result = await probe.attempt(2.0)
    assert (result.status, result.reason) == (Status.UP, Reason.OK)
    assert result.details["final_url"] == f"{base}/redirect/1"


async def test_redirects_off_checks_the_302_body(make_probe: MakeProbe, base: str) -> None:
    url = f"{base}/redirect/1"
    probe = make_probe(
        url, follow_redirects=False, expected_status_code=302, expected_pattern="302"
    )
    result = await probe.attempt(2.0)
    assert (result.status, result.reason) == (Status.UP, Reason.OK)
    assert result.details["body_bytes"] == len("302: Found")
    probe = make_probe(
        url, follow_redirects=False, expected_status_code="3xx", expected_pattern="x"
    )
    result = await probe.attempt(2.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.PATTERN_MISMATCH)


async def test_pattern_mismatch(make_probe: MakeProbe, base: str) -> None:
    result = await make_probe(f"{base}/ok", expected_pattern=r"good\s?bye").attempt(2.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.PATTERN_MISMATCH)
    assert result.error == "pattern 'good\\\\s?bye' not found in 11-byte body"
    assert result.response_time_ms is not None


async def test_gzip_body_decoded_before_pattern(make_probe: MakeProbe, base: str) -> None:
    result = await make_probe(f"{base}/gzip", expected_pattern="needle in a hay").attempt(2.0)
    assert (result.status, result.reason) == (Status.UP, Reason.OK)
    assert result.details["body_bytes"] == len(b"a needle in a haystack " * 100)


async def test_body_decoded_with_response_charset(make_probe: MakeProbe, base: str) -> None:
    result = await make_probe(f"{base}/latin1", expected_pattern="café crème").attempt(2.0)
    assert (result.status, result.reason) == (Status.UP, Reason.OK)


async def test_body_over_limit_with_pattern(make_probe: MakeProbe, base: str) -> None:
    probe = make_probe(f"{base}/big", expected_pattern="a", max_body_bytes=len(BIG) - 1)
    result = await probe.attempt(2.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.BODY_TOO_LARGE)
    assert result.details["body_truncated"] is True
    assert result.details["body_bytes"] == len(BIG) - 1


async def test_body_exactly_at_limit_is_whole(make_probe: MakeProbe, base: str) -> None:
    probe = make_probe(f"{base}/big", expected_pattern="a$", max_body_bytes=len(BIG))
    result = await probe.attempt(2.0)
    assert (result.status, result.reason) == (Status.UP, Reason.OK)
    assert result.details["body_bytes"] == len(BIG)
    assert "body_truncated" not in result.details


async def test_body_over_limit_without_pattern(make_probe: MakeProbe, base: str) -> None:
    result = await make_probe(f"{base}/big", max_body_bytes=1000).attempt(2.0)
    assert (result.status, result.reason) == (Status.UP, Reason.OK)
    assert result.details["body_truncated"] is True
    assert result.details["body_bytes"] == 1000


async def test_method_headers_and_body_sent(make_probe: MakeProbe, base: str) -> None:
    probe = make_probe(
        f"{base}/echo",
        method="POST",
        headers={"X-Test": "yes"},
        body="ping=1",
        expected_pattern=r'"method": "POST", "x_test": "yes", "body": "ping=1"',
    )
    result = await probe.attempt(2.0)
    assert (result.status, result.reason, result.error) == (Status.UP, Reason.OK, None)


async def test_slow_answer_is_degraded(make_probe: MakeProbe, base: str) -> None:
    result = await make_probe(f"{base}/sleep/0.2", degraded_threshold_ms=100).attempt(2.0)
    assert (result.status, result.reason) == (Status.DEGRADED, Reason.SLOW)
    assert result.response_time_ms is not None and result.response_time_ms > 100
    assert result.details["phases_ms"]["first_byte"] >= 150


async def test_timeout_just_over_the_deadline(make_probe: MakeProbe, base: str) -> None:
    result = await make_probe(f"{base}/sleep/0.3").attempt(0.15)
    assert (result.status, result.reason) == (Status.DOWN, Reason.TIMEOUT)
    assert result.response_time_ms is None
    assert result.details["timeout_phase"] == "first_byte"
    assert result.error == (
        f"no complete response from {base.removeprefix('http://')} within 0.15 s"
        " (timed out in first_byte phase)"
    )


async def test_answer_just_under_the_deadline(make_probe: MakeProbe, base: str) -> None:
    result = await make_probe(f"{base}/sleep/0.05").attempt(0.5)
    assert (result.status, result.reason) == (Status.UP, Reason.OK)
    assert result.response_time_ms is not None and result.response_time_ms >= 50


async def test_server_never_answers(make_probe: MakeProbe, raw_server: RawServer) -> None:
    port = await raw_server.start(hang)
    result = await make_probe(f"http://127.0.0.1:{port}/").attempt(0.2)
    assert (result.status, result.reason) == (Status.DOWN, Reason.TIMEOUT)
    assert result.details["timeout_phase"] == "first_byte"
    assert result.response_time_ms is None


async def test_body_stalls_after_headers(make_probe: MakeProbe, raw_server: RawServer) -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        await hang(reader, writer)

    port = await raw_server.start(stall)
    result = await make_probe(f"http://127.0.0.1:{port}/").attempt(0.3)
    assert (result.status, result.reason) == (Status.DOWN, Reason.TIMEOUT)
    assert result.details["timeout_phase"] == "body"
    assert "first_byte" in result.details["phases_ms"]


async def test_connect_timeout(make_probe: MakeProbe, full_backlog: int) -> None:
    result = await make_probe(f"http://127.0.0.1:{full_backlog}/").attempt(0.2)
    assert (result.status, result.reason) == (Status.DOWN, Reason.TIMEOUT)
    assert result.details["timeout_phase"] == "connect"


async def test_reset_by_server(make_probe: MakeProbe, raw_server: RawServer) -> None:
    async def rst(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        reset_connection(writer)

    port = await raw_server.start(rst)
    result = await make_probe(f"http://127.0.0.1:{port}/").attempt(2.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.RESET)
    assert result.error is not None and f"127.0.0.1:{port}" in result.error
    assert result.response_time_ms is None


async def test_closed_before_answer(make_probe: MakeProbe, raw_server: RawServer) -> None:
    async def close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")

    port = await raw_server.start(close)
    result = await make_probe(f"http://127.0.0.1:{port}/").attempt(2.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.RESET)
    assert result.error == (f"127.0.0.1:{port} closed the connection before a complete response")


async def test_garbage_is_invalid_response(make_probe: MakeProbe, raw_server: RawServer) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()
        await hang(reader, writer)

    port = await raw_server.start(garbage)
    result = await make_probe(f"http://127.0.0.1:{port}/").attempt(2.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.INVALID_RESPONSE)
    assert result.error is not None
    assert result.error.startswith(f"invalid response from 127.0.0.1:{port}: Bad status line")
    assert "\n" not in result.error and "SSH-2.0" in result.error


async def test_refused(make_probe: MakeProbe, free_port: int) -> None:
    result = await make_probe(f"http://127.0.0.1:{free_port}/").attempt(2.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.REFUSED)
    assert result.error == f"connection refused by 127.0.0.1:{free_port}"
    assert result.response_time_ms is None


async def test_dns_failure(make_probe: MakeProbe) -> None:
    result = await make_probe("http://nonexistent.invalid/").attempt(5.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.DNS_ERROR)
    assert result.error is not None
    assert result.error.startswith("cannot resolve nonexistent.invalid: ")
    assert result.response_time_ms is None


async def test_https_with_trusted_ca(
    make_probe: MakeProbe, start_app: StartApp, tls_material: Tls
) -> None:
    base = await start_app(_app(), tls_material.server_context)
    result = await make_probe(f"{base}/ok", ca_file=str(tls_material.ca_file)).attempt(2.0)
    assert (result.status, result.reason) == (Status.UP, Reason.OK)
    assert set(result.details["phases_ms"]) == {"connect", "tls", "first_byte", "transfer"}


async def test_https_untrusted_is_tls_error(
    make_probe: MakeProbe, start_app: StartApp, tls_material: Tls
) -> None:
    base = await start_app(_app(), tls_material.server_context)
    result = await make_probe(f"{base}/ok").attempt(2.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.TLS_ERROR)
    assert result.error == "TLS certificate verify failed: unable to get local issuer certificate"
    assert result.response_time_ms is None


async def test_https_name_mismatch_is_tls_error(
    make_probe: MakeProbe, start_app: StartApp, localhost_only_tls: Tls
) -> None:
    base = await start_app(_app(), localhost_only_tls.server_context)
    probe = make_probe(f"{base}/ok", ca_file=str(localhost_only_tls.ca_file))
    result = await probe.attempt(2.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.TLS_ERROR)
    assert result.error == (
        "TLS certificate verify failed: IP address mismatch, certificate is not valid for"
        " '127.0.0.1'."
    )


async def test_https_without_verification(
    make_probe: MakeProbe, start_app: StartApp, tls_material: Tls
) -> None:
    base = await start_app(_app(), tls_material.server_context)
    result = await make_probe(f"{base}/ok", verify_tls=False).attempt(2.0)
    assert (result.status, result.reason) == (Status.UP, Reason.OK)


async def test_https_handshake_never_answered(
    make_probe: MakeProbe, raw_server: RawServer, tls_material: Tls
) -> None:
    port = await raw_server.start(hang)
    probe = make_probe(f"https://127.0.0.1:{port}/", ca_file=str(tls_material.ca_file))
    result = await probe.attempt(0.2)
    assert (result.status, result.reason) == (Status.DOWN, Reason.TIMEOUT)
    assert result.details["timeout_phase"] == "tls"
    assert "connect" in result.details["phases_ms"]


async def test_https_to_plain_http_port(make_probe: MakeProbe, base: str) -> None:
    url = base.replace("http://", "https://") + "/ok"
    result = await make_probe(url).attempt(2.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.TLS_ERROR)
    assert result.error is not None and "WRONG_VERSION_NUMBER" in result.error


async def test_unreadable_ca_file_is_invalid_config(
    probe_context: ProbeContext, tmp_path: Any
) -> None:
    # A missing ca_file fails validation; one removed after it (the spec was stored) is the
    # probe's invalid_config, for this endpoint only.
    ca_file = tmp_path / "missing.pem"
    ca_file.write_text("not yet removed")
    spec = make_spec("https://127.0.0.1:1/", ca_file=str(ca_file))
    ca_file.unlink()
    probe = build_probe(spec, probe_context)
    result = await probe.attempt(1.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.INVALID_CONFIG)
    assert result.error is not None and "missing.pem" in result.error


async def test_registry_builds_http_probe(make_probe: MakeProbe, base: str) -> None:
    assert isinstance(make_probe(f"{base}/ok"), HttpProbe)
    assert isinstance(make_probe(base.replace("http", "https")), HttpProbe)


async def test_phases_are_those_of_the_last_hop(
    make_probe: MakeProbe, start_app: StartApp, base: str, tls_material: Tls
) -> None:
    async def to_plain(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"{base}/ok")

    app = web.Application()
    app.router.add_get("/", to_plain)
    secure = await start_app(app, tls_material.server_context)
    result = await make_probe(f"{secure}/", ca_file=str(tls_material.ca_file)).attempt(2.0)
    assert (result.status, result.reason) == (Status.UP, Reason.OK)
    (hop,) = result.details["redirects"]
    assert (hop["url"], hop["status"]) == (f"{secure}/", 302)
    assert hop["tls"]["issuer"].startswith("OU=Testing CA #")  # the https hop's certificate
    assert len(hop["tls"]["chain"]) == 2
    assert "tls" not in result.details  # the final hop is plain http
    assert result.details["final_url"] == f"{base}/ok"
    assert set(result.details["phases_ms"]) == {"connect", "first_byte", "transfer"}


# --- decoding ---------------------------------------------------------------------------------


async def _compressed(request: web.Request) -> web.StreamResponse:
    """Chunked transfer of a compressed body, whatever the client said it accepts."""
    kind = request.match_info["kind"]
    plain = b"the needle is here " * 200
    body = gzip.compress(plain) if kind == "gzip" else zlib.compress(plain)
    response = web.StreamResponse(headers={"Content-Encoding": kind, "Content-Type": "text/plain"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    for start in range(0, len(body), 100):
        await response.write(body[start : start + 100])
    await response.write_eof()
    return response


async def _brotli(request: web.Request) -> web.Response:
    plain = b"the needle is here " * 20
    body = brotli.compress(plain) if HAS_BROTLI else b"\x8b\x02\x80not really brotli"
    return web.Response(body=body, headers={"Content-Encoding": "br"}, content_type="text/plain")


@pytest.mark.parametrize("kind", ["gzip", "deflate"])
async def test_compressed_chunked_body_is_decoded_before_rules(
    make_probe: MakeProbe, start_app: StartApp, kind: str
) -> None:
    app = web.Application()
    app.router.add_get("/{kind}", _compressed)
    base = await start_app(app)
    probe = make_probe(
        f"{base}/{kind}",
        headers={"Accept-Encoding": kind},  # set by the user: aiohttp must still decode
        expected_pattern=r"(the needle is here ){200}",
    )
    result = await probe.attempt(2.0)
    assert (result.status, result.reason, result.error) == (Status.UP, Reason.OK, None)
    assert result.details["body_bytes"] == len(b"the needle is here " * 200)
    over = make_probe(f"{base}/{kind}", max_body_bytes=1000, expected_pattern="needle")
    result = await over.attempt(2.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.BODY_TOO_LARGE)
    assert result.details["body_bytes"] == 1000  # counted after decoding


async def test_brotli_decoded_when_a_decoder_is_installed(
    make_probe: MakeProbe, start_app: StartApp
) -> None:
    app = web.Application()
    app.router.add_get("/br", _brotli)
    base = await start_app(app)
    probe = make_probe(f"{base}/br", headers={"Accept-Encoding": "br"}, expected_pattern="needle")
    result = await probe.attempt(2.0)
    if HAS_BROTLI:
        assert (result.status, result.reason) == (Status.UP, Reason.OK)
    else:  # never a pattern verdict on bytes nobody could decode
        assert (result.status, result.reason) == (Status.DOWN, Reason.INVALID_RESPONSE)
        assert result.error is not None and "brotli" in result.error.lower()


async def test_a_refused_address_moves_on_to_the_next_one(base: str) -> None:
    """A name with A and AAAA records may listen on one family only (here: IPv4 only)."""
    import socket

    from availmon.probes.http_wire import WireResponse, exchange

    port = int(base.rsplit(":", 1)[1])
    request = f"GET /ok HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n".encode()
    response = await exchange(
        [(socket.AF_INET6, "::1"), (socket.AF_INET, "127.0.0.1")],
        port,
        request,
        WireResponse(url=f"http://localhost:{port}/ok"),
        limit=1000,
        keep_body=True,
        head=False,
    )
    assert (response.status, response.body, response.peer_address) == (
        200,
        b"hello world",
        "127.0.0.1",
    )
    with pytest.raises(ConnectionRefusedError):  # every address refused: the last error
        await exchange(
            [(socket.AF_INET, "127.0.0.1")],
            1,
            request,
            WireResponse(url="http://127.0.0.1:1/"),
            limit=1000,
            keep_body=False,
            head=False,
        )
