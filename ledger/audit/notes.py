"""Checkpoints as C2SP signed notes (c2sp.org/tlog-checkpoint, c2sp.org/signed-note).

The note text is three lines: the log's origin (LEDGER_AUDIT_LOG_NAME), the tree size in decimal,
the root hash in base64. A blank line follows, then one signature line: an em dash, a space, the
key name (the origin, as tlog-checkpoint recommends), a space, and the base64 of the 4-byte key
hash followed by the 64-byte Ed25519 signature of the note text. The key hash is the first four
bytes of SHA-256(key name || 0x0A || 0x01 || the 32-byte public key), 0x01 being Ed25519's
signature type. Because the origin is inside the signed text and inside the key hash, a note of
one log never verifies as another's, even under the same key.

This is the format of the Go checksum database, Sigstore's Rekor v2 and Sigsum: witnesses and
monitors others wrote read it as it is. A verifier key (`vkey`) names the key for them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.core.settings import log_name_problem

ED25519_TYPE = b"\x01"
KEY_HASH_BYTES = 4
SIGNATURE_BYTES = 64
EM_DASH = "\u2014"


# Why a name cannot be a log's origin and key name, or None (the signed-note key name rules).
origin_problem = log_name_problem


def raw_public(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_hash(name: str, public: Ed25519PublicKey) -> bytes:
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + ED25519_TYPE + raw_public(public))
    return digest.digest()[:KEY_HASH_BYTES]


def vkey(name: str, public: Ed25519PublicKey) -> str:
    """The verifier key others configure: `name+hex(key hash)+base64(0x01 || public key)`."""
    material = base64.b64encode(ED25519_TYPE + raw_public(public)).decode("ascii")
    return f"{name}+{key_hash(name, public).hex()}+{material}"


def note_text(origin: str, tree_size: int, root_hash_hex: str) -> bytes:
    """The signed text; ValueError when the root is not hex."""
    root = base64.b64encode(bytes.fromhex(root_hash_hex)).decode("ascii")
    return f"{origin}\n{tree_size}\n{root}\n".encode()


def sign(private: Ed25519PrivateKey, origin: str, tree_size: int, root_hash_hex: str) -> str:
    """The signature line's base64: key hash || Ed25519 signature of the note text."""
    text = note_text(origin, tree_size, root_hash_hex)
    signature = key_hash(origin, private.public_key()) + private.sign(text)
    return base64.b64encode(signature).decode("ascii")


def render(origin: str, tree_size: int, root_hash_hex: str, note_signature: str) -> str:
    text = note_text(origin, tree_size, root_hash_hex).decode()
    return f"{text}\n{EM_DASH} {origin} {note_signature}\n"


def holds(
    public: Ed25519PublicKey, origin: str, tree_size: int, root_hash_hex: str, note_signature: str
) -> bool:
    """True when `note_signature` is this key's signature of that note under that origin."""
    try:
        raw = base64.b64decode(note_signature, validate=True)
        if len(raw) != KEY_HASH_BYTES + SIGNATURE_BYTES or origin_problem(origin) is not None:
            return False
        if raw[:KEY_HASH_BYTES] != key_hash(origin, public):
            return False
        public.verify(raw[KEY_HASH_BYTES:], note_text(origin, tree_size, root_hash_hex))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def parse(note: str) -> tuple[str, int, str, str]:
    """(origin, tree size, root hash in hex, signature line's base64) of a checkpoint note with
    one signature by its origin's name; ValueError naming what is wrong."""
    text, sep, signatures = note.rpartition("\n\n")
    if not sep or not signatures.endswith("\n"):
        raise ValueError("a note is its text, a blank line and signature lines")
    lines = (text + "\n").split("\n")[:-1]
    if len(lines) != 3:
        raise ValueError("a checkpoint note's text is three lines")
    origin, size_text, root_text = lines
    if origin_problem(origin) is not None:
        raise ValueError("the note's origin is not a log name")
    if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
        raise ValueError("the note's tree size is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except binascii.Error as exc:
        raise ValueError("the note's root hash is not base64") from exc
    for line in signatures[:-1].split("\n"):
        parts = line.split(" ")
        if len(parts) == 3 and parts[0] == EM_DASH and parts[1] == origin and parts[2]:
            return origin, int(size_text), root.hex(), parts[2]
    raise ValueError("the note has no signature line by its origin")
