"""Hypothesis on the config loader and the endpoint spec parser.

`load_settings` on generated TOML (known sections and keys with odd values, unknown and
reserved keys, broken TOML, bytes that are not UTF-8): it loads, or raises ConfigError whose
every line names the file and a key path. `ENDPOINT_ADAPTER.validate_python` on generated
dicts, urls and patterns: a spec or a ValidationError, and a spec survives the JSON round trip
through PostgreSQL unchanged. Nothing else may escape either.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from availmon.config import Settings, load_settings
from availmon.errors import ConfigError
from availmon.specs import (
    ENDPOINT_ADAPTER,
    DnsEndpoint,
    HttpEndpoint,
    IcmpEndpoint,
    TcpEndpoint,
    UdpEndpoint,
)

FUZZ = settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# a key path: bare or "quoted" keys joined by dots, with [n] indices
_KEY = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*")'
KEY_PATH = re.compile(rf"{_KEY}(?:\[\d+\]|\.{_KEY})*")
FILE_LEVEL = ("invalid TOML: ", "cannot read: ", "file not found")


def toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\' or ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append({'"': '\\"', "\\": "\\\\"}.get(ch, f"\\u{ord(ch):04x}"))
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(data: dict[str, Any]) -> str:
    return "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in data.items())


def section_fields() -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for name, info in Settings.model_fields.items():
        model = info.annotation
        is_model = isinstance(model, type) and issubclass(model, BaseModel)
        fields[name] = list(model.model_fields) if is_model else []
    return fields


SECTIONS = section_fields()
MODELS = (HttpEndpoint, TcpEndpoint, UdpEndpoint, IcmpEndpoint, DnsEndpoint)
ENDPOINT_KEYS = sorted({key for model in MODELS for key in model.model_fields})
RESERVED = ["_env_file", "_secrets_dir", "_cli_parse_args", "_case_sensitive", "__class__"]
ODD_TEXT = st.text(st.characters(codec="utf-8"), max_size=30) | st.sampled_from(
    ["", " ", "a\nb", "\u2028", "\x85", "\x00", "é", "0", "-1", "true", "1e400", "nan", "[", '"']
)
SCALARS = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.sampled_from([0, 1, -1, 65535, 65536, 2**31, 10**6])
    | st.floats(allow_nan=True, allow_infinity=True)
    | ODD_TEXT
    | st.datetimes(timezones=st.just(UTC) | st.none())
    | st.dates()
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ODD_TEXT, inner, max_size=3),
    max_leaves=8,
)
SCHEMES = st.sampled_from(["http", "https", "tcp", "udp", "icmp", "dns", "HTTP", "ftp", ""])
HOSTS = st.sampled_from(
    ["127.0.0.1", "localhost", "[::1]", "::1", "[::1", "::1]", "a..b", "-x", "é.test", "", " "]
) | st.from_regex(r"[a-z0-9.-]{1,20}", fullmatch=True)
PORTS = st.sampled_from(["", ":", ":0", ":53", ":65535", ":65536", ":-1", ":x", ":99999999999"])
PATHS = st.sampled_from(["", "/", "/health", "/a?b=c", "/#f", "/example.test", "/.", "//x"])
URLS = (
    st.builds(
        lambda s, h, p, path: (f"{s}://" if s else "") + h + p + path, SCHEMES, HOSTS, PORTS, PATHS
    )
    | ODD_TEXT
)
PATTERN_PARTS = st.sampled_from(
    ["a", ".", "*", "+", "?", "(", ")", "[", "]", "{", "}", "|", "^", "$", "\\", "\\d", "\\p{L}",
     "(?P<n>", "(?P=n)", "(?<=", "(?i)", "(?u)", "(?V1)", "{2,3}", "{1000}", "{99999999999}",
     "[[:alpha:]]", "\\N{DIGIT ONE}", "(?R)", "(?1)", "\\g<0>", "é", "\x00", "{,5}", "(?#c)"]
)  # fmt: skip
PATTERNS = st.lists(PATTERN_PARTS, max_size=8).map("".join) | ODD_TEXT


BASES = [
    (HttpEndpoint, {"name": "web", "url": "http://127.0.0.1:8080/"}),
    (TcpEndpoint, {"name": "db", "url": "tcp://127.0.0.1:5432"}),
    (UdpEndpoint, {"name": "echo", "url": "udp://127.0.0.1:7", "send": "x"}),
    (IcmpEndpoint, {"name": "ping", "url": "127.0.0.1"}),
    (DnsEndpoint, {"name": "dns", "url": "dns://127.0.0.1/example.test"}),
]
PROPERTIES = {model: model.model_json_schema()["properties"] for model, _ in BASES}
NUMBERS = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-1, 10**6)
NUMBERS |= st.sampled_from([0, 0.001, 1, 10, 60, 86400, 2**63, 1e308])
NUMBERS |= st.sampled_from([math.inf, -math.inf, math.nan])
ODD_INTS = [0, 1, -1, 2**63, 10**30, 1.0, 1.5, True]


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of the type a JSON Schema (from the model) names, edge cases included."""
    if "anyOf" in schema:
        return st.one_of([from_schema(s) for s in schema["anyOf"]])
    if "enum" in schema or "const" in schema:
        return st.sampled_from(schema.get("enum") or [schema["const"]]) | ODD_TEXT
    kind = schema.get("type")
    if kind in ("number", "integer"):
        return NUMBERS if kind == "number" else st.integers() | st.sampled_from(ODD_INTS)
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {})), max_size=3)
    if kind == "object":
        return st.dictionaries(ODD_TEXT, ODD_TEXT, max_size=2)
    if kind == "string":
        return ODD_TEXT | PATTERNS | URLS
    return SCALARS  # $ref (an enum) and the like


