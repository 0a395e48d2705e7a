"""stable: layers chosen for the updates users make, and kept across builds.

The model (man/layer-split.1, STABLE).  Under input addressing a store item
gets a new path when it, or anything it refers to, changes.  We weigh the
updates users make:

- an *application* changes (a root, or an item a root refers to directly,
  e.g. a package in the profile): weight W_APP;
- a *library* changes (any other item): weight W_LIB;
- a *sibling* image swaps one application for another: the items only that
  application brings in are not in the sibling, and what refers to them (the
  profile) differs: weight W_SIB.  A root brings in only itself here.

Each update is an event e with a set C_e of items it replaces.  A layer G is
shipped again whenever some member is in C_e, so the bytes shipped beyond
the ideal are, summed over events, P(e) * size(G - C_e).  Summed over all
layers this is   sum_G size(G) * P(G is touched)  minus a constant (the
ideal), where P(G is touched) is the weight of the union of the events that
touch any member.  That is what the grouping minimises: start from one layer
per item (the ideal) and, while there are more layers than the budget, merge
the two neighbouring groups (an item and what it refers to, or items next to
each other in a depth-first walk) whose merge adds the least.  Event sets
are bit sets, so a merge costs an OR and three popcounts.

Layers are ordered by how likely they are to change, least likely at the
base, so layers that survive an update keep their relative positions.

With previous builds (`layer-split --previous`), every previous layer whose
members are all still in the closure is kept as it was, in its old order, at
the base; only the new items are grouped, above them.
"""
import heapq
import sys
from dataclasses import dataclass, field

from ..graph import Closure
from ..records import DIGEST_RE
from .common import Indexed, Layer, index_closure

W_APP, W_LIB, W_SIB = 10, 2, 10
MERGED = "previous layers merged to fit the budget"
# Event bit sets are folded to this many bits on very large closures, so
# memory stays near (items x 2 KiB) however large the graph gets.
MAX_EVENT_BITS = 16384
WINDOW = 3  # depth-first neighbours that may merge, besides graph edges
NEIGHBOUR_CAP = 128  # candidates kept per group, so hubs (glibc) stay cheap
# Above this many items the model is replaced by layering by depth (below).
MODEL_LIMIT = 20000
TAR_OVERHEAD = 512  # an item costs at least its tar header


@dataclass
class Model:
    graph: Indexed
    touch: list[int]              # node -> bit set of events that replace it
    weights: dict[int, int]       # event mask -> weight, by class
    position: list[int]           # node -> index in the depth-first order

    def chance(self, events: int) -> int:
        return sum(w * (events & mask).bit_count() for mask, w in self.weights.items())


def _applications(graph: Indexed) -> tuple[list[int], list[int]]:
    """The applications: the roots and what they refer to directly (a profile
    and its packages, or an application and what it was built with)."""
    roots = [n for n, above in enumerate(graph.parents) if not above]
    apps = set(roots)
    for root in roots:
        apps.update(graph.children[root])
    return sorted(apps)


def build_model(graph: Indexed) -> Model:
    n = len(graph.paths)
    apps = _applications(graph)
    total = n + len(apps)
    fold = (lambda bit: bit % MAX_EVENT_BITS) if total > MAX_EVENT_BITS else (lambda bit: bit)
    position = [0] * n
    for at, node in enumerate(graph.leaves_first):
        position[node] = at
    app_set = set(apps)
    masks = {"app": 0, "lib": 0, "sib": 0}
    sibling = [0] * n  # node -> the bit of the swap that removes it, if any
    for j, members in enumerate(_exclusive_owner(graph, apps)):
        bit = 1 << fold(n + j)
        masks["sib"] |= bit
        for member in members or ():
            sibling[member] = bit
    touch = [0] * n
    for node in graph.leaves_first:  # references before referrers
        bit = 1 << fold(position[node])
        masks["app" if node in app_set else "lib"] |= bit
        events = bit | sibling[node]
        for kid in graph.children[node]:
            events |= touch[kid]
        touch[node] = events
    weights = {masks["app"] & ~masks["sib"]: W_APP, masks["lib"] & ~masks["app"] & ~masks["sib"]: W_LIB,
               masks["sib"]: W_SIB}
    return Model(graph, touch, weights, position)


