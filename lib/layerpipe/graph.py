"""The closure as layer-split sees it: store paths, references, sizes, roots."""
from dataclasses import dataclass, field

from .errors import LayerpipeError
from .records import Record, need, need_size, need_store_path


@dataclass
class Closure:
    references: dict[str, list[str]] = field(default_factory=dict)
    nar_size: dict[str, int] = field(default_factory=dict)
    roots: list[str] = field(default_factory=list)

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
    """Build the closure from path records; roots as marked, else unreferenced items."""
    closure = Closure()
    marked, where, store_dir = [], {}, None
    for rec in records:
        path = need_store_path(rec, need(rec, "path", str), "path")
        store_dir = store_dir or path.rpartition("/")[0]
        if path.rpartition("/")[0] != store_dir:  # one image, one store
            raise LayerpipeError(f"{path}: outside the store directory {store_dir}", rec.where)
        if path in closure.references:
            raise LayerpipeError(f"{path}: duplicate path record (first at {where[path]})", rec.where)
        where[path] = rec.where
        refs = need(rec, "references", list, optional=True, default=[])
        if not all(isinstance(r, str) for r in refs):
            raise LayerpipeError("path record field 'references' must be a list of strings", rec.where)
        closure.references[path] = sorted(set(refs))
        size = need_size(rec, "narSize", optional=True)
        closure.nar_size[path] = size if size is not None else 0
        if need(rec, "root", bool, optional=True, default=False):
            marked.append(path)
    for path, refs in closure.references.items():
        for ref in refs:  # a reference with a path record is well-formed already
            if ref not in closure.references:
                need_store_path(Record({"type": "path"}, where[path]), ref, "'references' entry")
                raise LayerpipeError(f"{path} refers to {ref}, which has no path record", where[path])
    referrers = closure.referrers()
    closure.roots = sorted(marked) or [p for p in closure.paths if not referrers[p]]
    return closure
