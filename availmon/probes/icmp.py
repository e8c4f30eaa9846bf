"""ICMP probe: packet_count echo requests packet_interval apart, replies counted until all are in
or the deadline passes.

icmplib provides the sockets (raw when privileged, the kernel's unprivileged ICMP datagram
sockets otherwise) and the wire format. The exchange itself is ours, because icmplib's
`async_ping` waits for each reply before sending the next echo (one lost packet costs a whole
timeout, so a lossy host would overrun the deadline and report nothing), stamps RTTs with the
wall clock, and can drop a reply that arrives just as its wait ends. Here a reader callback
takes every datagram the moment it is readable and stamps it with time.perf_counter().

Echo identifiers: an unprivileged socket's identifier is its kernel-assigned port, and the
kernel hands each such socket only its own replies. A raw socket sees every ICMP packet of
the host, so each privileged probe holds an identifier no other probe of this process holds
while it runs, starts its sequence numbers at a random point, and counts only echo replies
from the address it pinged with its identifier and a sequence number it sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import random
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from icmplib import ICMPRequest, ICMPv4Socket, ICMPv6Socket
from icmplib.exceptions import ICMPError, ICMPLibError, SocketPermissionError

from availmon.model import ProbeResult, Reason, Status
from availmon.probes.base import Probe, ProbeContext, down
from availmon.specs import IcmpEndpoint

_ECHO_REPLY: Final = {4: 0, 6: 129}
_ECHO_REQUEST: Final = {4: 8, 6: 128}  # our own requests, seen by a raw socket on loopback
_RANGE_FILE: Final = "/proc/sys/net/ipv4/ping_group_range"


class _EchoIds:
    """Identifiers held by this process's running privileged probes (threads included)."""

    def __init__(self) -> None:
        self._held: set[int] = set()
        self._lock = threading.Lock()

    def acquire(self) -> int:
        with self._lock:
            while True:
                ident = random.randrange(1, 0x10000)
                if ident not in self._held:
                    self._held.add(ident)
                    return ident

    def release(self, ident: int) -> None:
        with self._lock:
            self._held.discard(ident)


ECHO_IDS: Final = _EchoIds()


@dataclass(slots=True)
class Echoes:
    """What one exchange saw; perf_counter stamps, sequence numbers as sent."""

    ident: int  # unprivileged: replaced by the kernel's identifier after the first send
    sent_at: dict[int, float] = field(default_factory=dict)
    rtts_ms: dict[int, float] = field(default_factory=dict)
    duplicates: int = 0
    icmp_errors: list[str] = field(default_factory=list)
    send_error: str | None = None

    def rtts_in_order(self) -> list[float]:
        return [self.rtts_ms[seq] for seq in self.sent_at if seq in self.rtts_ms]


def echo_statistics(sent: int, rtts_ms: Sequence[float]) -> dict[str, Any]:
    """Counts, loss and RTTs in ms; RTT fields are None (never 0) when nothing answered.

    Jitter is the mean absolute difference of consecutive RTTs (in sending order), so it
    needs two replies.
    """
    received = len(rtts_ms)
    loss = round((sent - received) * 100.0 / sent, 2) if sent else None
    jitter = None
    if received >= 2:
        diffs = [abs(b - a) for a, b in itertools.pairwise(rtts_ms)]
        jitter = round(sum(diffs) / len(diffs), 3)
    return {
        "packets_sent": sent,
        "packets_received": received,
        "packet_loss_percent": loss,
        "rtt_min_ms": round(min(rtts_ms), 3) if rtts_ms else None,
        "rtt_avg_ms": round(sum(rtts_ms) / received, 3) if rtts_ms else None,
        "rtt_max_ms": round(max(rtts_ms), 3) if rtts_ms else None,
        "jitter_ms": jitter,
    }


