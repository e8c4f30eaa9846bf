"""DNS probe: one query to the server in the url (dns://server[:port]/name), and only to it.

dnspython builds the query and parses the whole answer (rcode, flags, every section, the CNAME
chain) over UDP or TCP to the given server and port: no cache, no resolv.conf, no other server.
aiodns was measured first and is not used here: c-ares (>= 1.23) caches answers per channel for
their TTL and pycares offers no switch for it, so a second query never reached the server and a
server stopped meanwhile still looked UP.

The UDP socket is connected, so only the server's datagrams reach it and an ICMP port
unreachable answer surfaces as ECONNREFUSED (`refused`); silence is `no_response`. The five
answers an operator must tell apart each have a reason: nxdomain, no_data, servfail,
dns_refused, no_response.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import Any, Final

import dns.asyncbackend
import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdatatype
import dns.reversename
import dns.rrset
from dns.rdtypes.ANY.CAA import CAA
from dns.rdtypes.ANY.CNAME import CNAME
from dns.rdtypes.ANY.TXT import TXT
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA

from availmon.model import ProbeResult, Reason
from availmon.patterns import Pattern
from availmon.probes.base import (
    Probe,
    ProbeContext,
    down,
    elapsed_ms,
    literal_address,
    resolve,
    span_ms,
)
from availmon.specs import DnsEndpoint

# Exception -> reason, most specific first. `{target}` is server:port (and its address).
_ERRORS: Final[tuple[tuple[type[BaseException], Reason, str], ...]] = (
    (socket.gaierror, Reason.DNS_ERROR, "cannot resolve the DNS server {host}: {detail}"),
    (ConnectionRefusedError, Reason.REFUSED, "{target} refused the query ({how})"),
    (ConnectionResetError, Reason.RESET, "connection reset by {target}"),
    (EOFError, Reason.CLOSED_WITHOUT_DATA, "{target} closed the connection without an answer"),
    (dns.message.ChainTooLong, Reason.INVALID_RESPONSE, "CNAME chain from {target} too long"),
    (dns.exception.DNSException, Reason.INVALID_RESPONSE, "invalid answer from {target}: {detail}"),
    (TimeoutError, Reason.NO_RESPONSE, "no answer from {target} within {timeout:g} s"),
    (OSError, Reason.NETWORK_ERROR, "network error with {target}: {detail}"),
)
_HANDLED: Final = tuple(row[0] for row in _ERRORS)
_RCODE_REASONS: Final = {
    dns.rcode.NXDOMAIN: Reason.NXDOMAIN,
    dns.rcode.SERVFAIL: Reason.SERVFAIL,
    dns.rcode.REFUSED: Reason.DNS_REFUSED,
}
_EDNS_PAYLOAD: Final = 1232  # the DNS flag day 2020 size: no fragmentation on common paths
_NAME_TYPES: Final = frozenset({"CNAME", "NS", "PTR"})


def answer_text(rdata: dns.rdata.Rdata) -> str:
    """One answer as an operator writes it: 10.0.0.1, mail.example.net, "10 mx.example.net"."""
    if isinstance(rdata, A | AAAA):
        return ipaddress.ip_address(rdata.address).compressed
    if isinstance(rdata, TXT):
        return b"".join(rdata.strings).decode("utf-8", errors="replace")
    if isinstance(rdata, CAA):
        return f"{rdata.flags} {rdata.tag.decode()} {rdata.value.decode(errors='replace')}"
    return rdata.to_text(omit_final_dot=True)


def canonical(record_type: str, text: str) -> str:
    """The form answers are compared in: addresses compressed, names without the final dot."""
    if record_type in ("A", "AAAA"):
        try:
            return ipaddress.ip_address(text.strip()).compressed
        except ValueError:
            return text.strip()
    if record_type == "TXT":
        return text
    words = text.replace('"', " ").split()
    return " ".join(word.rstrip(".").lower() if word != "." else word for word in words)


@dataclass(slots=True)
class _Progress:
    started: float
    phase: str = "dns"
    address: str | None = None
    transport: str = "udp"
    resolved: float | None = None
    connected: float | None = None
    done: float | None = None
    truncated: bool = False


class DnsProbe(Probe[DnsEndpoint]):
    """Ask one server one question; UP when the rcode and the answers are as expected."""

    protocols = ("dns",)

    def __init__(self, spec: DnsEndpoint, context: ProbeContext) -> None:
        super().__init__(spec, context)
        self._server = spec.server
        self._port = spec.port
        name = spec.query_name
        is_ip = literal_address(name) is not None
        if spec.record_type == "PTR" and is_ip:
            self._qname = dns.reversename.from_address(name)
        else:
            self._qname = dns.name.from_text(name)
        self._rdtype = dns.rdatatype.from_text(spec.record_type)
        self._expected_rcode = dns.rcode.from_text(spec.expected_rcode)
        self._expected = [canonical(spec.record_type, item) for item in spec.expected_answers]
        pattern = spec.expected_pattern
        self._pattern = Pattern(pattern) if pattern is not None else None
        self._flags = dns.flags.RD if spec.recursion_desired else 0
        self._question = f"{self._qname.to_text(omit_final_dot=True) or '.'} {spec.record_type}"
        self._address = literal_address(self._server)

    async def attempt(self, timeout: float) -> ProbeResult:
        progress = _Progress(time.perf_counter())
        try:
            with self.context.deadlines.after(timeout):
                family, address = await self._resolve(progress)
                query = dns.message.make_query(
                    self._qname, self._rdtype, use_edns=0, payload=_EDNS_PAYLOAD, flags=self._flags
                )
                response = await self._ask(query, family, address, progress)
                progress.done = time.perf_counter()
                return self._judge(response, progress)
        except _HANDLED as exc:
            return self._failure(exc, progress, timeout)

    async def _resolve(self, progress: _Progress) -> tuple[int, str]:
        """The server's address: asking the system resolver for it is not asking the question."""
        if self._address is not None:
            family, address = self._address
        else:
            family, address = (await resolve(self._server, self._port, socket.SOCK_DGRAM))[0]
            progress.resolved = time.perf_counter()
        progress.address = address
        return family, address

    async def _ask(
        self, query: dns.message.Message, family: int, address: str, progress: _Progress
    ) -> dns.message.Message:
        backend = dns.asyncbackend.get_backend("asyncio")
        if self.spec.transport == "udp":
            progress.phase = "query"
            udp = await _socket(backend, socket.SOCK_DGRAM, family, address, self._port)
            async with udp:
                try:
                    return await dns.asyncquery.udp(
                        query, address, port=self._port, sock=udp, raise_on_truncation=True
                    )
                except dns.message.Truncated:
                    progress.truncated = True  # the full answer needs TCP, as for any resolver
        progress.phase, progress.transport = "connect", "tcp"
        tcp = await _socket(backend, socket.SOCK_STREAM, family, address, self._port)
        async with tcp:
            progress.connected = time.perf_counter()
            progress.phase = "query"
            return await dns.asyncquery.tcp(query, address, port=self._port, sock=tcp)

    def _judge(self, response: dns.message.Message, progress: _Progress) -> ProbeResult:
        response_time_ms = elapsed_ms(progress.started)
        if not isinstance(response, dns.message.QueryMessage):  # dnspython checked the id
            error = f"{self._target(progress)} sent a message that answers no query"
            return down(Reason.INVALID_RESPONSE, error, response_time_ms, self._details(progress))
        rcode = response.rcode()
        chain = response.resolve_chaining()
        answers = [answer_text(rdata) for rdata in chain.answer or ()]
        cnames = [self._qname, *_targets(chain.cnames)]
        details = self._details(progress)
        details.update(
            {
                "rcode": dns.rcode.to_text(rcode),
                "authoritative": bool(response.flags & dns.flags.AA),
                "answers": answers,
                "cname_chain": [n.to_text(omit_final_dot=True) for n in cnames]
                if chain.cnames
                else [],
                "ttl": chain.minimum_ttl if chain.answer is not None else None,
            }
        )
        via = f" (via CNAME {' -> '.join(details['cname_chain'])})" if chain.cnames else ""
        if rcode != self._expected_rcode:
            reason = _RCODE_REASONS.get(rcode, Reason.UNEXPECTED_RCODE)
            error = (
                f"{self._target(progress)} answered {dns.rcode.to_text(rcode)} for"
                f" {self._question}{via}, expected {self.spec.expected_rcode}"
            )
            return down(reason, error, response_time_ms, details)
        if self._expected_rcode != dns.rcode.NOERROR:
            return self.grade(response_time_ms, details)
        if not answers:
            error = f"NOERROR but no answer for {self._question}{via}"
            return down(Reason.NO_DATA, error, response_time_ms, details)
        got = {canonical(self.spec.record_type, text) for text in answers}
        listed = ", ".join(answers)
        if missing := [item for item in self._expected if item not in got]:
            error = f"{', '.join(missing)} not among the answers for {self._question}: {listed}"
            return down(Reason.ANSWER_MISMATCH, error, response_time_ms, details)
        if self._pattern is not None and not any(self._pattern.search(a) for a in answers):
            pattern = self._pattern.pattern
            error = f"pattern {pattern!r} matches no answer for {self._question}: {listed}"
            return down(Reason.PATTERN_MISMATCH, error, response_time_ms, details)
        return self.grade(response_time_ms, details)

    def _failure(self, exc: BaseException, progress: _Progress, timeout: float) -> ProbeResult:
        """No usable answer: response_time_ms stays None."""
        reason, summary = next(
            (reason, summary) for kind, reason, summary in _ERRORS if isinstance(exc, kind)
        )
        details = self._details(progress)
        how = "ICMP port unreachable" if progress.transport == "udp" else "TCP connection refused"
        message = summary.format(
            target=self._target(progress),
            host=self._server,
            how=how,
            timeout=timeout,
            detail=_detail(exc),
        )
        if isinstance(exc, TimeoutError):
            details["timeout_phase"] = progress.phase
            if progress.phase == "dns":  # the server was never asked: not its silence
                reason = Reason.TIMEOUT
                message = f"cannot resolve the DNS server {self._server} within {timeout:g} s"
            elif progress.phase == "connect":
                reason = Reason.TIMEOUT
                message = (
                    f"TCP connection to {self._target(progress)} not set up within {timeout:g} s"
                )
        return down(reason, message, None, details)

    def _target(self, progress: _Progress) -> str:
        host = f"[{self._server}]" if ":" in self._server else self._server
        target = f"{host}:{self._port}"
        if progress.address is not None and progress.address != self._server:
            target += f" ({progress.address})"
        return target

    def _details(self, progress: _Progress) -> dict[str, Any]:
        details: dict[str, Any] = {
            "server": self._target(progress),
            "question": self._question,
            "transport": progress.transport,
        }
        if progress.truncated:
            details["truncated_over_udp"] = True
        query_start = progress.connected or progress.resolved or progress.started
        spans = {
            "dns": span_ms(progress.started, progress.resolved),
            "connect": span_ms(progress.resolved or progress.started, progress.connected),
            "query": span_ms(query_start, progress.done),
        }
        if phases := {phase: ms for phase, ms in spans.items() if ms is not None}:
            details["phases_ms"] = phases
        return details


def _targets(cnames: list[dns.rrset.RRset]) -> list[dns.name.Name]:
    """Where each CNAME of the chain points: its first record, as dnspython followed it."""
    return [next(rd.target for rd in rrset if isinstance(rd, CNAME)) for rrset in cnames]


async def _socket(backend: Any, kind: int, family: int, address: str, port: int) -> Any:
    """A connected dnspython socket: UDP ones then hear only the server, and its refusals."""
    return await backend.make_socket(family, kind, 0, None, (address, port))


def _detail(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:300]
