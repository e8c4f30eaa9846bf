"""IcmpProbe: echo requests to 127.0.0.1 (and ::1), here and in network namespaces of our own.

Loss cannot be made on the host's loopback, so the loss tests run in a throw-away network
namespace (`ip netns add`, root only; removed after each test) whose kernel is told not to answer
pings (icmp_echo_ignore_all), with a responder thread of ours that answers the echoes it is told
to. The probe runs there too, in a thread that joined the namespace (setns) with its own event
loop. Without root or iproute2 those tests are skipped; the loss arithmetic is also tested on the
pure grading function.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import socket
import struct
import subprocess
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from availmon.model import ProbeResult, Reason, Status
from availmon.probes.base import Probe, ProbeContext
from availmon.probes.icmp import IcmpProbe, echo_statistics, judge_echoes
from availmon.specs import IcmpEndpoint

from .conftest import LOOPBACK, example_endpoints, make_spec

MakeProbe = Callable[..., Probe[Any]]
T = TypeVar("T")

ROOT = os.geteuid() == 0
CLONE_NEWNET = 0x40000000
needs_root = pytest.mark.skipif(not ROOT, reason="raw ICMP sockets need root")


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


# --- the pure verdict -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "received", "max_loss", "expected"),
    [
        (3, 3, 50, (Status.UP, Reason.OK)),
        (3, 2, 50, (Status.DEGRADED, Reason.PACKET_LOSS)),  # 33.3% <= 50%
        (4, 2, 50, (Status.DEGRADED, Reason.PACKET_LOSS)),  # exactly 50%: not above it
        (3, 1, 50, (Status.DOWN, Reason.PACKET_LOSS)),  # 66.7% > 50%
        (10, 9, 0, (Status.DOWN, Reason.PACKET_LOSS)),  # any loss is above 0%
        (3, 0, 99, (Status.DOWN, Reason.NO_RESPONSE)),
        (0, 0, 50, (Status.DOWN, Reason.NO_RESPONSE)),
    ],
)
def test_judge_echoes_loss_arithmetic(
    sent: int, received: int, max_loss: float, expected: tuple[Status, Reason]
) -> None:
    status, reason, _ = judge_echoes(sent, [1.0] * received, max_loss, None)
    assert (status, reason) == expected


def test_judge_echoes_messages_and_slow_average() -> None:
    assert judge_echoes(3, [1.0], 50, None)[2] == (
        "lost 2 of 3 packets (66.7%, above max_packet_loss 50%)"
    )
    assert judge_echoes(3, [1.0, 1.0], 50, None)[2] == "lost 1 of 3 packets (33.3%)"
    status, reason, error = judge_echoes(2, [10.0, 30.0], 50, 15)
    assert (status, reason, error) == (
        Status.DEGRADED,
        Reason.SLOW,
        "average RTT 20.0 ms (degraded above 15 ms)",
    )


def test_echo_statistics() -> None:
    assert echo_statistics(4, [1.0, 3.0, 2.0]) == {
        "packets_sent": 4,
        "packets_received": 3,
        "packet_loss_percent": 25.0,
        "rtt_min_ms": 1.0,
        "rtt_avg_ms": 2.0,
        "rtt_max_ms": 3.0,
        "jitter_ms": 1.5,  # (|3-1| + |2-3|) / 2
    }
    nothing = echo_statistics(3, [])
    assert nothing["packet_loss_percent"] == 100.0
    assert [nothing[k] for k in ("rtt_min_ms", "rtt_avg_ms", "rtt_max_ms", "jitter_ms")] == [
        None
    ] * 4
    assert echo_statistics(1, [5.0])["jitter_ms"] is None  # one sample has no jitter


# --- the host's loopback ----------------------------------------------------------------------


def _rtts_ok(details: dict[str, Any]) -> None:
    assert 0 < details["rtt_min_ms"] <= details["rtt_avg_ms"] <= details["rtt_max_ms"]


@needs_root
async def test_ping_loopback(make_probe: MakeProbe) -> None:
    result = await make_probe("icmp://127.0.0.1", packet_interval=0.02, timeout=2).attempt(2.0)
    assert (result.status, result.reason, result.error) == (Status.UP, Reason.OK, None)
    details = result.details
    assert (details["packets_sent"], details["packets_received"]) == (3, 3)
    assert details["packet_loss_percent"] == 0.0
    assert details["privileged"] is True  # root, and privileged left to auto
    assert details["address"] == LOOPBACK
    _rtts_ok(details)
    assert details["jitter_ms"] is not None
    assert result.response_time_ms == details["rtt_avg_ms"]


@needs_root
async def test_bare_host_and_name(make_probe: MakeProbe) -> None:
    result = await make_probe("localhost", packet_count=1).attempt(2.0)
    assert (result.status, result.reason) == (Status.UP, Reason.OK)
    assert result.details["address"] == LOOPBACK


@needs_root
@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
async def test_ping_ipv6_loopback(make_probe: MakeProbe) -> None:
    result = await make_probe("::1", packet_count=2, packet_interval=0.02).attempt(2.0)
    assert (result.status, result.reason) == (Status.UP, Reason.OK)
    assert result.details["packets_received"] == 2


@needs_root
async def test_concurrent_probes_of_one_host_keep_their_own_replies(
    make_probe: MakeProbe,
) -> None:
    probes = [
        make_probe("icmp://127.0.0.1", packet_count=5, packet_interval=0.01) for _ in range(8)
    ]
    results = await asyncio.gather(*(probe.attempt(2.0) for probe in probes))
    for result in results:
        assert (result.status, result.details["packets_sent"]) == (Status.UP, 5)
        assert result.details["packets_received"] == 5
        assert "duplicates" not in result.details
    assert len({result.details["echo_id"] for result in results}) == len(results)


async def test_unprivileged_without_permission_says_why(make_probe: MakeProbe) -> None:
    with open("/proc/sys/net/ipv4/ping_group_range") as handle:
        low, high = (int(part) for part in handle.read().split())
    if low <= os.getgid() <= high:
        pytest.skip("this host lets our group open unprivileged ICMP sockets")
    result = await make_probe("icmp://127.0.0.1", privileged=False).attempt(1.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.INVALID_CONFIG)
    assert result.error is not None
    assert "net.ipv4.ping_group_range" in result.error and f"({low} {high})" in result.error


async def test_dns_failure(make_probe: MakeProbe) -> None:
    result = await make_probe("icmp://nonexistent.invalid").attempt(5.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.DNS_ERROR)
    assert result.response_time_ms is None


async def test_registry_builds_icmp_probe(make_probe: MakeProbe) -> None:
    assert isinstance(make_probe("127.0.0.1"), IcmpProbe)


def test_example_config_has_an_icmp_example() -> None:
    specs = example_endpoints("icmp")
    assert specs and all(isinstance(spec, IcmpEndpoint) for spec in specs)


# --- a network namespace of our own -----------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _join(namespace: str) -> None:
    """Move the calling thread (only it) into the namespace."""
    fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error))
    finally:
        os.close(fd)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = int(sum(struct.unpack(f"!{len(data) // 2}H", data)))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


@dataclass
class Responder:
    """Answers echo requests in the namespace when `answer(index, ident, payload_len)` says so."""

    namespace: str
    answer: Callable[[int, int, int], bool] = lambda index, ident, size: True
    requests: list[tuple[int, int, int]] = field(default_factory=list)  # ident, seq, payload
    ready: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)

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
                if icmp[0] != 8:  # only echo requests
                    continue
                ident, sequence = struct.unpack("!HH", icmp[4:8])
                index = len(self.requests)
                self.requests.append((ident, sequence, len(icmp) - 8))
                if self.answer(index, ident, len(icmp) - 8):
                    reply = struct.pack("!BBHHH", 0, 0, 0, ident, sequence) + icmp[8:]
                    reply = reply[:2] + struct.pack("!H", _checksum(reply)) + reply[4:]
                    sock.sendto(reply, (source[0], 0))


@dataclass
class Namespace:
    name: str

    def sysctl(self, *settings: str) -> None:
        subprocess.run(["ip", "netns", "exec", self.name, "sysctl", "-qw", *settings], check=True)

    def run(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run `work()` on a fresh event loop in a thread that joined the namespace."""
        box: list[Any] = []

        def target() -> None:
            try:
                _join(self.name)
                box.append(asyncio.run(work()))  # type: ignore[arg-type]
            except BaseException as exc:  # handed to the test's thread
                box.append(exc)

        thread = threading.Thread(target=target)
        thread.start()
        thread.join(10)
        (outcome,) = box
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome  # type: ignore[no-any-return]

    @contextlib.contextmanager
    def responder(self, answer: Callable[[int, int, int], bool]) -> Iterator[Responder]:
        responder = Responder(self.name, answer)
        thread = threading.Thread(target=responder.run)
        thread.start()
        try:
            assert responder.ready.wait(5)
            yield responder
        finally:
            responder.stop.set()
            thread.join(5)


