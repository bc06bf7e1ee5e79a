"""The public keys a checkpoint is checked with, everywhere: before it is delivered (Kafka, the
file), before it is listed (the API), in the console and in every verification.

The keys are the signing key's own public key and every PEM file of LEDGER_AUDIT_PUBLIC_KEYS
(keys that signed before a rotation). A checkpoint is checked with the key its `key_id` names,
and only that key; a `key_id` that names none of them fails. Its note (when it has one) must
hold under the same key, for the origin it names.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger.audit import notes
from ledger.audit.signing import (
    Checkpoint,
    Signer,
    key_id_of,
    load_public_key,
    load_signer,
    signature_holds,
)
from ledger.core.errors import ConfigurationError
from ledger.core.settings import Settings


@dataclass(frozen=True, slots=True)
class Keyring:
    """Public keys by key id, the log's origin and, in processes that sign, the signer (it gives
    checkpoints signed before notes existed their note: Ed25519 signs deterministically)."""

    keys: dict[str, Ed25519PublicKey] = field(default_factory=dict)
    origin: str = "ledger/audit"
    signer: Signer | None = None

    def problem(self, checkpoint: Checkpoint) -> str | None:
        """Why the checkpoint must not be trusted, or None when its signatures hold."""
        if checkpoint.key_id not in self.keys:
            return (
                f"signed by key {checkpoint.key_id[:64]}, which is not among the configured "
                "public keys"
            )
        if not signature_holds(checkpoint, self.keys):
            return f"its signature does not check with key {checkpoint.key_id}"
        if checkpoint.origin is None and checkpoint.note_signature is None:
            return None  # signed before notes: the checkpoint's own signature is all it has
        if checkpoint.origin is None or checkpoint.note_signature is None:
            return "its note is incomplete"
        if not notes.holds(
            self.keys[checkpoint.key_id],
            checkpoint.origin,
            checkpoint.tree_size,
            checkpoint.root_hash,
            checkpoint.note_signature,
        ):
            return f"its note does not check with key {checkpoint.key_id} for its origin"
        return None

    def with_note(self, checkpoint: Checkpoint) -> Checkpoint:
        """A genuine checkpoint signed before notes, given its note under this log's origin
        when this process holds the key that signed it; any other checkpoint as it is. For the
        note alone (`text/plain`): the checkpoint's own signature does not cover this note."""
        signer = self.signer
        if checkpoint.note_signature is not None or signer is None:
            return checkpoint
        if checkpoint.key_id != signer.key_id:
            return checkpoint
        try:
            line = signer.note_signature(self.origin, checkpoint.tree_size, checkpoint.root_hash)
        except ValueError:
            return checkpoint
        return dataclasses.replace(checkpoint, origin=self.origin, note_signature=line)


def read_public_keys(paths: tuple[str, ...] | list[str], what: str) -> dict[str, Ed25519PublicKey]:
    """Public keys by key id from PEM files; ConfigurationError naming the file that fails."""
    keys: dict[str, Ed25519PublicKey] = {}
    for path in paths:
        try:
            public = load_public_key(Path(path).read_bytes())
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise ConfigurationError(f"{what}: {path}: {reason}") from exc
        keys[key_id_of(public)] = public
    return keys


def keyring(settings: Settings, signer: Signer | None = None) -> Keyring:
    """The configured keys: `signer`'s (or LEDGER_AUDIT_SIGNING_KEY's, when set) and every file
    of LEDGER_AUDIT_PUBLIC_KEYS."""
    if signer is None and settings.audit_signing_key is not None:
        signer = load_signer(settings.audit_signing_key)
    keys = read_public_keys(settings.audit_public_keys, "LEDGER_AUDIT_PUBLIC_KEYS")
    if signer is not None:
        keys[signer.key_id] = signer.public
    return Keyring(keys=keys, origin=settings.audit_log_name, signer=signer)


@functools.lru_cache(maxsize=8)
def keyring_for(settings: Settings) -> Keyring:
    """`keyring(settings)`, read once per settings (the API and the console ask per request)."""
    return keyring(settings)
