"""UdpProbe against UDP peers on 127.0.0.1 that echo, stay silent, or are not there at all."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from availmon.model import Reason, Status
from availmon.probes.base import Probe
from availmon.probes.udp import UdpProbe
from availmon.specs import UdpEndpoint

from .conftest import LOOPBACK, example_endpoints

MakeProbe = Callable[..., Probe[Any]]


class _Peer(asyncio.DatagramProtocol):
    """Records what it gets; answers each datagram with `reply(data)`, `delay` seconds later."""

    def __init__(
        self, reply: Callable[[bytes], list[bytes]], delay: float, sock: socket.socket
    ) -> None:
        self.reply = reply
        self.delay = delay
        self.sock = sock  # sent on directly: asyncio 3.11's sendto drops empty datagrams
        self.received: list[bytes] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append(data)
        loop = asyncio.get_running_loop()
        for answer in self.reply(data):
            loop.call_later(self.delay, self.sock.sendto, answer, addr)


StartPeer = Callable[..., Awaitable[tuple[int, _Peer]]]


@pytest.fixture
async def udp_peer() -> AsyncIterator[StartPeer]:
    """udp_peer(reply, delay=0) -> (port, peer): a datagram server on 127.0.0.1."""
    transports: list[asyncio.BaseTransport] = []

    async def start(reply: Callable[[bytes], list[bytes]], delay: float = 0.0) -> tuple[int, _Peer]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((LOOPBACK, 0))
        transport, peer = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _Peer(reply, delay, sock), sock=sock
        )
        transports.append(transport)
        port: int = sock.getsockname()[1]
        return port, peer

    yield start
    for transport in transports:
        transport.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A bound UDP socket nobody reads: the kernel queues datagrams and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        yield sock.getsockname()[1]


@pytest.fixture
def closed_udp_port() -> int:
    """A UDP port nothing is bound to: the kernel answers ICMP port unreachable."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
    return port


def _pong(data: bytes) -> list[bytes]:
    return [b"PONG " + data]


async def test_echo_is_up_and_exact_bytes_are_sent(
    make_probe: MakeProbe, udp_peer: StartPeer
) -> None:
    port, peer = await udp_peer(_pong)
    probe = make_probe(f"udp://127.0.0.1:{port}", send="PING\r\n", expected_pattern=r"^PONG PING")
    result = await probe.attempt(2.0)
    assert (result.status, result.reason, result.error) == (Status.UP, Reason.OK, None)
    assert peer.received == [b"PING\r\n"]  # exactly the configured bytes, one datagram
    assert result.response_time_ms is not None and result.response_time_ms > 0
    assert result.details["bytes_sent"] == 6
    assert result.details["bytes_received"] == len(b"PONG PING\r\n")
    assert result.details["resolved_address"] == LOOPBACK
    assert set(result.details["phases_ms"]) == {"read"}


async def test_send_hex_sends_binary_bytes_nul_included(
    make_probe: MakeProbe, udp_peer: StartPeer
) -> None:
    # memcached's UDP frame header (request id 1, sequence 0, 1 datagram, reserved) + "stats"
    port, peer = await udp_peer(lambda data: [data[:8] + b"STAT pid 1\r\nEND\r\n"])
    frame = "0001 0000 0001 0000"
    probe = make_probe(
        f"udp://127.0.0.1:{port}", send_hex=f"{frame} 73746174730d0a", expected_pattern="END"
    )
    result = await probe.attempt(2.0)
    assert (result.status, result.reason) == (Status.UP, Reason.OK)
    assert peer.received == [b"\x00\x01\x00\x00\x00\x01\x00\x00stats\r\n"]
    assert result.details["bytes_sent"] == 15


async def test_any_datagram_is_up_without_a_pattern(
    make_probe: MakeProbe, udp_peer: StartPeer
) -> None:
    port, _ = await udp_peer(lambda data: [b""])  # even an empty datagram is an answer
    result = await make_probe(f"udp://127.0.0.1:{port}", send="x").attempt(2.0)
    assert (result.status, result.reason) == (Status.UP, Reason.OK)
    assert result.details["bytes_received"] == 0