@pytest.fixture
def netns() -> Iterator[Namespace]:
    if not ROOT or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    name = f"availmon-test-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        namespace = Namespace(name)
        namespace.sysctl("net.ipv4.icmp_echo_ignore_all=1")  # our responder answers, not the kernel
        yield namespace
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _attempt(
    timeout: float = 1.0, url: str = "icmp://127.0.0.1", **fields: Any
) -> Callable[[], Awaitable[ProbeResult]]:
    async def work() -> ProbeResult:
        spec = make_spec(url, **fields)
        assert isinstance(spec, IcmpEndpoint)
        return await IcmpProbe(spec, ProbeContext()).attempt(timeout)

    return work


def test_no_reply_at_all_is_down_with_null_rtts(netns: Namespace) -> None:
    result = netns.run(_attempt(0.4, packet_interval=0.05))
    assert (result.status, result.reason) == (Status.DOWN, Reason.NO_RESPONSE)
    assert result.error == "127.0.0.1: no echo reply to 3 requests"
    assert result.response_time_ms is None
    details = result.details
    assert (details["packets_sent"], details["packets_received"]) == (3, 0)
    assert details["packet_loss_percent"] == 100.0
    for key in ("rtt_min_ms", "rtt_avg_ms", "rtt_max_ms", "jitter_ms"):
        assert key in details and details[key] is None


