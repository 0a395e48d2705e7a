"""popularity: the most popular store paths alone, as nixpkgs' referencesByPopularity.

Graham Christensen's popularity contest (nixpkgs,
pkgs/build-support/references-by-popularity/closure-graph.py) unfolds the
reference graph into a tree below every root, a copy of a path for each way
of reaching it, and scores a path by the number of tree nodes that have a copy
of it in their subtree (the node itself included).  Roots are the paths no
other path refers to; self-references are ignored.  In closed form:

    score(y) = sum of P(w) over w = y and every w that refers to y, directly or not

where P(w) is the number of reference chains from a root down to w (1 for a
root).  On Graham's example A->B A->G B->C B->E C->D C->E D->F E->F, P is
A1 B1 C1 D1 E2 F3 G1 and the scores are A1 B2 C3 D4 E5 F9 G2.  The sum runs over
a *set* of ancestors, not along chains: E's 5 counts A and B once although two
chains reach E, so neither summing the parents' scores nor counting chains
gives it.

Order: score descending; equal scores by nixpkgs' `package_name`, the path
with its part before the first "-" moved to the end (name first, then store
directory and hash).  Layers, as nixpkgs' streamLayeredImage cuts that list:
the BUDGET-1 first paths alone, the most popular at the base, the rest in one
layer on top.

How we get the exact scores without their per-path counters (quadratic in
time and memory):
- P in one pass from the roots.
- The paths at or below each path as a bit set, leaves first.  For each path
  x one child h(x) with the largest set is chosen, so that x's set is {x} plus
  h's set plus rest(x), three disjoint parts.  Adding P(w) to everything below
  each w then telescopes: with R(x) = P(x) + the sum of R(w) over the w whose
  chosen child is x, score(y) = R(y) + the sum of R(x) over the x with y in
  rest(x).  The unions run in C; Python steps once per element of a rest,
  and rests are small where the graph is tree-like.
- Only the first BUDGET-1 places matter, and every path y refers to scores
  higher than y (it has y's ancestors and itself), so a path in the first k
  places has at most k-1 paths below it: the bit sets only track those paths.

Choices where nixpkgs leaves a gap: `root` marks in the records are ignored,
since nixpkgs takes the unreferenced paths as roots; a reference cycle (which
sends nixpkgs into endless recursion, and which neither Nix nor Guix can
produce) is refused with an error.
"""
from functools import reduce
from operator import or_

from ..graph import Closure
from .common import Indexed, Layer, index_closure, set_bits


def split(closure: Closure, budget: int) -> list[list[str]]:
    alone = popularity_order(closure, limit=max(budget - 1, 0))
    taken = set(alone)
    rest = [path for path in closure.paths if path not in taken]
    return ([Layer([path], reason="one of the most popular items", primary=path) for path in alone]
            + ([Layer(rest, reason="the less popular items")] if rest else []))


def popularity_order(closure: Closure, limit: int | None = None) -> list[str]:
    """Paths most popular first: all of them, or the first LIMIT."""
    score = scores(closure, limit)
    ranked = sorted(score, key=lambda path: (-score[path], package_name(path)))
    return ranked if limit is None else ranked[:limit]


def scores(closure: Closure, limit: int | None = None) -> dict[str, int]:
    """Each path's score; with LIMIT, only for the paths that have at most
    LIMIT paths in their closure (the only ones that can rank in the first LIMIT)."""
    graph = index_closure(closure)
    cap = len(graph.paths) if limit is None else limit
    members, chosen, rests = _descend(graph, cap)
    carry = _carry(graph, chosen)
    score = [carry[node] for node in members]
    for node, rest in rests.items():
        gift = carry[node]
        for slot in set_bits(rest):
            score[slot] += gift
    return {graph.paths[node]: score[slot] for slot, node in enumerate(members)}


def package_name(path: str) -> str:
    """nixpkgs' tie-break key: 'hello-2.12-/nix/store/<hash>' for '/nix/store/<hash>-hello-2.12'."""
    head, dash, tail = path.partition("-")
    return f"{tail}-{head}" if dash else path


def _descend(graph: Indexed, cap: int) -> tuple[list[int], list[int], dict[int, int]]:
    """Leaves first: the candidates (paths with at most CAP paths in their
    closure, each given a bit slot), each path's chosen child, and the rests
    as bit sets over the slots."""
    members: list[int] = []
    inside = [False] * len(graph.paths)
    below = [0] * len(graph.paths)   # candidates at or below a path; freed once its referrers are done
    count = [0] * len(graph.paths)
    chosen = [-1] * len(graph.paths)
    rests: dict[int, int] = {}
    waiting = [len(above) for above in graph.parents]
    for node in graph.leaves_first:
        kids = graph.children[node]
        reach = 0
        if kids:
            big = chosen[node] = max(kids, key=count.__getitem__)
            reach = reduce(or_, map(below.__getitem__, kids))   # the union, in C
            rest = reach ^ below[big]                            # what the big child lacks
            if rest:
                rests[node] = rest
            for kid in kids:
                waiting[kid] -= 1
                if not waiting[kid]:
                    below[kid] = 0
        size = reach.bit_count()
        if size < cap and all(map(inside.__getitem__, kids)):
            inside[node] = True
            reach |= 1 << len(members)
            members.append(node)
            size += 1
        if waiting[node]:
            below[node] = reach
        count[node] = size
    return members, chosen, rests


def _carry(graph: Indexed, chosen: list[int]) -> list[int]:
    """Roots first: R(x) = P(x) + the R of every path whose chosen child is x."""
    chains = [0] * len(graph.paths)
    carry = [0] * len(graph.paths)
    for node in reversed(graph.leaves_first):
        above = graph.parents[node]
        chains[node] = sum(map(chains.__getitem__, above)) if above else 1
        carry[node] += chains[node]
        if chosen[node] >= 0:
            carry[chosen[node]] += carry[node]
    return carry