def _exclusive_owner(graph: Indexed, apps: list[int]) -> list[list[int] | None]:
    """For each application, the items only it brings into the closure.  A root
    claims only itself: a profile brings in every package, and swapping one of
    them must not count as swapping the profile."""
    owners = [0] * len(graph.paths)  # node -> bit set of applications reaching it
    for j, app in enumerate(apps):
        owners[app] |= 1 << j
    for node in reversed(graph.leaves_first):  # referrers before references
        if graph.parents[node]:
            for kid in graph.children[node]:
                owners[kid] |= owners[node]
    exclusive: list[list[int] | None] = [None] * len(apps)
    for node, bits in enumerate(owners):
        if bits and bits & (bits - 1) == 0:
            j = bits.bit_length() - 1
            exclusive[j] = (exclusive[j] or []) + [node]
    return exclusive


@dataclass(order=True)
class Group:
    members: list[int] = field(compare=False)
    size: int = field(compare=False)
    events: int = field(compare=False)
    first: int = 0  # smallest depth-first position: a stable name for ties
    version: int = field(default=0, compare=False)


def _cost(model: Model, a: Group, b: Group) -> int:
    joined = (a.size + b.size) * model.chance(a.events | b.events)
    return joined - a.size * model.chance(a.events) - b.size * model.chance(b.events)


def group(model: Model, nodes: list[int], budget: int) -> list[list[int]]:
    """Merge NODES into at most BUDGET groups, cheapest merges first."""
    graph = model.graph
    owner = {node: node for node in nodes}
    groups = {node: Group([node], graph.sizes[node] + TAR_OVERHEAD, model.touch[node], model.position[node])
              for node in nodes}
    neighbours: dict[int, set[int]] = {node: set() for node in nodes}
    ordered = sorted(nodes, key=model.position.__getitem__)
    for node in nodes:
        neighbours[node].update(k for k in graph.children[node] if k in groups)
    for i, node in enumerate(ordered):
        neighbours[node].update(ordered[i + 1:i + 1 + WINDOW])
    for node in nodes:
        for other in list(neighbours[node]):
            neighbours[other].add(node)
    for node in nodes:
        neighbours[node] = _nearest(neighbours[node], model.position[node], model.position)
    heap = [_candidate(model, groups, a, b) for a in nodes for b in neighbours[a] if a < b]
    heapq.heapify(heap)
    while len(groups) > budget:
        if not heap:  # disconnected leftovers: let neighbours in depth-first order meet
            alive = sorted(groups.values())
            heap = [_candidate(model, groups, owner[x.members[0]], owner[y.members[0]])
                    for x, y in zip(alive, alive[1:])]
            heapq.heapify(heap)
        _, _, _, a, b, va, vb = heapq.heappop(heap)
        if a not in groups or b not in groups or (groups[a].version, groups[b].version) != (va, vb):
            continue  # stale: a side was merged since
        _merge(model, groups, neighbours, owner, heap, a, b)
    return [sorted(g.members) for g in sorted(groups.values(), key=lambda g: (model.chance(g.events), g.first))]


def _nearest(candidates: set[int], first: int, position) -> set[int]:
    """At most NEIGHBOUR_CAP candidates, the closest in depth-first order."""
    if len(candidates) <= NEIGHBOUR_CAP:
        return candidates
    return set(sorted(candidates, key=lambda k: (abs(position[k] - first), k))[:NEIGHBOUR_CAP])


def _candidate(model: Model, groups: dict, a: int, b: int) -> tuple:
    """A heap entry: cost first, then stable tie-breaks, then the groups' versions."""
    ga, gb = groups[a], groups[b]
    if ga.first > gb.first:
        a, b, ga, gb = b, a, gb, ga
    return (_cost(model, ga, gb), ga.first, gb.first, a, b, ga.version, gb.version)


