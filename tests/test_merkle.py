"""The archive's Merkle log is RFC 6962 exactly: published vectors, a naive RFC implementation,
and a verifier that refuses every proof a tampered archive or a forged proof file could offer."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.formats import merkle as mk
from harness.formats.merkle import ProofError

HYPOTHESIS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# RFC 6962 test vectors as published by Certificate Transparency's Go verifier:
# transparency-dev/merkle proof/verify_test.go (formerly google/certificate-transparency-go
# merkletree), commit 02194e9a. Leaves are leaf DATA; ROOTS[n-1] is the root of the first n leaves.
LEAVES = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f")]
ROOTS = [bytes.fromhex(h) for h in (
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")]
# (leaf index, tree size, audit path); the Go file numbers leaves from 1, these from 0.
INCLUSION = [
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]
# (old size, new size, consistency proof)
CONSISTENCY = [
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]


# ---- a naive RFC 6962 section 2.1, written from the text over a list of leaf hashes ----

def _k(n):
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def naive_mth(hashes):
    if not hashes:
        return hashlib.sha256(b"").digest()
    if len(hashes) == 1:
        return hashes[0]
    k = _k(len(hashes))
    return hashlib.sha256(b"\x01" + naive_mth(hashes[:k]) + naive_mth(hashes[k:])).digest()


def naive_path(m, hashes):
    if len(hashes) == 1:
        return []
    k = _k(len(hashes))
    if m < k:
        return naive_path(m, hashes[:k]) + [naive_mth(hashes[k:])]
    return naive_path(m - k, hashes[k:]) + [naive_mth(hashes[:k])]


def naive_subproof(m, hashes, whole):
    n = len(hashes)
    if m == n:
        return [] if whole else [naive_mth(hashes)]
    k = _k(n)
    if m <= k:
        return naive_subproof(m, hashes[:k], whole) + [naive_mth(hashes[k:])]
    return naive_subproof(m - k, hashes[k:], False) + [naive_mth(hashes[:k])]


# ---- stores ----

class Store:
    """A dict store filled only through nodes_completed_by_append, counting gets."""

    def __init__(self):
        self.nodes, self.size, self.gets = {}, 0, 0

    def get(self, level, index):
        self.gets += 1
        return self.nodes[(level, index)]

    def append(self, leaf_hash):
        for level, index, value in mk.nodes_completed_by_append(self.size, leaf_hash, self.get):
            assert (level, index) not in self.nodes  # a node is written once, never rewritten
            self.nodes[(level, index)] = value
        self.size += 1


def store_of(hashes):
    store = Store()
    for h in hashes:
        store.append(h)
    return store


def synthetic_leaf(i):
    return hashlib.sha256(i.to_bytes(8, "big")).digest()


SMALL = 64
BIG = 200_003  # the big table: built by plain pairing, independently of the append path


@pytest.fixture(scope="module")
def small():
    hashes = [synthetic_leaf(i) for i in range(SMALL)]
    return hashes, store_of(hashes)


@pytest.fixture(scope="module")
def big():
    """Every complete subtree of BIG leaves, level by level: (level, index) -> hash."""
    level = [i.to_bytes(32, "big") for i in range(BIG)]  # leaf hashes are opaque to the tree
    levels = [level]
    while len(level) > 1:
        level = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        levels.append(level)
    return levels


def naive_big_mth(levels, start, end):
    """naive_mth over [start, end) of the big tree, taking complete aligned subtrees from the table."""
    n = end - start
    if n & (n - 1) == 0 and start % n == 0:
        return levels[n.bit_length() - 1][start // n]
    k = _k(n)
    return hashlib.sha256(b"\x01" + naive_big_mth(levels, start, start + k)
                          + naive_big_mth(levels, start + k, end)).digest()


# ---- published vectors ----

def test_rfc6962_roots_of_every_prefix_match_the_published_vectors():
    hashes = [mk.leaf_hash(d) for d in LEAVES]
    store = store_of(hashes)
    assert mk.root(0, store.get) == mk.empty_root() == mk.root_of([])
    assert mk.empty_root().hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    for n in range(1, 9):
        assert mk.root(n, store.get) == ROOTS[n - 1] == mk.root_of(LEAVES[:n])


@pytest.mark.parametrize("index,size,path", INCLUSION)
def test_published_inclusion_proofs_are_produced_and_verified(index, size, path):
    store = store_of([mk.leaf_hash(d) for d in LEAVES])
    proof = [bytes.fromhex(h) for h in path]
    assert mk.inclusion_proof(index, size, store.get) == proof
    mk.verify_inclusion(mk.leaf_hash(LEAVES[index]), index, size, proof, ROOTS[size - 1])


@pytest.mark.parametrize("old,new,path", CONSISTENCY)
def test_published_consistency_proofs_are_produced_and_verified(old, new, path):
    store = store_of([mk.leaf_hash(d) for d in LEAVES])
    proof = [bytes.fromhex(h) for h in path]
    assert mk.consistency_proof(old, new, store.get) == proof
    mk.verify_consistency(old, new, ROOTS[old - 1], ROOTS[new - 1], proof)


# ---- against the naive RFC text ----

def test_append_writes_every_complete_subtree_once_with_its_rfc6962_hash(small):
    _, store = small
    assert set(store.nodes) == {(lv, i) for lv in range(SMALL.bit_length()) for i in range(SMALL >> lv)}
    for (level, index), value in store.nodes.items():
        width = 1 << level
        hashes = small[0][index * width:(index + 1) * width]
        assert value == naive_mth(hashes)


def test_every_root_inclusion_and_consistency_proof_up_to_64_is_rfc6962(small):
    hashes, store = small
    for n in range(0, SMALL + 1):
        tree_root = mk.root(n, store.get)
        assert tree_root == naive_mth(hashes[:n])
        for m in range(n):
            proof = mk.inclusion_proof(m, n, store.get)
            assert proof == naive_path(m, hashes[:n])
            assert len(proof) == mk.inclusion_proof_length(m, n)
            mk.verify_inclusion(hashes[m], m, n, proof, tree_root)
        for m in range(0, n + 1):
            proof = mk.consistency_proof(m, n, store.get)
            assert proof == ([] if m in (0, n) else naive_subproof(m, hashes[:n], True))
            assert len(proof) == mk.consistency_proof_length(m, n)
            mk.verify_consistency(m, n, naive_mth(hashes[:m]), tree_root, proof)


def _big_get(levels):
    def get(level, index):
        assert level < len(levels) and index < len(levels[level]), "asked for a subtree not in the tree"
        return levels[level][index]
    return get


def test_random_proofs_in_a_big_tree_are_rfc6962(big):
    get, rng = _big_get(big), random.Random(6962)
    for _ in range(25):
        size = rng.randrange(1, BIG + 1)
        index, old = rng.randrange(size), rng.randrange(1, size + 1)
        tree_root = mk.root(size, get)
        assert tree_root == naive_big_mth(big, 0, size)
        proof = mk.inclusion_proof(index, size, get)
        mk.verify_inclusion(big[0][index], index, size, proof, tree_root)
        # the path's siblings, deepest first, are the MTHs the RFC recursion names
        assert proof == _naive_big_path(big, index, 0, size)
        old_root = mk.root(old, get)
        assert old_root == naive_big_mth(big, 0, old)
        mk.verify_consistency(old, size, old_root, tree_root, mk.consistency_proof(old, size, get))


def _naive_big_path(levels, m, start, end):
    if end - start == 1:
        return []
    k = _k(end - start)
    if m < start + k:
        return _naive_big_path(levels, m, start, start + k) + [naive_big_mth(levels, start + k, end)]
    return _naive_big_path(levels, m, start + k, end) + [naive_big_mth(levels, start, start + k)]


@HYPOTHESIS
@given(st.data())
def test_any_append_sequence_gives_the_naive_root_and_proofs(data):
    n = data.draw(st.integers(1, 40))
    hashes = [mk.leaf_hash(data.draw(st.binary(max_size=8))) for _ in range(n)]
    store = store_of(hashes)
    m = data.draw(st.integers(0, n - 1))
    old = data.draw(st.integers(0, n))
    assert mk.root(n, store.get) == naive_mth(hashes)
    assert mk.inclusion_proof(m, n, store.get) == naive_path(m, hashes)
    mk.verify_consistency(old, n, naive_mth(hashes[:old]), naive_mth(hashes),
                          mk.consistency_proof(old, n, store.get))


# ---- O(log n) reads ----

class CountingStore:
    """Answers any complete subtree of a tree of `size` leaves with a fixed hash; counts the asks."""

    def __init__(self, size):
        self.size, self.gets = size, 0

    def get(self, level, index):
        assert (index + 1) << level <= self.size, f"asked for ({level}, {index}), not complete in {self.size}"
        self.gets += 1
        return bytes(32)


@pytest.mark.parametrize("size", [2**20, 2**20 + 1, 2**20 - 1, 1_000_003, 2**63 + 12345])
def test_roots_and_proofs_read_o_log_n_nodes(size):
    log = size.bit_length()
    rng = random.Random(size)
    for index in (0, size // 2, size - 1, rng.randrange(size)):
        store = CountingStore(size)
        mk.root(size, store.get)
        assert store.gets <= log
        store.gets = 0
        assert len(mk.inclusion_proof(index, size, store.get)) <= log
        assert store.gets <= 2 * log
        store.gets = 0
        old = max(1, index)
        assert len(mk.consistency_proof(old, size, store.get)) <= log + 1
        assert store.gets <= 2 * log + 1
        store.gets = 0
        added = mk.nodes_completed_by_append(size, bytes(32), store.get)
        assert store.gets == len(added) - 1 <= log


# ---- verification refuses ----

def _valid_inclusion(small, m, n):
    hashes, store = small
    return hashes[m], m, n, mk.inclusion_proof(m, n, store.get), mk.root(n, store.get)


def _flip(value, bit):
    return bytes(b ^ (1 << bit % 8) if i == bit // 8 else b for i, b in enumerate(value))


@pytest.mark.parametrize("m,n", [(0, 1), (0, 2), (5, 8), (6, 7), (20, 37), (63, 64), (31, 33)])
def test_inclusion_refuses_any_flipped_bit(small, m, n):
    leaf, m, n, proof, tree_root = _valid_inclusion(small, m, n)
    mk.verify_inclusion(leaf, m, n, proof, tree_root)
    for bit in range(256):
        with pytest.raises(ProofError):
            mk.verify_inclusion(_flip(leaf, bit), m, n, proof, tree_root)
        with pytest.raises(ProofError):
            mk.verify_inclusion(leaf, m, n, proof, _flip(tree_root, bit))
        for i in range(len(proof)):
            bad = list(proof)
            bad[i] = _flip(bad[i], bit)
            with pytest.raises(ProofError):
                mk.verify_inclusion(leaf, m, n, bad, tree_root)


@pytest.mark.parametrize("m,n", [(0, 2), (5, 8), (6, 7), (20, 37), (63, 64), (31, 33), (1, 5)])
def test_inclusion_refuses_wrong_index_size_and_lengths(small, m, n):
    hashes, store = small
    leaf, m, n, proof, tree_root = _valid_inclusion(small, m, n)
    for other in {m - 1, m + 1, m ^ 2, n, n + 1} - {m}:
        if other >= 0:
            with pytest.raises(ProofError):
                mk.verify_inclusion(leaf, other, n, proof, tree_root)
    # n - 1 or n + 1 may hash the same path: a root does not bind its size, the signed checkpoint does
    for other in {n * 2, n // 2} - {n}:
        with pytest.raises(ProofError):
            mk.verify_inclusion(leaf, m, other, proof, tree_root)
    some = hashlib.sha256(b"some").digest()
    for bad in (proof[:-1], proof + [some], [some] + proof, proof + [tree_root], [tree_root] + proof,
                proof[1:], proof[::-1] if len(proof) > 1 and proof[0] != proof[-1] else proof + [b""]):
        with pytest.raises(ProofError):
            mk.verify_inclusion(leaf, m, n, bad, tree_root)
    with pytest.raises(ProofError):  # a proof for another leaf
        mk.verify_inclusion(hashes[(m + 1) % n], m, n, proof, tree_root)


def test_inclusion_refuses_size_zero_and_index_out_of_the_tree():
    some = hashlib.sha256(b"some").digest()
    for index, size in ((0, 0), (1, 0), (1, 1), (2, 1), (5, 5)):
        for tree_root in (mk.empty_root(), some):
            with pytest.raises(ProofError, match="not in a tree"):
                mk.verify_inclusion(some, index, size, [], tree_root)
    mk.verify_inclusion(some, 0, 1, [], some)  # a one-leaf tree's root is its leaf hash
    with pytest.raises(ProofError):
        mk.verify_inclusion(some, 0, 1, [], mk.empty_root())


def _valid_consistency(small, old, new):
    hashes, store = small
    return old, new, mk.root(old, store.get), mk.root(new, store.get), mk.consistency_proof(old, new, store.get)


@pytest.mark.parametrize("old,new", [(1, 2), (1, 8), (6, 8), (2, 5), (6, 7), (7, 64), (32, 64), (33, 63), (3, 4)])
def test_consistency_refuses_any_flipped_bit_and_any_tampering(small, old, new):
    old, new, r1, r2, proof = _valid_consistency(small, old, new)
    mk.verify_consistency(old, new, r1, r2, proof)
    for bit in range(0, 256, 3):
        for bad1, bad2 in ((_flip(r1, bit), r2), (r1, _flip(r2, bit))):
            with pytest.raises(ProofError):
                mk.verify_consistency(old, new, bad1, bad2, proof)
        for i in range(len(proof)):
            bad = list(proof)
            bad[i] = _flip(bad[i], bit)
            with pytest.raises(ProofError):
                mk.verify_consistency(old, new, r1, r2, bad)
    some = hashlib.sha256(b"some").digest()
    for bad in ([], proof[:-1], proof + [some], proof + [r1], proof + [r2], [r1] + proof, [r2] + proof,
                [proof[0]] + proof, proof + [b""], [b""] + proof):
        with pytest.raises(ProofError):
            mk.verify_consistency(old, new, r1, r2, bad)
    with pytest.raises(ProofError):
        mk.verify_consistency(old, new, r2, r1, proof)  # swapped roots
    # new - 1 or new + 1 may hash the same way: a root does not bind its size, the signed checkpoint does
    for o, n in ((old - 1, new), (old + 1, new), (old ^ 2, new), (old, new * 2), (old, new // 2)):
        if (o, n) != (old, new) and o > 0:
            with pytest.raises(ProofError):
                mk.verify_consistency(o, n, r1, r2, proof)


def test_consistency_edge_sizes_per_rfc9162():
    some, other = hashlib.sha256(b"some").digest(), hashlib.sha256(b"other").digest()
    mk.verify_consistency(0, 0, mk.empty_root(), mk.empty_root(), [])
    mk.verify_consistency(0, 5, mk.empty_root(), some, [])  # the empty tree is a prefix of every tree
    mk.verify_consistency(3, 3, some, some, [])
    refused = [
        (0, 0, mk.empty_root(), some, []),      # same size, two roots
        (3, 3, some, other, []),
        (3, 3, some, some, [some]),             # same size, a proof that should be empty
        (0, 5, mk.empty_root(), some, [some]),
        (0, 5, some, some, []),                 # size 0 with a root that is not the empty tree's
        (1, 0, some, mk.empty_root(), []),      # a log never shrinks
        (5, 3, some, other, [some]),
        (1, 2, some, other, []),                # a real step with no proof
    ]
    for args in refused:
        with pytest.raises(ProofError):
            mk.verify_consistency(*args)
    with pytest.raises(ProofError, match="larger than"):
        mk.consistency_proof(5, 3, lambda level, index: bytes(32))


@pytest.mark.parametrize("bad", [None, "x", 1.0, True, -1, 2**64, 2**200])
def test_hostile_sizes_and_indexes_are_refused_before_any_work(bad):
    some = hashlib.sha256(b"some").digest()
    with pytest.raises(ProofError):
        mk.verify_inclusion(some, bad, 10, [], some)
    with pytest.raises(ProofError):
        mk.verify_inclusion(some, 0, bad, [], some)
    with pytest.raises(ProofError):
        mk.verify_consistency(bad, 10, some, some, [])
    with pytest.raises(ProofError):
        mk.verify_consistency(1, bad, some, some, [])
    with pytest.raises(ProofError):
        mk.root(bad, lambda level, index: some)
    with pytest.raises(ProofError):
        mk.inclusion_proof(0, bad, lambda level, index: some)


@pytest.mark.parametrize("bad", [b"", b"\x00" * 31, b"\x00" * 33, "a" * 32, None, 32, [b"\x00" * 32]])
def test_hostile_hashes_are_refused(bad):
    some = hashlib.sha256(b"some").digest()
    with pytest.raises(ProofError):
        mk.verify_inclusion(bad, 0, 1, [], some)
    with pytest.raises(ProofError):
        mk.verify_inclusion(some, 0, 1, [], bad)
    with pytest.raises(ProofError):
        mk.verify_inclusion(some, 0, 2, [bad], some)
    with pytest.raises(ProofError):
        mk.verify_consistency(1, 2, some, some, [bad])
    with pytest.raises(ProofError):
        mk.nodes_completed_by_append(0, bad, lambda level, index: some)
    with pytest.raises(ProofError):  # a store that answers garbage yields no root
        mk.root(3, lambda level, index: bad)


def test_a_proof_that_is_not_a_list_is_refused():
    some = hashlib.sha256(b"some").digest()
    for bad in (None, some, {0: some}, "proof"):
        with pytest.raises(ProofError):
            mk.verify_inclusion(some, 0, 2, bad, some)
        with pytest.raises(ProofError):
            mk.verify_consistency(1, 2, some, some, bad)


@HYPOTHESIS
@given(leaf=st.binary(), index=st.integers(-3, 2**70), size=st.integers(-3, 2**70),
       proof=st.lists(st.binary(min_size=0, max_size=40), max_size=80), tree_root=st.binary(max_size=40))
def test_arbitrary_inclusion_input_is_refused_cleanly(leaf, index, size, proof, tree_root):
    if (index, size, proof) == (0, 1, []) and leaf == tree_root and len(leaf) == 32:
        mk.verify_inclusion(leaf, index, size, proof, tree_root)  # the one-leaf tree: true, not forged
        return
    with pytest.raises(ProofError):  # a random proof is never accepted, and nothing but ProofError escapes
        mk.verify_inclusion(leaf, index, size, proof, tree_root)


@HYPOTHESIS
@given(old=st.integers(-3, 2**70), new=st.integers(-3, 2**70), r1=st.binary(max_size=40),
       r2=st.binary(max_size=40), proof=st.lists(st.binary(min_size=31, max_size=33), max_size=80))
def test_arbitrary_consistency_input_is_refused_cleanly(old, new, r1, r2, proof):
    trivially_true = (len(r1) == len(r2) == 32 and proof == []
                      and ((old == new and r1 == r2 and 0 < old < 2**64)
                           or (old == 0 and r1 == mk.empty_root() and 0 < new < 2**64)))
    if trivially_true:
        mk.verify_consistency(old, new, r1, r2, proof)
    else:
        with pytest.raises(ProofError):
            mk.verify_consistency(old, new, r1, r2, proof)


def test_nodes_completed_by_append_refuses_a_full_tree():
    with pytest.raises(ProofError, match="full"):
        mk.nodes_completed_by_append(2**64 - 1, bytes(32), lambda level, index: bytes(32))


def test_an_interior_node_passed_off_as_a_leaf_is_refused(small):
    """The forged short proof: present node (1, 2) as 'leaf 4' with the path above it."""
    hashes, store = small
    n = 16
    proof, tree_root = mk.inclusion_proof(4, n, store.get), mk.root(n, store.get)
    interior = store.nodes[(1, 2)]  # covers leaves 4 and 5
    for index in (2, 4, 5):
        with pytest.raises(ProofError):
            mk.verify_inclusion(interior, index, n, proof[1:], tree_root)
    # Under a forged size the forgery holds (the level-1 nodes of 16 leaves ARE a tree of 8 with the
    # same root): so a verifier takes the size from the signed checkpoint and computes the leaf hash
    # from the envelope itself (0x00 vs 0x01 keeps a leaf from ever equalling a node).
    mk.verify_inclusion(interior, 2, n // 2, proof[1:], tree_root)


def test_the_frontier_holds_every_node_an_append_and_the_root_read():
    """An append reads its nodes in one query (a round trip per node costs every waiting host):
    the frontier must cover every node that root() and nodes_completed_by_append() ask for."""
    for size in range(300):
        frontier = set(mk.frontier(size))
        asked: list[tuple[int, int]] = []

        def get(level: int, index: int) -> bytes:
            asked.append((level, index))
            return bytes(32)

        mk.root(size, get)
        mk.nodes_completed_by_append(size, b"\x01" * 32, get)
        assert set(asked) <= frontier, size
        assert sum(1 << level for level, _ in frontier) == size  # the subtrees tile the leaves
