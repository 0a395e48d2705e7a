"""size: the largest store items in layers of their own, as `guix pack --max-layers`.

Guix (guix/docker.scm, `size-sorted-store-items`) sorts the items by size,
largest first, and with M layers in the image gives each of the M-2 largest
its own layer, the largest at the base, and puts the rest in one layer above
them; the last layer holds the files outside the store.  Our budget counts
store layers only (M-1), so: the BUDGET-1 largest items alone, the rest
together; a closure of at most BUDGET items gets one layer per item.

Size is narSize (Guix measures the items on disk); equal sizes go by store
path, so the split never depends on the order of the input.
"""
from ..graph import Closure
from .common import Layer


def split(closure: Closure, budget: int) -> list[list[str]]:
    ordered = sorted(closure.paths, key=lambda p: (-closure.nar_size.get(p, 0), p))
    if len(ordered) <= budget:
        return [Layer([path], reason="one item per layer", primary=path) for path in ordered]
    alone = max(budget - 1, 0)
    return ([Layer([path], reason="one of the largest items", primary=path) for path in ordered[:alone]]
            + [Layer(sorted(ordered[alone:]), reason="the smaller items")])
