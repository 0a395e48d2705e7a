"""The closure as layer-split sees it: store paths, references, sizes, roots."""
from dataclasses import dataclass, field
from itertools import repeat
from typing import Iterable

from .errors import LayerpipeError
from .records import Record, need, need_size, need_store_path


@dataclass
class Closure:
    references: dict[str, list[str]] = field(default_factory=dict)
    nar_size: dict[str, int] = field(default_factory=dict)
    roots: list[str] = field(default_factory=list)
    # Set by closure_from_records, which maps every reference anyway: each
    # path's references (of `paths`, by index) without itself, sorted.
    # strategies.common.index_closure takes it instead of mapping them again.
    numbered: list[list[int]] | None = field(default=None, repr=False, compare=False)

    @property
    def paths(self) -> list[str]:
        return sorted(self.references)

    def referrers(self) -> dict[str, list[str]]:
        """Who refers to each path (self-references left out)."""
        result: dict[str, list[str]] = {p: [] for p in self.references}
        for path, refs in self.references.items():
            for ref in refs:
                if ref != path:
                    result[ref].append(path)
        return result


def closure_from_records(records: list[Record]) -> Closure:
    """Build the closure from path records; roots as marked, else unreferenced items.

    Runs once per record and once per reference on graphs of 100,000 paths,
    so the per-reference work (type checks, dedup, the closed-world check,
    numbering, referrers) is done by C loops: map, set, sorted."""
    closure = Closure()
    references, nar_size = closure.references, closure.nar_size
    marked, where, selfish, store_dir = [], {}, [], None
    for rec in records:
        path = need_store_path(rec, need(rec, "path", str), "path")
        store_dir = store_dir or path.rpartition("/")[0]
        if path.rpartition("/")[0] != store_dir:  # one image, one store
            raise LayerpipeError(f"{path}: outside the store directory {store_dir}", rec.where)
        if path in references:
            raise LayerpipeError(f"{path}: duplicate path record (first at {where[path]})", rec.where)
        where[path] = rec.where
        refs = rec.data.get("references")
        if refs is None or not isinstance(refs, list) or not all(map(isinstance, refs, repeat(str))):
            refs = need(rec, "references", list, optional=True, default=[])
            if refs:
                raise LayerpipeError("path record field 'references' must be a list of strings", rec.where)
        unique = set(refs)
        references[path] = sorted(unique)
        if path in unique:
            selfish.append(path)
        size = need_size(rec, "narSize", optional=True)
        nar_size[path] = size if size is not None else 0
        if rec.data.get("root") is not None and need(rec, "root", bool, optional=True, default=False):
            marked.append(path)
    paths = sorted(references)
    number = dict(zip(paths, range(len(paths))))
    try:  # sorted paths, sorted references: the indexes come out sorted
        numbered = [list(map(number.__getitem__, references[path])) for path in paths]
    except KeyError:
        _stray_reference(references, where)   # raises
        raise
    for path in selfish:
        numbered[number[path]].remove(number[path])
    closure.numbered = numbered
    if marked:
        closure.roots = sorted(marked)
    else:
        referenced = set().union(*numbered)
        closure.roots = [path for node, path in enumerate(paths) if node not in referenced]
    return closure


def _stray_reference(references: dict[str, list[str]], where: dict[str, str]) -> None:
    """Raise for the first reference (in input order) that has no path record."""
    for path, refs in references.items():
        for ref in refs:  # a reference with a path record is well-formed already
            if ref not in references:
                need_store_path(Record({"type": "path"}, where[path]), ref, "'references' entry")
                raise LayerpipeError(f"{path} refers to {ref}, which has no path record", where[path])


def leaves_first(children: list[list[int]], starts: Iterable[int]) -> tuple[list[int], list[int]]:
    """Depth-first post-order of the nodes reachable from STARTS (each after
    the nodes it refers to), and the first cycle met: the walk from a node
    back to it, that node at both ends ([] if none; the order is then cut
    short).  A node referring to itself is no cycle."""
    state = bytearray(len(children))   # 0 not seen, 1 on the current walk, 2 placed
    order: list[int] = []
    for start in starts:
        if state[start]:
            continue
        state[start] = 1
        walk = [(start, iter(children[start]))]
        while walk:
            node, kids = walk[-1]
            for kid in kids:
                seen = state[kid]
                if not seen:
                    state[kid] = 1
                    walk.append((kid, iter(children[kid])))
                    break
                if seen == 1 and kid != node:
                    on_walk = [n for n, _ in walk]
                    return order, on_walk[on_walk.index(kid):] + [kid]
            else:
                walk.pop()
                state[node] = 2
                order.append(node)
    return order, []
