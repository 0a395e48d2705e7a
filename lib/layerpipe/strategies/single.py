"""single: the whole closure in one layer, as `guix pack -f docker` once did."""
from ..graph import Closure
from .common import Layer


def split(closure: Closure, budget: int) -> list[list[str]]:
    return [Layer(closure.paths, reason="the whole closure")]
