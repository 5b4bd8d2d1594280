"""The webhook signature, in plain Python (no Django), so tenants can copy it.

    Lode-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{raw body}")>[,v1=<…>]

The key is the endpoint's whole secret string ("whsec_…", UTF-8). Each attempt is signed afresh
with its own timestamp; while a rotated-out secret is still in its grace period the header
carries one v1 per secret, and a receiver accepts the request when any of them matches."""
from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "Lode-Signature"
EVENT_ID_HEADER = "Lode-Event-Id"
EVENT_TYPE_HEADER = "Lode-Event-Type"
DELIVERY_ID_HEADER = "Lode-Delivery-Id"
SCHEME = "v1"


def _as_bytes(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else bytes(body)


def webhook_signature(secret: str, timestamp: int, body: bytes | str) -> str:
    message = f"{timestamp}.".encode() + _as_bytes(body)
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def webhook_signature_header(secrets: list[str], body: bytes | str, *, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else int(timestamp)
    return ",".join([f"t={t}", *(f"{SCHEME}={webhook_signature(secret, t, body)}" for secret in secrets)])


def webhook_signature_verify(
    secret: str, header: str | None, body: bytes | str, tolerance_seconds: int = 300, *, now: float | None = None
) -> bool:
    """True when `header` (the Lode-Signature value) signs exactly `body` (the raw request body,
    before any JSON parsing) with `secret`, and its timestamp is within `tolerance_seconds` of
    now (either way), so a captured request cannot be replayed later."""
    if not header or not secret:
        return False
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                return False
        elif key == SCHEME:
            signatures.append(value)
    if timestamp is None or not signatures:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        return False
    expected = webhook_signature(secret, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in signatures)