def test_exactly_packet_count_echoes_are_sent(netns: Namespace) -> None:
    with netns.responder(lambda index, ident, size: True) as responder:
        result = netns.run(_attempt(1.0, packet_count=7, packet_interval=0.02))
    assert (result.status, result.reason) == (Status.UP, Reason.OK)
    assert len(responder.requests) == 7
    assert {ident for ident, _, _ in responder.requests} == {result.details["echo_id"]}
    assert {size for _, _, size in responder.requests} == {56}
    _rtts_ok(result.details)


def test_loss_within_the_limit_is_degraded(netns: Namespace) -> None:
    with netns.responder(lambda index, ident, size: index != 1):
        result = netns.run(_attempt(0.5, packet_interval=0.05))
    assert (result.status, result.reason) == (Status.DEGRADED, Reason.PACKET_LOSS)
    assert result.error == "127.0.0.1: lost 1 of 3 packets (33.3%)"
    assert result.details["packet_loss_percent"] == 33.33
    assert result.details["packets_received"] == 2
    assert result.response_time_ms == result.details["rtt_avg_ms"]


def test_loss_above_the_limit_is_down(netns: Namespace) -> None:
    with netns.responder(lambda index, ident, size: index == 0):
        result = netns.run(_attempt(0.5, packet_interval=0.05, max_packet_loss=50))
    assert (result.status, result.reason) == (Status.DOWN, Reason.PACKET_LOSS)
    assert result.details["packets_received"] == 1
    assert result.details["jitter_ms"] is None
    assert result.response_time_ms is not None  # something did answer


def test_concurrent_probes_never_take_each_others_replies(netns: Namespace) -> None:
    """Both raw sockets see every reply; only the 16-byte probe's echoes are answered."""

    async def both() -> tuple[ProbeResult, ProbeResult]:
        answered = _attempt(0.5, packet_interval=0.05, payload_size=16)
        ignored = _attempt(0.5, packet_interval=0.05, payload_size=24)
        first, second = await asyncio.gather(answered(), ignored())
        return first, second

    with netns.responder(lambda index, ident, size: size == 16):
        answered, ignored = netns.run(both)
    assert (answered.status, answered.details["packets_received"]) == (Status.UP, 3)
    assert (ignored.reason, ignored.details["packets_received"]) == (Reason.NO_RESPONSE, 0)
    assert answered.details["echo_id"] != ignored.details["echo_id"]


def test_unprivileged_sockets_when_the_group_is_allowed(netns: Namespace) -> None:
    netns.sysctl("net.ipv4.ping_group_range=0 2147483647")
    with netns.responder(lambda index, ident, size: True) as responder:
        result = netns.run(_attempt(1.0, packet_interval=0.02, privileged=False))
    assert (result.status, result.reason) == (Status.UP, Reason.OK)
    assert result.details["privileged"] is False
    assert result.details["packets_received"] == 3
    # The kernel chose the identifier (the socket's port); the replies were matched to it.
    assert {ident for ident, _, _ in responder.requests} == {result.details["echo_id"]}


def test_icmp_details_are_json(netns: Namespace) -> None:
    with netns.responder(lambda index, ident, size: index != 0):
        result = netns.run(_attempt(0.5, packet_interval=0.05))
    document = json.loads(json.dumps(result.to_json()))
    assert document["details"]["packets_received"] == 2
    assert document["response_time_ms"] == document["details"]["rtt_avg_ms"]


def test_no_route_is_network_error(netns: Namespace) -> None:
    """The namespace has only its loopback: no route anywhere else, nothing leaves it."""
    result = netns.run(_attempt(0.5, url="icmp://192.0.2.1", packet_interval=0.05))
    assert (result.status, result.reason) == (Status.DOWN, Reason.NETWORK_ERROR)
    assert result.error is not None
    assert result.error.startswith("cannot send echo requests to 192.0.2.1: ")
    assert result.details["packets_sent"] == 0
    assert result.response_time_ms is None
