"""DnsProbe against a dnslib-encoded DNS server on 127.0.0.1 (UDP and TCP, one port).

The server answers from zone lines, follows CNAMEs, and can be told to answer a name with any
rcode, with the TC bit over UDP, late, with garbage, or not at all.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from dnslib import QTYPE, RCODE, RR, DNSRecord

from availmon.model import Reason, Status
from availmon.probes.base import Probe
from availmon.probes.dns import DnsProbe
from availmon.specs import DnsEndpoint

from .conftest import LOOPBACK, example_endpoints

MakeProbe = Callable[..., Probe[Any]]

ZONE = """
www.test.       300 IN A     10.0.0.1
www.test.       300 IN A     10.0.0.2
www.test.       300 IN AAAA  2001:db8::1
alias.test.     60  IN CNAME middle.test.
middle.test.    120 IN CNAME www.test.
dangling.test.  60  IN CNAME txt-only.test.
txt-only.test.  300 IN TXT   "v=spf1" " -all"
test.           300 IN MX    10 mx.test.
test.           300 IN NS    ns1.test.
test.           300 IN SOA   ns1.test. admin.test. 2024010101 7200 3600 1209600 300
test.           300 IN CAA   0 issue "letsencrypt.org"
_sip._tcp.test. 300 IN SRV   10 5 5060 sip.test.
1.0.0.127.in-addr.arpa. 300 IN PTR localhost.
loop1.test.     60  IN CNAME loop2.test.
loop2.test.     60  IN CNAME loop1.test.
"""


def _name(value: Any) -> str:
    return str(value).rstrip(".").lower() or "."


@dataclass
class DnsServer:
    records: list[Any] = field(default_factory=lambda: RR.fromZone(ZONE))
    rcodes: dict[str, int] = field(default_factory=dict)
    silent: set[str] = field(default_factory=set)
    truncated: set[str] = field(default_factory=set)
    garbage: set[str] = field(default_factory=set)
    delays: dict[str, float] = field(default_factory=dict)
    log: list[tuple[str, str, str, bool]] = field(default_factory=list)  # transport, name, type, rd
    port: int = 0

    def answer(self, data: bytes, transport: str) -> bytes | None:
        request = DNSRecord.parse(data)
        qname, qtype = _name(request.q.qname), QTYPE[request.q.qtype]
        self.log.append((transport, qname, qtype, bool(request.header.rd)))
        if qname in self.silent:
            return None
        if qname in self.garbage:
            return b"\x00\x01garbage"
        reply = request.reply()
        if qname in self.rcodes:
            reply.header.rcode = self.rcodes[qname]
            return bytes(reply.pack())
        if transport == "udp" and qname in self.truncated:
            reply.header.tc = 1
            return bytes(reply.pack())
        self._resolve(reply, qname, qtype)
        return bytes(reply.pack())

    def _resolve(self, reply: Any, name: str, qtype: str) -> None:
        for _ in range(20):
            here = [rr for rr in self.records if _name(rr.rname) == name]
            wanted = [rr for rr in here if QTYPE[rr.rtype] == qtype]
            if wanted:
                reply.add_answer(*wanted)
                return
            cnames = [rr for rr in here if QTYPE[rr.rtype] == "CNAME"]
            if cnames and qtype != "CNAME":
                reply.add_answer(*cnames)
                name = _name(cnames[0].rdata.label)
                continue
            if not here:
                reply.header.rcode = RCODE.NXDOMAIN
            return

    def queries(self, name: str) -> list[str]:
        return [transport for transport, qname, _, _ in self.log if qname == name]


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        answer = self.server.answer(data, "udp")
        if answer is not None:
            delay = self.server.delays.get(_name(DNSRecord.parse(data).q.qname), 0.0)
            asyncio.get_running_loop().call_later(delay, self.transport.sendto, answer, addr)


@pytest.fixture
async def dns_server() -> AsyncIterator[DnsServer]:
    server = DnsServer()
    loop = asyncio.get_running_loop()

    async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while header := await reader.readexactly(2):
                answer = server.answer(
                    await reader.readexactly(struct.unpack("!H", header)[0]), "tcp"
                )
                if answer is None:
                    await reader.read()  # silent: hold the connection until the client leaves
                    return
                writer.write(struct.pack("!H", len(answer)) + answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    for _ in range(50):  # one port for both: the TCP port may be taken where UDP's was free
        udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(server), local_addr=(LOOPBACK, 0))
        server.port = udp.get_extra_info("sockname")[1]
        try:
            stream = await asyncio.start_server(tcp, LOOPBACK, server.port)
        except OSError:
            udp.close()
            continue
        break
    else:
        pytest.fail("no port free for both UDP and TCP")
    yield server
    udp.close()
    stream.close()
    await stream.wait_closed()


@pytest.fixture
def dead_port() -> int:
    """A UDP (and TCP) port nothing listens on: ICMP port unreachable / RST."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def silent_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        yield sock.getsockname()[1]


