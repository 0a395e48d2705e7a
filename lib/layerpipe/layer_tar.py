"""layer-tar: layer records in, tarred layer records out.

For each `layer` record, writes its member store items (read under --root)
as one deterministic tar (tarwriter), compressed and hashed in one pass
(blobs), stored as `<blob dir>/blobs/sha256/<hex>`, and adds diff_id, digest,
size, mediaType, uncompressed_size and blob to the record.  Layers are built
in parallel (--jobs); records come out in input order; every other record
passes through untouched.
"""
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import IO

import typer

from . import cli
from .blobs import (BlobInfo, BlobWriter, check_level, compression_threads, default_blob_dir, hash_file,
                    return_big_buffers)
from .cache import Cache, layer_key
from .epoch import source_date_epoch
from .errors import LayerpipeError, UsageError
from .records import Record, RecordReader, RecordWriter, need, need_path_list
from .relocate import Relocation
from .tarwriter import TarWriter, add_tree, parent_dirs

PROG = "layer-tar"


def check_layer(rec: Record, root: str) -> list[str]:
    """The layer's member paths, each checked to be a store item under ROOT."""
    need(rec, "index", int)
    paths = need_path_list(rec, "paths")
    if not paths:
        raise LayerpipeError("layer record has no paths", rec.where)
    for path in paths:
        fs_path = os.path.join(root, path.lstrip("/"))
        if not os.path.lexists(fs_path):
            raise LayerpipeError(f"{path}: no such store item (looked under {root})", rec.where)
    return sorted(set(paths))


class LayerBuilder:
    def __init__(self, root: str, blob_dir: str, compression: str, level: int | None,
                 pool: ThreadPoolExecutor, verify: bool = False, relocation: Relocation = Relocation([])):
        self.root, self.blob_dir = root, blob_dir
        self.compression, self.level = compression, check_level(compression, level)
        self.mtime = source_date_epoch()
        self.progress = cli.Progress(PROG, 0, quiet=True)   # layer_tar sets it once it knows what to build
        self.pool, self.verify = pool, verify
        self.relocation = relocation
        self.cache = Cache(blob_dir)
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def _count(self, nbytes: int) -> None:
        with self._lock:
            self.progress.advance(nbytes)

    def lookup(self, paths: list[str]) -> tuple[str, BlobInfo | None]:
        """The layer's cache key and entry: no store file is read."""
        key = layer_key(paths, self.compression, self.level, self.mtime, self.relocation.key())
        return key, self.cache.lookup(key)

    def build(self, rec: Record, paths: list[str], key: str, cached: BlobInfo | None, threads: int) -> dict:
        if cached and hash_file(cached.path)[0] != cached.digest:
            sys.stderr.write(f"{PROG}: {rec.where}: cached blob {cached.path} is corrupt; rebuilt\n")
        info = self._write(paths, threads)
        if cached and cached.digest != info.digest:
            sys.stderr.write(f"{PROG}: {rec.where}: the cached blob of this layer ({cached.digest}) "
                             f"did not match a rebuild ({info.digest}); replaced\n")
        self.cache.store(key, info)
        return _described(rec, info)

    def _write(self, paths: list[str], threads: int) -> BlobInfo:
        blob = BlobWriter(self.blob_dir, self.compression, self.level, threads, self.pool)
        try:
            tar = TarWriter(blob.write, self.mtime)
            names = {p: self.relocation.apply(p) for p in paths}  # member names (--relocate)
            dirs = sorted({d for p in paths for d in parent_dirs(names[p])})
            for d in dirs:
                tar.add_dir(d, 0o755)
            for path in sorted(paths, key=names.get):
                add_tree(tar, os.fsencode(os.path.join(self.root, path.lstrip("/"))),
                         os.fsencode(names[path].lstrip("/")), self._count, self.stop.is_set)
            tar.close()
            return blob.finish()
        except BaseException:
            self.stop.set()
            blob.abort()
            raise


def _described(rec: Record, info: BlobInfo) -> dict:
    return {**rec.data, "diff_id": info.diff_id, "digest": info.digest, "size": info.size,
            "mediaType": info.mediaType, "uncompressed_size": info.uncompressed_size, "blob": info.path}


def _tree_size(root: str, paths: list[str]) -> int:
    total = 0
    for path in paths:
        for folder, _, files in os.walk(os.path.join(root, path.lstrip("/"))):
            total += sum(os.lstat(os.path.join(folder, f)).st_size for f in files)
    return total


def _layer_size(paths: list[str], nar_sizes: dict, root: str) -> int:
    """About the bytes of the layer: the narSize of its paths, from the path
    records passed through, else from the tree."""
    sizes = [nar_sizes.get(p) for p in paths]
    if all(isinstance(n, int) and not isinstance(n, bool) for n in sizes):
        return sum(sizes)
    return _tree_size(root, paths)


