"""The Merkle tree of RFC 9162 section 2.1 over sealed records, as arithmetic on stored nodes.

Leaf i is the record of seal i + 1. The store keeps the hash of every *complete* subtree: node
(level, index) covers leaves [index * 2**level, (index + 1) * 2**level), level 0 being the leaf
hashes. Any subtree hash RFC 9162 asks for (a root, a sibling in an audit path, a node of a
consistency proof) covers a range [start, end) whose start is aligned to the largest power of two
below its size, so it is the fold, from the right, of at most log2(n) complete subtrees
(`perfect_nodes`). A root or a proof therefore costs O(log n) stored hashes, never a scan.

Pure: no I/O. Callers fetch the nodes that `*_nodes` functions name and pass them back in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()  # RFC 9162: the hash of an empty list

NodeKey = tuple[int, int]  # (level, index)
Range = tuple[int, int]  # leaves [start, end)


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _largest_power_below(n: int) -> int:
    """The k of RFC 9162: the largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def perfect_nodes(start: int, end: int) -> list[NodeKey]:
    """The complete subtrees that make up [start, end), left to right, largest first."""
    keys: list[NodeKey] = []
    while start < end:
        level = (end - start).bit_length() - 1
        while start % (1 << level):
            level -= 1
        keys.append((level, start >> level))
        start += 1 << level
    return keys


def fold(hashes: Sequence[bytes]) -> bytes:
    """MTH of a range from its complete subtrees (left to right): they join from the right."""
    if not hashes:
        return EMPTY_ROOT
    acc = hashes[-1]
    for left in reversed(hashes[:-1]):
        acc = node_hash(left, acc)
    return acc


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """RFC 9162 2.1.3.1 PATH(m, D[n]): the ranges whose hashes form the audit path, leaf first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    ranges: list[Range] = []
    start, end = 0, size
    while end - start > 1:
        k = _largest_power_below(end - start)
        if index < start + k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
    ranges.reverse()
    return ranges


def consistency_ranges(first: int, second: int) -> list[Range]:
    """RFC 9162 2.1.4.1 PROOF(m, D[n]) = SUBPROOF(m, D[n], true), as ranges, in proof order."""
    if not 0 < first <= second:
        raise ValueError(f"no consistency proof from {first} to {second}")
    return _subproof(first, 0, second, True)


def _subproof(m: int, start: int, end: int, complete: bool) -> list[Range]:
    n = end - start
    if m == n:
        return [] if complete else [(start, end)]
    k = _largest_power_below(n)
    if m <= k:
        return [*_subproof(m, start, start + k, complete), (start + k, end)]
    return [*_subproof(m - k, start + k, end, False), (start, start + k)]


def range_nodes(ranges: Iterable[Range]) -> set[NodeKey]:
    return {key for start, end in ranges for key in perfect_nodes(start, end)}


def range_hash(start: int, end: int, nodes: Mapping[NodeKey, bytes]) -> bytes:
    return fold([nodes[key] for key in perfect_nodes(start, end)])


# -- verification (RFC 9162 2.1.3.2), for `ledger audit verify-proof` ------------------------------


def root_from_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes | None:
    """The root an audit path leads to, or None when the path cannot belong to such a tree."""
    if not 0 <= index < size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


# -- the growing tree ------------------------------------------------------------------------------


@dataclass(slots=True)
class CompactRange:
    """The right edge of a growing tree: the complete subtrees of [0, size), largest first.
    Appending a leaf yields every node it completes (what the store must add)."""

    size: int = 0
    hashes: list[bytes] = field(default_factory=list)

    @classmethod
    def of(cls, size: int, nodes: Mapping[NodeKey, bytes]) -> CompactRange:
        return cls(size, [nodes[key] for key in perfect_nodes(0, size)])

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add leaf `size`; returns the (level, index, hash) of every node it completes."""
        index, acc, level = self.size, leaf, 0
        made = [(0, index, leaf)]
        while index & 1:  # a right child: join its left sibling, the last frontier hash
            acc = node_hash(self.hashes.pop(), acc)
            index >>= 1
            level += 1
            made.append((level, index, acc))
        self.hashes.append(acc)
        self.size += 1
        return made

    def root(self) -> bytes:
        return fold(self.hashes)
