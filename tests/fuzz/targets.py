"""What the fuzzers drive: every parser of layerpipe, fed bytes it did not write.

Each target takes the fuzzed input and must end in a result or a
LayerpipeError (UsageError included), never another exception and never a
hang.  `settle` runs one and counts it; tests/test_fuzz.py (hypothesis) and
tests/fuzz/atheris_fuzz.py (coverage-guided) share these entry points.
"""
import atexit
import collections
import contextlib
import io
import os
import shutil
import signal
import tempfile

from layerpipe import closure_read, image_assemble, layer_split, layer_tar, profile, sexp
from layerpipe.base_image import open_base
from layerpipe.errors import LayerpipeError
from layerpipe.graph_formats import FORMATS
from layerpipe.imagetree import ImageTree, Layer
from layerpipe.layerscan import scan_layer
from layerpipe.previous import _from_records, read_previous
from layerpipe.records import RecordReader

TIME_LIMIT = 20  # seconds for one input: far above any honest one, and no hang survives it
COUNTS: collections.Counter = collections.Counter()
# An empty directory as --root: every store item is missing from it.
EMPTY_ROOT = tempfile.mkdtemp(prefix="layerpipe-fuzz-root-")
atexit.register(shutil.rmtree, EMPTY_ROOT, True)


class Hang(Exception):
    """An input that took longer than TIME_LIMIT."""


@contextlib.contextmanager
def time_limit(seconds: float):
    def on_alarm(signum, frame):
        raise Hang(f"no result after {seconds} s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def settle(name: str, fn, *args, **kwargs):
    """Run FN once: its result, or the LayerpipeError it raised (one line);
    any other exception propagates, and so fails the fuzzer."""
    COUNTS[name] += 1
    with time_limit(TIME_LIMIT):
        try:
            return fn(*args, **kwargs)
        except LayerpipeError as exc:
            if "\n" in str(exc):
                raise AssertionError(f"an error message of more than one line: {str(exc)!r}") from None
            return exc


# -- the entry points, each on bytes (or text) --------------------------------------------------

def graph(data: bytes, fmt: str = "auto") -> bytes:
    """closure-read's whole core, on a store where no item exists."""
    out = io.BytesIO()
    closure_read.closure_read(io.BytesIO(data), "fuzz", out, root=EMPTY_ROOT, fmt=fmt)
    return out.getvalue()


def records(data: bytes) -> list:
    reader = RecordReader(io.BytesIO(data), "fuzz")
    return [r.data for r in reader] + [reader.header]


def split(data: bytes, strategy: str = "stable", max_layers: int = 100) -> bytes:
    out = io.BytesIO()
    layer_split.layer_split(RecordReader(io.BytesIO(data), "fuzz"), out, strategy=strategy, max_layers=max_layers)
    return out.getvalue()


def tar_input(data: bytes) -> bytes:
    """layer-tar's reading and checking of its records, on a store where no item exists."""
    out = io.BytesIO()
    layer_tar.layer_tar(RecordReader(io.BytesIO(data), "fuzz"), out, root=EMPTY_ROOT, blob_dir=EMPTY_ROOT,
                        compression="none", level=None, jobs=1, quiet=True)
    return out.getvalue()


def assemble_input(data: bytes):
    """image-assemble's reading and checking of its records (nothing is written)."""
    return image_assemble.collect(RecordReader(io.BytesIO(data), "fuzz"))


def previous_records(data: bytes):
    return _from_records(io.BytesIO(data), "fuzz")


def sexpr(text: str):
    return sexp.read(text, "fuzz")


def guix_manifest(text: str, tree: ImageTree | None = None) -> list[str]:
    """A profile's manifest read, and its search paths evaluated against TREE."""
    found = profile.guix_manifest(text, "fuzz")
    return profile.environment(found, tree or ImageTree([], {}), "p") + [profile.friendly_name(found.names)]


def nix_manifest(data: bytes) -> list[str]:
    names = profile.nix_manifest_json(data, "fuzz").names
    return names + profile.nix_manifest_names(data.decode("utf-8", "replace"))


def layer_blob(blob: bytes):
    """A base image's layer, as image-assemble --base checks it."""
    return scan_layer(io.BytesIO(blob), len(blob), "fuzz")


def image_tree(blob: bytes) -> list:
    """What image-assemble reads of a layer to find an entry point or a profile."""
    tree = ImageTree([Layer(lambda: io.BytesIO(blob), None, "fuzz")], {})
    found = [tree.resolve(name) for name in ("a", "b/c", "link1/x", "gnu/store", "lib/passwd", "b/link2/a")]
    return found + [tree.read_file("a"), sorted(tree.children("b"))]


def base_image(path: str, ref: str | None = None):
    """A Docker archive or OCI layout as --base reads it, and as --previous does."""
    with open_base(path, ref, "amd64") as base:
        layers = base.layers
    return layers, read_previous(path, None)


# The targets the coverage-guided fuzzer runs on raw bytes, by name.
BYTE_TARGETS = {
    **{f"graph-{fmt}": (lambda fmt: lambda data: graph(data, fmt))(fmt) for fmt in FORMATS},
    "records": records,
    "layer-split": split,
    "layer-tar-input": tar_input,
    "assemble-input": assemble_input,
    "previous-records": previous_records,
    "sexp": lambda data: sexpr(data.decode("utf-8", "replace")),
    "guix-manifest": lambda data: guix_manifest(data.decode("utf-8", "replace")),
    "nix-manifest": nix_manifest,
    "layer-blob": layer_blob,
    "image-tree": image_tree,
}


def write_file(folder: str, name: str, data: bytes) -> str:
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(data)
    return path
