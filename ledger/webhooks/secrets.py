"""Signing secrets: made here, shown once, stored sealed.

HMAC needs the secret itself to sign, so it cannot be stored as a hash like an API key. It is
sealed with AES-256-GCM under a key that never enters the database: the bytes of the file
LEDGER_WEBHOOK_SECRET_KEY names, or else a key derived (HKDF-SHA256) from the audit signing key
that `serve` and `worker` already hold. Someone who reads the database with the service's role
(contract 9.1) sees ciphertext, and cannot sign as the ledger to a receiver. The endpoint's and
the secret's ids are the associated data, so a sealed secret copied to another row does not open.

Each row records the id of the key that sealed it: a process with another key says so plainly
(the endpoint's deliveries fail with `secret_unreadable` until its secret is rotated) instead of
signing with garbage. Only an app built with neither key (tests in one process) stores secrets
unsealed, under the key id `none`; `serve` and `worker` always have the audit key.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ledger.core import limits
from ledger.core.errors import ConfigurationError
from ledger.core.settings import Settings

SECRET_PREFIX = "whsec_"  # noqa: S105 - the specification's public prefix, not a secret
UNSEALED_KEY_ID = "none"
NONCE_BYTES = 12
KEY_BYTES = 32
HKDF_INFO = b"ledger webhook signing secrets v1"
SECRET_KEY_FILE_BYTES_MIN = 32


class SecretUnreadable(Exception):
    """A stored secret this process cannot open: sealed under another key, or altered."""


def make_secret() -> str:
    raw = secrets.token_bytes(limits.WEBHOOK_SECRET_BYTES)
    return SECRET_PREFIX + base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True, slots=True)
class SecretBox:
    key: bytes | None  # None: secrets stay unsealed (an app built without any key)

    @property
    def key_id(self) -> str:
        if self.key is None:
            return UNSEALED_KEY_ID
        return hashlib.sha256(b"key id:" + self.key).hexdigest()[:32]

    def seal(self, secret: str, endpoint_id: uuid.UUID, secret_id: uuid.UUID) -> bytes:
        if self.key is None:
            return secret.encode("ascii")
        nonce = os.urandom(NONCE_BYTES)
        aad = endpoint_id.bytes + secret_id.bytes
        return nonce + AESGCM(self.key).encrypt(nonce, secret.encode("ascii"), aad)

    def open(self, sealed: bytes, key_id: str, endpoint_id: uuid.UUID, secret_id: uuid.UUID) -> str:
        if key_id != self.key_id:
            raise SecretUnreadable(f"sealed under key {key_id}, this process has {self.key_id}")
        if self.key is None:
            return sealed.decode("ascii")
        aad = endpoint_id.bytes + secret_id.bytes
        try:
            plain = AESGCM(self.key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
        except (InvalidTag, ValueError) as exc:
            raise SecretUnreadable("the sealed secret does not open under this key") from exc
        return plain.decode("ascii")


def _derive(material: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=HKDF_INFO).derive(
        material
    )


def secret_box(settings: Settings) -> SecretBox:
    """The box of this process's settings (read once, when the app or the worker starts)."""
    if settings.webhook_secret_key:
        try:
            material = Path(settings.webhook_secret_key).read_bytes().strip()
        except OSError as exc:
            raise ConfigurationError(f"LEDGER_WEBHOOK_SECRET_KEY: cannot read: {exc}") from exc
        if len(material) < SECRET_KEY_FILE_BYTES_MIN:
            raise ConfigurationError(
                f"LEDGER_WEBHOOK_SECRET_KEY must name a file of at least "
                f"{SECRET_KEY_FILE_BYTES_MIN} random bytes"
            )
        return SecretBox(_derive(material))
    if settings.audit_signing_key:
        try:
            pem = Path(settings.audit_signing_key).read_bytes()
            key = serialization.load_pem_private_key(pem, password=None)
            raw = key.private_bytes(  # type: ignore[union-attr]
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise ConfigurationError(
                "LEDGER_AUDIT_SIGNING_KEY cannot seal webhook secrets: " + type(exc).__name__
            ) from exc
        return SecretBox(_derive(raw))
    return SecretBox(None)
