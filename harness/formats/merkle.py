"""The archive's Merkle log, RFC 6962 / RFC 9162 section 2.1 exactly: hashing, proofs, verification.

leaf = SHA-256(0x00 || data), node = SHA-256(0x01 || left || right), the empty tree's root is
SHA-256(""). Proofs are RFC 6962's PATH and PROOF, so an independent RFC 6962 verifier accepts
what this module produces, and the verifiers are RFC 9162's algorithms, so this module rejects
what an independent producer would never produce.

Storage model (the store above keeps it; this module does no I/O): the hash of every COMPLETE
subtree, addressed (level, index). Level 0 holds the leaf hashes (index = leaf index); level k,
index i covers leaves [i * 2**k, (i + 1) * 2**k). A store reads them through `get(level, index)`.
Appending writes the few nodes that `nodes_completed_by_append` returns; a root or a proof needs
O(log n) gets, because RFC 6962's hashes of incomplete right-edge subtrees are folded here from the
complete subtrees that tile them. The tree is never rebuilt.

Everything that takes a proof is fed by a third party (an exported proof file, an archive that may
have been tampered with): sizes, indexes, hashes and proof lengths are checked before any loop, and
every refusal is a ProofError that says what and why.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

HASH_SIZE = 32
# RFC 6962 logs count leaves in uint64; a larger size or index in a proof is not from a real log.
MAX_TREE_SIZE = 2**64 - 1

# (level, index) -> the hash of that complete subtree.
Get = Callable[[int, int], bytes]


class ProofError(ValueError):
    """A proof, or a request for one, that cannot be right; the message says which part and why."""


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + bytes(data)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def empty_root() -> bytes:
    """The root of the tree with no leaves: SHA-256 of nothing."""
    return hashlib.sha256(b"").digest()


# ---- checks of what a caller or a proof file hands in ----

def _check_size(name: str, value: object, *, minimum: int = 0) -> int:
    # bool is an int in Python; a True tree size is a bug or a forged JSON, not 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProofError(f"{name} must be an integer, got {type(value).__name__}")
    if not minimum <= value <= MAX_TREE_SIZE:
        raise ProofError(f"{name} {value} is outside {minimum}..2**64-1")
    return value


def _check_hash(name: str, value: object) -> bytes:
    if not isinstance(value, (bytes, bytearray)):
        raise ProofError(f"{name} must be bytes, got {type(value).__name__}")
    if len(value) != HASH_SIZE:
        raise ProofError(f"{name} is {len(value)} bytes, a SHA-256 hash is {HASH_SIZE}")
    return bytes(value)


def _check_proof(proof: object, expected_length: int, what: str) -> list[bytes]:
    if not isinstance(proof, (list, tuple)):
        raise ProofError(f"{what} must be a list of hashes, got {type(proof).__name__}")
    if len(proof) != expected_length:
        raise ProofError(f"{what} has {len(proof)} hashes, RFC 6962 gives exactly {expected_length}")
    return [_check_hash(f"{what} hash {i}", h) for i, h in enumerate(proof)]


def _got(get: Get, level: int, index: int) -> bytes:
    """One stored subtree hash, checked: a store that answers garbage must not yield a root."""
    value = get(level, index)
    if not isinstance(value, (bytes, bytearray)) or len(value) != HASH_SIZE:
        raise ProofError(f"the store's node (level {level}, index {index}) is not a {HASH_SIZE}-byte hash")
    return bytes(value)


# ---- the tree over complete subtrees ----

def _largest_power_of_two_below(n: int) -> int:
    """RFC 6962's k: the largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def _range_hash(start: int, end: int, get: Get) -> bytes:
    """MTH of leaves [start, end), a range that RFC 6962's recursion reaches: a complete aligned
    subtree, or a right-edge range whose start is aligned to a power of two >= its length. Its
    complete subtrees ("peaks", largest first) are folded right to left: O(log n) gets."""
    peaks = []
    position, remaining = start, end - start
    for level in range(remaining.bit_length() - 1, -1, -1):
        if remaining >> level & 1:
            peaks.append(_got(get, level, position >> level))
            position += 1 << level
    value = peaks.pop()
    while peaks:
        value = node_hash(peaks.pop(), value)
    return value


