"""Layering strategies: each maps a Closure and a store-layer budget to layers.

A strategy is a function `split(closure, budget) -> list[list[str]]` that
returns at most BUDGET non-empty layers, base first, every store path in
exactly one layer; a layer may be a common.Layer, which also says why it
exists.  `stable` takes a third argument, the previous build's layers
(paths, digest).  Register new ones in STRATEGIES.

- single: everything in one layer.
- two-layer: the roots and what they refer to on top of everything else.
- size: the largest items alone, as `guix pack --max-layers`.
- popularity: the most popular paths alone, as nixpkgs' referencesByPopularity.
- auto: the largest paths lead layers of what only they need, as nixpkgs' auto-layer.
- stable: groups what changes together, and keeps the layers of previous builds.
"""
from typing import Callable

from ..graph import Closure
from . import auto, popularity, single, size, stable, two_layer

Strategy = Callable[[Closure, int], list[list[str]]]

STRATEGIES: dict[str, Strategy] = {
    "single": single.split,
    "two-layer": two_layer.split,
    "size": size.split,
    "popularity": popularity.split,
    "auto": auto.split,
    "stable": stable.split,
}
DEFAULT = "stable"
