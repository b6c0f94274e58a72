"""The hash tree under a batch signature (docs/signing.md §7). Pure functions, no I/O.

One Ed25519 signature over the root of a tree of many messages' claims costs what one
message's signature costs; each message then carries its path to the root, a few
SHA-256 steps to check. Leaves and inner nodes are hashed with different prefixes
(as RFC 6962 does) so a leaf can never pass for a node or the other way round.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

LEAF = b"\x00"
NODE = b"\x01"
SIBLING_LEFT = 0x00   # path step: the sibling hash goes on the left of ours
SIBLING_RIGHT = 0x01  # ... or on the right
STEP = 33             # one side byte and one SHA-256 hash
MAX_DEPTH = 20        # about a million leaves; a batch is far smaller


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(LEAF + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE + left + right).digest()


def build(leaves: Sequence[bytes]) -> tuple[bytes, list[bytes]]:
    """The root over leaves and, for each leaf, its path (STEP-byte steps, leaf upwards).

    An odd node at the end of a level moves up unchanged, so its leaves' paths simply
    have no step at that level.
    """
    if not leaves:
        raise ValueError("a tree needs at least one leaf")
    if len(leaves) > 1 << MAX_DEPTH:
        raise ValueError(f"at most {1 << MAX_DEPTH} leaves")
    level = [leaf_hash(leaf) for leaf in leaves]
    paths = [bytearray() for _ in leaves]
    under: list[list[int]] = [[i] for i in range(len(leaves))]  # leaves below each node
    while len(level) > 1:
        up: list[bytes] = []
        up_under: list[list[int]] = []
        for j in range(0, len(level) - 1, 2):
            left, right = level[j], level[j + 1]
            for i in under[j]:
                paths[i] += bytes((SIBLING_RIGHT,)) + right
            for i in under[j + 1]:
                paths[i] += bytes((SIBLING_LEFT,)) + left
            up.append(node_hash(left, right))
            up_under.append(under[j] + under[j + 1])
        if len(level) % 2:
            up.append(level[-1])
            up_under.append(under[-1])
        level, under = up, up_under
    return level[0], [bytes(path) for path in paths]


def root_of(leaf: bytes, path: bytes) -> bytes:
    """The root that leaf and path lead to; ValueError for a malformed path."""
    if len(path) % STEP or len(path) // STEP > MAX_DEPTH:
        raise ValueError(f"a path is up to {MAX_DEPTH} steps of {STEP} bytes")
    node = leaf_hash(leaf)
    for k in range(0, len(path), STEP):
        side, sibling = path[k], path[k + 1:k + STEP]
        if side == SIBLING_RIGHT:
            node = node_hash(node, sibling)
        elif side == SIBLING_LEFT:
            node = node_hash(sibling, node)
        else:
            raise ValueError(f"path step {k // STEP} has side byte {side}, not 0 or 1")
    return node
