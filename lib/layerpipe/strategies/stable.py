"""stable: layers chosen for the updates users make, and kept across builds.

The model (man/layer-split.1, STABLE).  Under input addressing a store item
gets a new path when it, or anything it refers to, changes.  We weigh three
classes of updates (CLASS_WEIGHT: application updates, the most common,
twice the others), each class's weight shared equally by its events:

- an *application* changes (a root, or an item a root refers to directly,
  e.g. a package in the profile): it and what refers to it are replaced;
- a *library* shared by two or more applications changes: it and all its
  dependents are replaced.  A library only one application brings in is
  left out: its change ships that application anyway, and the swap below
  already keeps it apart from what others use;
- a *sibling* image swaps one application for another: the items only that
  application brings in are not in the sibling, and what refers to them (the
  profile) differs.  A root brings in only itself here.

Each update is an event e with a set C_e of items it replaces.  A layer G is
shipped again whenever some member is in C_e, wasting size(G - C_e); the
floor is ideal(e) = size(C_e).  We minimise the expected waste relative to
the floor, sum_e P(e) * waste(e) / ideal(e), so that a small update that
ships a large layer counts as much as it hurts.  Summed over layers this is
sum_G size(G) * chance(G) minus a constant, where chance(G) is the sum of
P(e) / ideal(e) over the events that touch any member.  Event sets are bit
sets, so a group's chance costs an OR and one popcount per weight bucket.

The grouping: start from one layer per item (the ideal) and, while there are
more layers than the budget, merge the two neighbouring groups (an item and
what it refers to, or items next to each other in a depth-first walk) whose
merge adds the least (neighbours: an item and what it refers to, or items
at most WINDOW apart in a depth-first walk); then move single items to a neighbouring group while
that lowers the total (local search, a few passes).

Layers are ordered by how likely they are to change, least likely at the
base, so layers that survive an update keep their relative positions.

With previous builds (`layer-split --previous`), every previous layer whose
members are all still in the closure is kept as it was, in its old order, at
the base; only the new items are grouped, above them.
"""
import heapq
import math
import sys
from dataclasses import dataclass, field

from ..graph import Closure
from ..records import DIGEST_RE
from .common import Indexed, Layer, index_closure, set_bits

CLASS_WEIGHT = {"app": 2.0, "lib": 1.0, "sib": 1.0}  # application updates, the most common, twice
MAX_BUCKETS = 16
IDEAL_LIMIT = 2_000_000  # set bits summed to weigh events by their ideal
MERGED = "previous layers merged to fit the budget"
# Event bit sets are folded to this many bits on very large closures, so
# memory stays near (items x 2 KiB) however large the graph gets.
MAX_EVENT_BITS = 16384
WINDOW = 8  # depth-first neighbours that may merge, besides graph edges
NEIGHBOUR_CAP = 128  # candidates kept per group, so hubs (glibc) stay cheap
# Above this many items the model is replaced by layering by depth (below).
MODEL_LIMIT = 6000
TAR_OVERHEAD = 512  # an item costs at least its tar header
IMPROVE_PASSES = 8
IMPROVE_ALL = 50_000  # items x groups up to which every group is a move's candidate


@dataclass
class Model:
    graph: Indexed
    touch: list[int]              # node -> bit set of events that replace it
    weights: list[tuple[int, float]]  # (event mask, weight of each event in it)
    position: list[int]           # node -> index in the depth-first order

    def chance(self, events: int) -> float:
        return sum(w * (events & mask).bit_count() for mask, w in self.weights)


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
    kind: dict[int, str] = {}   # event bit -> class
    sibling = [0] * n  # node -> the bit of the swap that removes it, if any
    for j, members in enumerate(_exclusive_owner(graph, apps)):
        if members:
            bit = fold(n + j)
            kind[bit] = "sib"
            for member in members:
                sibling[member] = 1 << bit
    touch = [0] * n
    for node in graph.leaves_first:  # references before referrers
        events = sibling[node]
        if node in app_set or not sibling[node]:
            bit = fold(position[node])
            kind.setdefault(bit, "app" if node in app_set else "lib")
            events |= 1 << bit
        for kid in graph.children[node]:
            events |= touch[kid]
        touch[node] = events
    return Model(graph, touch, _weights(graph, touch, kind), position)


