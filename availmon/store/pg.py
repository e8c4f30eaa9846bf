"""Shared asyncpg plumbing: error translation, the jsonb codec, DSN helpers."""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from availmon.errors import StorageError

P = ParamSpec("P")
T = TypeVar("T")


def storage_errors(fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Turn asyncpg and socket errors into StorageError, keeping the original as __cause__."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise StorageError(f"{fn.__name__}: {type(exc).__name__}: {exc}") from exc

    return wrapper


def is_bad_data(exc: BaseException) -> bool:
    """True when the rows themselves are at fault, so retrying the same rows cannot help."""
    cause = exc.__cause__ if isinstance(exc, StorageError) else exc
    return isinstance(
        cause,
        (
            asyncpg.DataError,  # class 22 (and asyncpg's own argument encoding errors)
            asyncpg.IntegrityConstraintViolationError,  # class 23
            TypeError,
            ValueError,
            OverflowError,
        ),
    )


# one encoder for every row: json.dumps() with arguments builds a new JSONEncoder per call
_JSONB_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)


def _encode_jsonb(value: Any) -> bytes:
    # Binary jsonb is a version byte (1) then the JSON text; binary COPY needs this format.
    # default=str: a probe detail that is not JSON (a datetime, an exception) is kept as text
    # instead of making the whole batch unwritable.
    return b"\x01" + _JSONB_ENCODER.encode(value).encode()


def _decode_jsonb(data: bytes) -> Any:
    return json.loads(data[1:])


async def init_connection(conn: Any) -> None:
    """Per-connection setup (the pool's `init=`): jsonb is passed as Python objects both ways."""
    await conn.set_type_codec(
        "jsonb", encoder=_encode_jsonb, decoder=_decode_jsonb, schema="pg_catalog", format="binary"
    )


def redact_dsn(dsn: str) -> str:
    """The DSN without its password, for messages (also a DSN that does not parse)."""
    try:
        parts = urlsplit(dsn)
        password = parts.password
    except ValueError:  # "postgresql://u:p@[::1/db": cut what lies between "user:" and "@"
        scheme, sep, rest = dsn.partition("://")
        userinfo, at, host = rest.rpartition("@")
        if not at or ":" not in userinfo:
            return dsn
        return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"
    if password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def dsn_with_database(dsn: str, database: str) -> str:
    """The same server and credentials, another database."""
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))
