"""Probe registry: protocol name -> probe class. Adding a protocol adds one line here."""

from __future__ import annotations

from availmon.probes.base import Probe, ProbeContext
from availmon.probes.dns import DnsProbe
from availmon.probes.http import HttpProbe
from availmon.probes.icmp import IcmpProbe
from availmon.probes.tcp import TcpProbe
from availmon.probes.udp import UdpProbe
from availmon.specs import AnyEndpoint

PROBES: dict[str, type[Probe]] = {}  # type: ignore[type-arg]
for _cls in (HttpProbe, TcpProbe, UdpProbe, IcmpProbe, DnsProbe):
    for _protocol in _cls.protocols:
        PROBES[_protocol] = _cls


def build_probe(spec: AnyEndpoint, context: ProbeContext) -> Probe:  # type: ignore[type-arg]
    return PROBES[spec.protocol.value](spec, context)


__all__ = ["PROBES", "Probe", "ProbeContext", "build_probe"]
