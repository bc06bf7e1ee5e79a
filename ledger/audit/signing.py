"""Ed25519 keys and signed checkpoints (contract 8.3), with the `cryptography` library.

A checkpoint is `{"tree_size", "root_hash" (hex), "timestamp", "key_id", "signature"}`;
`signature` is base64 Ed25519 over the RFC 8785 bytes of the checkpoint without `signature`, and
`key_id` is the hex SHA-256 of the public key's DER (SubjectPublicKeyInfo). The private key lives
in a PEM file named by LEDGER_AUDIT_SIGNING_KEY and never enters the database.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.core.errors import ConfigurationError

KEY_FILE_MODE = 0o600


@dataclass(frozen=True, slots=True)
class Checkpoint:
    tree_size: int
    root_hash: str
    timestamp: str
    key_id: str
    signature: str

    def signed_part(self) -> dict[str, Any]:
        return {
            "tree_size": self.tree_size,
            "root_hash": self.root_hash,
            "timestamp": self.timestamp,
            "key_id": self.key_id,
        }

    def as_dict(self) -> dict[str, Any]:
        return {**self.signed_part(), "signature": self.signature}

    def json_line(self) -> bytes:
        """The checkpoint as one canonical JSON line (the file's and the Kafka record's bytes)."""
        return rfc8785.dumps(self.as_dict())


def signed_bytes(tree_size: int, root_hash: str, timestamp: str, key_id: str) -> bytes:
    body: dict[str, int | str] = {
        "tree_size": tree_size,
        "root_hash": root_hash,
        "timestamp": timestamp,
        "key_id": key_id,
    }
    return rfc8785.dumps(body)


def public_der(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_id_of(public: Ed25519PublicKey) -> str:
    return hashlib.sha256(public_der(public)).hexdigest()


def public_pem(public: Ed25519PublicKey) -> str:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


class Signer:
    """The worker's checkpoint signer: the private key, loaded once at start."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key()
        self.key_id = key_id_of(self.public)

    def sign(self, tree_size: int, root_hash: str, timestamp: str) -> Checkpoint:
        message = signed_bytes(tree_size, root_hash, timestamp, self.key_id)
        signature = base64.b64encode(self._private.sign(message)).decode("ascii")
        return Checkpoint(tree_size, root_hash, timestamp, self.key_id, signature)


def generate_key(path: Path) -> Ed25519PrivateKey:
    """A new private key written as PKCS#8 PEM, readable by its owner only; never overwrites."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return private


def load_signer(path: str | None) -> Signer:
    """The configured key, or a ConfigurationError that says what is wrong (never the key)."""
    if not path:
        raise ConfigurationError(
            "LEDGER_AUDIT_SIGNING_KEY is not set: it must name the Ed25519 private key (PEM) that "
            "signs audit checkpoints; make one with `ledger audit keygen --out PATH`"
        )
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"LEDGER_AUDIT_SIGNING_KEY: cannot read the key file ({exc.strerror})"
        ) from exc
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            "LEDGER_AUDIT_SIGNING_KEY: the file is not an unencrypted PEM private key"
        ) from exc
    if not isinstance(private, Ed25519PrivateKey):
        raise ConfigurationError("LEDGER_AUDIT_SIGNING_KEY: the key is not an Ed25519 key")
    return Signer(private)


def load_public_key(data: bytes) -> Ed25519PublicKey:
    """A public key from PEM (a private key's PEM gives its public half too)."""
    try:
        key: Any = serialization.load_pem_public_key(data)
    except ValueError:
        try:
            key = serialization.load_pem_private_key(data, password=None).public_key()
        except (ValueError, TypeError) as exc:
            raise ValueError("not a PEM Ed25519 public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 key")
    return key


def signature_holds(checkpoint: Checkpoint, keys: dict[str, Ed25519PublicKey]) -> bool:
    """True when the checkpoint's `key_id` names one of `keys` and its signature checks."""
    public = keys.get(checkpoint.key_id)
    if public is None:
        return False
    try:
        signature = base64.b64decode(checkpoint.signature, validate=True)
        message = signed_bytes(
            checkpoint.tree_size, checkpoint.root_hash, checkpoint.timestamp, checkpoint.key_id
        )
        public.verify(signature, message)
    except (InvalidSignature, binascii.Error, ValueError, rfc8785.CanonicalizationError):
        return False
    return True


def checkpoint_from(value: Any) -> Checkpoint:
    """A checkpoint from parsed JSON; ValueError when it lacks a field or has a wrong type."""
    if not isinstance(value, dict):
        raise ValueError("a checkpoint is a JSON object")
    size, root, stamp = value.get("tree_size"), value.get("root_hash"), value.get("timestamp")
    key_id, signature = value.get("key_id"), value.get("signature")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError("tree_size must be a non-negative integer")
    if not all(isinstance(v, str) for v in (root, stamp, key_id, signature)):
        raise ValueError("root_hash, timestamp, key_id and signature must be strings")
    return Checkpoint(size, str(root), str(stamp), str(key_id), str(signature))
