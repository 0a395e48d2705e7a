"""two-layer: the split proposed for `guix pack`.

Top layer: the roots (the profile) and the items they refer to directly, which
change with almost every build; base layer: everything else (glibc, libraries),
which stays bit-identical across application updates.  With a budget of one
store layer, or an empty base, everything goes into one layer.
"""
from ..graph import Closure
from .common import Layer


def split(closure: Closure, budget: int) -> list[list[str]]:
    top = set(closure.roots)
    for root in closure.roots:
        top.update(closure.references[root])
    base = [p for p in closure.paths if p not in top]
    if budget < 2 or not base:
        return [Layer(closure.paths, reason="the whole closure")]
    return [Layer(base, reason="what the roots need indirectly"),
            Layer(sorted(top), reason="the roots and what they refer to directly")]
