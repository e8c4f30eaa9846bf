"""Endpoint spec validation: what used to be accepted and then misbehaved on every check
(headers and URLs that inject, ports and hosts no probe can use, text PostgreSQL cannot store,
a ca_file that is not there, an empty UDP payload) is a field error naming key and reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from availmon.errors import field_errors
from availmon.specs import ENDPOINT_ADAPTER, AnyEndpoint, validate_stored

# One valid endpoint per protocol, to which each test adds the one bad value.
BASE: dict[str, dict[str, Any]] = {
    "http": {"name": "web", "url": "http://127.0.0.1:8080/health"},
    "tcp": {"name": "db", "url": "tcp://127.0.0.1:5432", "send": "PING\r\n"},
    "udp": {"name": "ntp", "url": "udp://127.0.0.1:123", "send": "x"},
    "icmp": {"name": "router", "url": "127.0.0.1"},
    "dns": {"name": "dns", "url": "dns://127.0.0.1/example.test", "expected_answers": ["1.2.3.4"]},
}
URLS = {
    "http": "http://{host}{port}/",
    "tcp": "tcp://{host}{port}",
    "udp": "udp://{host}{port}",
    "icmp": "icmp://{host}",
    "dns": "dns://{host}{port}/example.test",
}


def valid(data: dict[str, Any]) -> AnyEndpoint:
    return ENDPOINT_ADAPTER.validate_python(data)


def problems(data: Any) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        ENDPOINT_ADAPTER.validate_python(data)
    return {p.field: p.message for p in field_errors(info.value)}


def with_url(protocol: str, host: str, port: int | None = None) -> dict[str, Any]:
    shown = f"[{host}]" if ":" in host else host
    url = URLS[protocol].format(host=shown, port=f":{port}" if port is not None else ":53")
    if protocol == "http" and port is None:
        url = url.replace(":53", "")
    if protocol in ("tcp", "udp") and port is None:
        url = url.replace(":53", ":7")
    return {**BASE[protocol], "url": url}


# --- 1. header injection, and whitespace or control characters in URLs --------------------


@pytest.mark.parametrize(
    ("value", "what"),
    [
        ("c\r\nX-Injected: y", "CR (U+000D)"),
        ("c\nX-Injected: y", "LF (U+000A)"),
        ("a\x00b", "NUL (U+0000)"),
        ("a\x1bb", "a control character (U+001B)"),
        ("a\x7fb", "a control character (U+007F)"),
        ("a\x85b", "whitespace (U+0085)"),
        ("\u65e5\u672c", "a character outside Latin-1 (U+65E5)"),
    ],
)
def test_header_values_cannot_carry_line_breaks_or_controls(value: str, what: str):
    data = {**BASE["http"], "headers": {"X-Trace": value}}
    assert problems(data) == {
        "headers": f"header 'X-Trace': the value must not contain {what};"
        " tabs, spaces and visible Latin-1 text only"
    }


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("X-Injected: y\r\nX", "has ':' (U+003A)"),
        ("X Trace", "has a space (U+0020)"),
        ("X\r\nY", "has CR (U+000D)"),
        ("Caf\u00e9", "has '\u00e9' (U+00E9)"),
        ("X-\u65e5", "has a character outside Latin-1 (U+65E5)"),
        ("", "is empty"),
    ],
)
def test_header_names_must_be_tokens(name: str, why: str):
    assert problems({**BASE["http"], "headers": {name: "1"}}) == {
        "headers": f"header name {name!r} {why}: a name is a token of letters, digits"
        " and !#$%&'*+-.^_`|~ (RFC 9110)"
    }


def test_ordinary_headers_are_kept_as_given():
    headers = {"X-Api-Key": "a b\tc", "Accept-Language": "de-CH, fr;q=0.5", "X-Note": "caf\u00e9"}
    spec = valid({**BASE["http"], "headers": headers})
    assert spec.headers == headers  # type: ignore[union-attr]


@pytest.mark.parametrize("protocol", sorted(URLS))
@pytest.mark.parametrize(
    ("inside", "what"),
    [
        (" ", "a space (U+0020)"),
        ("\t", "a tab (U+0009)"),
        ("\r\n", "CR (U+000D)"),
        ("\x00", "NUL (U+0000)"),
        ("\u00a0", "whitespace (U+00A0)"),
        ("\x9b", "a control character (U+009B)"),
    ],
)
def test_urls_with_whitespace_or_controls_are_refused(protocol: str, inside: str, what: str):
    url = with_url(protocol, "127.0.0.1")["url"]
    at = url.index("127.0.0.1") + 3  # inside the host: nothing a path could percent-encode
    bad = url[:at] + inside + url[at:]
    assert problems({**BASE[protocol], "url": bad}) == {
        "url": f"url {bad!r} contains {what} at position {at}: percent-encode it in a path or query"
    }


def test_a_space_in_a_url_path_or_host_is_refused():
    for url in ("http://127.0.0.1/a b c", "http://exa mple.com/"):
        assert problems({**BASE["http"], "url": url})["url"].startswith(
            f"url {url!r} contains a space (U+0020) at position "
        )


def test_surrounding_whitespace_of_a_url_is_still_stripped():
    assert valid({**BASE["http"], "url": "  http://127.0.0.1/  \n"}).url == "http://127.0.0.1/"


# --- 2. ports ------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http", "tcp", "udp", "dns"])
@pytest.mark.parametrize("port", [0, 65536, 99999])
def test_ports_outside_1_to_65535_are_refused(protocol: str, port: int):
    data = with_url(protocol, "127.0.0.1", port)
    assert problems(data) == {"url": f"url {data['url']!r} has an invalid port: it must be 1-65535"}


@pytest.mark.parametrize("protocol", ["http", "tcp", "udp", "dns"])
@pytest.mark.parametrize("port", [1, 65535])
def test_ports_at_the_ends_of_the_range_are_accepted(protocol: str, port: int):
    spec = valid(with_url(protocol, "127.0.0.1", port))
    assert spec.url.endswith((f":{port}", f":{port}/", f":{port}/example.test"))


def test_a_port_that_is_not_a_number_is_refused():
    url = "tcp://127.0.0.1:+80"
    assert problems({**BASE["tcp"], "url": url}) == {
        "url": f"url {url!r} has an invalid port: it must be 1-65535"
    }


# --- 3. hosts ------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", sorted(URLS))
@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("a..b", "has an empty label"),
        ("-x", "has a label '-x' that starts or ends with a hyphen"),
        ("x-.example.net", "has a label 'x-' that starts or ends with a hyphen"),
        ("a" * 64 + ".net", "has a label of 64 characters (at most 63)"),
        (".".join(["a" * 63] * 4), "is longer than 253 characters"),
        ("ex!ample.net", "may hold only letters, digits, hyphens, underscores and dots"),
        ("b\u00fccher.de", "is not ASCII: write it in its IDNA form, 'xn--bcher-kva.de'"),
    ],
)
def test_hosts_must_be_ip_addresses_or_dns_names(protocol: str, host: str, why: str):
    data = with_url(protocol, host)
    assert problems(data) == {"url": f"url {data['url']!r}: host {host!r} {why}"}


@pytest.mark.parametrize("protocol", sorted(URLS))
@pytest.mark.parametrize(
    "host", ["127.0.0.1", "::1", "localhost", "db-1.example.net", "example.net.", "svc_1", "a1"]
)
def test_ip_addresses_and_dns_names_are_hosts(protocol: str, host: str):
    assert valid(with_url(protocol, host)).url


def test_bare_icmp_hosts_that_are_not_hosts_are_refused():
    assert problems({"name": "r", "url": "a..b"}) == {
        "url": "url 'icmp://a..b': host 'a..b' has an empty label"
    }
    assert problems({"name": "r", "url": "-x"}) == {
        "url": "url 'icmp://-x': host '-x' has a label '-x' that starts or ends with a hyphen"
    }
    assert set(problems({"name": "r", "url": "not a url"})) == {"url"}


def test_a_url_that_does_not_parse_is_a_url_error():
    assert problems({**BASE["http"], "url": "http://[::1/"}) == {
        "url": "url 'http://[::1/' cannot be parsed: Invalid IPv6 URL"
    }


def test_server_name_is_a_host_name_too():
    data = {**BASE["tcp"], "tls": True}
    assert valid({**data, "server_name": "imap.example.net"})
    assert problems({**data, "server_name": "a..b"}) == {"server_name": "'a..b' is not a host name"}
    assert problems({**data, "server_name": "imap.example.net\n"}) == {
        "server_name": "'imap.example.net\\n' is not a host name"
    }


# --- 4. an unknown protocol names the key it came from -------------------------------------


def test_an_unknown_scheme_is_an_error_of_the_url():
    message = problems({"name": "f", "url": "ftp://files.example.net/"})
    assert list(message) == ["url"]
    assert message["url"].startswith("protocol must be one of: http, https, tcp, udp, icmp, dns")


def test_an_unknown_explicit_protocol_is_an_error_of_the_protocol():
    message = problems({"name": "f", "protocol": "gopher", "url": "http://127.0.0.1/"})
    assert list(message) == ["protocol"]
    assert message["protocol"].startswith("protocol must be one of:")


def test_no_url_and_no_protocol_is_a_missing_url():
    assert problems({"name": "f"}) == {"url": "Field required"}


# --- 5. NUL and lone surrogates, in every string field -------------------------------------

STRING_FIELDS = [
    ("http", "name", None),
    ("http", "url", None),
    ("http", "expected_pattern", None),
    ("http", "tags", 1),
    ("http", "body", None),
    ("http", "headers", "X-Trace"),
    ("http", "ca_file", None),
    ("tcp", "send", None),
    ("tcp", "server_name", None),
    ("tcp", "ca_file", None),
    ("udp", "send", None),
    ("dns", "expected_answers", 0),
]


@pytest.mark.parametrize("bad", ["\ud800", "\udfff", "\x00"], ids=["D800", "DFFF", "NUL"])
@pytest.mark.parametrize(("protocol", "field", "where"), STRING_FIELDS)
def test_text_postgresql_cannot_store_is_refused_in_every_field(
    protocol: str, field: str, where: Any, bad: str
):
    data = dict(BASE[protocol])
    text = f"a{bad}b"
    if field == "tags":
        data["tags"] = ["ok", text]
    elif field == "expected_answers":
        data.update(record_type="TXT", expected_answers=[text])
    elif field == "headers":
        data["headers"] = {"X-Trace": text}
    else:
        data[field] = text
    if protocol == "tcp" and field in ("server_name", "ca_file"):
        data["tls"] = True
    found = problems(data)
    key = {int: f"{field}[{where}]"}.get(type(where), field)
    assert list(found) == [key], found
    if field not in ("name", "url", "headers", "server_name"):  # their own rules say it
        name = "the NUL character" if bad == "\x00" else "a lone surrogate"
        assert found[key] == f"must not contain {name} (U+{ord(bad):04X})"


def test_a_paired_surrogate_is_just_a_character():
    spec = valid({**BASE["http"], "tags": ["\U0001f600"], "body": "\U0001f600"})
    assert spec.tags == ("\U0001f600",)


# --- 6. ca_file ----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http", "tcp"])
def test_a_ca_file_that_is_not_there_is_refused(protocol: str, tmp_path: Path):
    data = {**BASE[protocol], "url": BASE[protocol]["url"].replace("http:", "https:")}
    if protocol == "tcp":
        data["tls"] = True
    missing = str(tmp_path / "ca.pem")
    assert problems({**data, "ca_file": missing}) == {"ca_file": f"{missing!r} not found"}
    assert problems({**data, "ca_file": str(tmp_path)}) == {
        "ca_file": f"{str(tmp_path)!r} is not a file"
    }
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    assert valid({**data, "ca_file": missing}).ca_file == missing  # type: ignore[union-attr]


def test_a_stored_spec_loads_though_its_ca_file_has_gone(tmp_path: Path):
    path = tmp_path / "ca.pem"
    path.write_text("x")
    spec = valid({**BASE["http"], "url": "https://127.0.0.1/", "ca_file": str(path)})
    path.unlink()
    stored = spec.model_dump(mode="json")
    assert validate_stored(stored) == spec  # the probe says invalid_config, with the reason
    assert set(problems(stored)) == {"ca_file"}  # given again, through the API: refused


# --- 7. UDP send ---------------------------------------------------------------------------


def test_udp_needs_something_to_send():
    assert problems({**BASE["udp"], "send": ""}) == {
        "send": "must not be empty: a UDP service answers only what it is asked"
    }
    assert problems({"name": "ntp", "url": "udp://127.0.0.1:123"}) == {
        "send": "give send or send_hex: a UDP service answers only what it is asked"
    }


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_send_hex_carries_the_bytes_a_string_cannot(protocol: str):
    base = {k: v for k, v in BASE[protocol].items() if k != "send"}
    spec = valid({**base, "send_hex": "00 01\tff\n0d0A"})
    assert spec.payload == b"\x00\x01\xff\r\n"  # type: ignore[union-attr]
    assert valid({**base, "send": "PING"}).payload == b"PING"  # type: ignore[union-attr]
    hex_rule = "must be pairs of hex digits (whitespace between them allowed), e.g. '1b 00 00 00'"
    assert problems({**base, "send_hex": "0g"}) == {"send_hex": hex_rule}
    assert problems({**base, "send_hex": "abc"}) == {"send_hex": hex_rule}
    assert problems({**base, "send_hex": " "}) == {"send_hex": "must not be empty"}
    both = "give send or send_hex, not both"
    assert problems({**base, "send": "x", "send_hex": "00"}) == {"send": both, "send_hex": both}


# --- strict numbers and switches ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("timeout", True, "Input should be a valid number"),
        ("check_interval", "60", "Input should be a valid number"),
        ("retries", "2", "Input should be a valid integer"),
        ("retries", 1.5, "Input should be a valid integer"),
        ("is_active", "yes", "Input should be a valid boolean"),
        ("follow_redirects", 1, "Input should be a valid boolean"),
        (
            "expected_status_code",
            True,
            "true is not a status code (200), a class ('2xx') or a list of them",
        ),
        (
            "expected_status_code",
            [200, None],
            "[200, null] is not a status code (200), a class ('2xx') or a list of them",
        ),
    ],
)
def test_numbers_and_switches_are_not_coerced(field: str, value: Any, message: str):
    assert problems({**BASE["http"], field: value}) == {field: message}


def test_an_int_is_still_a_number_and_a_status_code_may_be_a_string():
    spec = valid({**BASE["http"], "check_interval": 30, "expected_status_code": ["200", "3xx"]})
    assert spec.check_interval == 30.0 and spec.expected_status_code == [200, "3xx"]  # type: ignore[union-attr]
