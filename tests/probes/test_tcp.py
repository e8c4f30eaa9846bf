"""TcpProbe against raw asyncio peers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from availmon.model import Reason, Status
from availmon.probes.base import Probe
from availmon.probes.tcp import TcpProbe
from availmon.specs import TcpEndpoint

from .conftest import Pki, RawServer, example_endpoints, hang, reset_connection

MakeProbe = Callable[..., Probe[Any]]


async def _greet_and_stay(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *chunks: bytes
) -> None:
    for chunk in chunks:
        writer.write(chunk)
        await writer.drain()
        await asyncio.sleep(0.05)
    await hang(reader, writer)


async def test_connect_only_is_up(make_probe: MakeProbe, raw_server: RawServer) -> None:
    port = await raw_server.start(hang)
    result = await make_probe(f"tcp://127.0.0.1:{port}").attempt(2.0)
    assert (result.status, result.reason, result.error) == (Status.UP, Reason.OK, None)
    assert result.response_time_ms is not None and result.response_time_ms > 0
    assert result.details["resolved_address"] == "127.0.0.1"
    assert result.details["bytes_received"] == 0
    assert set(result.details["phases_ms"]) == {"connect"}


async def test_connect_by_name_records_dns(make_probe: MakeProbe, raw_server: RawServer) -> None:
    port = await raw_server.start(hang)
    result = await make_probe(f"tcp://localhost:{port}").attempt(2.0)
    assert (result.status, result.reason) == (Status.UP, Reason.OK)
    assert result.details["resolved_address"] == "127.0.0.1"
    assert set(result.details["phases_ms"]) == {"dns", "connect"}


async def test_refused(make_probe: MakeProbe, free_port: int) -> None:
    result = await make_probe(f"tcp://127.0.0.1:{free_port}").attempt(2.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.REFUSED)
    assert result.error == f"connection refused by 127.0.0.1:{free_port}"
    assert result.response_time_ms is None
    assert "resolved_address" not in result.details


async def test_refused_by_name_names_the_address(make_probe: MakeProbe, free_port: int) -> None:
    result = await make_probe(f"tcp://localhost:{free_port}").attempt(2.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.REFUSED)
    assert result.error is not None
    assert result.error.startswith(f"connection refused by localhost:{free_port} (")


async def test_send_exact_bytes_and_match_as_they_arrive(
    make_probe: MakeProbe, raw_server: RawServer
) -> None:
    received = asyncio.get_running_loop().create_future()

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.readexactly(len(b"PING\r\n"))
        writer.write(b"HEL")  # no newline, and the connection stays open
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"LO")
        await writer.drain()
        received.set_result(data + await reader.read())  # everything up to the probe's close

    port = await raw_server.start(greet)
    probe = make_probe(f"tcp://127.0.0.1:{port}", send="PING\r\n", expected_pattern=r"HEL+O")
    result = await probe.attempt(2.0)
    assert (result.status, result.reason, result.error) == (Status.UP, Reason.OK, None)
    assert result.response_time_ms is not None and result.response_time_ms < 1000
    assert result.details["bytes_received"] == 5
    assert set(result.details["phases_ms"]) == {"connect", "read"}
    assert await asyncio.wait_for(received, 1.0) == b"PING\r\n"


async def test_send_hex_writes_binary_bytes(make_probe: MakeProbe, raw_server: RawServer) -> None:
    received = asyncio.get_running_loop().create_future()

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.set_result(await reader.read())

    port = await raw_server.start(record)
    probe = make_probe(f"tcp://127.0.0.1:{port}", send_hex="00 ff 0d0a")
    result = await probe.attempt(2.0)
    assert (result.status, result.reason) == (Status.UP, Reason.OK)
    assert await asyncio.wait_for(received, 1.0) == b"\x00\xff\r\n"


async def test_send_adds_no_newline(make_probe: MakeProbe, raw_server: RawServer) -> None:
    received = asyncio.get_running_loop().create_future()

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.set_result(await reader.read())

    port = await raw_server.start(record)
    result = await make_probe(f"tcp://127.0.0.1:{port}", send="stats").attempt(2.0)
    assert (result.status, result.reason) == (Status.UP, Reason.OK)
    assert await asyncio.wait_for(received, 1.0) == b"stats"


async def test_pattern_mismatch_then_close(make_probe: MakeProbe, raw_server: RawServer) -> None:
    async def bye(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"BYE\r\n")
        await writer.drain()

    port = await raw_server.start(bye)
    result = await make_probe(f"tcp://127.0.0.1:{port}", expected_pattern="HELLO").attempt(2.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.PATTERN_MISMATCH)
    assert result.error == (
        f"pattern 'HELLO' not found in 5 bytes from 127.0.0.1:{port} before it closed the"
        " connection; got b'BYE\\r\\n'"
    )
    assert result.details["bytes_received"] == 5


async def test_no_match_within_max_read_bytes(make_probe: MakeProbe, raw_server: RawServer) -> None:
    async def chatter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _greet_and_stay(reader, writer, b"x" * 100)

    port = await raw_server.start(chatter)
    probe = make_probe(f"tcp://127.0.0.1:{port}", expected_pattern="HELLO", max_read_bytes=10)
    result = await probe.attempt(2.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.PATTERN_MISMATCH)
    assert result.error is not None and "the first 10 bytes (max_read_bytes)" in result.error
    assert result.details["bytes_received"] == 10


async def test_match_right_at_max_read_bytes(make_probe: MakeProbe, raw_server: RawServer) -> None:
    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _greet_and_stay(reader, writer, b"12345", b"HELLO")

    port = await raw_server.start(greet)
    probe = make_probe(f"tcp://127.0.0.1:{port}", expected_pattern="HELLO", max_read_bytes=10)
    result = await probe.attempt(2.0)
    assert (result.status, result.reason) == (Status.UP, Reason.OK)
    assert result.details["bytes_received"] == 10


async def test_closed_without_data(make_probe: MakeProbe, raw_server: RawServer) -> None:
    async def close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        return None

    port = await raw_server.start(close)
    result = await make_probe(f"tcp://127.0.0.1:{port}", expected_pattern="HELLO").attempt(2.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.CLOSED_WITHOUT_DATA)
    assert result.error == f"127.0.0.1:{port} closed the connection without sending any data"


async def test_never_answers_with_pattern(make_probe: MakeProbe, raw_server: RawServer) -> None:
    port = await raw_server.start(hang)
    result = await make_probe(f"tcp://127.0.0.1:{port}", expected_pattern="HELLO").attempt(0.2)
    assert (result.status, result.reason) == (Status.DOWN, Reason.TIMEOUT)
    assert result.response_time_ms is None
    assert result.details["timeout_phase"] == "read"
    assert result.details["bytes_received"] == 0
    assert result.error == (
        f"no answer from 127.0.0.1:{port} within 0.2 s (timed out in read phase, 0 bytes received)"
    )


async def test_timeout_counts_partial_bytes(make_probe: MakeProbe, raw_server: RawServer) -> None:
    async def partial(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _greet_and_stay(reader, writer, b"HELL")

    port = await raw_server.start(partial)
    result = await make_probe(f"tcp://127.0.0.1:{port}", expected_pattern="HELLO").attempt(0.3)
    assert (result.status, result.reason) == (Status.DOWN, Reason.TIMEOUT)
    assert result.details["timeout_phase"] == "read"
    assert result.details["bytes_received"] == 4


async def test_connect_timeout(make_probe: MakeProbe, full_backlog: int) -> None:
    result = await make_probe(f"tcp://127.0.0.1:{full_backlog}").attempt(0.2)
    assert (result.status, result.reason) == (Status.DOWN, Reason.TIMEOUT)
    assert result.details["timeout_phase"] == "connect"
    assert result.response_time_ms is None


async def test_reset(make_probe: MakeProbe, raw_server: RawServer) -> None:
    async def rst(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reset_connection(writer)

    port = await raw_server.start(rst)
    result = await make_probe(f"tcp://127.0.0.1:{port}", expected_pattern="HELLO").attempt(2.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.RESET)
    assert result.error == f"connection reset by 127.0.0.1:{port}"
    assert result.response_time_ms is None


async def test_dns_failure(make_probe: MakeProbe) -> None:
    result = await make_probe("tcp://nonexistent.invalid:80").attempt(5.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.DNS_ERROR)
    assert result.error is not None
    assert result.error.startswith("cannot resolve nonexistent.invalid: ")
    assert result.response_time_ms is None


async def test_slow_match_is_degraded(make_probe: MakeProbe, raw_server: RawServer) -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.15)
        await _greet_and_stay(reader, writer, b"HELLO")

    port = await raw_server.start(slow)
    probe = make_probe(
        f"tcp://127.0.0.1:{port}", expected_pattern="HELLO", degraded_threshold_ms=100
    )
    result = await probe.attempt(2.0)
    assert (result.status, result.reason) == (Status.DEGRADED, Reason.SLOW)
    assert result.response_time_ms is not None and result.response_time_ms > 100


async def test_registry_builds_tcp_probe(make_probe: MakeProbe) -> None:
    assert isinstance(make_probe("tcp://127.0.0.1:1"), TcpProbe)


async def test_accept_and_close_is_up_for_connect_only(
    make_probe: MakeProbe, raw_server: RawServer
) -> None:
    async def close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        return None

    port = await raw_server.start(close)
    result = await make_probe(f"tcp://127.0.0.1:{port}").attempt(2.0)
    assert (result.status, result.reason) == (Status.UP, Reason.OK)
    result = await make_probe(f"tcp://127.0.0.1:{port}", expected_pattern=".").attempt(2.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.CLOSED_WITHOUT_DATA)


# --- TLS on connect ---------------------------------------------------------------------------


async def _tls_greeter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    line = await reader.readline()
    writer.write(b"+OK " + line)
    await writer.drain()
    await hang(reader, writer)


async def test_tls_connect_records_certificate(
    make_probe: MakeProbe, raw_server: RawServer, pki: Pki
) -> None:
    port = await raw_server.start(hang, pki.server_context(pki.leaf()))
    probe = make_probe(f"tcp://127.0.0.1:{port}", tls=True, ca_file=str(pki.ca_file))
    result = await probe.attempt(2.0)
    assert (result.status, result.reason, result.error) == (Status.UP, Reason.OK, None)
    facts = result.details["tls"]
    assert facts["subject"].startswith("CN=127.0.0.1,")
    assert len(facts["chain"]) == 2
    assert set(result.details["phases_ms"]) == {"connect", "tls"}


async def test_tls_send_and_pattern_go_over_tls(
    make_probe: MakeProbe, raw_server: RawServer, pki: Pki
) -> None:
    port = await raw_server.start(_tls_greeter, pki.server_context(pki.leaf()))
    probe = make_probe(
        f"tcp://127.0.0.1:{port}",
        tls=True,
        ca_file=str(pki.ca_file),
        send="PING\n",
        expected_pattern=r"^\+OK PING",
    )
    result = await probe.attempt(2.0)
    assert (result.status, result.reason, result.error) == (Status.UP, Reason.OK, None)
    assert result.details["bytes_received"] == len(b"+OK PING\n")
    assert set(result.details["phases_ms"]) == {"connect", "tls", "read"}


async def test_tls_server_names_pick_virtual_hosts(
    make_probe: MakeProbe, raw_server: RawServer, pki: Pki
) -> None:
    alpha = pki.server_context(pki.leaf("alpha.test"))
    beta = pki.server_context(pki.leaf("beta.test"))
    port = await raw_server.start(hang, pki.virtual_hosts(beta, {"alpha.test": alpha}))
    results = {}
    for name in ("alpha.test", "beta.test"):
        probe = make_probe(
            f"tcp://127.0.0.1:{port}", tls=True, ca_file=str(pki.ca_file), server_name=name
        )
        results[name] = await probe.attempt(2.0)
    for name, result in results.items():
        assert (result.status, result.reason) == (Status.UP, Reason.OK)
        assert result.details["tls"]["server_name"] == name
        assert result.details["tls"]["subject"].startswith(f"CN={name},")


async def test_tls_name_mismatch_is_tls_error(
    make_probe: MakeProbe, raw_server: RawServer, pki: Pki
) -> None:
    port = await raw_server.start(hang, pki.server_context(pki.leaf("alpha.test")))
    probe = make_probe(
        f"tcp://127.0.0.1:{port}", tls=True, ca_file=str(pki.ca_file), server_name="beta.test"
    )
    result = await probe.attempt(2.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.TLS_ERROR)
    assert result.error == (
        "TLS certificate verify failed: Hostname mismatch, certificate is not valid for"
        " 'beta.test'."
    )
    assert result.response_time_ms is None


async def test_tls_untrusted_is_tls_error(
    make_probe: MakeProbe, raw_server: RawServer, pki: Pki
) -> None:
    port = await raw_server.start(hang, pki.server_context(pki.leaf()))
    result = await make_probe(f"tcp://127.0.0.1:{port}", tls=True).attempt(2.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.TLS_ERROR)
    assert result.error == "TLS certificate verify failed: unable to get local issuer certificate"


@pytest.mark.parametrize(
    ("valid_days", "reason", "field"),
    [
        ((-30, -1), Reason.CERT_EXPIRED, "not_after"),
        ((2, 30), Reason.CERT_NOT_YET_VALID, "not_before"),
    ],
)
async def test_tls_certificate_out_of_dates(
    make_probe: MakeProbe,
    raw_server: RawServer,
    pki: Pki,
    valid_days: tuple[int, int],
    reason: Reason,
    field: str,
) -> None:
    port = await raw_server.start(hang, pki.server_context(pki.leaf(valid_days=valid_days)))
    probe = make_probe(f"tcp://127.0.0.1:{port}", tls=True, ca_file=str(pki.ca_file))
    result = await probe.attempt(2.0)
    assert (result.status, result.reason) == (Status.DOWN, reason)
    facts = result.details["tls"]
    assert result.error is not None and result.error.endswith(f"({field} {facts[field]})")
    assert facts["chain"] is None


async def test_tls_near_expiry_is_degraded_and_unverified_is_not_judged(
    make_probe: MakeProbe, raw_server: RawServer, pki: Pki
) -> None:
    port = await raw_server.start(hang, pki.server_context(pki.leaf(valid_days=(-10, 3))))
    url = f"tcp://127.0.0.1:{port}"
    result = await make_probe(url, tls=True, ca_file=str(pki.ca_file)).attempt(2.0)
    assert (result.status, result.reason) == (Status.DEGRADED, Reason.CERT_EXPIRING)
    result = await make_probe(url, tls=True, verify_tls=False).attempt(2.0)
    assert (result.status, result.reason) == (Status.UP, Reason.OK)
    assert result.details["tls"]["chain"] is None
    assert 2.9 < result.details["tls"]["days_remaining"] <= 3


async def test_tls_handshake_never_answered(make_probe: MakeProbe, raw_server: RawServer) -> None:
    port = await raw_server.start(hang)
    result = await make_probe(f"tcp://127.0.0.1:{port}", tls=True).attempt(0.2)
    assert (result.status, result.reason) == (Status.DOWN, Reason.TIMEOUT)
    assert result.details["timeout_phase"] == "tls"


async def test_tls_to_a_server_that_closes(make_probe: MakeProbe, raw_server: RawServer) -> None:
    async def close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        return None

    port = await raw_server.start(close)
    result = await make_probe(f"tcp://127.0.0.1:{port}", tls=True).attempt(2.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.RESET)
    assert result.error == f"connection reset by 127.0.0.1:{port} during the TLS handshake"
    assert result.response_time_ms is None


async def test_tcp_tls_details_are_json(
    make_probe: MakeProbe, raw_server: RawServer, pki: Pki
) -> None:
    port = await raw_server.start(hang, pki.server_context(pki.leaf()))
    probe = make_probe(f"tcp://127.0.0.1:{port}", tls=True, ca_file=str(pki.ca_file))
    document = json.loads(json.dumps((await probe.attempt(2.0)).to_json()))
    assert document["details"]["tls"]["chain"][1]["subject"] == document["details"]["tls"]["issuer"]


def test_example_config_has_a_tcp_tls_example() -> None:
    specs = example_endpoints("tcp")
    assert any(isinstance(spec, TcpEndpoint) and spec.tls for spec in specs)
