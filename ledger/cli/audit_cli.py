"""`ledger audit keygen`, `ledger audit verify --checkpoints`, `ledger audit verify-proof`.

`verify-proof` needs no database and no settings: it checks one record against a signed
checkpoint with the public key alone, following RFC 9162 2.1.3.2.

Both checks answer 0 or 1: any input file that does not verify (missing, unreadable, binary,
truncated, malformed, of the wrong types) is exit 1 with one line saying why, never a traceback;
2 is left to usage errors (argparse) and to the service's own configuration. Each input file is
read by one small function (`load_*`), which says what is wrong with it."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger.audit import leaf, merkle, notes
from ledger.audit.keys import Keyring
from ledger.audit.signing import (
    Checkpoint,
    checkpoint_from,
    generate_key,
    key_id_of,
    load_public_key,
    public_pem,
)
from ledger.core import limits
from ledger.core.errors import ConfigurationError
from ledger.core.json_text import duplicate_name

HASH_HEX = re.compile(r"[0-9a-f]{64}")
AUDIT_PATH_LENGTH_MAX = 64  # a tree of at most 2**64 leaves


def add_commands(audit_sub: Any) -> None:
    keygen = audit_sub.add_parser(
        "keygen", help="write a new Ed25519 checkpoint signing key; print its public key"
    )
    keygen.add_argument("--out", required=True, help="where to write the private key (PEM)")
    keygen.set_defaults(func=cmd_keygen)
    proof = audit_sub.add_parser(
        "verify-proof", help="check one record against a signed checkpoint, offline"
    )
    proof.add_argument("--record", required=True, help="the record's GET /v1/audit item (JSON)")
    proof.add_argument("--proof", required=True, help="GET /v1/audit/records/{id}/proof (JSON)")
    proof.add_argument("--checkpoint", required=True, help="a signed checkpoint (JSON)")
    proof.add_argument("--public-key", required=True, help="the signer's public key (PEM)")
    proof.set_defaults(func=cmd_verify_proof)


def add_verify_options(verify: argparse.ArgumentParser) -> None:
    verify.add_argument(
        "--checkpoints", default=None, help="a checkpoint file (JSON lines) to check the trail by"
    )
    verify.add_argument(
        "--public-key",
        action="append",
        default=None,
        help="a public key (PEM) that signed checkpoints; repeat for rotated keys",
    )


def cmd_keygen(args: argparse.Namespace) -> int:
    path = Path(args.out)
    try:
        private = generate_key(path)
    except FileExistsError as exc:
        raise ConfigurationError(f"{path} exists already: a key is never overwritten") from exc
    except OSError as exc:
        raise ConfigurationError(f"cannot write {path}: {exc.strerror}") from exc
    public = private.public_key()
    print(public_pem(public), end="", flush=True)
    print(f"key_id {key_id_of(public)}", file=sys.stderr)
    # The checkpoints' note verifier key, for witnesses and monitors (c2sp.org/signed-note).
    origin = os.environ.get("LEDGER_AUDIT_LOG_NAME") or "ledger/audit"
    if notes.origin_problem(origin) is None:
        print(f"vkey {notes.vkey(origin, public)}", file=sys.stderr)
    return 0


class InputRefused(Exception):
    """An input file that does not verify: exit 1 with this one line."""


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _read_bytes(path: str, what: str) -> bytes:
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(limits.AUDIT_CLI_INPUT_BYTES_MAX + 1)
    except OSError as exc:
        raise InputRefused(f"{what} {path}: cannot read it ({exc.strerror or exc})") from exc
    if len(data) > limits.AUDIT_CLI_INPUT_BYTES_MAX:
        raise InputRefused(f"{what} {path}: larger than {limits.AUDIT_CLI_INPUT_BYTES_MAX} bytes")
    return data


def _parse_json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise InputRefused(f"{what}: not JSON ({type(exc).__name__})") from exc


def load_public_keys(paths: list[str]) -> Keyring:
    """Every `--public-key` file: an Ed25519 public key (PEM) each."""
    keys: dict[str, Ed25519PublicKey] = {}
    for path in paths:
        try:
            public = load_public_key(_read_bytes(path, "--public-key"))
        except ValueError as exc:
            raise InputRefused(f"--public-key {path}: {exc}") from exc
        keys[key_id_of(public)] = public
    return Keyring(keys=keys)


def load_record(path: str) -> bytes:
    """The record file (its `GET /v1/audit` item) as the canonical bytes its leaf hashes."""
    data = _read_bytes(path, "--record")
    try:
        canonical = leaf.canonical(data)
    except (ValueError, RecursionError) as exc:
        raise InputRefused(f"--record {path}: not a JSON record ({type(exc).__name__})") from exc
    twice = duplicate_name(data)  # one meaning per text: no reader may see another record
    if twice is not None:
        raise InputRefused(f"--record {path}: the record writes the member name {twice!r} twice")
    return canonical


def load_proof(path: str) -> tuple[int, int, list[bytes], str | None]:
    """(leaf_index, tree_size, audit_path, leaf_hash) of the proof file."""
    proof = _parse_json(_read_bytes(path, "--proof"), f"--proof {path}")
    if not isinstance(proof, dict):
        raise InputRefused(f"--proof {path}: not a JSON object")
    index, size = proof.get("leaf_index"), proof.get("tree_size")
    audit_path, claimed = proof.get("audit_path"), proof.get("leaf_hash")
    index = _non_negative_int(index, f"--proof {path}: leaf_index")
    size = _non_negative_int(size, f"--proof {path}: tree_size")
    if not isinstance(audit_path, list) or len(audit_path) > AUDIT_PATH_LENGTH_MAX:
        raise InputRefused(f"--proof {path}: audit_path is not a list of at most 64 hashes")
    if not all(isinstance(h, str) and HASH_HEX.fullmatch(h) for h in audit_path):
        raise InputRefused(f"--proof {path}: audit_path holds a value that is not a hex hash")
    if claimed is not None and not (isinstance(claimed, str) and HASH_HEX.fullmatch(claimed)):
        raise InputRefused(f"--proof {path}: leaf_hash is not a hex hash")
    return index, size, [bytes.fromhex(h) for h in audit_path], claimed


def _non_negative_int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InputRefused(f"{what} is not a non-negative integer")
    return value


def load_checkpoint(path: str) -> Checkpoint:
    """The checkpoint file: one JSON checkpoint (its note, when it has one, with it)."""
    value = _parse_json(_read_bytes(path, "--checkpoint"), f"--checkpoint {path}")
    try:
        return checkpoint_from(value)
    except ValueError as exc:
        raise InputRefused(f"--checkpoint {path}: not a checkpoint ({exc})") from exc


def load_checkpoint_file(path: str) -> list[Checkpoint]:
    """Every checkpoint of a JSON-lines file; a line that is no checkpoint, or a file with
    none, does not verify."""
    data = _read_bytes(path, "--checkpoints")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputRefused(f"--checkpoints {path}: not UTF-8 text") from exc
    found = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        value = _parse_json(line.encode(), f"--checkpoints {path} line {number}")
        try:
            found.append(checkpoint_from(value))
        except ValueError as exc:
            raise InputRefused(
                f"--checkpoints {path} line {number}: not a checkpoint ({exc})"
            ) from exc
    if not found:
        raise InputRefused(f"--checkpoints {path}: holds no checkpoint")
    return found


def cmd_verify_proof(args: argparse.Namespace) -> int:
    """Exit 0 when the record is a leaf of the signed tree, 1 otherwise (one line on stderr)."""
    try:
        failure = _proof_failure(args)
    except InputRefused as exc:
        failure = str(exc)
    if failure is not None:
        print(_one_line(f"not proven: {failure}"), file=sys.stderr)
        return 1
    print("ok: the record is in the signed tree", file=sys.stderr)
    return 0


def _proof_failure(args: argparse.Namespace) -> str | None:
    keys = load_public_keys([args.public_key])
    checkpoint = load_checkpoint(args.checkpoint)
    why = keys.problem(checkpoint)
    if why is not None:
        return f"the checkpoint's signature does not hold with this public key: {why}"
    leaf_hash = leaf.leaf_hash(load_record(args.record))
    index, size, path, claimed = load_proof(args.proof)
    if size != checkpoint.tree_size:
        return f"the proof is for tree_size {size}, the checkpoint for {checkpoint.tree_size}"
    if claimed is not None and claimed != leaf_hash.hex():
        return "the record does not hash to the proof's leaf_hash (the record differs)"
    root = merkle.root_from_inclusion(index, size, leaf_hash, path)
    if root is None or root.hex() != checkpoint.root_hash.lower():
        return "the audit path does not lead to the checkpoint's root"
    return None


async def verify_with_checkpoints(
    settings: Any, args: argparse.Namespace, with_session: Any
) -> int:
    """The chain's own checks, then every checkpoint of the file against the database. Prints
    one JSON object (the chain's report with `checkpoints_*` members); exit 1 when either
    fails, naming the first checkpoint that no longer holds, or when an input file does not
    verify (one line, nothing on stdout)."""
    import msgspec

    from ledger.audit.keys import keyring as configured
    from ledger.audit.service import verify
    from ledger.audit.verify_checkpoints import verify_checkpoints

    if not args.public_key:
        raise ConfigurationError("--checkpoints needs --public-key (the key that signed them)")
    try:
        keys = load_public_keys(args.public_key)
        checkpoints = load_checkpoint_file(args.checkpoints)
    except InputRefused as exc:
        print(_one_line(f"audit checkpoints: {exc}"), file=sys.stderr)
        return 1
    # The database's own rows: with the configured keys and those given.
    mine = configured(settings)
    held_keys = _usable(
        Keyring(keys={**mine.keys, **keys.keys}, origin=mine.origin, signer=mine.signer)
    )
    chain = await with_session(settings, lambda s: verify(s, held_keys))
    held = await with_session(settings, lambda s: verify_checkpoints(s, checkpoints, keys))
    body = msgspec.structs.asdict(chain)
    body.update(
        checkpoints_checked=held.checked,
        checkpoints_total=held.total,
        first_invalid_checkpoint=held.first_invalid_tree_size,
        checkpoint_reason=held.reason,
    )
    body["ok"] = chain.ok and held.ok
    print(json.dumps({k: v for k, v in body.items() if v is not None}, default=str), flush=True)
    if not chain.ok:
        print(
            _one_line(f"audit trail invalid at record {chain.first_invalid_id}: {chain.reason}"),
            file=sys.stderr,
        )
    if not held.ok:
        print(_one_line(f"audit checkpoints: {held.reason}"), file=sys.stderr)
    if body["ok"]:
        print(
            f"ok: {chain.checked} sealed audit records verified, {held.checked} signed "
            "checkpoints reproduced",
            file=sys.stderr,
        )
        return 0
    return 1


def _usable(keys: Keyring) -> Keyring | None:
    """The configured keys for the database's own checkpoint rows; None when none are
    configured (the rows are then not checked: there is nothing to check them with)."""
    return keys if keys.keys else None
