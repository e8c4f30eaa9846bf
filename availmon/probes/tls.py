"""Certificate facts shared by the HTTPS and TCP-TLS probes.

A handshake's facts are captured raw (DER bytes) while the connection is up, and parsed with
`cryptography.x509` only when a result is built. The leaf's dates are recorded whether or not
the chain was verified; the verified chain is recorded only when it was verified (else None,
never a made-up value). An expired or not-yet-valid leaf fails verification inside OpenSSL, so
those dates come from a second, unverified handshake (`fetch_unverified`).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from cryptography import x509

from availmon.model import Reason

# OpenSSL's X509_V_ERR_* codes for a certificate outside its validity period.
_NOT_YET_VALID: Final = 9
_EXPIRED: Final = 10
DATE_ERRORS: Final = {_EXPIRED: Reason.CERT_EXPIRED, _NOT_YET_VALID: Reason.CERT_NOT_YET_VALID}
_ENCODING_DER: Final = 2  # _ssl.ENCODING_DER, for Python < 3.13's private chain API

ContextFactory = Callable[[int], ssl.SSLContext]  # ssl.SSLContext or a subclass


@dataclass(frozen=True, slots=True)
class TlsPeer:
    """What one TLS handshake showed, as captured from its SSLObject."""

    leaf: bytes | None  # DER; None when the server sent no certificate
    verified: bool  # the chain and the name were verified in this handshake
    chain: tuple[bytes, ...] | None  # verified chain, leaf first, root last; None if unverified
    version: str | None
    server_name: str | None  # the SNI name sent (None for an IP address)


@dataclass(frozen=True, slots=True)
class CertFacts:
    subject: str
    issuer: str
    not_before: datetime
    not_after: datetime

    @classmethod
    def from_der(cls, der: bytes) -> CertFacts:
        cert = x509.load_der_x509_certificate(der)
        return cls(
            cert.subject.rfc4514_string(),
            cert.issuer.rfc4514_string(),
            cert.not_valid_before_utc,
            cert.not_valid_after_utc,
        )

    def days_remaining(self, now: datetime) -> float:
        return (self.not_after - now).total_seconds() / 86400.0

    def to_json(self, now: datetime) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "not_before": _iso(self.not_before),
            "not_after": _iso(self.not_after),
            "days_remaining": round(self.days_remaining(now), 2),
        }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def capture(ssl_object: Any) -> TlsPeer | None:
    """Facts of a completed handshake (an ssl.SSLObject or ssl.SSLSocket), or None."""
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    # A completed handshake under CERT_REQUIRED is a verified one.
    verified = ssl_object.context.verify_mode is ssl.CERT_REQUIRED
    leaf = ssl_object.getpeercert(binary_form=True)
    chain = _verified_chain(ssl_object) if verified else None
    name = ssl_object.server_hostname
    sni = name if name and not _is_ip(name) else None
    return TlsPeer(leaf, verified, chain, ssl_object.version(), sni)


def _verified_chain(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> tuple[bytes, ...] | None:
    """The chain OpenSSL built and verified: public from Python 3.13, private before it."""
    getter = getattr(ssl_object, "get_verified_chain", None)
    if getter is not None:
        return tuple(bytes(cert) for cert in getter())
    getter = getattr(getattr(ssl_object, "_sslobj", None), "get_verified_chain", None)
    if getter is None:
        return None
    return tuple(cert.public_bytes(_ENCODING_DER) for cert in getter() or ())


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def describe(peer: TlsPeer, now: datetime) -> dict[str, Any]:
    """The JSON-able details of one handshake: leaf facts, and the chain when verified."""
    out: dict[str, Any] = {"server_name": peer.server_name, "version": peer.version}
    if peer.leaf is not None:
        out.update(CertFacts.from_der(peer.leaf).to_json(now))
    out["chain"] = (
        [_chain_entry(CertFacts.from_der(der)) for der in peer.chain]
        if peer.chain is not None
        else None
    )
    return out


def _chain_entry(facts: CertFacts) -> dict[str, str]:
    return {"subject": facts.subject, "issuer": facts.issuer, "not_after": _iso(facts.not_after)}


def expiry_warning(peer: TlsPeer, now: datetime, warning_days: float) -> str | None:
    """Why a verified, valid leaf still deserves DEGRADED: it expires within warning_days."""
    if peer.leaf is None or not peer.verified:
        return None  # unverified: dates are recorded, not judged
    facts = CertFacts.from_der(peer.leaf)
    days = facts.days_remaining(now)
    if days >= warning_days:
        return None
    name = f" for {peer.server_name}" if peer.server_name else ""
    return (
        f"certificate{name} expires in {days:.1f} days ({_iso(facts.not_after)});"
        f" warning below {warning_days:g} days"
    )


def date_error(exc: BaseException) -> Reason | None:
    """cert_expired / cert_not_yet_valid for a verify error about validity dates, else None."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return DATE_ERRORS.get(exc.verify_code)
    return None


def date_message(reason: Reason, peer: TlsPeer | None, now: datetime) -> str:
    """The verify failure in words, with the leaf's dates when the second handshake got them."""
    if reason is Reason.CERT_EXPIRED:
        text = "TLS certificate verify failed: certificate has expired"
    else:
        text = "TLS certificate verify failed: certificate is not yet valid"
    if peer is None or peer.leaf is None:
        return text
    facts = CertFacts.from_der(peer.leaf)
    if facts.not_after < now:
        return f"{text} (not_after {_iso(facts.not_after)})"
    if facts.not_before > now:
        return f"{text} (not_before {_iso(facts.not_before)})"
    # The leaf is in date: the certificate OpenSSL rejected is further up the chain.
    return f"{text} (a certificate of the chain; the leaf is valid until {_iso(facts.not_after)})"


def client_context(
    verify: bool, ca_file: str | None, context_class: ContextFactory = ssl.SSLContext
) -> ssl.SSLContext:
    """A client context, shared per (class, verify, CA file version); raises OSError or
    ssl.SSLError for a ca_file that cannot be loaded. A default context costs ~0.8 MB."""
    ca_file = ca_file if verify else None
    mtime = os.stat(ca_file).st_mtime_ns if ca_file is not None else 0
    return _client_context(context_class, verify, ca_file, mtime)


@functools.lru_cache(maxsize=64)
def _client_context(
    context_class: ContextFactory, verify: bool, ca_file: str | None, ca_mtime_ns: int
) -> ssl.SSLContext:
    """Like ssl.create_default_context(cafile=ca_file), or aiohttp's `ssl=False` when not
    verifying, but of the caller's class (the HTTP probe's times the TLS phase)."""
    context = context_class(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif ca_file is not None:
        context.load_verify_locations(cafile=ca_file)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    return context


@functools.cache
def _unverified_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def fetch_unverified(host: str, port: int, server_name: str | None) -> TlsPeer | None:
    """One more handshake, unverified, only to read the leaf that failed verification.

    Bounded by the caller's deadline; any failure here just means no dates to record.
    """
    writer: asyncio.StreamWriter | None = None
    try:
        _, writer = await asyncio.open_connection(
            host, port, ssl=_unverified_context(), server_hostname=server_name or host
        )
        return capture(writer.get_extra_info("ssl_object"))
    except (OSError, ssl.SSLError):
        return None
    finally:
        if writer is not None:
            writer.transport.abort()


def now_utc() -> datetime:
    return datetime.now(UTC)
