"""auto: the largest store paths lead layers, as nixpkgs' auto-layer.

The rule of nixpkgs' pkgs/build-support/docker/auto-layer.py, the default of
streamLayeredImage since 2025, in our own code.  Closures hold a few large
paths and many small ones; to share bytes with other images the large ones
should sit in layers of their own, and whatever only a large path needs can
go with it, since anything that uses the large path needs those too.

What it does, exactly:
1. Candidates are taken largest narSize first.  Each in turn becomes a
   "primary".
2. Every path gets a label.  A primary's label is itself.  Any other path's
   label is the set of primaries that depend on it (directly or not), minus
   each primary that depends on another primary of that set: with python
   and an application using it both primaries, what python needs is
   labelled {python}, not {python, application}.  Paths no primary depends
   on share the empty label.
3. Paths with the same label form one layer.  When a new primary would make
   more than BUDGET layers, it is dropped and the choosing stops there;
   smaller candidates are not tried (nixpkgs stops the same way).
4. Layers go base first by the narSize total of their closure (their paths
   and everything those refer to), so a layer tends to come after the layers
   it depends on.

Choices where nixpkgs leaves it open:
- Equal narSize: store path order.  nixpkgs takes the last of equal sizes in
  the order of its input graph.
- Equal closure totals (zero-size paths): fewer paths in the closure first,
  then the layer holding the smallest store path.  nixpkgs leaves it to set
  iteration order.
- A reference cycle, which Nix and Guix cannot produce, is refused.

nixpkgs recomputes every label and copies its whole map for each new primary
(quadratic); here a new primary only touches the paths below it, and the
layer count is updated from the labels that change.
"""
from ..graph import Closure
from .common import Indexed, Layer, descendants, index_closure, set_bits

Label = frozenset


def split(closure: Closure, budget: int) -> list[list[str]]:
    graph = index_closure(closure)
    groups: dict[Label, list[int]] = {}
    for node, label in enumerate(_labels(graph, max(budget, 1))):
        groups.setdefault(label, []).append(node)
    labels, layers = list(groups), list(groups.values())
    return [_explained(graph, labels[i], layers[i]) for i in _base_first(graph, layers)]


def _explained(graph: Indexed, label: Label, nodes: list[int]) -> Layer:
    paths = [graph.paths[node] for node in nodes]
    if len(label) == 1:
        primary = graph.paths[next(iter(label))]
        return Layer(paths, reason="a primary and what only it needs", primary=primary)
    if label:
        return Layer(paths, reason=f"needed by {len(label)} primaries together")
    return Layer(paths, reason="needed by no primary")


def _labels(graph: Indexed, budget: int) -> list[Label]:
    """Each path's label once the primaries are chosen (steps 1 to 3)."""
    label = [Label()] * len(graph.paths)
    tally = {Label(): len(graph.paths)}      # label -> how many paths carry it
    needs: dict[int, set[int]] = {}          # primary -> the paths it depends on
    for primary in sorted(range(len(graph.paths)), key=lambda node: -graph.sizes[node]):
        below = descendants(graph, primary)
        change = {primary: Label((primary,))}
        relabel: dict[Label, Label] = {}   # the new label depends on the old one only
        for node in below:
            old = label[node]
            new = relabel.get(old)
            if new is None:
                new = relabel[old] = _relabel(old, primary, below, needs)
            if new != old:
                change[node] = new
        if _count_after(tally, label, change) > budget:
            break
        for node, new in change.items():
            old = label[node]
            tally[old] -= 1
            if not tally[old]:
                del tally[old]
            tally[new] = tally.get(new, 0) + 1
            label[node] = new
        needs[primary] = below
    return label


def _relabel(old: Label, primary: int, below: set[int], needs: dict[int, set[int]]) -> Label:
    """The label of a path below PRIMARY once PRIMARY is a primary too."""
    new = Label(q for q in old if primary not in needs[q])  # they now reach it through PRIMARY
    if any(q in below for q in new):                        # a nearer primary holds it
        return new
    return new | {primary}


def _count_after(tally: dict[Label, int], label: list[Label], change: dict[int, Label]) -> int:
    """How many distinct labels there would be after CHANGE."""
    delta: dict[Label, int] = {}
    for node, new in change.items():
        delta[label[node]] = delta.get(label[node], 0) - 1
        delta[new] = delta.get(new, 0) + 1
    count = len(tally)
    for key, moved in delta.items():
        before = tally.get(key, 0)
        count += (before + moved > 0) - (before > 0)
    return count


def _base_first(graph: Indexed, layers: list[list[int]]) -> list[int]:
    """Layer indexes by closure total, count of paths in it, then smallest path."""
    home = [0] * len(graph.paths)
    for index, members in enumerate(layers):
        for node in members:
            home[node] = index
    inside = [0] * len(graph.paths)   # bit set: the layers whose closure holds the path
    for node in reversed(graph.leaves_first):
        bits = 1 << home[node]
        for parent in graph.parents[node]:
            bits |= inside[parent]
        inside[node] = bits
    by_bits: dict[int, list[int]] = {}
    for node, bits in enumerate(inside):
        entry = by_bits.setdefault(bits, [0, 0])
        entry[0] += graph.sizes[node]
        entry[1] += 1
    total, count = [0] * len(layers), [0] * len(layers)
    for bits, (size, paths) in by_bits.items():
        for index in set_bits(bits):
            total[index] += size
            count[index] += paths
    return sorted(range(len(layers)), key=lambda i: (total[i], count[i], min(layers[i])))
