"""A verifier of C2SP signed notes and checkpoints, written for the tests from the specifications
(c2sp.org/signed-note, c2sp.org/tlog-checkpoint), with no service code: Ed25519 by the
`cryptography` library, everything else from the text.

No Python package of a C2SP note verifier was to be had; this follows the spec's rules one by
one, and is itself checked against the spec's own example (tests/test_audit_c2sp.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

ED25519 = 0x01


class NoteRejected(Exception):
    pass


@dataclass(frozen=True)
class Verifier:
    """A verifier key: `<name>+<hex key ID>+<base64(type || public key)>`."""

    name: str
    key_id: bytes
    public: Ed25519PublicKey

    @classmethod
    def parse(cls, vkey: str) -> Verifier:
        name, key_hex, material_b64 = vkey.split("+", 2)  # base64 may hold "+"
        material = base64.b64decode(material_b64, validate=True)
        if material[0] != ED25519 or len(material) != 33:
            raise NoteRejected("not an Ed25519 verifier key")
        key_id = bytes.fromhex(key_hex)
        # "key ID = SHA-256(key name || 0x0A || 0x01 || 32-byte Ed25519 public key)[:4]"
        if hashlib.sha256(name.encode() + b"\n" + material).digest()[:4] != key_id:
            raise NoteRejected("the verifier key's ID does not match its name and key")
        return cls(name, key_id, Ed25519PublicKey.from_public_bytes(material[1:]))


def open_note(note: bytes, verifiers: list[Verifier]) -> str:
    """The note's text when a known key's signature verifies; NoteRejected otherwise."""
    try:
        text_all = note.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NoteRejected("not UTF-8") from exc
    if any(ord(c) < 0x20 and c != "\n" for c in text_all):
        raise NoteRejected("a control character other than newline")
    # "the text is separated from the signatures by the last empty line in the note"
    split = text_all.rfind("\n\n")
    if split < 0:
        raise NoteRejected("no blank line before the signatures")
    text, signatures = text_all[: split + 1], text_all[split + 2 :]
    if not signatures.endswith("\n"):
        raise NoteRejected("the signature lines do not end in a newline")
    verified = False
    for line in signatures[:-1].split("\n"):
        if not line.startswith("\u2014 "):
            raise NoteRejected("a signature line that does not start with an em dash and space")
        name, _, encoded = line[2:].partition(" ")
        if not name or " " in encoded or "+" in name:
            raise NoteRejected("a malformed signature line")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise NoteRejected("a signature that is not base64") from exc
        for verifier in verifiers:
            # Unknown keys are ignored; a known key's failing signature rejects the note.
            if verifier.name != name or raw[:4] != verifier.key_id:
                continue
            try:
                verifier.public.verify(raw[4:], text.encode())
            except InvalidSignature as exc:
                raise NoteRejected("a known key's signature does not verify") from exc
            verified = True
    if not verified:
        raise NoteRejected("no signature by a known key")
    return text


@dataclass(frozen=True)
class TreeHead:
    origin: str
    tree_size: int
    root_hash: bytes


def parse_checkpoint(text: str) -> TreeHead:
    """c2sp.org/tlog-checkpoint: origin, decimal size (no leading zeroes), base64 root."""
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "" or any(not line for line in lines[:-1]):
        raise NoteRejected("a checkpoint's text is at least three non-empty lines")
    origin, size, root = lines[0], lines[1], lines[2]
    if not size.isdigit() or (size.startswith("0") and size != "0"):
        raise NoteRejected("the tree size is not a decimal number without leading zeroes")
    return TreeHead(origin, int(size), base64.b64decode(root, validate=True))
