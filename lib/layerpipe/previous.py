"""What an earlier build produced, for `layer-split --previous`.

Accepted: NDJSON with `layer` records (from layer-split, layer-tar or a
user's script), a Docker archive or OCI archive (a tar), or an OCI layout
directory.  From an image, each layer's store items are read from the layer
tar itself (the top-level entries under the store directory), so images
written by other tools work too; a layout or archive holding several images
gives the layers of all of them (sibling builds).  Returns the layers base
first, each as (member store paths, digest or None).
"""
import os
import re
import tarfile
import zlib
from typing import IO

import zstandard

from .errors import LayerpipeError
from .formats.source import all_images, decompressed, open_source
from .records import RecordReader, need_path_list

PreviousLayer = tuple[list[str], str | None]
_ITEM = re.compile(r"((?:[^/]+/)+?[0-9a-df-np-sv-z]{32}-[^/]+)(?:/|$)")


def read_previous(path: str, store_dir: str | None) -> list[PreviousLayer]:
    try:
        if os.path.isdir(path) or _is_tar(path):
            with open_source(path) as src:
                return _from_layout(src, store_dir)
        with open(path, "rb") as f:
            return _from_records(f, path)
    except (OSError, EOFError, zlib.error, tarfile.TarError, ValueError, KeyError, zstandard.ZstdError) as exc:
        raise LayerpipeError(f"cannot read the previous build: {exc}", path) from None


def _is_tar(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(262)[257:262] == b"ustar"


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


def _from_layout(src, store_dir: str | None) -> list[PreviousLayer]:
    """Layers of every image of an OCI layout or a Docker archive (several
    images in one layout are sibling builds), each layer once."""
    result, seen = [], set()
    for image in all_images(src):
        for name, digest, _ in image.layers:
            if name in seen:
                continue
            seen.add(name)
            with src.open(name) as stream:
                items = _store_items(stream, store_dir)
            if items:  # the top layer (/tmp, links) holds no store item
                result.append((items, digest))
    return result


def _store_items(stream: IO[bytes], store_dir: str | None) -> list[str]:
    prefix = store_dir.strip("/") + "/" if store_dir else None
    items = set()
    with tarfile.open(fileobj=decompressed(stream)[0], mode="r|") as tar:
        for member in tar:
            found = _ITEM.match(member.name.lstrip("./"))
            if found and (prefix is None or found.group(1).startswith(prefix)):
                items.add("/" + found.group(1))
    return sorted(items)
