"""Ed25519 keys and signed checkpoints (contract 8.3), with the `cryptography` library.

A checkpoint is `{"tree_size", "root_hash" (hex), "timestamp", "key_id", "signature"}`;
`signature` is base64 Ed25519 over the RFC 8785 bytes of the checkpoint without `signature`, and
`key_id` is the hex SHA-256 of the public key's DER (SubjectPublicKeyInfo). The private key lives
in a PEM file named by LEDGER_AUDIT_SIGNING_KEY and never enters the database.

The same key signs the checkpoint's C2SP note (ledger/audit/notes.py), which the checkpoint then
carries as `"note"`: being a member, it is inside the JCS bytes the checkpoint's own signature
covers, so that signature covers the log's origin too. A checkpoint signed before notes has no
`note` member at all, and its signature covers the four members it has.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.audit import notes
from ledger.core.errors import ConfigurationError

KEY_FILE_MODE = 0o600
TREE_SIZE_MAX = 2**63 - 1  # a checkpoint's size is a bigint


@dataclass(frozen=True, slots=True)
class Checkpoint:
    tree_size: int
    root_hash: str
    timestamp: str
    key_id: str
    signature: str
    # The signed note's origin and signature line (None on checkpoints signed before notes).
    origin: str | None = None
    note_signature: str | None = None

    @property
    def note(self) -> str | None:
        """The C2SP signed note of this tree head, when the checkpoint carries one."""
        if self.origin is None or self.note_signature is None:
            return None
        try:
            return notes.render(self.origin, self.tree_size, self.root_hash, self.note_signature)
        except ValueError:  # a root that is not hex: no note can say it
            return None

    def signed_part(self) -> dict[str, Any]:
        """The checkpoint without `signature`: what the signature covers."""
        return signed_part(self.tree_size, self.root_hash, self.timestamp, self.key_id, self.note)

    def as_dict(self) -> dict[str, Any]:
        return {**self.signed_part(), "signature": self.signature}

    def json_line(self) -> bytes:
        """The checkpoint as one canonical JSON line (the file's and the Kafka record's bytes),
        with its note."""
        return rfc8785.dumps(self.as_dict())


def signed_part(
    tree_size: int, root_hash: str, timestamp: str, key_id: str, note: str | None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "tree_size": tree_size,
        "root_hash": root_hash,
        "timestamp": timestamp,
        "key_id": key_id,
    }
    if note is not None:
        body["note"] = note
    return body


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

    def sign(self, tree_size: int, root_hash: str, timestamp: str, origin: str) -> Checkpoint:
        """The checkpoint with, over the same tree head, its signed note under `origin`."""
        note_signature = self.note_signature(origin, tree_size, root_hash)
        note = notes.render(origin, tree_size, root_hash, note_signature)
        body = signed_part(tree_size, root_hash, timestamp, self.key_id, note)
        signature = base64.b64encode(self._private.sign(rfc8785.dumps(body))).decode("ascii")
        return Checkpoint(
            tree_size, root_hash, timestamp, self.key_id, signature, origin, note_signature
        )

    def note_signature(self, origin: str, tree_size: int, root_hash: str) -> str:
        """Ed25519 is deterministic: the same head and origin always give the same line."""
        return notes.sign(self._private, origin, tree_size, root_hash)


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
        public.verify(signature, rfc8785.dumps(checkpoint.signed_part()))
    except (InvalidSignature, binascii.Error, ValueError, rfc8785.CanonicalizationError):
        return False
    return True


def checkpoint_from(value: Any) -> Checkpoint:
    """A checkpoint from parsed JSON; ValueError when it lacks a field or has a wrong type."""
    if not isinstance(value, dict):
        raise ValueError("a checkpoint is a JSON object")
    size, root, stamp = value.get("tree_size"), value.get("root_hash"), value.get("timestamp")
    key_id, signature = value.get("key_id"), value.get("signature")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= TREE_SIZE_MAX:
        raise ValueError(f"tree_size must be an integer 0..{TREE_SIZE_MAX}")
    if not all(isinstance(v, str) for v in (root, stamp, key_id, signature)):
        raise ValueError("root_hash, timestamp, key_id and signature must be strings")
    checkpoint = Checkpoint(size, str(root), str(stamp), str(key_id), str(signature))
    note = value.get("note")
    if note is None:
        return checkpoint
    if not isinstance(note, str):
        raise ValueError("note must be a string or null")
    origin, note_size, note_root, note_signature = notes.parse(note)
    if (note_size, note_root) != (size, checkpoint.root_hash.lower()):
        raise ValueError("the note's tree head is not the checkpoint's")
    found = dataclasses.replace(checkpoint, origin=origin, note_signature=note_signature)
    if found.note != note:
        raise ValueError("the note is not in the form this checkpoint's signature covers")
    return found