def _url(server: DnsServer | int, name: str) -> str:
    port = server if isinstance(server, int) else server.port
    return f"dns://127.0.0.1:{port}/{name}"


async def test_a_record_is_up_with_details(make_probe: MakeProbe, dns_server: DnsServer) -> None:
    result = await make_probe(_url(dns_server, "www.test")).attempt(2.0)
    assert (result.status, result.reason, result.error) == (Status.UP, Reason.OK, None)
    assert result.response_time_ms is not None and result.response_time_ms > 0
    details = result.details
    assert details["answers"] == ["10.0.0.1", "10.0.0.2"]
    assert details["rcode"] == "NOERROR"
    assert details["cname_chain"] == []
    assert details["ttl"] == 300
    assert details["authoritative"] is True
    assert details["transport"] == "udp"
    assert details["server"] == f"127.0.0.1:{dns_server.port}"
    assert details["question"] == "www.test A"
    assert set(details["phases_ms"]) == {"query"}
    assert dns_server.log == [("udp", "www.test", "A", True)]


async def test_cname_chain_is_followed_and_recorded(
    make_probe: MakeProbe, dns_server: DnsServer
) -> None:
    probe = make_probe(_url(dns_server, "alias.test"), expected_answers=["10.0.0.2"])
    result = await probe.attempt(2.0)
    assert (result.status, result.reason) == (Status.UP, Reason.OK)
    assert result.details["cname_chain"] == ["alias.test", "middle.test", "www.test"]
    assert result.details["answers"] == ["10.0.0.1", "10.0.0.2"]
    assert result.details["ttl"] == 60  # the smallest TTL along the chain


async def test_cname_chain_without_the_type_is_no_data(
    make_probe: MakeProbe, dns_server: DnsServer
) -> None:
    result = await make_probe(_url(dns_server, "dangling.test")).attempt(2.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.NO_DATA)
    assert (
        result.error
        == "NOERROR but no answer for dangling.test A (via CNAME dangling.test -> txt-only.test)"
    )
    assert result.details["cname_chain"] == ["dangling.test", "txt-only.test"]
    assert result.response_time_ms is not None


async def test_cname_loop_is_invalid_response(make_probe: MakeProbe, dns_server: DnsServer) -> None:
    result = await make_probe(_url(dns_server, "loop1.test")).attempt(1.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.INVALID_RESPONSE)
    assert result.error == f"CNAME chain from 127.0.0.1:{dns_server.port} too long"


async def test_five_failures_are_five_reasons(make_probe: MakeProbe, dns_server: DnsServer) -> None:
    dns_server.rcodes.update({"servfail.test": RCODE.SERVFAIL, "refused.test": RCODE.REFUSED})
    dns_server.silent.add("silent.test")
    cases = {
        "nowhere.test": Reason.NXDOMAIN,
        "txt-only.test": Reason.NO_DATA,
        "servfail.test": Reason.SERVFAIL,
        "refused.test": Reason.DNS_REFUSED,
        "silent.test": Reason.NO_RESPONSE,
    }
    for name, reason in cases.items():
        result = await make_probe(_url(dns_server, name)).attempt(0.3)
        assert (name, result.status, result.reason) == (name, Status.DOWN, reason)
    result = await make_probe(_url(dns_server, "nowhere.test")).attempt(0.3)
    assert result.error == (
        f"127.0.0.1:{dns_server.port} answered NXDOMAIN for nowhere.test A, expected NOERROR"
    )
    result = await make_probe(_url(dns_server, "silent.test")).attempt(0.3)
    assert result.error == f"no answer from 127.0.0.1:{dns_server.port} within 0.3 s"
    assert result.response_time_ms is None
    assert result.details["timeout_phase"] == "query"


@pytest.mark.parametrize(("rcode", "text"), [(RCODE.FORMERR, "FORMERR"), (RCODE.NOTIMP, "NOTIMP")])
async def test_other_rcodes_are_unexpected(
    make_probe: MakeProbe, dns_server: DnsServer, rcode: int, text: str
) -> None:
    dns_server.rcodes["odd.test"] = rcode
    result = await make_probe(_url(dns_server, "odd.test")).attempt(1.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.UNEXPECTED_RCODE)
    assert result.details["rcode"] == text


