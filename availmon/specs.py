"""Endpoint specs: one pydantic model per protocol and the discriminated union of them.

They are pydantic models because the same validation must hold for the TOML file, the HTTP API
and the in-process Python API. This module imports nothing of ours but `model` (the enums),
`errors` (FieldValueError) and the leaf modules `patterns` (the regex engine patterns are
validated with) and `spectext` (what a string, a URL's text, a header or a file name may be).
Numbers and switches are strict: TOML and JSON carry real ones, so `true` is no timeout and
"2" no retry count. It is long for a reason: the five protocol models and the rules that tie
their fields together read best side by side.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Annotated, Any, Literal
from urllib.parse import SplitResult, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from availmon.errors import FieldValueError
from availmon.model import Protocol, Severity
from availmon.patterns import check_syntax
from availmon.spectext import FilePath, Text, check_headers, check_url_text

_STATUS_CLASS = re.compile(r"^[1-5]xx$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:/@()+-]{0,199}$")


def _status_code_matches(code: int, expected: list[int | str]) -> bool:
    for item in expected:
        if isinstance(item, int):
            if code == item:
                return True
        elif code // 100 == int(item[0]):
            return True
    return False


class EndpointBase(BaseModel):
    """Fields every protocol shares; names follow the design document's data model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Only name and url are stripped: patterns, send and body keep every byte as given.
    name: Annotated[str, StringConstraints(strip_whitespace=True)]
    protocol: Protocol
    url: Annotated[
        str,
        StringConstraints(strip_whitespace=True, max_length=2048),
        AfterValidator(check_url_text),  # whitespace or controls inside: after the strip
    ]
    check_interval: StrictFloat = Field(default=60.0, gt=0, le=86400, description="Seconds")
    # validate_default: the default must also be under check_interval, or the stored spec
    # (every field written out) would fail validation when it is read back
    timeout: StrictFloat = Field(
        default=10.0, gt=0, le=3600, validate_default=True, description="Seconds, per attempt"
    )
    retries: StrictInt = Field(default=0, ge=0, le=10)
    expected_pattern: Text | None = None
    # finite: jsonb cannot store inf (and it would mean no threshold)
    degraded_threshold_ms: StrictFloat | None = Field(default=None, gt=0, allow_inf_nan=False)
    failure_threshold: StrictInt = Field(default=3, ge=1, le=1000)
    recovery_threshold: StrictInt = Field(default=2, ge=1, le=1000)
    recheck_interval: StrictFloat | None = Field(default=None, gt=0, le=86400)
    severity: Severity = Severity.HIGH
    tags: tuple[Text, ...] = ()
    is_active: StrictBool = True

    @model_validator(mode="before")
    @classmethod
    def _protocol_from_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and "protocol" not in data and isinstance(data.get("url"), str):
            # "host:80" would parse as scheme "host": only a "scheme://" names a protocol.
            scheme = _url_scheme(data["url"]) if "://" in data["url"] else ""
            if scheme:
                data = {**data, "protocol": scheme}
        return data

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                "must be 1-200 characters: letters, digits, space and ._:/@()+- "
                "(starting with a letter or digit)"
            )
        return value

    @field_validator("expected_pattern")
    @classmethod
    def _check_pattern(cls, value: str | None) -> str | None:
        if value is not None:
            check_syntax(value)
        return value

    @field_validator("tags")
    @classmethod
    def _check_tags(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for tag in value:
            if not tag or len(tag) > 100:
                raise ValueError("each tag must be 1-100 characters")
        return tuple(dict.fromkeys(value))

    @field_validator("url")
    @classmethod
    def _check_url_scheme(cls, value: str, info: ValidationInfo) -> str:
        protocol = info.data.get("protocol")
        scheme = _split_url(value).scheme.lower()
        if protocol is not None and scheme != protocol.value:
            raise ValueError(
                f"url scheme {scheme or '(none)'!r} does not match protocol {protocol.value!r}"
            )
        return value

    @field_validator("timeout")
    @classmethod
    def _check_timeout(cls, value: float, info: ValidationInfo) -> float:
        interval = info.data.get("check_interval")
        if interval is not None and value >= interval:
            raise ValueError(
                f"timeout ({value:g} s) must be less than check_interval ({interval:g} s)"
            )
        return value

    @field_validator("recheck_interval")
    @classmethod
    def _check_recheck(cls, value: float | None, info: ValidationInfo) -> float | None:
        interval = info.data.get("check_interval")
        if value is not None and interval is not None and value > interval:
            raise ValueError(
                f"recheck_interval ({value:g} s) must not exceed check_interval ({interval:g} s)"
            )
        return value

    @property
    def effective_recheck_interval(self) -> float:
        if self.recheck_interval is not None:
            return self.recheck_interval
        return min(self.check_interval, 10.0)

    @property
    def max_check_seconds(self) -> float:
        """Upper bound of one whole check, all attempts included."""
        return self.timeout * (self.retries + 1)

    def overrun_warning(self) -> str | None:
        """Why this endpoint's checks can outlast their interval, or None. Valid, but a check
        whose attempts time out then runs past its next slot, and that slot is skipped (a
        failed check's recheck still comes recheck_interval after it ends)."""
        longest = self.max_check_seconds
        if longest < self.check_interval:  # always so without retries: timeout < interval
            return None
        return (
            f"timeout ({self.timeout:g} s) x (retries {self.retries} + 1) = {longest:g} s is not"
            f" less than check_interval ({self.check_interval:g} s): a check whose attempts"
            " time out runs past its next slot, which is skipped"
        )


# Strict: true is no status code (lax validation made it 1), "200" is one only where a class
# such as "2xx" may stand (the str branch validates it)
StatusCodeSpec = StrictInt | str | list[StrictInt | str]


class HttpEndpoint(EndpointBase):
    protocol: Literal[Protocol.HTTP, Protocol.HTTPS]
    expected_status_code: StatusCodeSpec = Field(default="2xx", validate_default=True)
    method: Literal["GET", "HEAD", "POST", "PUT", "OPTIONS", "PATCH", "DELETE"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    body: Text | None = None  # sent byte for byte
    follow_redirects: StrictBool = True
    max_redirects: StrictInt = Field(default=10, ge=0, le=50)
    verify_tls: StrictBool = True  # false: certificates are still recorded, but never judged
    ca_file: FilePath | None = None
    max_body_bytes: StrictInt = Field(default=1024 * 1024, ge=0, le=256 * 1024 * 1024)
    # DEGRADED when a verified certificate (of any hop) expires within this many days.
    cert_expiry_warning_days: StrictFloat = Field(default=14, ge=0, le=3650)

    @field_validator("expected_status_code", mode="before")
    @classmethod
    def _status_shape(cls, value: Any) -> Any:
        """One message for a value of no accepted shape, not one per branch of the union."""
        items = value if isinstance(value, list) else [value]
        if any(isinstance(i, bool) or not isinstance(i, int | str) for i in items):
            try:
                shown = json.dumps(value)  # as the config or the request wrote it: true, null
            except (TypeError, ValueError):
                shown = repr(value)
            raise ValueError(
                f"{shown} is not a status code (200), a class ('2xx') or a list of them"
            )
        return value

    @field_validator("expected_status_code")
    @classmethod
    def _check_status(cls, value: StatusCodeSpec) -> list[int | str]:
        items = value if isinstance(value, list) else [value]
        if not items:
            raise ValueError("must name at least one status code or class")
        out: list[int | str] = []
        for item in items:
            if isinstance(item, int):
                if not 100 <= item <= 599:
                    raise ValueError(f"status code {item} is outside 100-599")
                out.append(item)
            elif _STATUS_CLASS.match(item.lower()):
                out.append(item.lower())
            elif item.isdigit() and 100 <= int(item) <= 599:
                out.append(int(item))
            else:
                raise ValueError(f"{item!r} is neither a status code nor a class like '2xx'")
        return out

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        return check_headers(value)

    @field_validator("url")
    @classmethod
    def _check_http_url(cls, value: str) -> str:
        parts = _split_url(value)
        if not parts.hostname:
            raise ValueError(f"url {value!r} has no host")
        _check_address(value, parts)
        return value

    def status_code_ok(self, code: int) -> bool:
        expected = self.expected_status_code
        assert isinstance(expected, list)
        return _status_code_matches(code, expected)


def _split_url(value: str) -> SplitResult:
    try:
        return urlsplit(value)
    except ValueError as exc:  # "http://[::1": urlsplit's own words
        raise ValueError(f"url {value!r} cannot be parsed: {exc}") from None


def _port(value: str, parts: SplitResult) -> int | None:
    """The url's port, if it names one; 1-65535 (urlsplit takes 0 and says nothing of it)."""
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"url {value!r} has an invalid port: it must be 1-65535")
    return port


def host_problem(host: str) -> str | None:
    """Why `host` is neither an IP address nor a DNS name; None when it is one of them."""
    if host != host.strip():
        return "has whitespace around it"
    if _is_ip(host) or _HOST_NAME.fullmatch(host):
        return None
    if not host.isascii():
        try:
            encoded = host.encode("idna").decode("ascii")
        except UnicodeError:
            return "is not a valid internationalised (IDNA) name"
        return f"is not ASCII: write it in its IDNA form, {encoded!r}"
    name = host.removesuffix(".")
    if len(name) > 253:
        return "is longer than 253 characters"
    for label in name.split("."):
        if not label:
            return "has an empty label"
        if len(label) > 63:
            return f"has a label of {len(label)} characters (at most 63)"
        if label.startswith("-") or label.endswith("-"):
            return f"has a label {label!r} that starts or ends with a hyphen"
    return "may hold only letters, digits, hyphens, underscores and dots"


def _check_address(value: str, parts: SplitResult) -> int | None:
    """Check the url's host (an IP address or a DNS name) and port; return the port."""
    problem = host_problem(parts.hostname or "")
    if problem:
        raise ValueError(f"url {value!r}: host {parts.hostname!r} {problem}")
    return _port(value, parts)


def _check_host_port_url(value: str, scheme: str) -> str:
    parts = _split_url(value)
    if not parts.hostname or _check_address(value, parts) is None:
        raise ValueError(f"url {value!r} must look like {scheme}://host:port")
    if parts.path not in ("", "/") or parts.query:
        raise ValueError(f"url {value!r} must not have a path or query")
    return value


def _url_host(url: str) -> str:
    host = urlsplit(url).hostname
    assert host is not None
    return host


def _url_port(url: str, default: int | None = None) -> int:
    port = urlsplit(url).port or default
    assert port is not None
    return port


def _hex_bytes(value: str | None) -> str | None:
    """`send_hex`: the bytes to send as hex digits, any whitespace between them ("1b 00 01")."""
    if value is None:
        return None
    try:
        data = bytes.fromhex(value)
    except ValueError:
        raise ValueError(
            "must be pairs of hex digits (whitespace between them allowed), e.g. '1b 00 00 00'"
        ) from None
    if not data:
        raise ValueError("must not be empty")
    return value


def _payload(send: str | None, send_hex: str | None) -> bytes | None:
    if send_hex is not None:
        return bytes.fromhex(send_hex)
    return send.encode("utf-8") if send is not None else None


def _one_payload(send: str | None, send_hex: str | None) -> None:
    if send is not None and send_hex is not None:
        raise FieldValueError("give send or send_hex, not both", "send", "send_hex")


# Bytes a string field cannot hold (U+0000: PostgreSQL stores no NUL), given as hex instead.
HexBytes = Annotated[str, AfterValidator(_hex_bytes)]


class _HostPortEndpoint(EndpointBase):
    """A spec whose url is scheme://host:port (tcp, udp)."""

    @property
    def host(self) -> str:
        return _url_host(self.url)

    @property
    def port(self) -> int:
        return _url_port(self.url)


class TcpEndpoint(_HostPortEndpoint):
    protocol: Literal[Protocol.TCP]
    send: Text | None = None  # sent byte for byte: "PING\r\n" keeps its "\r\n"
    send_hex: HexBytes | None = None  # binary requests (NUL bytes included), as hex
    max_read_bytes: StrictInt = Field(default=64 * 1024, ge=1, le=16 * 1024 * 1024)
    tls: StrictBool = False  # TLS handshake right after connect; send and pattern then go over TLS
    verify_tls: StrictBool = True
    ca_file: FilePath | None = None
    server_name: Text | None = None  # SNI and the name verified; default: the url's host
    cert_expiry_warning_days: StrictFloat = Field(default=14, ge=0, le=3650)

    @field_validator("url")
    @classmethod
    def _check_tcp_url(cls, value: str) -> str:
        return _check_host_port_url(value, "tcp")

    @model_validator(mode="after")
    def _check_payload(self) -> TcpEndpoint:
        _one_payload(self.send, self.send_hex)
        return self

    @property
    def payload(self) -> bytes | None:
        """What is written after the connect (and the TLS handshake), if anything."""
        return _payload(self.send, self.send_hex)

    @field_validator("server_name")
    @classmethod
    def _check_server_name(cls, value: str | None) -> str | None:
        if value is not None and host_problem(value):
            raise ValueError(f"{value!r} is not a host name")
        return value

    @field_validator("verify_tls", "ca_file", "server_name", "cert_expiry_warning_days")
    @classmethod
    def _needs_tls(cls, value: Any, info: ValidationInfo) -> Any:
        # Runs for keys given; a stored spec gives every key, so only a non-default counts.
        default = cls.model_fields[str(info.field_name)].default
        if info.data.get("tls") is False and value != default:
            raise ValueError("applies only with tls = true")
        return value


# A DNS name (with fullmatch): labels of 1-63 letters, digits, hyphens and underscores, not
# starting or ending with a hyphen; 253 characters in all, and a trailing dot allowed. The
# underscore is no host name's, but DNS names have it (_sip._tcp, Docker's service_1) and the
# resolver takes it.
_HOST_NAME = re.compile(
    r"(?=.{1,253}\.?\Z)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?"
)


class UdpEndpoint(_HostPortEndpoint):
    """Send one datagram; UP when a datagram (matching expected_pattern, if set) comes back."""

    protocol: Literal[Protocol.UDP]
    # one of them is required: a UDP service answers only what it is asked
    send: Text | None = None  # sent byte for byte
    send_hex: HexBytes | None = None  # binary requests (NTP, memcached's frame header), as hex

    @field_validator("url")
    @classmethod
    def _check_udp_url(cls, value: str) -> str:
        return _check_host_port_url(value, "udp")

    @field_validator("send")
    @classmethod
    def _check_send(cls, value: str | None) -> str | None:
        if value == "":
            raise ValueError("must not be empty: a UDP service answers only what it is asked")
        return value

    @model_validator(mode="after")
    def _check_payload(self) -> UdpEndpoint:
        _one_payload(self.send, self.send_hex)
        if self.send is None and self.send_hex is None:
            raise FieldValueError(
                "give send or send_hex: a UDP service answers only what it is asked", "send"
            )
        return self

    @property
    def payload(self) -> bytes:
        """The datagram sent."""
        payload = _payload(self.send, self.send_hex)
        assert payload is not None  # validated: one of send, send_hex
        return payload


class IcmpEndpoint(EndpointBase):
    """Echo requests; `url` is icmp://host or a bare host (stored as icmp://host)."""

    protocol: Literal[Protocol.ICMP]
    packet_count: StrictInt = Field(default=3, ge=1, le=100)
    packet_interval: StrictFloat = Field(
        default=0.2, ge=0.01, le=10, validate_default=True, description="Seconds"
    )
    payload_size: StrictInt = Field(
        default=56, ge=0, le=65507, description="Bytes after the header"
    )
    # Percent: loss above it is DOWN, any loss up to it DEGRADED; no reply at all is always DOWN.
    max_packet_loss: StrictFloat = Field(default=50, ge=0, lt=100)
    # None: raw sockets when the process may open them, else unprivileged datagram sockets.
    privileged: StrictBool | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_host(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("url"), str):
            url = data["url"].strip()
            if "://" not in url:
                host = f"[{url}]" if _ip_version(url) == 6 else url
                data = {**data, "url": f"icmp://{host}"}
                data.setdefault("protocol", "icmp")
        return data

    @field_validator("url")
    @classmethod
    def _check_icmp_url(cls, value: str) -> str:
        parts = _split_url(value)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if not parts.hostname or port is not None or parts.path not in ("", "/") or parts.query:
            raise ValueError(f"url {value!r} must be a bare host or look like icmp://host")
        _check_address(value, parts)
        return value

    @field_validator("packet_interval")
    @classmethod
    def _packets_fit_the_timeout(cls, value: float, info: ValidationInfo) -> float:
        count, timeout = info.data.get("packet_count"), info.data.get("timeout")
        if count is not None and timeout is not None and (count - 1) * value >= timeout:
            raise ValueError(
                f"{count} packets {value:g} s apart take {(count - 1) * value:g} s to send,"
                f" leaving no time for replies within the timeout ({timeout:g} s)"
            )
        return value

    @property
    def host(self) -> str:
        return _url_host(self.url)


DnsRecordType = Literal["A", "AAAA", "CNAME", "MX", "NS", "TXT", "SRV", "SOA", "PTR", "CAA"]
DnsRcode = Literal[
    "NOERROR",
    "FORMERR",
    "SERVFAIL",
    "NXDOMAIN",
    "NOTIMP",
    "REFUSED",
    "YXDOMAIN",
    "YXRRSET",
    "NXRRSET",
    "NOTAUTH",
    "NOTZONE",
]


class DnsEndpoint(EndpointBase):
    """One query to the server in the url (dns://server[:port]/name), and only to it."""

    protocol: Literal[Protocol.DNS]
    record_type: DnsRecordType = "A"
    expected_rcode: DnsRcode = "NOERROR"
    # Values that must all be among the answers of record_type (after any CNAME chain).
    expected_answers: tuple[Text, ...] = ()
    transport: Literal["udp", "tcp"] = "udp"  # udp retries over TCP when the answer is truncated
    recursion_desired: StrictBool = True

    @field_validator("record_type", "expected_rcode", "transport", mode="before")
    @classmethod
    def _normalise_case(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            return value.lower() if info.field_name == "transport" else value.upper()
        return value

    @field_validator("url")
    @classmethod
    def _check_dns_url(cls, value: str) -> str:
        parts = _split_url(value)
        name = parts.path[1:]
        if not parts.hostname or not name or parts.query or parts.fragment:
            raise ValueError(f"url {value!r} must look like dns://server[:port]/name")
        _check_address(value, parts)
        if name != "." and not _HOST_NAME.fullmatch(name) and not _is_ip(name):
            raise ValueError(f"{name!r} in url {value!r} is not a DNS name")
        return value

    @field_validator("expected_answers")
    @classmethod
    def _check_answers(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        rcode = info.data.get("expected_rcode")
        if value and rcode is not None and rcode != "NOERROR":
            raise ValueError(f"expected_rcode {rcode} leaves no answers to expect")
        record_type = info.data.get("record_type")
        versions = {"A": 4, "AAAA": 6}
        for item in value:
            if not item.strip():
                raise ValueError("an expected answer must not be empty")
            version = versions.get(str(record_type))
            if version is not None and _ip_version(item) != version:
                raise ValueError(
                    f"{item!r} is not an IPv{version} address (record_type {record_type})"
                )
        return value

    @field_validator("expected_rcode")
    @classmethod
    def _check_rcode(cls, value: str, info: ValidationInfo) -> str:
        if value != "NOERROR" and info.data.get("expected_pattern") is not None:
            raise ValueError(f"expected_rcode {value} leaves no answers for expected_pattern")
        return value

    @property
    def server(self) -> str:
        return _url_host(self.url)

    @property
    def port(self) -> int:
        return _url_port(self.url, 53)

    @property
    def query_name(self) -> str:
        return urlsplit(self.url).path[1:]


def _ip_version(text: str) -> int | None:
    try:
        return ipaddress.ip_address(text.strip()).version
    except ValueError:
        return None


def _is_ip(text: str) -> bool:
    return _ip_version(text) is not None


def _url_scheme(url: str) -> str:
    try:
        return urlsplit(url).scheme.lower()
    except ValueError:  # "http://[::1": the url validators say why, as a field error
        return url.split("://", 1)[0].strip().lower()


def _endpoint_tag(data: Any) -> str | None:
    if isinstance(data, BaseModel):
        data = data.model_dump()
    if not isinstance(data, dict):
        return None
    protocol = data.get("protocol")
    url = data.get("url")
    if protocol is None and isinstance(url, str):
        if "://" in url:
            protocol = _url_scheme(url)
        elif url.strip():
            protocol = "icmp"  # a bare host
    protocol = str(protocol).lower() if protocol else None
    if protocol in ("http", "https"):
        return "http"
    if protocol in ("tcp", "udp", "icmp", "dns"):
        return protocol
    return None


def _protocol_field(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """An endpoint whose protocol is unknown: the error names the key that gave it.

    The discriminator's own error has no location (it is the whole endpoint's), so a config
    file read `endpoints[3]: protocol must be ...`; this says `endpoints[3].url` (or
    `.protocol` when it was given explicitly), and `url: Field required` when neither was."""
    if not isinstance(value, dict) or _endpoint_tag(value) is not None:
        return handler(value)
    field = "protocol" if value.get("protocol") is not None else "url"
    if field not in value:
        error = InitErrorDetails(type="missing", loc=(field,), input=value)
    else:
        error = InitErrorDetails(
            type=PydanticCustomError("invalid_protocol", _PROTOCOL_ERROR),
            loc=(field,),
            input=value[field],
        )
    raise ValidationError.from_exception_data("endpoint", [error])


_PROTOCOL_ERROR = (
    "protocol must be one of: http, https, tcp, udp, icmp, dns "
    "(given explicitly, by the url scheme, or a bare host for icmp)"
)
EndpointSpec = Annotated[
    Annotated[HttpEndpoint, Tag("http")]
    | Annotated[TcpEndpoint, Tag("tcp")]
    | Annotated[UdpEndpoint, Tag("udp")]
    | Annotated[IcmpEndpoint, Tag("icmp")]
    | Annotated[DnsEndpoint, Tag("dns")],
    Discriminator(
        _endpoint_tag, custom_error_type="invalid_protocol", custom_error_message=_PROTOCOL_ERROR
    ),
    WrapValidator(_protocol_field),
]
AnyEndpoint = HttpEndpoint | TcpEndpoint | UdpEndpoint | IcmpEndpoint | DnsEndpoint
# the title: "1 validation error for endpoint", not for the wrap validator's name
ENDPOINT_ADAPTER: TypeAdapter[AnyEndpoint] = TypeAdapter(
    EndpointSpec, config=ConfigDict(title="endpoint")
)


def validate_stored(data: Any) -> AnyEndpoint:
    """A spec read back from the store: the files it names are not looked for again."""
    return ENDPOINT_ADAPTER.validate_python(data, context={"stored": True})