def _weights(graph: Indexed, touch: list[int], kind: dict[int, str]) -> list[tuple[int, float]]:
    """Each event's weight: its class's share over its ideal (the bytes it
    replaces).  Events of similar weight share a bucket (at most MAX_BUCKETS,
    none wider than needed, at least 1/8 octave) weighing their mean, so
    that a group's chance costs one popcount per bucket.
    On graphs too large to sum every event's ideal, the class share alone."""
    count = dict.fromkeys(CLASS_WEIGHT, 0)
    for c in kind.values():
        count[c] += 1
    ideal = dict.fromkeys(kind, 1)
    if sum(t.bit_count() for t in touch) <= IDEAL_LIMIT:
        for node, events in enumerate(touch):
            size = graph.sizes[node] + TAR_OVERHEAD
            for bit in set_bits(events):
                ideal[bit] += size
    weight = {bit: CLASS_WEIGHT[c] / count[c] / ideal[bit] for bit, c in kind.items()}
    if not weight:
        return []
    low, high = math.log2(min(weight.values())), math.log2(max(weight.values()))
    width = max((high - low) / MAX_BUCKETS, 1 / 8) * (1 + 1e-9)
    buckets: dict[int, list[int]] = {}
    for bit, w in weight.items():
        buckets.setdefault(int((math.log2(w) - low) / width), []).append(bit)
    return [(sum(1 << bit for bit in bits), sum(weight[bit] for bit in bits) / len(bits))
            for _, bits in sorted(buckets.items())]


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
    cost: float = field(default=-1.0, compare=False)  # size * chance, set on first use


def _cost(model: Model, a: Group, b: Group) -> float:
    for g in (a, b):
        if g.cost < 0:
            g.cost = g.size * model.chance(g.events)
    return (a.size + b.size) * model.chance(a.events | b.events) - a.cost - b.cost


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
        neighbours[node] = _nearest(neighbours[node], model.position[node], model.position.__getitem__)
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
    result = improve(model, [g.members for g in groups.values()])
    return [sorted(g.members) for g in sorted(result, key=lambda g: (model.chance(g.events), g.first))]


@dataclass
class Bag:
    """A group under local search: its members, and what its cost needs."""
    members: list[int]
    events: int
    size: int
    cost: float
    first: int


def _bag(model: Model, members: list[int]) -> Bag:
    events = 0
    for node in members:
        events |= model.touch[node]
    size = sum(model.graph.sizes[n] + TAR_OVERHEAD for n in members)
    return Bag(members, events, size, size * model.chance(events), min(map(model.position.__getitem__, members)))


def improve(model: Model, groups: list[list[int]]) -> list[Bag]:
    """Local search: move single items to the group where the total cost
    drops most, until no move helps or IMPROVE_PASSES passes are done.  On
    small closures every group is a candidate; on larger ones, the groups of
    the item's references and referrers."""
    bags = [_bag(model, sorted(g, key=model.position.__getitem__)) for g in groups]
    where = {node: i for i, bag in enumerate(bags) for node in bag.members}
    graph, touch = model.graph, model.touch
    everywhere = len(where) * len(bags) <= IMPROVE_ALL
    for _ in range(IMPROVE_PASSES):
        moved = False
        for a in range(len(bags)):
            i, stale = 0, True
            while i < len(bags[a].members) and len(bags[a].members) > 1:
                bag = bags[a]
                members = bag.members
                if stale:  # the events of members[:i] and of members[j:], to take one out in O(1)
                    before, after = 0, [0] * (len(members) + 1)
                    for j in range(len(members) - 1, -1, -1):
                        after[j] = after[j + 1] | touch[members[j]]
                    for j in range(i):
                        before |= touch[members[j]]
                    stale = False
                node = members[i]
                size = graph.sizes[node] + TAR_OVERHEAD
                gain = bag.cost - (bag.size - size) * model.chance(before | after[i + 1])
                targets = range(len(bags)) if everywhere else sorted(
                    {where[k] for k in graph.children[node] + graph.parents[node] if k in where})
                best = None
                for b in targets:
                    other = bags[b]
                    if b != a:
                        added = (other.size + size) * model.chance(other.events | touch[node]) - other.cost
                        if gain - added > 1e-9 * bag.cost and (best is None or added < best[1]):
                            best = (b, added)
                if best is None:
                    before |= touch[node]
                    i += 1
                    continue
                b = best[0]
                bags[b] = _bag(model, bags[b].members + [node])
                bags[a] = _bag(model, members[:i] + members[i + 1:])
                where[node] = b
                moved = stale = True
        if not moved:
            break
    return bags


def _nearest(candidates: set[int], first: int, position) -> set[int]:
    """At most NEIGHBOUR_CAP candidates, the closest in depth-first order."""
    if len(candidates) <= NEIGHBOUR_CAP:
        return candidates
    return set(sorted(candidates, key=lambda k: (abs(position(k) - first), k))[:NEIGHBOUR_CAP])


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
    near = _nearest({k for k in neighbours.pop(a) | neighbours.pop(b) if k in groups and k != key}, merged.first,
                    lambda k: groups[k].first)
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