@st.composite
def near_valid(draw: st.DrawFn) -> dict[str, Any]:
    """A valid endpoint with one field set to a value of its type (or of another)."""
    model, base = draw(st.sampled_from(BASES))
    properties = PROPERTIES[model]
    key = draw(st.sampled_from(sorted(properties)))
    return {**base, key: draw(from_schema(properties[key]))}


@st.composite
def endpoint_dicts(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.booleans()):
        return draw(near_valid())
    keys = draw(st.lists(st.sampled_from(ENDPOINT_KEYS), max_size=8, unique=True))
    data = {k: draw(VALUES) for k in keys}
    if draw(st.booleans()):
        data["name"] = draw(st.sampled_from(["web", "a b", "x" * 201, ""]) | ODD_TEXT)
    if draw(st.integers(0, 9)):
        data["url"] = draw(URLS)
    if draw(st.booleans()):
        data["expected_pattern"] = draw(PATTERNS)
    if draw(st.booleans()):
        data[draw(ODD_TEXT)] = draw(VALUES)  # an unknown key, mostly
    return data


@st.composite
def config_documents(draw: st.DrawFn) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for section in draw(st.lists(st.sampled_from(sorted(SECTIONS)), max_size=4, unique=True)):
        if section in ("endpoints", "maintenance"):
            data[section] = draw(st.lists(endpoint_dicts(), max_size=3))
            continue
        known = draw(st.lists(st.sampled_from(SECTIONS[section] or ["x"]), max_size=4))
        data[section] = {k: draw(VALUES) for k in known}
    for key in draw(st.lists(st.sampled_from(RESERVED) | ODD_TEXT, max_size=2)):
        data[key] = draw(VALUES)
    return data


def assert_config_error(error: ConfigError, path: Path) -> None:
    assert error.lines
    for line in error.lines:
        assert line.startswith(f"{path}: "), line
        rest = line.removeprefix(f"{path}: ")
        if rest.startswith(FILE_LEVEL):
            continue
        key = KEY_PATH.match(rest)
        assert key and rest[key.end() : key.end() + 2] == ": " and rest[key.end() + 2 :], line


def load(path: Path, content: bytes) -> None:
    path.write_bytes(content)
    try:
        loaded = load_settings(path)
    except ConfigError as exc:
        assert_config_error(exc, path)
    else:
        assert isinstance(loaded, Settings)


@FUZZ
@given(config_documents())
def test_generated_config_loads_or_says_which_key_is_wrong(data: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        load(Path(folder) / "availmon.toml", toml_document(data).encode())


@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_garbage_config_is_a_config_error(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        load(Path(folder) / "availmon.toml", content)


def test_reserved_settings_keys_are_unknown_keys(tmp_path: Path) -> None:
    """pydantic-settings takes _env_file, _cli_parse_args, ... as arguments: from a config
    file they would read another file or parse the command line (and exit)."""
    path = tmp_path / "availmon.toml"
    path.write_text('_cli_parse_args = true\n_env_file = "/etc/passwd"\n[api]\nport = 1\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    expected = [f"{path}: {key}: unknown key" for key in ("_cli_parse_args", "_env_file")]
    assert caught.value.lines == expected


def validate_and_round_trip(data: dict[str, Any]) -> None:
    try:
        spec = ENDPOINT_ADAPTER.validate_python(data)
    except ValidationError:
        event("refused")
        return
    event("valid")
    # what PostgreSQL's jsonb holds and gives back: finite numbers only (U+0000 is refused
    # too, but by the API before validation: see api/app.py read_json)
    stored = json.loads(json.dumps(spec.model_dump(mode="json"), allow_nan=False))
    assert ENDPOINT_ADAPTER.validate_python(stored) == spec


@FUZZ
@given(endpoint_dicts())
def test_endpoint_specs_validate_or_fail_with_validation_error(data: dict[str, Any]) -> None:
    validate_and_round_trip(data)


@settings(FUZZ, max_examples=600)
@given(near_valid())
def test_valid_endpoint_specs_are_stored_as_given(data: dict[str, Any]) -> None:
    validate_and_round_trip(data)
