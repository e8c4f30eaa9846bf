"""HttpProbe certificate facts and verdicts against aiohttp servers with a private CA."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from availmon.model import Reason, Status
from availmon.probes.base import Probe
from availmon.specs import HttpEndpoint

from .conftest import LOOPBACK, Pki, StartApp, example_endpoints
from .test_http import _app

MakeProbe = Callable[..., Probe[Any]]


async def _https(start_app: StartApp, context: ssl.SSLContext) -> str:
    return await start_app(_app(), context)


async def test_https_records_leaf_and_verified_chain(
    make_probe: MakeProbe, start_app: StartApp, pki: Pki
) -> None:
    base = await _https(start_app, pki.server_context(pki.leaf(valid_days=(-1, 90))))
    result = await make_probe(f"{base}/ok", ca_file=str(pki.ca_file)).attempt(2.0)
    assert (result.status, result.reason) == (Status.UP, Reason.OK)
    facts = result.details["tls"]
    assert facts["subject"].startswith("CN=127.0.0.1,")
    assert "O=availmon test root" in facts["issuer"]
    assert facts["server_name"] is None  # no SNI for an IP address
    assert facts["version"] in ("TLSv1.2", "TLSv1.3")
    assert 89.9 < facts["days_remaining"] <= 90
    not_after = datetime.fromisoformat(facts["not_after"])
    assert abs((not_after - datetime.now(UTC)).total_seconds() - 90 * 86400) < 60
    assert facts["chain"][0]["subject"] == facts["subject"]
    assert len(facts["chain"]) == 2  # leaf, root
    assert set(result.details["phases_ms"]) == {"connect", "tls", "first_byte", "transfer"}


async def test_certificate_near_expiry_is_degraded(
    make_probe: MakeProbe, start_app: StartApp, pki: Pki
) -> None:
    base = await _https(start_app, pki.server_context(pki.leaf(valid_days=(-60, 5))))
    result = await make_probe(f"{base}/ok", ca_file=str(pki.ca_file)).attempt(2.0)
    assert (result.status, result.reason) == (Status.DEGRADED, Reason.CERT_EXPIRING)
    assert result.error is not None
    assert result.error.startswith("certificate expires in 5.0 days (")
    assert result.error.endswith("warning below 14 days")
    assert result.response_time_ms is not None
    probe = make_probe(f"{base}/ok", ca_file=str(pki.ca_file), cert_expiry_warning_days=4)
    assert (await probe.attempt(2.0)).status is Status.UP


async def test_expired_certificate_is_down_with_its_dates(
    make_probe: MakeProbe, start_app: StartApp, pki: Pki
) -> None:
    base = await _https(start_app, pki.server_context(pki.leaf(valid_days=(-30, -2))))
    result = await make_probe(f"{base}/ok", ca_file=str(pki.ca_file)).attempt(2.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.CERT_EXPIRED)
    facts = result.details["tls"]
    assert result.error == (
        f"TLS certificate verify failed: certificate has expired (not_after {facts['not_after']})"
    )
    assert -2.01 < facts["days_remaining"] < -1.99
    assert facts["chain"] is None  # read by an unverified handshake: no chain to vouch for
    assert result.details["tls_error_host"] == base.removeprefix("https://")
    assert result.response_time_ms is None


async def test_not_yet_valid_certificate_is_down_with_its_dates(
    make_probe: MakeProbe, start_app: StartApp, pki: Pki
) -> None:
    base = await _https(start_app, pki.server_context(pki.leaf(valid_days=(3, 30))))
    result = await make_probe(f"{base}/ok", ca_file=str(pki.ca_file)).attempt(2.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.CERT_NOT_YET_VALID)
    facts = result.details["tls"]
    assert result.error == (
        "TLS certificate verify failed: certificate is not yet valid"
        f" (not_before {facts['not_before']})"
    )
    assert datetime.fromisoformat(facts["not_before"]) > datetime.now(UTC)


async def test_without_verification_dates_recorded_chain_null(
    make_probe: MakeProbe, start_app: StartApp, pki: Pki
) -> None:
    base = await _https(start_app, pki.server_context(pki.leaf(valid_days=(-30, -2))))
    result = await make_probe(f"{base}/ok", verify_tls=False).attempt(2.0)
    assert (result.status, result.reason) == (Status.UP, Reason.OK)  # recorded, not judged
    facts = result.details["tls"]
    assert facts["chain"] is None
    assert facts["days_remaining"] < 0
    assert facts["subject"].startswith("CN=127.0.0.1,")


async def test_intermediate_served_verifies_against_private_root(
    make_probe: MakeProbe, start_app: StartApp, pki: Pki
) -> None:
    leaf = pki.leaf(via_intermediate=True)
    base = await _https(start_app, pki.server_context(leaf))
    result = await make_probe(f"{base}/ok", ca_file=str(pki.ca_file)).attempt(2.0)
    assert (result.status, result.reason) == (Status.UP, Reason.OK)
    chain = result.details["tls"]["chain"]
    assert len(chain) == 3  # leaf, intermediate, root
    assert chain[1]["subject"] == result.details["tls"]["issuer"]
    assert chain[2]["subject"] == chain[2]["issuer"]  # the self-signed root from ca_file


async def test_leaf_without_its_intermediate_is_tls_error(
    make_probe: MakeProbe, start_app: StartApp, pki: Pki
) -> None:
    leaf = pki.leaf(via_intermediate=True)
    base = await _https(start_app, pki.server_context(leaf, with_chain=False))
    result = await make_probe(f"{base}/ok", ca_file=str(pki.ca_file)).attempt(2.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.TLS_ERROR)
    assert result.error == "TLS certificate verify failed: unable to get local issuer certificate"


async def test_virtual_hosts_each_send_sni_and_report_their_cert(
    make_probe: MakeProbe, start_app: StartApp, pki: Pki
) -> None:
    by_ip = pki.server_context(pki.leaf(LOOPBACK))
    by_name = pki.server_context(pki.leaf("localhost"))
    base = await _https(start_app, pki.virtual_hosts(by_ip, {"localhost": by_name}))
    port = base.rsplit(":", 1)[1]
    named = await make_probe(f"https://localhost:{port}/ok", ca_file=str(pki.ca_file)).attempt(2)
    plain = await make_probe(f"https://127.0.0.1:{port}/ok", ca_file=str(pki.ca_file)).attempt(2)
    assert (named.status, plain.status) == (Status.UP, Status.UP)
    assert named.details["tls"]["server_name"] == "localhost"
    assert named.details["tls"]["subject"].startswith("CN=localhost,")
    assert plain.details["tls"]["server_name"] is None
    assert plain.details["tls"]["subject"].startswith("CN=127.0.0.1,")


async def test_each_redirect_hop_verified_under_its_own_name(
    make_probe: MakeProbe, start_app: StartApp, pki: Pki
) -> None:
    final = await _https(start_app, pki.server_context(pki.leaf("localhost")))
    final_port = final.rsplit(":", 1)[1]

    async def hop(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"https://{request.match_info['host']}:{final_port}/ok")

    app = web.Application()
    app.router.add_get("/to/{host}", hop)
    first = await start_app(app, pki.server_context(pki.leaf(LOOPBACK, valid_days=(-80, 10))))
    result = await make_probe(f"{first}/to/localhost", ca_file=str(pki.ca_file)).attempt(2.0)
    # UP in substance, DEGRADED for the first hop's certificate: each hop is judged.
    assert (result.status, result.reason) == (Status.DEGRADED, Reason.CERT_EXPIRING)
    (first_hop,) = result.details["redirects"]
    assert first_hop["tls"]["subject"].startswith("CN=127.0.0.1,")
    assert 9.9 < first_hop["tls"]["days_remaining"] <= 10
    assert result.details["tls"]["subject"].startswith("CN=localhost,")
    assert result.details["tls"]["server_name"] == "localhost"
    # The same final listener reached as 127.0.0.1: its certificate does not name that host.
    result = await make_probe(f"{first}/to/127.0.0.1", ca_file=str(pki.ca_file)).attempt(2.0)
    assert (result.status, result.reason) == (Status.DOWN, Reason.TLS_ERROR)
    assert result.error is not None and "IP address mismatch" in result.error


async def test_https_details_are_json(make_probe: MakeProbe, start_app: StartApp, pki: Pki) -> None:
    base = await _https(start_app, pki.server_context(pki.leaf()))
    result = await make_probe(f"{base}/redirect/1", ca_file=str(pki.ca_file)).attempt(2.0)
    document = json.loads(json.dumps(result.to_json()))
    assert document["details"]["tls"]["chain"][0]["subject"].startswith("CN=127.0.0.1,")
    assert document["details"]["redirects"][0]["tls"]["not_after"].endswith("Z")


def test_example_config_has_an_https_example() -> None:
    (spec,) = example_endpoints("https")
    assert isinstance(spec, HttpEndpoint)
    assert spec.cert_expiry_warning_days == 21
