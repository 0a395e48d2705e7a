"""What an earlier build produced, for `layer-split --previous`.

Accepted: NDJSON with `layer` records (from layer-split, layer-tar or a
user's script), a Docker archive or OCI archive (a tar), or an OCI layout
directory.  From an image, each layer's store items are read from the layer
tar itself (the top-level entries under the store directory), so images
written by other tools work too.  Returns the layers base first, each as
(member store paths, digest or None).
"""
import gzip
import json
import os
import re
import tarfile
from typing import IO

import zstandard

from .errors import LayerpipeError
from .records import RecordReader, need_path_list

PreviousLayer = tuple[list[str], str | None]
_ITEM = re.compile(r"((?:[^/]+/)+?[0-9a-df-np-sv-z]{32}-[^/]+)(?:/|$)")


def read_previous(path: str, store_dir: str | None) -> list[PreviousLayer]:
    try:
        if os.path.isdir(path):
            return _from_layout(_DirSource(path), store_dir, path)
        with open(path, "rb") as f:
            head = f.read(262)
        if head[257:262] == b"ustar":
            with tarfile.open(path) as tar:
                return _from_layout(_TarSource(tar), store_dir, path)
        with open(path, "rb") as f:
            return _from_records(f, path)
    except (OSError, tarfile.TarError, ValueError, KeyError, zstandard.ZstdError) as exc:
        raise LayerpipeError(f"cannot read the previous build: {exc}", path) from None


def _from_records(stream: IO[bytes], name: str) -> list[PreviousLayer]:
    layers = []
    for rec in RecordReader(stream, name):
        if rec.type == "layer":
            digest = rec.data.get("digest") if isinstance(rec.data.get("digest"), str) else None
            layers.append((rec.data.get("index"), need_path_list(rec, "paths"), digest))
    if not layers:
        raise LayerpipeError("no layer records in the previous build", name)
    layers.sort(key=lambda item: item[0] if isinstance(item[0], int) else 0)
    return [(paths, digest) for _, paths, digest in layers]


class _DirSource:
    def __init__(self, root: str):
        self.root = root

    def open(self, name: str) -> IO[bytes]:
        return open(os.path.join(self.root, name), "rb")

    def exists(self, name: str) -> bool:
        return os.path.isfile(os.path.join(self.root, name))


class _TarSource:
    def __init__(self, tar: tarfile.TarFile):
        self.tar = tar
        self.names = {m.name.lstrip("./"): m for m in tar.getmembers() if m.isfile()}

    def open(self, name: str) -> IO[bytes]:
        return self.tar.extractfile(self.names[name])

    def exists(self, name: str) -> bool:
        return name in self.names


def _blob(digest: str) -> str:
    return "blobs/sha256/" + digest.split(":", 1)[1]


def _from_layout(src, store_dir: str | None, name: str) -> list[PreviousLayer]:
    """Layers of the first image in an OCI layout, or of a Docker archive's manifest.json."""
    if src.exists("index.json"):
        index = json.load(src.open("index.json"))
        manifest = json.load(src.open(_blob(index["manifests"][0]["digest"])))
        layers = [(_blob(d["digest"]), d["digest"], d.get("mediaType", "")) for d in manifest["layers"]]
    elif src.exists("manifest.json"):
        entry = json.load(src.open("manifest.json"))[0]
        layers = [(path, None, "") for path in entry["Layers"]]
    else:
        raise LayerpipeError("neither an OCI layout nor a Docker archive", name)
    result = []
    for blob, digest, _ in layers:
        with src.open(blob) as stream:
            items = _store_items(stream, store_dir)
        if items:  # the top layer (/tmp, links) holds no store item
            result.append((items, digest))
    return result


def _decompressed(stream: IO[bytes]) -> IO[bytes]:
    head = stream.read(4)
    rest = _Prefixed(head, stream)
    if head[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=rest)
    if head == b"\x28\xb5\x2f\xfd":
        return zstandard.ZstdDecompressor().stream_reader(rest)
    return rest


class _Prefixed:
    """A stream with bytes already read put back in front."""

    def __init__(self, head: bytes, stream: IO[bytes]):
        self.head, self.stream = head, stream

    def read(self, n: int = -1) -> bytes:
        if not self.head:
            return self.stream.read(n)
        if n < 0:
            data, self.head = self.head, b""
            return data + self.stream.read()
        data, self.head = self.head[:n], self.head[n:]
        return data + (self.stream.read(n - len(data)) if len(data) < n else b"")


def _store_items(stream: IO[bytes], store_dir: str | None) -> list[str]:
    prefix = store_dir.strip("/") + "/" if store_dir else None
    items = set()
    with tarfile.open(fileobj=_decompressed(stream), mode="r|") as tar:
        for member in tar:
            found = _ITEM.match(member.name.lstrip("./"))
            if found and (prefix is None or found.group(1).startswith(prefix)):
                items.add("/" + found.group(1))
    return sorted(items)
