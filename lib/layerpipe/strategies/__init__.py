"""Layering strategies: each maps a Closure and a store-layer budget to layers.

A strategy is a function `split(closure, budget) -> list[list[str]]` that
returns at most BUDGET non-empty layers, base first, every store path in
exactly one layer.  Register new ones in STRATEGIES.
"""
from typing import Callable

from ..graph import Closure
from . import single, two_layer

Strategy = Callable[[Closure, int], list[list[str]]]

STRATEGIES: dict[str, Strategy] = {
    "single": single.split,
    "two-layer": two_layer.split,
}
DEFAULT = "two-layer"