def judge_echoes(
    sent: int,
    rtts_ms: Sequence[float],
    max_packet_loss: float,
    degraded_threshold_ms: float | None,
) -> tuple[Status, Reason, str | None]:
    """The verdict on counts and RTTs alone: pure, so the loss arithmetic is testable."""
    received = len(rtts_ms)
    if sent == 0 or received == 0:
        return Status.DOWN, Reason.NO_RESPONSE, f"no echo reply to {sent} requests"
    lost = sent - received
    loss = lost * 100.0 / sent
    if loss > max_packet_loss:
        error = (
            f"lost {lost} of {sent} packets ({loss:.1f}%, above max_packet_loss"
            f" {max_packet_loss:g}%)"
        )
        return Status.DOWN, Reason.PACKET_LOSS, error
    if lost:
        return Status.DEGRADED, Reason.PACKET_LOSS, f"lost {lost} of {sent} packets ({loss:.1f}%)"
    average = sum(rtts_ms) / received
    if degraded_threshold_ms is not None and average > degraded_threshold_ms:
        error = f"average RTT {average:.1f} ms (degraded above {degraded_threshold_ms:g} ms)"
        return Status.DEGRADED, Reason.SLOW, error
    return Status.UP, Reason.OK, None


def _ping_group_range() -> str:
    try:
        with open(_RANGE_FILE) as handle:
            return " ".join(handle.read().split())
    except OSError:
        return "unknown"