async def test_expected_nxdomain(make_probe: MakeProbe, dns_server: DnsServer) -> None:
    probe = make_probe(_url(dns_server, "nowhere.test"), expected_rcode="NXDOMAIN")
    result = await probe.attempt(1.0)
    assert (result.status, result.reason, result.error) == (Status.UP, Reason.OK, None)
    assert result.details["answers"] == []
    probe = make_probe(_url(dns_server, "www.test"), expected_rcode="nxdomain")
    result = await probe.attempt(1.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.UNEXPECTED_RCODE)
    assert result.error == (
        f"127.0.0.1:{dns_server.port} answered NOERROR for www.test A, expected NXDOMAIN"
    )


async def test_dead_pinned_server_is_down_though_the_host_resolves(
    make_probe: MakeProbe, dead_port: int
) -> None:
    assert socket.getaddrinfo("localhost", None)  # the host's own resolver answers this name
    result = await make_probe(_url(dead_port, "localhost")).attempt(1.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.REFUSED)
    assert result.error == f"127.0.0.1:{dead_port} refused the query (ICMP port unreachable)"
    assert result.response_time_ms is None
    result = await make_probe(_url(dead_port, "localhost"), transport="tcp").attempt(1.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.REFUSED)
    assert result.error == f"127.0.0.1:{dead_port} refused the query (TCP connection refused)"


async def test_server_that_never_answers(make_probe: MakeProbe, silent_port: int) -> None:
    result = await make_probe(_url(silent_port, "localhost")).attempt(0.2)
    assert (result.status, result.reason) == (Status.DOWN, Reason.NO_RESPONSE)


async def test_no_cache_between_attempts(make_probe: MakeProbe, dns_server: DnsServer) -> None:
    probe = make_probe(_url(dns_server, "www.test"))  # TTL 300: a caching client would not ask
    first, second = await probe.attempt(1.0), await probe.attempt(1.0)
    assert (first.status, second.status) == (Status.UP, Status.UP)
    assert dns_server.queries("www.test") == ["udp", "udp"]
    dns_server.silent.add("www.test")  # the server stops answering this name
    result = await probe.attempt(0.3)
    assert (result.status, result.reason) == (Status.DOWN, Reason.NO_RESPONSE)


async def test_one_dead_server_delays_nothing_else(
    make_probe: MakeProbe, dns_server: DnsServer, silent_port: int
) -> None:
    loop = asyncio.get_running_loop()
    finished: dict[str, float] = {}
    started = loop.time()

    async def run(key: str, url: str) -> None:
        await make_probe(url).attempt(1.0)
        finished[key] = loop.time() - started

    await asyncio.gather(
        run("dead", _url(silent_port, "www.test")),
        *(run(f"live{i}", _url(dns_server, "www.test")) for i in range(5)),
    )
    assert finished["dead"] >= 1.0
    assert max(finished[f"live{i}"] for i in range(5)) < 0.5


@pytest.mark.parametrize(
    ("url_name", "record_type", "answer"),
    [
        ("www.test", "AAAA", "2001:db8::1"),
        ("test", "MX", "10 mx.test"),
        ("test", "NS", "ns1.test"),
        ("test", "SOA", "ns1.test admin.test 2024010101 7200 3600 1209600 300"),
        ("test", "CAA", "0 issue letsencrypt.org"),
        ("txt-only.test", "TXT", "v=spf1 -all"),
        ("_sip._tcp.test", "SRV", "10 5 5060 sip.test"),
        ("127.0.0.1", "PTR", "localhost"),
        ("1.0.0.127.in-addr.arpa", "PTR", "localhost"),
        ("alias.test", "CNAME", "middle.test"),
    ],
)
async def test_record_types(
    make_probe: MakeProbe, dns_server: DnsServer, url_name: str, record_type: str, answer: str
) -> None:
    probe = make_probe(_url(dns_server, url_name), record_type=record_type)
    result = await probe.attempt(1.0)
    assert (result.status, result.reason, result.error) == (Status.UP, Reason.OK, None)
    assert result.details["answers"] == [answer]
    assert result.details["cname_chain"] == []


async def test_expected_answers_all_present(make_probe: MakeProbe, dns_server: DnsServer) -> None:
    probe = make_probe(_url(dns_server, "www.test"), expected_answers=["10.0.0.2", "10.0.0.1"])
    assert (await probe.attempt(1.0)).status is Status.UP
    probe = make_probe(
        _url(dns_server, "www.test"), record_type="AAAA", expected_answers=["2001:0db8:0::1"]
    )
    assert (await probe.attempt(1.0)).status is Status.UP  # compared as addresses
    probe = make_probe(_url(dns_server, "test"), record_type="MX", expected_answers=["10 MX.test."])
    assert (await probe.attempt(1.0)).status is Status.UP  # names: any case, final dot or not
    probe = make_probe(_url(dns_server, "www.test"), expected_answers=["10.0.0.1", "10.0.0.3"])
    result = await probe.attempt(1.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.ANSWER_MISMATCH)
    assert result.error == "10.0.0.3 not among the answers for www.test A: 10.0.0.1, 10.0.0.2"


