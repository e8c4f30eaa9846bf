"""Checks on the text of endpoint specs: what may be stored, sent in a URL or a header, or
named as a file. A leaf module (it imports nothing of ours): `specs` builds its fields on it.

Each check raises ValueError with the reason, which pydantic reports under the field's name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, ValidationInfo

# What PostgreSQL cannot store in text or jsonb: U+0000, and UTF-16 halves without their pair.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# Whitespace and control characters (C0, DEL, C1): urlsplit drops some and keeps others, and
# the HTTP probe writes the rest onto the request line; none belongs in a URL.
_URL_UNSAFE = re.compile("[\\s\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# RFC 9110 5.1 and 5.5: a field name is a token; a value is visible Latin-1 text, spaces and
# tabs (the probe writes the request in Latin-1: anything else would go out as "?").
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE = re.compile("[\t\x20-\x7e\xa0-\xff]*")
_KNOWN = {"\x00": "NUL", "\r": "CR", "\n": "LF", "\t": "a tab", " ": "a space"}


def char_name(char: str) -> str:
    """What an unwanted character is, in words an operator knows, and its code point."""
    if char in _KNOWN:
        what = _KNOWN[char]
    elif "\ud800" <= char <= "\udfff":
        what = "a lone surrogate"
    elif char.isspace():
        what = "whitespace"
    elif char < "\x20" or "\x7f" <= char <= "\x9f":
        what = "a control character"
    elif char > "\xff":
        what = "a character outside Latin-1"
    else:
        what = repr(char)  # visible, only not allowed where it is
    return f"{what} (U+{ord(char):04X})"


def unstorable(value: str) -> str | None:
    """Why PostgreSQL would refuse `value` (text and jsonb alike); None when it would not."""
    found = _UNSTORABLE.search(value)
    if found is None:
        return None
    char = found.group()
    what = "the NUL character" if char == "\x00" else "a lone surrogate"
    return f"must not contain {what} (U+{ord(char):04X})"


def _storable(value: str) -> str:
    problem = unstorable(value)
    if problem:
        raise ValueError(problem)
    return value


# Every free-text field of a spec: what validates must also be storable.
Text = Annotated[str, AfterValidator(_storable)]


def check_url_text(value: str) -> str:
    found = _URL_UNSAFE.search(value)
    if found:
        raise ValueError(
            f"url {value!r} contains {char_name(found.group())} at position {found.start()}:"
            " percent-encode it in a path or query"
        )
    return value


def check_headers(headers: dict[str, str]) -> dict[str, str]:
    """Each header goes out as "name: value\\r\\n": a CR or LF in either would end the line
    there and start another header (or the body) of the caller's choosing."""
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            bad = next((c for c in name if not _HEADER_NAME.fullmatch(c)), None)
            why = f"has {char_name(bad)}" if bad else "is empty"
            raise ValueError(
                f"header name {name!r} {why}: a name is a token of letters, digits "
                "and !#$%&'*+-.^_`|~ (RFC 9110)"
            )
        if not _HEADER_VALUE.fullmatch(value):
            bad = next(c for c in value if not _HEADER_VALUE.fullmatch(c))
            raise ValueError(
                f"header {name!r}: the value must not contain {char_name(bad)};"
                " tabs, spaces and visible Latin-1 text only"
            )
    return headers


def _readable_file(value: str, info: ValidationInfo) -> str:
    """The file exists and can be read, when the spec is given (config file, API, caller).

    A spec read back from the store (context {"stored": True}) is not checked: a file that
    has gone since is the probe's invalid_config, with the reason, not a spec that cannot load.
    """
    if (info.context or {}).get("stored"):
        return value
    path = Path(value)
    try:
        if not path.is_file():
            raise ValueError(f"{value!r} " + ("is not a file" if path.exists() else "not found"))
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ValueError(f"{value!r} cannot be read: {exc.strerror}") from None
    return value


# A file the probe opens (ca_file): storable text naming a readable file.
FilePath = Annotated[Text, AfterValidator(_readable_file)]
