"""closure-read: a closure description in, one `path` record per store item out.

Reads the formats in graph_formats (auto-detected), checks the closure as a
whole (well-formed store paths in one store dir, every reference inside the
closure, no conflicting duplicates, no cycles), fills in narSize from disk
where the input lacks it, marks roots (items no other item refers to), and
writes the header and the path records sorted by path.
"""
import os
import sys
from itertools import repeat
from typing import IO

import typer

from . import cli, graph_formats
from .errors import LayerpipeError, UsageError
from .graph_formats import PathInfo
from .nar import nar_size
from .graph import leaves_first, referred_to
from .records import RecordWriter, Header, paused_gc
from .storepath import check_store_dir, path_pattern, split_store_path

PROG = "closure-read"


def read_entries(stream: IO[bytes], name: str, fmt: str, attr: str | None) -> list[PathInfo]:
    kind = fmt if fmt != "auto" else graph_formats.detect(stream.peek(4096))
    if kind == "text":
        return list(graph_formats.read_text(stream, name))
    return list(graph_formats.read_json(stream.read(), name, fmt, attr))


def _store_dir(entries: list[PathInfo], given: str | None) -> str:
    if given:
        return check_store_dir(given)
    try:
        return split_store_path(entries[0].path)[0]
    except LayerpipeError as exc:
        raise LayerpipeError(exc.message, entries[0].where) from None


def merge(entries: list[PathInfo], store_dir: str) -> dict[str, PathInfo]:
    """Check each entry's syntax and fold identical duplicates; refuse conflicts."""
    closure: dict[str, PathInfo] = {}
    for entry in entries:
        _check_path(entry.path, store_dir, entry.where)
        if entry.deriver:
            _check_path(entry.deriver, store_dir, entry.where)
        # References are checked in check_closed: one that is in the closure
        # is a well-formed path already, so only strays need the syntax check.
        refs = dict(entry.references)
        if not all(map(str.startswith, refs, repeat("/"))):
            refs = {ref if ref.startswith("/") else f"{store_dir}/{ref}": where
                    for ref, where in entry.references}
        entry.references = refs
        seen = closure.get(entry.path)
        if seen is None:
            closure[entry.path] = entry
            continue
        conflict = _conflict(seen, entry)
        if conflict:
            raise LayerpipeError(f"{entry.path} listed again with different {conflict} (first at {seen.where})",
                                 entry.where)
        seen.narSize = seen.narSize if seen.narSize is not None else entry.narSize
        seen.narHash = seen.narHash or entry.narHash
    return closure


def _check_path(path: str, store_dir: str, where: str) -> str:
    if path_pattern(store_dir).fullmatch(path):
        return path
    try:
        found = split_store_path(path)[0]
    except LayerpipeError as exc:
        raise LayerpipeError(exc.message, where) from None
    if found != store_dir:
        raise LayerpipeError(f"{path}: outside the store directory {store_dir}", where)
    return path


def _conflict(a: PathInfo, b: PathInfo) -> str | None:
    if set(a.references) != set(b.references):
        return "references"
    if None not in (a.narSize, b.narSize) and a.narSize != b.narSize:
        return "narSize"
    if None not in (a.narHash, b.narHash) and a.narHash != b.narHash:
        return "narHash"
    return None


def check_closed(closure: dict[str, PathInfo]) -> None:
    """Every reference names an item of the closure; no cycles but self-references."""
    number = {path: i for i, path in enumerate(closure)}
    try:  # per reference in C; on a failure, the slow way below finds what to say
        children = [list(map(number.__getitem__, entry.references)) for entry in closure.values()]
    except KeyError:
        _check_refs(closure)   # raises
        raise
    if leaves_first(children, range(len(children)))[1]:
        _check_acyclic(closure)   # says which items lie on or above a cycle


def _check_refs(closure: dict[str, PathInfo]) -> None:
    store_dir = next(iter(closure)).rpartition("/")[0]
    for entry in closure.values():
        for ref, where in entry.references.items():
            if ref not in closure:
                _check_path(ref, store_dir, where)
                raise LayerpipeError(f"{entry.path} refers to {ref}, which is not in the closure", where)


