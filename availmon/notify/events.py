"""Notification events: payloads, sink filters and the webhook signature. Pure.

Body: `{"id", "type", "created_at", "outage": {...}, "endpoint": {...}, ...}` serialised with
sorted keys and no spaces, so every attempt sends the same bytes. The signature, when a sink
has a secret, is `sha256=` + hex HMAC-SHA256(secret, "<X-Availmon-Timestamp>.<body bytes>").
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from availmon.notify.config import WebhookSettings

USER_AGENT = "availmon-webhook/1"
EVENT_ID_HEADER = "X-Availmon-Event-Id"
EVENT_TYPE_HEADER = "X-Availmon-Event"
TIMESTAMP_HEADER = "X-Availmon-Timestamp"
SIGNATURE_HEADER = "X-Availmon-Signature"
ATTEMPT_HEADER = "X-Availmon-Delivery-Attempt"


def new_event(
    kind: str,
    created_at: datetime,
    outage: dict[str, Any],
    endpoint: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "type": kind,
        "created_at": created_at.isoformat(),
        "outage": outage,
        "endpoint": endpoint,
        **(extra or {}),
    }


def accepts(sink: WebhookSettings, kind: str, severity: str, tags: Iterable[str]) -> bool:
    """True when the event passes every filter the sink sets (empty filters pass all)."""
    if sink.events and kind not in sink.events:
        return False
    if sink.severities and severity not in {s.value for s in sink.severities}:
        return False
    return not sink.tags or not set(sink.tags).isdisjoint(tags)


def route(
    sinks: Sequence[WebhookSettings], kind: str, severity: str, tags: Iterable[str]
) -> list[str]:
    tags = list(tags)
    return [s.name for s in sinks if accepts(s, kind, severity, tags)]


def body_bytes(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def headers(
    payload: dict[str, Any], body: bytes, timestamp: int, attempt: int, secret: str | None
) -> dict[str, str]:
    out = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT_ID_HEADER: str(payload["id"]),
        EVENT_TYPE_HEADER: str(payload["type"]),
        TIMESTAMP_HEADER: str(timestamp),
        ATTEMPT_HEADER: str(attempt),
    }
    if secret:
        out[SIGNATURE_HEADER] = signature(secret, str(timestamp), body)
    return out
