"""`ledger audit keygen`, `ledger audit verify --checkpoints`, `ledger audit verify-proof`.

`verify-proof` needs no database and no settings: it checks one record against a signed
checkpoint with the public key alone, following RFC 9162 2.1.3.2."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ledger.audit import leaf, merkle
from ledger.audit.signing import (
    Checkpoint,
    checkpoint_from,
    generate_key,
    key_id_of,
    load_public_key,
    public_pem,
    signature_holds,
)
from ledger.core.errors import ConfigurationError
from ledger.core.json_text import duplicate_name


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
    print(public_pem(private.public_key()), end="", flush=True)
    print(f"key_id {key_id_of(private.public_key())}", file=sys.stderr)
    return 0


def read_public_keys(paths: list[str]) -> dict[str, Any]:
    keys = {}
    for path in paths:
        try:
            public = load_public_key(Path(path).read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"--public-key {path}: {exc}") from exc
        keys[key_id_of(public)] = public
    return keys


def read_checkpoint_file(path: str) -> list[Checkpoint]:
    """Every checkpoint of a JSON-lines file; a line that is no checkpoint is an error."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"--checkpoints {path}: cannot read it ({exc})") from exc
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            found.append(checkpoint_from(json.loads(line)))
        except ValueError as exc:
            raise ConfigurationError(f"{path} line {number} is not a checkpoint: {exc}") from exc
    return found


def _read_json(path: str, what: str) -> Any:
    try:
        return json.loads(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{what} {path}: not readable JSON ({exc})") from exc


def cmd_verify_proof(args: argparse.Namespace) -> int:
    """Exit 0 when the record is a leaf of the signed tree, 1 otherwise (the reason on
    stderr)."""
    failure = _proof_failure(args)
    if failure is not None:
        print(f"not proven: {failure}", file=sys.stderr)
        return 1
    print("ok: the record is in the signed tree", file=sys.stderr)
    return 0


def _proof_failure(args: argparse.Namespace) -> str | None:
    keys = read_public_keys([args.public_key])
    try:
        checkpoint = checkpoint_from(_read_json(args.checkpoint, "--checkpoint"))
    except ValueError as exc:
        return f"the checkpoint is malformed: {exc}"
    if not signature_holds(checkpoint, keys):
        return "the checkpoint's signature does not check with this public key"
    try:
        record = Path(args.record).read_bytes()
        leaf_hash = leaf.leaf_hash(leaf.canonical(record))
    except (OSError, ValueError) as exc:
        return f"the record is not readable JSON ({exc})"
    twice = duplicate_name(record)  # one meaning per text: no reader may see another record
    if twice is not None:
        return f"the record writes the member name {twice!r} twice"
    proof = _read_json(args.proof, "--proof")
    try:
        index, size = int(proof["leaf_index"]), int(proof["tree_size"])
        path = [bytes.fromhex(h) for h in proof["audit_path"]]
        claimed = proof.get("leaf_hash")
    except (KeyError, TypeError, ValueError) as exc:
        return f"the proof is malformed ({exc})"
    if size != checkpoint.tree_size:
        return f"the proof is for tree_size {size}, the checkpoint for {checkpoint.tree_size}"
    if claimed is not None and claimed != leaf_hash.hex():
        return "the record does not hash to the proof's leaf_hash (the record differs)"
    root = merkle.root_from_inclusion(index, size, leaf_hash, path)
    if root is None or root.hex() != checkpoint.root_hash:
        return "the audit path does not lead to the checkpoint's root"
    return None


async def verify_with_checkpoints(
    settings: Any, args: argparse.Namespace, with_session: Any
) -> int:
    """The chain's own checks, then every checkpoint of the file against the database. Prints
    one JSON object (the chain's report with `checkpoints_*` members); exit 1 when either
    fails, naming the first checkpoint that no longer holds."""
    import msgspec

    from ledger.audit.service import verify
    from ledger.audit.verify_checkpoints import verify_checkpoints

    if not args.public_key:
        raise ConfigurationError("--checkpoints needs --public-key (the key that signed them)")
    keys = read_public_keys(args.public_key)
    checkpoints = read_checkpoint_file(args.checkpoints)
    chain = await with_session(settings, verify)
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
            f"audit trail invalid at record {chain.first_invalid_id}: {chain.reason}",
            file=sys.stderr,
        )
    if not held.ok:
        print(f"audit checkpoints: {held.reason}", file=sys.stderr)
    if body["ok"]:
        print(
            f"ok: {chain.checked} sealed audit records verified, {held.checked} signed "
            "checkpoints reproduced",
            file=sys.stderr,
        )
        return 0
    return 1