async def test_expected_pattern_on_answers(make_probe: MakeProbe, dns_server: DnsServer) -> None:
    probe = make_probe(
        _url(dns_server, "txt-only.test"), record_type="TXT", expected_pattern="^v=spf1 "
    )
    assert (await probe.attempt(1.0)).status is Status.UP
    probe = make_probe(_url(dns_server, "www.test"), expected_pattern=r"^192\.168\.")
    result = await probe.attempt(1.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.PATTERN_MISMATCH)
    assert result.error == (
        "pattern '^192\\\\.168\\\\.' matches no answer for www.test A: 10.0.0.1, 10.0.0.2"
    )


async def test_tcp_transport(make_probe: MakeProbe, dns_server: DnsServer) -> None:
    result = await make_probe(_url(dns_server, "www.test"), transport="tcp").attempt(1.0)
    assert (result.status, result.reason) == (Status.UP, Reason.OK)
    assert result.details["transport"] == "tcp"
    assert set(result.details["phases_ms"]) == {"connect", "query"}
    assert dns_server.queries("www.test") == ["tcp"]


async def test_truncated_udp_answer_is_retried_over_tcp(
    make_probe: MakeProbe, dns_server: DnsServer
) -> None:
    dns_server.truncated.add("www.test")
    result = await make_probe(_url(dns_server, "www.test")).attempt(1.0)
    assert (result.status, result.reason) == (Status.UP, Reason.OK)
    assert result.details["transport"] == "tcp"
    assert result.details["truncated_over_udp"] is True
    assert dns_server.queries("www.test") == ["udp", "tcp"]


async def test_silent_over_tcp(make_probe: MakeProbe, dns_server: DnsServer) -> None:
    dns_server.silent.add("silent.test")
    result = await make_probe(_url(dns_server, "silent.test"), transport="tcp").attempt(0.3)
    assert (result.status, result.reason) == (Status.DOWN, Reason.NO_RESPONSE)
    assert result.details["timeout_phase"] == "query"


async def test_garbage_is_invalid_response(make_probe: MakeProbe, dns_server: DnsServer) -> None:
    dns_server.garbage.add("junk.test")
    result = await make_probe(_url(dns_server, "junk.test")).attempt(1.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.INVALID_RESPONSE)
    assert result.error is not None
    assert result.error.startswith(f"invalid answer from 127.0.0.1:{dns_server.port}: ")


async def test_recursion_desired_flag(make_probe: MakeProbe, dns_server: DnsServer) -> None:
    await make_probe(_url(dns_server, "www.test"), recursion_desired=False).attempt(1.0)
    assert dns_server.log == [("udp", "www.test", "A", False)]


async def test_slow_answer_is_degraded(make_probe: MakeProbe, dns_server: DnsServer) -> None:
    dns_server.delays["www.test"] = 0.15
    probe = make_probe(_url(dns_server, "www.test"), degraded_threshold_ms=100)
    result = await probe.attempt(1.0)
    assert (result.status, result.reason) == (Status.DEGRADED, Reason.SLOW)


async def test_server_given_by_name(make_probe: MakeProbe, dns_server: DnsServer) -> None:
    result = await make_probe(f"dns://localhost:{dns_server.port}/www.test").attempt(2.0)
    assert (result.status, result.reason) == (Status.UP, Reason.OK)
    assert result.details["server"] == f"localhost:{dns_server.port} (127.0.0.1)"
    assert set(result.details["phases_ms"]) == {"dns", "query"}


async def test_server_name_that_does_not_resolve(make_probe: MakeProbe) -> None:
    result = await make_probe("dns://nonexistent.invalid/www.test").attempt(5.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.DNS_ERROR)
    assert result.error is not None
    assert result.error.startswith("cannot resolve the DNS server nonexistent.invalid: ")


async def test_dns_details_are_json(make_probe: MakeProbe, dns_server: DnsServer) -> None:
    result = await make_probe(_url(dns_server, "alias.test")).attempt(1.0)
    document = json.loads(json.dumps(result.to_json()))
    assert document["details"]["cname_chain"][-1] == "www.test"


async def test_registry_builds_dns_probe(make_probe: MakeProbe) -> None:
    assert isinstance(make_probe("dns://127.0.0.1/example.test"), DnsProbe)


def test_example_config_has_a_dns_example() -> None:
    specs = example_endpoints("dns")
    assert specs and all(isinstance(spec, DnsEndpoint) for spec in specs)
