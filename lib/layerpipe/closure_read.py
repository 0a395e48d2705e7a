"""closure-read: a closure description in, one `path` record per store item out.

Reads the formats in graph_formats (auto-detected), checks the closure as a
whole (well-formed store paths in one store dir, every reference inside the
closure, no conflicting duplicates, no cycles), fills in narSize from disk
where the input lacks it, marks roots (items no other item refers to), and
writes the header and the path records sorted by path.

With --scan the references come from the items' bytes instead (scan.py): the
only way to read a plain list of store paths.  With --roots the input names
only the roots, and the closure is what scanning finds from them among the
items of the store directory.
"""
import io
import os
import sys
from contextlib import closing
from itertools import repeat
from typing import IO

import typer

from . import cli, graph_formats, scan
from .errors import LayerpipeError, UsageError
from .graph_formats import PathInfo
from .nar import nar_size
from .graph import leaves_first
from .records import RecordWriter, Header, paused_gc
from .storepath import check_store_dir, path_pattern, split_store_path

PROG = "closure-read"


def read_entries(stream: IO[bytes], name: str, fmt: str, attr: str | None) -> tuple[list[PathInfo], str]:
    """The entries of the input and the format they were read in."""
    head, kind = graph_formats.sniff(stream)
    kind = kind if fmt == "auto" else fmt
    lines = [*head, *stream] if kind in graph_formats.LINE_FORMATS else []
    if kind == "paths":
        return list(graph_formats.read_paths(lines, name)), kind
    if kind in ("text", "registration"):
        return list(graph_formats.read_text(lines, name, kind == "registration")), kind
    return list(graph_formats.read_json(b"".join(head) + stream.read(), name, fmt, attr)), kind


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


def check_closed(closure: dict[str, PathInfo]) -> set[str]:
    """Every reference names an item of the closure; no cycles but
    self-references.  Returns the paths another path refers to."""
    paths = list(closure)
    number = dict(zip(paths, range(len(paths))))
    try:  # per reference in C; on a failure, the slow way below finds what to say
        children = [list(map(number.__getitem__, entry.references)) for entry in closure.values()]
    except KeyError:
        _check_refs(closure)   # raises
        raise
    for path, entry in closure.items():
        if path in entry.references:
            children[number[path]].remove(number[path])
    if leaves_first(children, range(len(children)))[1]:
        _check_acyclic(closure)   # says which items lie on or above a cycle
    return {paths[node] for node in set().union(*children)}


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


def scan_references(closure: dict[str, PathInfo], root: str, scanner: scan.Scanner,
                    progress: cli.Progress) -> None:
    """Set each entry's references to what SCANNER finds in its bytes.  Needs
    narSize: the progress bar counts it, as more than the files' bytes."""
    paths = sorted(closure)
    fs_paths = [_on_disk(closure[p], root, "scanning reads every item") for p in paths]
    sizes = [closure[p].narSize for p in paths]
    start = progress.done
    found = scanner.references(paths, fs_paths, progress.advance, sizes)
    progress.advance(start + sum(sizes) - progress.done)
    for path in paths:
        closure[path].references = dict.fromkeys(sorted(found[path]), closure[path].where)


def _hash_parts(closure: dict[str, PathInfo]) -> dict[bytes, str]:
    parts: dict[bytes, str] = {}
    for path, entry in closure.items():
        part = split_store_path(path)[1].encode()
        if part in parts:
            raise LayerpipeError(f"{path} and {parts[part]} have the same hash part: scanning cannot tell "
                                 "references to them apart", entry.where)
        parts[part] = path
    return parts


def closure_of_roots(roots: dict[str, PathInfo], store_dir: str, root: str, jobs: int = 0,
                     quiet: bool = False) -> dict[str, PathInfo]:
    """The closure of ROOTS: what scanning finds, among the items of the store
    directory, from the roots, from what they refer to, and so on."""
    store_fs = os.path.join(root, store_dir.lstrip("/"))
    try:
        listing = scan.store_listing(store_fs, store_dir)
    except OSError as exc:
        raise LayerpipeError(f"cannot list the store directory: {exc.strerror}", store_fs) from None
    closure, pending, expected = dict(roots), dict(roots), 0
    progress = cli.Progress(f"{PROG}: scanning", 0, quiet)
    with scan.Scanner(listing, jobs) as scanner, closing(progress):
        while pending:
            fill_nar_sizes(pending, root)
            expected += sum(e.narSize for e in pending.values())
            progress.total = expected  # grows as items are found
            scan_references(pending, root, scanner, progress)
            found = {}
            for entry in pending.values():
                for ref in entry.references:
                    if ref not in closure and ref not in found:
                        found[ref] = PathInfo(ref, {}, f"{entry.where}: {entry.path} refers to it")
            closure.update(found)
            pending = found
    return closure



def _on_disk(entry: PathInfo, root: str, why: str) -> str:
    fs_path = os.path.join(root, entry.path.lstrip("/"))
    if not os.path.lexists(fs_path):
        raise LayerpipeError(f"{entry.path}: no such store item (looked in {root}; {why})", entry.where)
    return fs_path


