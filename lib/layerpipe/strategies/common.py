"""What the graph strategies share: the closure as integer-indexed adjacency.

Strategies that walk the reference graph work on small integers, not store
path strings: node i is the i-th path in sorted order, so every result that
comes out of an index is already deterministic.  Self-references are dropped
(a store item may refer to itself; that is no dependency) and duplicate
references collapse.
"""
from dataclasses import dataclass
from itertools import accumulate

from ..errors import LayerpipeError
from ..graph import Closure


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
    number = {path: i for i, path in enumerate(paths)}
    children = [sorted({number[r] for r in closure.references[p] if r != p}) for p in paths]
    parents: list[list[int]] = [[] for _ in paths]
    for node, kids in enumerate(children):
        for kid in kids:
            parents[kid].append(node)
    sizes = [closure.nar_size.get(p, 0) for p in paths]
    return Indexed(paths, children, parents, sizes, _leaves_first(paths, children, parents))


def _leaves_first(paths: list[str], children: list[list[int]], parents: list[list[int]]) -> list[int]:
    waiting = [len(kids) for kids in children]
    order = [node for node, count in enumerate(waiting) if not count]
    for node in order:  # grows while we walk it (Kahn's algorithm)
        for parent in parents[node]:
            waiting[parent] -= 1
            if not waiting[parent]:
                order.append(parent)
    if len(order) < len(paths):
        raise LayerpipeError("store paths refer to each other in a cycle ("
                             + " -> ".join(paths[n] for n in _a_cycle(children, waiting))
                             + "); Nix and Guix never produce one")
    return order


def _a_cycle(children: list[list[int]], waiting: list[int]) -> list[int]:
    """One cycle among the nodes Kahn's algorithm could not order."""
    node = min(n for n, count in enumerate(waiting) if count)
    seen: dict[int, int] = {}
    trail: list[int] = []
    while node not in seen:
        seen[node] = len(trail)
        trail.append(node)
        node = next(kid for kid in children[node] if waiting[kid])
    return trail[seen[node]:] + [node]


def descendants(graph: Indexed, node: int) -> set[int]:
    """Every node NODE refers to, directly or not (NODE itself left out)."""
    found: set[int] = set()
    todo = list(graph.children[node])
    while todo:
        kid = todo.pop()
        if kid not in found:
            found.add(kid)
            todo.extend(graph.children[kid])
    return found


def set_bits(bits: int):
    """The positions of the 1 bits of BITS, lowest first.

    The zero runs between ones come from str.split, so the cost is one pass
    in C over the binary digits plus a little per 1 bit, not a Python step per
    digit: the popularity contest calls this on wide, sparse sets.
    """
    runs = format(bits, "b")[::-1].split("1")
    runs.pop()
    return map((-1).__add__, accumulate(map((1).__add__, map(len, runs))))
