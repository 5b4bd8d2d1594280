"""Sealing: secrets Lode must read back, such as a webhook endpoint's signing secret (it signs every
delivery, so it cannot be hashed like an API key), are stored encrypted, never as they are.

AES-256-GCM (the `cryptography` package) with a fresh 96-bit nonce per seal and a context string
as associated data: a sealed value only opens for the row and field it was sealed for, so copying
one endpoint's sealed secret onto another's row gets nothing. A sealed value is text:

    sealed:v1:<key id>:<base64url(nonce + ciphertext and tag)>

Keys: settings.SEALING_KEYS, base64 of 32 random bytes each (LODE_SEALING_KEYS, comma separated).
The first seals; every one of them opens, so a key is rotated by putting a new one first, running
`manage.py reseal`, then dropping the old one. Without any, one key is derived from SECRET_KEY
(HKDF-SHA256), which ties sealed values to the secret key; production asks for its own keys."""
from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

PREFIX = "sealed:v1:"
_NONCE_BYTES = 12


class SealError(Exception):
    """A value that is not sealed, sealed with a key Lode no longer has, or altered."""


@functools.lru_cache(maxsize=8)
def _keys(configured: tuple[str, ...], secret_key: str) -> tuple[tuple[str, AESGCM], ...]:
    raw_keys = []
    for number, encoded in enumerate(configured, start=1):
        try:
            raw = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise ImproperlyConfigured(f"LODE_SEALING_KEYS: key {number} is not base64 of 32 bytes")
        raw_keys.append(raw)
    if not raw_keys:
        raw_keys.append(HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                             info=b"lode sealing key v1").derive(secret_key.encode("utf-8")))
    return tuple((hashlib.sha256(raw).hexdigest()[:8], AESGCM(raw)) for raw in raw_keys)


def keys() -> tuple[tuple[str, AESGCM], ...]:
    """(key id, cipher) pairs, the sealing key first."""
    return _keys(tuple(settings.SEALING_KEYS), settings.SECRET_KEY)


def seal(plain: str, *, context: str) -> str:
    """`plain` encrypted under the current key, bound to `context` (e.g. "webhook_endpoint:<id>:secret")."""
    key_id, cipher = keys()[0]
    nonce = os.urandom(_NONCE_BYTES)
    body = cipher.encrypt(nonce, plain.encode("utf-8"), context.encode("utf-8"))
    return f"{PREFIX}{key_id}:{base64.urlsafe_b64encode(nonce + body).decode('ascii')}"


def unseal(sealed: str, *, context: str) -> str:
    if not sealed.startswith(PREFIX):
        raise SealError("not a sealed value")
    key_id, _, encoded = sealed[len(PREFIX):].partition(":")
    cipher = dict(keys()).get(key_id)
    if cipher is None:
        raise SealError(f"sealed with key {key_id}, which is not in LODE_SEALING_KEYS")
    try:
        packed = base64.urlsafe_b64decode(encoded.encode("ascii"))
        return cipher.decrypt(packed[:_NONCE_BYTES], packed[_NONCE_BYTES:], context.encode("utf-8")).decode("utf-8")
    except (InvalidTag, binascii.Error, ValueError) as error:
        raise SealError("the sealed value does not open for this context (altered or moved)") from error


def is_current(sealed: str) -> bool:
    """Whether the value is sealed under the current sealing key (`reseal` skips those)."""
    return sealed.startswith(f"{PREFIX}{keys()[0][0]}:")
