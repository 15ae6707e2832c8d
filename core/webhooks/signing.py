"""Standard Webhooks signatures (https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md).

A secret is ``whsec_`` followed by the base64 of its key bytes. Each message carries three
headers: ``webhook-id`` (the same for every attempt of one message, so that the receiver can drop
duplicates), ``webhook-timestamp`` (seconds since the epoch) and ``webhook-signature``:
``v1,`` then the base64 of HMAC-SHA256(key, ``{id}.{timestamp}.{body}``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

PREFIX = "whsec_"
MIN_KEY_BYTES = 24
"""The specification asks for keys of 24 to 64 random bytes."""


def decode_secret(secret: str) -> bytes:
    """The key bytes of a ``whsec_…`` secret; a ValueError saying what is wrong otherwise (never
    quoting the secret)."""
    if not secret.startswith(PREFIX):
        raise ValueError("a webhook secret starts with 'whsec_' followed by base64")
    try:
        key = base64.b64decode(secret[len(PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is 'whsec_' followed by base64; the rest is not base64") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"a webhook secret holds at least {MIN_KEY_BYTES} bytes (Standard Webhooks)")
    return key


def encode_secret(key: bytes) -> str:
    return PREFIX + base64.b64encode(key).decode("ascii")


def key_secret(server_key: bytes, *, key_id: str, salt: str) -> str:
    """A key's own webhook secret: derived from the server's and the key's random salt, so that
    the database holds the salt alone (rotating it, or the server's secret, makes a new one)."""
    return encode_secret(hmac.new(server_key, f"imagegate key webhook secret:{key_id}:{salt}".encode(),
                                  hashlib.sha256).digest())


def signature(key: bytes, *, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header of one message."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def headers(key: bytes, *, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(key, msg_id=msg_id, timestamp=timestamp, body=body)}