def frontier(size: int) -> list[tuple[int, int]]:
    """(level, index) of the complete subtrees a tree of `size` leaves splits into, largest first:
    all that its root and the next append's new nodes read (RFC 6962: the root of size + 1 is
    over these and the nodes that append completes)."""
    keys, start = [], 0
    for level in reversed(range(size.bit_length())):
        if size >> level & 1:
            keys.append((level, start >> level))
            start += 1 << level
    return keys


def nodes_completed_by_append(size: int, new_leaf: bytes, get: Get) -> list[tuple[int, int, bytes]]:
    """Appending the leaf whose HASH is `new_leaf` (leaf_hash(data), not the data) as leaf number
    `size` of a tree of `size` leaves: every (level, index, hash) of a complete subtree that now
    exists and did not before, the leaf itself first, then upwards. O(log n) gets."""
    _check_size("tree size", size, minimum=0)
    if size == MAX_TREE_SIZE:
        raise ProofError("the tree is full (2**64-1 leaves)")
    value = _check_hash("new leaf hash", new_leaf)
    level, index = 0, size
    completed = [(0, size, value)]
    while index & 1:  # a right child completes its parent
        value = node_hash(_got(get, level, index - 1), value)
        level, index = level + 1, index >> 1
        completed.append((level, index, value))
    return completed


def root(size: int, get: Get) -> bytes:
    """RFC 6962 MTH of the first `size` leaves: O(log n) gets."""
    _check_size("tree size", size)
    return _range_hash(0, size, get) if size else empty_root()


def inclusion_proof(index: int, size: int, get: Get) -> list[bytes]:
    """RFC 6962 PATH(index, D[size]): the audit path, leaf's sibling first. O(log n) gets."""
    _check_size("tree size", size, minimum=1)
    _check_size("leaf index", index)
    if index >= size:
        raise ProofError(f"leaf index {index} is not in a tree of {size} leaves")
    path = []
    start, end = 0, size
    while end - start > 1:
        k = _largest_power_of_two_below(end - start)
        if index < start + k:
            path.append(_range_hash(start + k, end, get))
            end = start + k
        else:
            path.append(_range_hash(start, start + k, get))
            start += k
    path.reverse()  # PATH lists the deepest sibling first
    return path


def consistency_proof(old_size: int, new_size: int, get: Get) -> list[bytes]:
    """RFC 6962 PROOF(old_size, D[new_size]): that the tree of old_size leaves is a prefix of the
    tree of new_size. Empty when old_size is 0 or equal to new_size (RFC 9162 2.1.4). O(log n) gets."""
    _check_size("old tree size", old_size)
    _check_size("new tree size", new_size)
    if old_size > new_size:
        raise ProofError(f"old tree size {old_size} is larger than new tree size {new_size}")
    if old_size in (0, new_size):
        return []
    proof = []
    m, start, end, whole = old_size, 0, new_size, True  # SUBPROOF(m, D[start:end], whole)
    while m != end - start:
        k = _largest_power_of_two_below(end - start)
        if m <= k:
            proof.append(_range_hash(start + k, end, get))
            end = start + k
        else:
            proof.append(_range_hash(start, start + k, get))
            m, start, whole = m - k, start + k, False
    if not whole:
        proof.append(_range_hash(start, end, get))
    proof.reverse()
    return proof


# ---- verification, RFC 9162 ----

def inclusion_proof_length(index: int, size: int) -> int:
    """How many hashes RFC 6962 PATH(index, D[size]) holds: at most ceil(log2(size))."""
    inner = (index ^ (size - 1)).bit_length()  # levels where the path and the right edge part
    return inner + bin(index >> inner).count("1")  # above them: one left sibling per set bit