def _merge(model, groups, neighbours, owner, heap, a: int, b: int) -> None:
    ga, gb = groups.pop(a), groups.pop(b)
    merged = Group(ga.members + gb.members, ga.size + gb.size, ga.events | gb.events, min(ga.first, gb.first),
                   max(ga.version, gb.version) + 1)
    key = a if ga.first < gb.first else b
    groups[key] = merged
    for member in gb.members + ga.members:
        owner[member] = key
    near = _nearest((neighbours.pop(a) | neighbours.pop(b)) - {a, b}, merged.first,
                    {k: g.first for k, g in groups.items()})
    neighbours[key] = near
    for other in near:
        neighbours[other].discard(a)
        neighbours[other].discard(b)
        neighbours[other].add(key)
        heapq.heappush(heap, _candidate(model, groups, key, other))


def split(closure: Closure, budget: int, previous: list[tuple[list[str], str | None]] = ()) -> list[Layer]:
    """Layers for CLOSURE within BUDGET, keeping the PREVIOUS layers (paths,
    digest) that still fit, base first."""
    graph = index_closure(closure)
    number = {path: i for i, path in enumerate(graph.paths)}
    kept = keep_previous(previous, number)
    room = budget - 1 if len(kept) < len(graph.paths) else budget
    if len(kept) > room:
        kept = _squeeze(kept, room)
    claimed = {n for layer, _ in kept for n in layer}
    rest = [n for n in range(len(graph.paths)) if n not in claimed]
    layers = [_kept_layer([graph.paths[n] for n in nodes], digest) for nodes, digest in kept]
    if rest and len(graph.paths) > MODEL_LIMIT:
        layers += [Layer([graph.paths[n] for n in nodes], reason="items of similar depth")
                   for nodes in by_depth(graph, rest, budget - len(kept))]
    elif rest:
        model = build_model(graph)
        layers += [Layer([graph.paths[n] for n in nodes], reason="items that change together")
                   for nodes in group(model, rest, budget - len(kept))]
    return layers


def by_depth(graph: Indexed, nodes: list[int], budget: int) -> list[list[int]]:
    """For very large closures: items ordered by depth (how long the longest
    chain of references below them is; deeper items change more often, since
    any change below them replaces them) and cut into BUDGET layers of about
    equal size, the roots always on top of their own.  Linear time."""
    depth = [0] * len(graph.paths)
    for node in graph.leaves_first:
        depth[node] = max((depth[k] + 1 for k in graph.children[node]), default=0)
    roots = sorted(n for n in nodes if not graph.parents[n])
    rest = sorted((n for n in nodes if graph.parents[n]), key=lambda n: (depth[n], graph.paths[n]))
    slots = max(1, budget - (1 if roots and rest else 0))
    total = sum(graph.sizes[n] + TAR_OVERHEAD for n in rest)
    layers: list[list[int]] = [[] for _ in range(slots)] if rest else []
    seen = 0
    for node in rest:
        layers[min(slots - 1, seen * slots // max(total, 1))].append(node)
        seen += graph.sizes[node] + TAR_OVERHEAD
    layers = [layer for layer in layers if layer]
    if roots:
        if len(layers) < budget:
            layers.append(roots)
        else:
            layers[-1] += roots
    return layers


def _kept_layer(paths: list[str], digest: str | None) -> Layer:
    if digest == MERGED:
        return Layer(paths, reason=MERGED)
    return Layer(paths, reason="kept from a previous build", **({"kept_from": digest} if digest else {}))


def keep_previous(previous, number: dict[str, int]) -> list[tuple[list[int], str | None]]:
    """Previous layers whose members are all in the closure and in no layer kept before."""
    kept, claimed = [], set()
    for paths, digest in previous:
        members = {number.get(p) for p in paths}
        if None in members or members & claimed or not members:
            continue
        kept.append((sorted(members), digest if digest and DIGEST_RE.fullmatch(digest) else None))
        claimed |= members
    return kept


def _squeeze(kept: list, room: int) -> list:
    """Merge the topmost kept layers until ROOM remain: only when unavoidable.
    With no room at all (a budget of one layer), nothing is kept."""
    if room < 1:
        sys.stderr.write(f"layer-split: a budget of one layer leaves no room to keep "
                         f"the {len(kept)} previous layers\n")
        return []
    sys.stderr.write(f"layer-split: {len(kept)} previous layers do not fit the budget; "
                     f"merging the top {len(kept) - room + 1} of them into one\n")
    top = sorted(n for nodes, _ in kept[room - 1:] for n in nodes)
    return kept[:room - 1] + [(top, MERGED)]