class IcmpProbe(Probe[IcmpEndpoint]):
    """Echo requests to one host; UP when all come back in time."""

    protocols = ("icmp",)

    def __init__(self, spec: IcmpEndpoint, context: ProbeContext) -> None:
        super().__init__(spec, context)
        self._host = spec.host
        self._privileged = spec.privileged  # None: find out on the first attempt
        self._address: tuple[int, str] | None = None
        with contextlib.suppress(ValueError):
            self._address = (ipaddress.ip_address(self._host).version, self._host)

    async def attempt(self, timeout: float) -> ProbeResult:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                version, address = await self._resolve()
        except socket.gaierror as exc:
            return down(Reason.DNS_ERROR, f"cannot resolve {self._host}: {exc.strerror}")
        except TimeoutError:
            return down(Reason.TIMEOUT, f"cannot resolve {self._host} within {timeout:g} s")
        try:
            icmp_socket, privileged = self._open(version)
        except ICMPLibError as exc:
            return down(Reason.INVALID_CONFIG, self._socket_error(exc))
        echoes = Echoes(ECHO_IDS.acquire() if privileged else 0)
        held = echoes.ident
        try:
            await self._exchange(icmp_socket, version, address, echoes, deadline)
        finally:
            icmp_socket.close()
            if privileged:
                ECHO_IDS.release(held)
        return self._result(echoes, address, privileged)

    async def _resolve(self) -> tuple[int, str]:
        if self._address is not None:
            return self._address
        infos = await asyncio.get_running_loop().getaddrinfo(self._host, None, type=socket.SOCK_RAW)
        family, address = infos[0][0], str(infos[0][4][0])
        return (6 if family == socket.AF_INET6 else 4), address

    def _open(self, version: int) -> tuple[ICMPv4Socket | ICMPv6Socket, bool]:
        """A raw socket when allowed (or asked for), else an unprivileged datagram socket."""
        kind = ICMPv6Socket if version == 6 else ICMPv4Socket
        modes = (True, False) if self._privileged is None else (self._privileged,)
        error: ICMPLibError | None = None
        for privileged in modes:
            try:
                icmp_socket = kind(privileged=privileged)
            except SocketPermissionError as exc:
                error = exc
                continue
            if self.spec.privileged is None:
                self._privileged = privileged  # the process's rights do not change
            icmp_socket.blocking = False
            return icmp_socket, privileged
        assert error is not None
        raise error

    def _socket_error(self, exc: ICMPLibError) -> str:
        if self.spec.privileged is True:
            return "cannot open a raw ICMP socket: needs root or CAP_NET_RAW"
        return (
            "cannot open an ICMP socket: raw sockets need root or CAP_NET_RAW, and unprivileged"
            f" ones need the process's group in net.ipv4.ping_group_range ({_ping_group_range()})"
        )

    async def _exchange(
        self,
        icmp_socket: ICMPv4Socket | ICMPv6Socket,
        version: int,
        address: str,
        echoes: Echoes,
        deadline: float,
    ) -> None:
        """Send every echo on schedule; collect replies until all are in or the deadline."""
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        raw = icmp_socket.sock
        first_seq = random.randrange(0x10000)
        loop.add_reader(
            raw.fileno(), self._on_readable, icmp_socket, version, address, echoes, done
        )
        try:
            start = loop.time()
            for index in range(self.spec.packet_count):
                send_at = start + index * self.spec.packet_interval
                if send_at >= deadline:
                    break
                await asyncio.sleep(max(send_at - loop.time(), 0))
                self._send(icmp_socket, address, (first_seq + index) & 0xFFFF, echoes)
            if len(echoes.rtts_ms) < len(echoes.sent_at):
                done.clear()  # no await since the check: no reply can slip in between
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(deadline):
                        await done.wait()
        finally:
            loop.remove_reader(raw.fileno())

    def _send(
        self,
        icmp_socket: ICMPv4Socket | ICMPv6Socket,
        address: str,
        sequence: int,
        echoes: Echoes,
    ) -> None:
        request = ICMPRequest(address, echoes.ident, sequence, payload_size=self.spec.payload_size)
        try:
            icmp_socket.send(request)
        except ICMPLibError as exc:
            echoes.send_error = str(exc)
            return
        echoes.sent_at[sequence] = time.perf_counter()
        echoes.ident = int(request.id)  # unprivileged: the kernel's identifier, set by send

    def _on_readable(
        self,
        icmp_socket: ICMPv4Socket | ICMPv6Socket,
        version: int,
        address: str,
        echoes: Echoes,
        done: asyncio.Event,
    ) -> None:
        """Read everything queued; stamp each datagram as it is read."""
        while True:
            try:
                packet, source = icmp_socket.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # an error queued on the socket; the echo it concerns counts as lost
            stamp = time.perf_counter()
            reply = icmp_socket._parse_reply(packet, source[0], stamp)
            if reply is None or reply.type == _ECHO_REQUEST[version]:
                continue
            if reply.id != echoes.ident or reply.sequence not in echoes.sent_at:
                continue  # another probe's, or another program's
            if reply.type != _ECHO_REPLY[version]:
                try:
                    reply.raise_for_status()
                except ICMPError as exc:
                    echoes.icmp_errors.append(f"{exc} (from {source[0]})")
                continue
            if source[0] != address:
                continue
            if reply.sequence in echoes.rtts_ms:
                echoes.duplicates += 1
                continue
            echoes.rtts_ms[reply.sequence] = (stamp - echoes.sent_at[reply.sequence]) * 1000.0
            if len(echoes.rtts_ms) == len(echoes.sent_at):
                done.set()

    def _result(self, echoes: Echoes, address: str, privileged: bool) -> ProbeResult:
        rtts = echoes.rtts_in_order()
        sent = len(echoes.sent_at)
        details: dict[str, Any] = {
            "address": address,
            "privileged": privileged,
            "echo_id": echoes.ident,
            **echo_statistics(sent, rtts),
        }
        if echoes.duplicates:
            details["duplicates"] = echoes.duplicates
        if echoes.icmp_errors:
            details["icmp_errors"] = echoes.icmp_errors[:10]
        if sent == 0:
            message = f"cannot send echo requests to {address}: {echoes.send_error}"
            return down(Reason.NETWORK_ERROR, message, None, details)
        status, reason, verdict = judge_echoes(
            sent, rtts, self.spec.max_packet_loss, self.spec.degraded_threshold_ms
        )
        error = None
        if verdict is not None:
            error = f"{self._host}: {verdict}"
            if echoes.icmp_errors:
                error += f"; last ICMP error: {echoes.icmp_errors[-1]}"
        return ProbeResult(status, reason, details["rtt_avg_ms"], error, details=details)