def consistency_proof_length(old_size: int, new_size: int) -> int:
    """How many hashes RFC 6962 PROOF(old_size, D[new_size]) holds."""
    if old_size in (0, new_size):
        return 0
    shift = ((old_size & -old_size).bit_length() - 1)  # old tree's last complete subtree level
    length = inclusion_proof_length(old_size - 1, new_size) - shift
    return length + (0 if old_size == 1 << shift else 1)


def _climb(fn: int, sn: int, seed: bytes, path: list[bytes], what: str) -> tuple[bytes, bytes]:
    """The walk that RFC 9162 2.1.3.2 and 2.1.4.2 share: from node fn on the right edge sn, up
    `path`. Returns (the seed folded with the left siblings only, with every sibling): the first is
    the old tree's root in a consistency proof, the second the root of the whole tree."""
    left_only = full = seed
    for sibling in path:
        if sn == 0:
            raise ProofError(f"{what} is longer than the tree is deep")
        if fn & 1 or fn == sn:  # the sibling is on the left
            left_only, full = node_hash(sibling, left_only), node_hash(sibling, full)
            while fn and not fn & 1:  # a right-edge node with no sibling rises unchanged
                fn, sn = fn >> 1, sn >> 1
        else:
            full = node_hash(full, sibling)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError(f"{what} is shorter than the tree is deep")
    return left_only, full


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """RFC 9162 2.1.3.2: `leaf` (a leaf HASH) is leaf number `index` of the tree of `size` leaves
    whose root is `root`. Returns None, or raises ProofError saying why not.
    A root does not bind its tree size (leaf 5's path is the same in trees of 7 and 8 leaves):
    take `size` and `root` together from one signed checkpoint, never from the proof's word alone."""
    value = _check_hash("leaf hash", leaf)
    _check_size("tree size", size)
    _check_size("leaf index", index)
    expected_root = _check_hash("root", root)
    if index >= size:
        raise ProofError(f"leaf index {index} is not in a tree of {size} leaves")
    path = _check_proof(proof, inclusion_proof_length(index, size), "inclusion proof")
    _, value = _climb(index, size - 1, value, path, "inclusion proof")
    if value != expected_root:
        raise ProofError(f"inclusion proof of leaf {index} does not lead to the root of the tree of {size}")


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> None:
    """RFC 9162 2.1.4.2: the tree of old_size leaves with root old_root is a prefix of the tree of
    new_size leaves with root new_root. Returns None, or raises ProofError saying why not.
    Equal sizes need equal roots and an empty proof; the empty tree (old_size 0) is a prefix of
    every tree, with an empty proof and old_root the empty root."""
    _check_size("old tree size", old_size)
    _check_size("new tree size", new_size)
    first = _check_hash("old root", old_root)
    second = _check_hash("new root", new_root)
    if old_size > new_size:
        raise ProofError(f"old tree size {old_size} is larger than new tree size {new_size}: "
                         f"a log never shrinks")
    path = _check_proof(proof, consistency_proof_length(old_size, new_size), "consistency proof")
    if old_size == new_size and first != second:
        raise ProofError(f"two different roots for the same tree size {old_size}")
    if old_size == 0 and first != empty_root():
        raise ProofError("old root is not the empty tree's root, yet old tree size is 0")
    if old_size in (0, new_size):
        return
    if old_size & (old_size - 1) == 0:  # old tree is one complete subtree: its root starts the path
        path = [first, *path]
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr, sr = _climb(fn, sn, path[0], path[1:], "consistency proof")
    if fr != first:
        raise ProofError(f"consistency proof does not lead to the old root (tree of {old_size})")
    if sr != second:
        raise ProofError(f"consistency proof does not lead to the new root (tree of {new_size})")


def root_of(leaves: Sequence[bytes]) -> bytes:
    """The MTH over leaf DATA, computed naively (for tests and small use): not the store's path."""
    level = [leaf_hash(data) for data in leaves]
    if not level:
        return empty_root()
    while len(level) > 1:  # pairing left to right, an odd last node rises unchanged: RFC 6962's MTH
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        level = paired + ([level[-1]] if len(level) % 2 else [])
    return level[0]