def fill_nar_sizes(closure: dict[str, PathInfo], root: str) -> None:
    for entry in closure.values():
        if entry.narSize is None:
            why = "narSize is not in the input, so it is computed from disk"
            entry.narSize = nar_size(_on_disk(entry, root, why))


def path_records(closure: dict[str, PathInfo], referenced: set[str]):
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
                 fmt: str = "auto", attr: str | None = None, store_dir: str | None = None,
                 scan_refs: bool = False, roots: bool = False, jobs: int = 0, quiet: bool = False) -> None:
    if roots:
        entries, kind = list(graph_formats.read_paths(stream, name)), "paths"
    else:
        entries, kind = read_entries(stream, name, fmt, attr)
    if not entries:
        raise LayerpipeError("no store paths in the input", name)
    store_dir = _store_dir(entries, store_dir)
    closure = merge(entries, store_dir)
    if roots:
        closure = closure_of_roots(closure, store_dir, root, jobs, quiet)
    elif scan_refs:
        candidates = _hash_parts(closure)  # refuse twins before reading the disk
        fill_nar_sizes(closure, root)
        progress = cli.Progress(f"{PROG}: scanning", sum(e.narSize for e in closure.values()), quiet)
        with scan.Scanner(candidates, jobs) as scanner, closing(progress):
            scan_references(closure, root, scanner, progress)
    elif kind == "paths":
        raise LayerpipeError("a list of store paths has no references: add --scan to find them in the items "
                             "(under --root), or give a reference graph", name)
    referenced = check_closed(closure)
    fill_nar_sizes(closure, root)
    writer = RecordWriter(out)
    writer.write(Header(extra={"store_dir": store_dir}).with_stage(PROG))
    for rec in path_records(closure, referenced):
        writer.write(rec)


app = cli.make_app("Read a closure (reference graph, registration, path list or Nix JSON) "
                   "and write one path record per store item.")


@app.command(epilog=cli.examples(
    "closure-read graph.refs | layer-split | layer-tar | image-assemble -o app.tar",
    "nix path-info --json -r ./result | closure-read | jq -c '{path, narSize}'",
    "guix gc -R /gnu/store/...-profile | closure-read --scan | layer-split | ...",
    "closure-read --roots ./result > closure.ndjson",
    "closure-read --root /mnt/sysroot graph.refs > closure.ndjson",
))
def main(
    input: str = typer.Argument("-", metavar="INPUT", help="Closure file; '-' reads stdin."),
    root: str = typer.Option("/", "--root", metavar="DIR", help="Directory the store lives under (for narSize from disk, and scanning)."),
    format: str = typer.Option("auto", "--format", metavar="FORMAT", help="Input format: auto, text, registration, paths, json-list, json-object, structured-attrs."),
    attr: str = typer.Option(None, "--attr", metavar="NAME", help="In structured-attrs JSON: the attribute holding the graph."),
    store_dir: str = typer.Option(None, "--store-dir", metavar="DIR", help="Expected store directory (default: that of the first path)."),
    scan_: bool = typer.Option(False, "--scan", help="Find references by scanning the items' bytes for hash parts (needed for a list of paths)."),
    roots: bool = typer.Option(False, "--roots", help="INPUT lists roots (or is a store item, or a link to one): scan for their closure in the store directory."),
    jobs: int = typer.Option(0, "--jobs", "-j", metavar="N", help="Processes that scan at once (default: the CPUs this process may use)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar, even on a terminal."),
) -> None:
    """Read a closure and write path records (NDJSON) to stdout.

    Formats: the references-graph text format of Guix and Nix, the
    registration of `nix-store --dump-db` and closureInfo, a list of store
    paths (with --scan), and the JSON of `nix path-info --json -r` (list or
    object form) and of structured-attrs exportReferencesGraph; auto-detected.
    """
    def body():
        if format not in graph_formats.FORMATS:
            raise UsageError(f"--format must be one of {', '.join(graph_formats.FORMATS)}")
        if roots and format not in ("auto", "paths"):
            raise UsageError("--roots reads a list of store paths: --format must be auto or paths")
        if jobs < 0:
            raise UsageError("--jobs must be 0 (all CPUs) or more")
        stream, name = _roots_input(input) if roots else cli.open_input(input)
        closure_read(stream, name, sys.stdout.buffer, root=root, fmt=format, attr=attr, store_dir=store_dir,
                     scan_refs=scan_, roots=roots, jobs=jobs, quiet=quiet)
    cli.guard(PROG, body)


def _roots_input(input: str) -> tuple[IO[bytes], str]:
    """With --roots, INPUT may be the root itself: a store item, a link to one
    (./result, ~/.guix-profile) or to something in one ($(which guile))."""
    if input == "-" or not (os.path.islink(input) or os.path.isdir(input)):
        return cli.open_input(input)
    real = os.path.realpath(input)
    parts = real.split("/")
    for end in range(3, len(parts) + 1):  # the shortest prefix that is a store path
        try:
            split_store_path("/".join(parts[:end]))
        except LayerpipeError:
            continue
        return io.BytesIO(os.fsencode("/".join(parts[:end])) + b"\n"), input
    raise LayerpipeError(f"{real} is not in a store item (with --roots, INPUT is a store item, a link to "
                         "one, or a file listing store paths)", input)


def run() -> None:
    cli.run_app(app, PROG)
