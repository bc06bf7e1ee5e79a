"""RFC 9162's tree and verification algorithms, written out step by step for the tests.

Deliberately independent of the service's code (ledger/audit/merkle.py): the hashes, MTH, and
the two verification algorithms follow the RFC's text (sections 2.1.1, 2.1.3.2, 2.1.4.2), so a
test that checks the service's proofs with these checks them against the standard, not against
the service itself."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def hash_leaf(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def mth(leaf_hashes: Sequence[bytes]) -> bytes:
    """2.1.1: MTH over leaves given as their leaf hashes (MTH({d0}) = SHA-256(0x00 || d0))."""
    n = len(leaf_hashes)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaf_hashes[0]
    k = 1
    while k * 2 < n:  # the largest power of two smaller than n
        k *= 2
    return hash_children(mth(leaf_hashes[:k]), mth(leaf_hashes[k:]))


def verify_inclusion(
    leaf_index: int, tree_size: int, leaf_hash: bytes, path: Sequence[bytes], root: bytes
) -> bool:
    """2.1.3.2, steps 1 to 5."""
    if leaf_index >= tree_size:  # 1
        return False
    fn, sn = leaf_index, tree_size - 1  # 2
    r = leaf_hash  # 3
    for p in path:  # 4
        if sn == 0:  # 4a
            return False
        if fn & 1 or fn == sn:  # 4b
            r = hash_children(p, r)  # 4b.1
            if not fn & 1:  # 4b.2
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = hash_children(r, p)  # 4b otherwise
        fn >>= 1  # 4c
        sn >>= 1
    return sn == 0 and r == root  # 5


def verify_consistency(
    first: int, second: int, first_hash: bytes, second_hash: bytes, proof: Sequence[bytes]
) -> bool:
    """2.1.4.2, steps 1 to 7 (first == second: an empty proof and equal roots)."""
    if first == second:
        return not proof and first_hash == second_hash
    if first > second or first == 0:
        return False
    path = list(proof)
    if first & (first - 1) == 0:  # 1: first is an exact power of two
        path = [first_hash, *path]
    if not path:
        return False
    fn, sn = first - 1, second - 1  # 2
    while fn & 1:  # 3
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]  # 4
    for c in path[1:]:  # 5
        if sn == 0:  # 5a
            return False
        if fn & 1 or fn == sn:  # 5b
            fr = hash_children(c, fr)  # 5b.1
            sr = hash_children(c, sr)
            if not fn & 1:  # 5b.2
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = hash_children(sr, c)  # 5b otherwise
        fn >>= 1  # 5c
        sn >>= 1
    return fr == first_hash and sr == second_hash and sn == 0  # 6