def layer_tar(reader: RecordReader, out: IO[bytes], *, root: str, blob_dir: str,
              compression: str, level: int | None, jobs: int, quiet: bool = False,
              verify: bool = False, relocate: list[str] = ()) -> None:
    check_level(compression, level)
    relocation = Relocation.parse(list(relocate))
    records = list(reader)
    layers = {i: check_layer(r, root) for i, r in enumerate(records) if r.type == "layer"}
    if not layers:
        raise LayerpipeError("no layer records in the input: nothing to tar", reader.name)
    relocation.check(p for paths in layers.values() for p in paths)
    cpus = available_cpus()
    with ThreadPoolExecutor(max_workers=cpus) as compressors, ThreadPoolExecutor(max_workers=jobs) as pool:
        # The cache first, so that the compression threads go to the layers to build.
        builder = LayerBuilder(root, blob_dir, compression, level, compressors, verify, relocation)
        found = {i: builder.lookup(p) for i, p in layers.items()}
        done = {i: _described(records[i], cached) for i, (_, cached) in found.items() if cached and not verify}
        todo = {i: p for i, p in layers.items() if i not in done}
        if todo and compression != "none":
            return_big_buffers()   # or RSS grows with the length of the run
        nar_sizes = {r.data.get("path"): r.data.get("narSize") for r in records if r.type == "path"}
        sizes = {i: _layer_size(p, nar_sizes, root) for i, p in todo.items()}
        threads = compression_threads(sizes, cpus, jobs)
        builder.progress = progress = cli.Progress(
            PROG, sum(_tree_size(root, p) for p in todo.values()) if not quiet and sys.stderr.isatty() else 0, quiet)
        writer = RecordWriter(out)
        writer.write(reader.header.with_stage(PROG))
        # Largest first, so that no large layer is left to run alone at the end.
        futures = {i: pool.submit(builder.build, records[i], todo[i], *found[i], threads[i])
                   for i in sorted(todo, key=lambda i: (-sizes[i], i))}
        try:
            for i, rec in enumerate(records):
                writer.write(done[i] if i in done else futures[i].result() if i in futures else rec.data)
        except BaseException:
            builder.stop.set()
            for f in futures.values():
                f.cancel()
            raise
        finally:
            progress.close()


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


app = cli.make_app("Write each layer as a deterministic, compressed tar blob and describe it.")


@app.command(epilog=cli.examples(
    "closure-read graph.refs | layer-split | layer-tar | image-assemble -o app.tar",
    "... | layer-tar --compress zstd --level 19 --blob-dir ./blobs | jq -c '{index, digest, size}'",
    "... | layer-tar --root /mnt/sysroot | image-assemble --format oci -o ./image",
    "... | layer-tar --relocate /gnu/store=/opt/store | image-assemble -o app.tar",
))
def main(
    input: str = typer.Argument("-", metavar="INPUT", help="Records from layer-split; '-' reads stdin."),
    root: str = typer.Option("/", "--root", metavar="DIR", help="Directory the store lives under."),
    compress: str = typer.Option("gzip", "--compress", metavar="gzip|zstd|none", help="Layer compression: gzip, zstd or none."),
    level: int = typer.Option(None, "--level", metavar="N", help="Compression level (gzip 0-9, default 6; zstd 1-19, default 3)."),
    blob_dir: str = typer.Option(None, "--blob-dir", metavar="DIR", help="Where blobs are stored, as blobs/sha256/<hex> (default: $XDG_CACHE_HOME/layerpipe)."),
    jobs: int = typer.Option(0, "--jobs", "-j", metavar="N", help="Layers built at once (default: twice the CPUs this process may use)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar, even on a terminal."),
    verify: bool = typer.Option(False, "--verify", help="Rebuild every layer, even those the cache holds, and replace cache entries that differ."),
    prune: float = typer.Option(None, "--prune", metavar="DAYS", help="Instead of tarring: remove cache entries unused for DAYS days and the blobs only they named."),
    relocate: list[str] = typer.Option([], "--relocate", metavar="FROM=TO", help="Write store items under FROM at TO instead (member names only, not link targets); repeatable."),
) -> None:
    """Tar, hash and compress each layer record's store items (NDJSON in and out).

    The time stamp of every entry is SOURCE_DATE_EPOCH (default 1).  Layers
    whose members and settings were tarred before come from the cache in the
    blob directory without reading the store (--verify rebuilds them).
    """
    def body():
        if jobs < 0:
            raise UsageError("--jobs must be 0 (twice the CPUs) or more")
        if prune is not None:
            if prune < 0:
                raise UsageError("--prune takes a number of days, 0 or more")
            entries, blobs = Cache(blob_dir or default_blob_dir()).prune(prune)
            sys.stderr.write(f"{PROG}: removed {entries} cache entries and {blobs} blobs\n")
            return
        stream, name = cli.open_input(input)
        layer_tar(RecordReader(stream, name), sys.stdout.buffer, root=root,
                  blob_dir=blob_dir or default_blob_dir(), compression=compress, level=level,
                  jobs=jobs or 2 * available_cpus(), quiet=quiet, verify=verify, relocate=relocate)
    cli.guard(PROG, body)


def run() -> None:
    cli.run_app(app, PROG)