def _check_acyclic(closure: dict[str, PathInfo]) -> None:
    # Kahn's algorithm on integers: whatever never gets to in-degree 0 lies on a cycle.
    number = {path: i for i, path in enumerate(closure)}
    referrers: list[list[int]] = [[] for _ in number]
    pending = [0] * len(number)
    for path, entry in closure.items():
        me = number[path]
        for ref in entry.references:
            other = number[ref]
            if other != me:
                referrers[other].append(me)
                pending[me] += 1
    ready = [i for i, n in enumerate(pending) if n == 0]
    while ready:
        for referrer in referrers[ready.pop()]:
            pending[referrer] -= 1
            if pending[referrer] == 0:
                ready.append(referrer)
    paths = list(closure)
    cyclic = sorted(paths[i] for i, n in enumerate(pending) if n > 0)
    if cyclic:
        raise LayerpipeError(f"reference cycle among {len(cyclic)} items, e.g. {cyclic[0]}",
                             closure[cyclic[0]].where)


def fill_nar_sizes(closure: dict[str, PathInfo], root: str) -> None:
    for entry in closure.values():
        if entry.narSize is None:
            fs_path = os.path.join(root, entry.path.lstrip("/"))
            if not os.path.lexists(fs_path):
                raise LayerpipeError(f"{entry.path}: no such store item (looked in {root}; narSize "
                                     "is not in the input, so it is computed from disk)", entry.where)
            entry.narSize = nar_size(fs_path)


def path_records(closure: dict[str, PathInfo]):
    referenced = referred_to({path: entry.references for path, entry in closure.items()})
    for path in sorted(closure):
        entry = closure[path]
        rec = {"type": "path", "path": path, "narSize": entry.narSize}
        if entry.narHash:
            rec["narHash"] = entry.narHash
        rec["references"] = sorted(entry.references)
        rec["root"] = path not in referenced
        if entry.deriver:
            rec["deriver"] = entry.deriver
        yield rec


@paused_gc()
def closure_read(stream: IO[bytes], name: str, out: IO[bytes], *, root: str = "/",
                 fmt: str = "auto", attr: str | None = None, store_dir: str | None = None) -> None:
    entries = read_entries(stream, name, fmt, attr)
    if not entries:
        raise LayerpipeError("no store paths in the input", name)
    store_dir = _store_dir(entries, store_dir)
    closure = merge(entries, store_dir)
    check_closed(closure)
    fill_nar_sizes(closure, root)
    writer = RecordWriter(out)
    writer.write(Header(extra={"store_dir": store_dir}).with_stage(PROG))
    for rec in path_records(closure):
        writer.write(rec)


app = cli.make_app("Read a closure (reference graph or Nix JSON) and write one path record per store item.")


@app.command(epilog=cli.examples(
    "closure-read graph.refs | layer-split | layer-tar | image-assemble -o app.tar",
    "nix path-info --json -r ./result | closure-read | jq -c '{path, narSize}'",
    "closure-read --root /mnt/sysroot graph.refs > closure.ndjson",
))
def main(
    input: str = typer.Argument("-", metavar="INPUT", help="Closure file; '-' reads stdin."),
    root: str = typer.Option("/", "--root", metavar="DIR", help="Directory the store lives under (for narSize from disk)."),
    format: str = typer.Option("auto", "--format", metavar="FORMAT", help="Input format: auto, text, json-list, json-object, structured-attrs."),
    attr: str = typer.Option(None, "--attr", metavar="NAME", help="In structured-attrs JSON: the attribute holding the graph."),
    store_dir: str = typer.Option(None, "--store-dir", metavar="DIR", help="Expected store directory (default: that of the first path)."),
) -> None:
    """Read a closure and write path records (NDJSON) to stdout.

    Formats: the references-graph text format of Guix and Nix, and the JSON of
    `nix path-info --json -r` (list or object form) and of structured-attrs
    exportReferencesGraph; auto-detected.
    """
    def body():
        if format not in graph_formats.FORMATS:
            raise UsageError(f"--format must be one of {', '.join(graph_formats.FORMATS)}")
        stream, name = cli.open_input(input)
        closure_read(stream, name, sys.stdout.buffer, root=root, fmt=format, attr=attr, store_dir=store_dir)
    cli.guard(PROG, body)


def run() -> None:
    cli.run_app(app, PROG)