async def test_first_datagram_decides(make_probe: MakeProbe, udp_peer: StartPeer) -> None:
    port, _ = await udp_peer(lambda data: [b"ERR busy", b"OK"])
    probe = make_probe(f"udp://127.0.0.1:{port}", send="x", expected_pattern="^OK")
    result = await probe.attempt(2.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.PATTERN_MISMATCH)
    assert result.error == (
        f"pattern '^OK' not found in the 8-byte datagram from 127.0.0.1:{port}; got b'ERR busy'"
    )
    assert result.response_time_ms is not None


async def test_silence_is_no_response(make_probe: MakeProbe, silent_port: int) -> None:
    result = await make_probe(f"udp://127.0.0.1:{silent_port}", send="x").attempt(0.2)
    assert (result.status, result.reason) == (Status.DOWN, Reason.NO_RESPONSE)
    assert result.error == f"no datagram from 127.0.0.1:{silent_port} within 0.2 s"
    assert result.response_time_ms is None
    assert result.details["timeout_phase"] == "read"
    assert result.details["bytes_sent"] == 1


async def test_port_unreachable_is_refused(make_probe: MakeProbe, closed_udp_port: int) -> None:
    result = await make_probe(f"udp://127.0.0.1:{closed_udp_port}", send="x").attempt(2.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.REFUSED)
    assert result.error == (
        f"127.0.0.1:{closed_udp_port} answered ICMP port unreachable:"
        " nothing listens on that UDP port"
    )
    assert result.response_time_ms is None


async def test_refused_and_silent_are_told_apart_quickly(
    make_probe: MakeProbe, closed_udp_port: int, silent_port: int
) -> None:
    refused = make_probe(f"udp://127.0.0.1:{closed_udp_port}", send="x")
    silent = make_probe(f"udp://127.0.0.1:{silent_port}", send="x")
    started = asyncio.get_running_loop().time()
    first = await refused.attempt(1.0)
    assert asyncio.get_running_loop().time() - started < 0.5  # not a timeout in disguise
    second = await silent.attempt(0.2)
    assert (first.reason, second.reason) == (Reason.REFUSED, Reason.NO_RESPONSE)


async def test_by_name_records_dns(make_probe: MakeProbe, udp_peer: StartPeer) -> None:
    port, _ = await udp_peer(_pong)
    result = await make_probe(f"udp://localhost:{port}", send="x").attempt(2.0)
    assert (result.status, result.reason) == (Status.UP, Reason.OK)
    assert result.details["resolved_address"] == LOOPBACK
    assert set(result.details["phases_ms"]) == {"dns", "read"}


async def test_dns_failure(make_probe: MakeProbe) -> None:
    result = await make_probe("udp://nonexistent.invalid:53", send="x").attempt(5.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.DNS_ERROR)
    assert result.error is not None
    assert result.error.startswith("cannot resolve nonexistent.invalid: ")


async def test_slow_answer_is_degraded(make_probe: MakeProbe, udp_peer: StartPeer) -> None:
    port, _ = await udp_peer(_pong, delay=0.15)
    probe = make_probe(f"udp://127.0.0.1:{port}", send="x", degraded_threshold_ms=100)
    result = await probe.attempt(2.0)
    assert (result.status, result.reason) == (Status.DEGRADED, Reason.SLOW)
    assert result.response_time_ms is not None and result.response_time_ms >= 150


async def test_udp_details_are_json(make_probe: MakeProbe, udp_peer: StartPeer) -> None:
    port, _ = await udp_peer(_pong)
    result = await make_probe(f"udp://127.0.0.1:{port}", send="x").attempt(2.0)
    document = json.loads(json.dumps(result.to_json()))
    assert document["details"]["bytes_received"] == len(b"PONG x")


async def test_registry_builds_udp_probe(make_probe: MakeProbe) -> None:
    assert isinstance(make_probe("udp://127.0.0.1:9", send="x"), UdpProbe)


def test_example_config_has_a_udp_example() -> None:
    (spec,) = example_endpoints("udp")
    assert isinstance(spec, UdpEndpoint) and spec.send
