"""What the graph strategies share: the closure as integer-indexed adjacency.

Strategies that walk the reference graph work on small integers, not store
path strings: node i is the i-th path in sorted order, so every result that
comes out of an index is already deterministic.  Self-references are dropped
(a store item may refer to itself; that is no dependency) and duplicate
references collapse.
"""
from dataclasses import dataclass
from typing import Iterator

from ..errors import LayerpipeError
from ..graph import Closure, leaves_first


class Layer(list):
    """A layer's member paths, plus why it exists: keys for its layer record
    (`reason`, and `primary` or `kept_from` where they apply)."""

    def __init__(self, paths, **why):
        super().__init__(paths)
        self.why = why


@dataclass
class Indexed:
    paths: list[str]            # node -> store path, sorted
    children: list[list[int]]   # node -> nodes it refers to
    parents: list[list[int]]    # node -> nodes that refer to it
    sizes: list[int]            # node -> narSize
    leaves_first: list[int]     # every node after all the nodes it refers to


def index_closure(closure: Closure) -> Indexed:
    """Index CLOSURE; raise LayerpipeError if its references form a cycle."""
    paths = closure.paths
    children = closure.numbered
    if children is None or len(children) != len(paths):
        number = {path: i for i, path in enumerate(paths)}
        children = [_kids(map(number.__getitem__, closure.references[p]), node) for node, p in enumerate(paths)]
    parents: list[list[int]] = [[] for _ in paths]
    for node, kids in enumerate(children):
        for kid in kids:
            parents[kid].append(node)
    sizes = [closure.nar_size.get(p, 0) for p in paths]
    return Indexed(paths, children, parents, sizes, _leaves_first(paths, children, parents))


def _kids(refs, node: int) -> list[int]:
    kids = set(refs)
    kids.discard(node)
    return sorted(kids)


def _leaves_first(paths: list[str], children: list[list[int]], parents: list[list[int]]) -> list[int]:
    """Depth-first post-order from the roots: besides being a topological
    order, it numbers what a path brings into the closure next to the path,
    which keeps the bit sets of the popularity contest narrow."""
    starts = [node for node, above in enumerate(parents) if not above]
    order, cycle = leaves_first(children, starts + list(range(len(paths))))  # the second round only finds cycles
    if cycle:
        raise LayerpipeError("store paths refer to each other in a cycle ("
                             + " -> ".join(paths[n] for n in cycle) + "); Nix and Guix never produce one")
    return order


def descendants(graph: Indexed, node: int) -> set[int]:
    """Every node NODE refers to, directly or not (NODE itself left out)."""
    children = graph.children
    found: set[int] = set()
    level = set(children[node])
    while level:   # one level at a time: the per-reference work runs in C
        found |= level
        level = set().union(*map(children.__getitem__, level)) - found
    return found


_NONZERO = bytes(1) + bytes([1]) * 255                # byte -> 0 if zero, else 1
_ONES = [tuple(i for i in range(8) if byte >> i & 1) for byte in range(256)]


def set_bits(bits: int) -> Iterator[int]:
    """The positions of the 1 bits of BITS (not negative), lowest first.

    The popularity contest calls this on wide, sparse sets, so it skips zero
    bytes in C (split at the non-zero ones) and steps in Python only per
    non-zero byte and per 1 bit, never per bit position.
    """
    if not bits:
        return
    low = ((bits & -bits).bit_length() - 1) & ~7        # whole zero bytes below the lowest 1
    data = (bits >> low).to_bytes((bits.bit_length() - low + 7) >> 3, "little")
    gaps = data.translate(_NONZERO).split(b"\x01")
    gaps.pop()
    at = low - 8
    for gap in gaps:
        at += 8 * len(gap) + 8                           # the next non-zero byte
        for one in _ONES[data[(at - low) >> 3]]:
            yield at + one
