"""Hostile targets are cut at their limits: one check's cost, never memory or the loop."""

from __future__ import annotations

import asyncio
import resource
import socket
import struct
import threading
import time
from typing import Any

from aiohttp import web
from dnslib import RR

from availmon.model import Reason, Status

from .conftest import RawServer, StartApp
from .test_dns import DnsServer, dns_server  # noqa: F401 - the fixture, reused
from .test_icmp import Namespace, Responder, _attempt, _checksum, _join, netns  # noqa: F401

MakeProbe = Any


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def test_endless_body_is_cut_at_max_body_bytes(make_probe: MakeProbe, start_app: StartApp):
    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        chunk = b"z" * 65536
        while True:  # 64 KiB chunks until the client goes away
            await response.write(chunk)

    app = web.Application()
    app.router.add_get("/", endless)
    base = await start_app(app)
    before = rss_mb()
    started = time.perf_counter()
    with_pattern = await make_probe(
        f"{base}/", expected_pattern="never", max_body_bytes=4 * 1024 * 1024
    ).attempt(5.0)
    without = await make_probe(f"{base}/", max_body_bytes=4 * 1024 * 1024).attempt(5.0)
    assert time.perf_counter() - started < 3.0
    assert (with_pattern.status, with_pattern.reason) == (Status.DOWN, Reason.BODY_TOO_LARGE)
    assert (without.status, without.reason) == (Status.UP, Reason.OK)
    assert without.details["body_truncated"] is True
    assert without.details["body_bytes"] == 4 * 1024 * 1024
    assert rss_mb() - before < 64  # the body was never held whole


async def test_slowloris_header_stream_times_out_within_the_deadline(
    make_probe: MakeProbe, raw_server: RawServer
):
    async def slowloris(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for i in range(10_000):  # one header line every 20 ms, never the blank line
            writer.write(f"X-Slow-{i}: y\r\n".encode())
            await writer.drain()
            await asyncio.sleep(0.02)

    port = await raw_server.start(slowloris)
    started = time.perf_counter()
    result = await make_probe(f"http://127.0.0.1:{port}/").attempt(0.5)
    assert time.perf_counter() - started < 1.0
    assert (result.status, result.reason) == (Status.DOWN, Reason.TIMEOUT)
    assert result.response_time_ms is None


async def test_giant_header_is_an_invalid_response(make_probe: MakeProbe, raw_server: RawServer):
    async def giant(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nX-Giant: " + b"g" * 1_000_000 + b"\r\n\r\nok")
        await writer.drain()
        await reader.read()

    port = await raw_server.start(giant)
    started = time.perf_counter()
    result = await make_probe(f"http://127.0.0.1:{port}/").attempt(3.0)
    assert time.perf_counter() - started < 2.0
    assert (result.status, result.reason) == (Status.DOWN, Reason.INVALID_RESPONSE)


async def test_endless_tcp_stream_is_cut_at_max_read_bytes(
    make_probe: MakeProbe, raw_server: RawServer
):
    async def firehose(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            writer.write(b"q" * 65536)
            await writer.drain()

    port = await raw_server.start(firehose)
    result = await make_probe(
        f"tcp://127.0.0.1:{port}", expected_pattern="never", max_read_bytes=1_000_000
    ).attempt(3.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.PATTERN_MISMATCH)
    assert result.details["bytes_received"] == 1_000_000


async def test_dns_reply_bomb_costs_one_check(
    make_probe: MakeProbe,
    dns_server: DnsServer,  # noqa: F811
):
    # about 3,000 A records: far beyond UDP, a 60 kB answer over TCP
    dns_server.records = [
        RR.fromZone(f"bomb.test. 60 IN A 10.{i // 250}.{i % 250}.1")[0] for i in range(3000)
    ]
    dns_server.truncated.add("bomb.test")
    started = time.perf_counter()
    result = await make_probe(f"dns://127.0.0.1:{dns_server.port}/bomb.test").attempt(3.0)
    assert time.perf_counter() - started < 2.0
    assert result.status is Status.UP
    assert len(result.details["answers"]) == 3000
    assert result.details["truncated_over_udp"] is True


class Flood(Responder):
    """Answers every echo request with a flood: duplicates and replies for other probes."""

    def run(self) -> None:
        _join(self.namespace)
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
            sock.settimeout(0.02)
            self.ready.set()
            while not self.stop.is_set():
                try:
                    packet, source = sock.recvfrom(65535)
                except TimeoutError:
                    continue
                icmp = packet[(packet[0] & 0x0F) * 4 :]
                if icmp[0] != 8:
                    continue
                ident, sequence = struct.unpack("!HH", icmp[4:8])
                self.requests.append((ident, sequence, len(icmp) - 8))
                for copy in range(500):  # 250 duplicates, 250 replies to a stranger
                    who = ident if copy % 2 else (ident + 1 + copy) & 0xFFFF
                    reply = struct.pack("!BBHHH", 0, 0, 0, who, sequence) + icmp[8:]
                    reply = reply[:2] + struct.pack("!H", _checksum(reply)) + reply[4:]
                    sock.sendto(reply, (source[0], 0))


def test_icmp_flood_is_counted_once_per_echo(netns: Namespace) -> None:  # noqa: F811
    flood = Flood(netns.name)
    thread = threading.Thread(target=flood.run)
    thread.start()
    try:
        assert flood.ready.wait(5)
        started = time.perf_counter()
        result = netns.run(_attempt(2.0, packet_count=3, packet_interval=0.05))
        elapsed = time.perf_counter() - started
    finally:
        flood.stop.set()
        thread.join(5)
    assert len(flood.requests) == 3  # exactly packet_count echoes, flood or not
    assert (result.status, result.reason) == (Status.UP, Reason.OK)
    assert result.details["packets_received"] == 3 and result.details["packets_sent"] == 3
    assert result.details["packet_loss_percent"] == 0
    assert result.details["duplicates"] >= 3  # the copies were seen and not counted
    assert elapsed < 1.5  # done when its own three replies are in, not at the deadline
