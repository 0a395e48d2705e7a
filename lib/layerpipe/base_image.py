"""The base image of `image-assemble --base`: read, checked, described.

A base is a Docker archive or an OCI layout, a directory or a tar
(formats/source).  Before anything is written, the base is checked whole:
its config must match its digest, be a linux config for the image's
architecture and list one diff_id per layer; every layer blob is read once
(layerscan) and must match its digest (when the manifest gives one) and its
diff_id, have the compression its media type says, and hold only entries
that stay inside the image root.  The blobs then go into the new image as
they are: the same bytes, the same digests.
"""
import hashlib
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from .blobs import MEDIA_TYPES
from .errors import LayerpipeError
from .formats.source import find_image, open_source, parse_json, read_small
from .imageconfig import INHERITED
from .layerscan import scan_layer

# Layer media types a base may use, and the compression each means.
LAYER_TYPES = {
    **{media: comp for comp, media in MEDIA_TYPES.items()},
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar": "none",
}


@dataclass
class Base:
    path: str
    source: object
    layers: list[dict]          # descriptor + diff_id + "file" (its name in the source)
    runtime: dict               # the inherited part of the config's "config"
    history: list[dict]
    image_id: str
    manifest: dict | None = None
    name: str | None = None
    variant: str | None = None
    record: dict = field(default_factory=dict)


@contextmanager
def open_base(path: str, ref: str | None, arch: str) -> Iterator[Base]:
    """The checked base at PATH; its source stays open while the image is written."""
    with open_source(path, f"base {path}") as src:
        yield read_base(src, path, ref, arch)


def read_base(src, path: str, ref: str | None, arch: str) -> Base:
    where = src.where
    image = find_image(src, ref, arch, strict=True)
    config, image_id = _config(src, image.config, image.config_digest, where)
    diff_ids = _check_config(config, len(image.layers), arch, where)
    layers = [_layer(src, i, entry, diff_ids[i], where) for i, entry in enumerate(image.layers)]
    name = ref if ref is not None else (image.names[0] if image.names else None)
    base = Base(path, src, layers, _runtime(config.get("config"), where), _history(config, len(layers), where),
                image_id, image.manifest, name, config.get("variant"))
    base.record = {"path": os.path.abspath(path), "image_id": image_id, "layer_count": len(layers),
                   **({"manifest": image.manifest} if image.manifest else {}), **({"name": name} if name else {})}
    return base


def _config(src, name: str, digest: str | None, where: str) -> tuple[dict, str]:
    data = read_small(src, name, "config")
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    named = name.rsplit("/", 1)[-1].removesuffix(".json")
    if (digest and actual != digest) or (len(named) == 64 and named != actual[7:]):
        raise LayerpipeError(f"config {name} does not match its digest", where)
    config = parse_json(data, src, name, "config")
    if not isinstance(config, dict):
        raise LayerpipeError(f"config {name} is not a JSON object", where)
    return config, actual


def _check_config(config: dict, layer_count: int, arch: str, where: str) -> list[str]:
    if config.get("os") != "linux":
        raise LayerpipeError(f"its config is for os {config.get('os')!r}, not linux", where)
    if config.get("architecture") != arch:
        raise LayerpipeError(f"it is for {config.get('architecture')!r}, this image for {arch!r} (see --arch)", where)
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or rootfs.get("type") != "layers":
        raise LayerpipeError("its config has no rootfs.diff_ids", where)
    if len(diff_ids) != layer_count:
        raise LayerpipeError(f"{layer_count} layers but {len(diff_ids)} diff_ids in its config", where)
    return diff_ids


def _layer(src, i: int, entry: tuple, diff_id: str, where: str) -> dict:
    name, digest, media_type = entry
    here = f"{where}: layer {i} ({digest or name})"
    if media_type is not None and media_type not in LAYER_TYPES:
        raise LayerpipeError(f"unsupported layer media type {media_type!r}", here)
    size = src.size(name)
    with src.open(name) as stream:
        scanned = scan_layer(stream, size, here, digest)
    if digest is not None and scanned.digest != digest:
        raise LayerpipeError(f"blob does not match its digest (it is {scanned.digest})", here)
    if scanned.diff_id != diff_id:
        raise LayerpipeError(f"uncompressed tar is {scanned.diff_id}, its config says {diff_id}", here)
    if media_type is not None and LAYER_TYPES[media_type] != scanned.compression:
        raise LayerpipeError(f"media type {media_type} but the blob is {scanned.compression}-compressed"
                             if scanned.compression != "none" else
                             f"media type {media_type} but the blob is not compressed", here)
    return {"mediaType": MEDIA_TYPES[scanned.compression], "digest": scanned.digest, "size": scanned.size,
            "diff_id": diff_id, "file": name}


_KINDS = {"User": str, "WorkingDir": str, "StopSignal": str, "Env": list, "Entrypoint": list, "Cmd": list,
          "Labels": dict, "ExposedPorts": dict, "Volumes": dict}
_SAID = {str: "a string", list: "a list of strings", dict: "an object"}


def _well_typed(key: str, value) -> bool:
    kind = _KINDS[key]
    strings = value if kind is list else value.values() if key == "Labels" and isinstance(value, dict) else []
    return isinstance(value, kind) and all(isinstance(s, str) for s in strings)


def _runtime(runtime, where: str) -> dict:
    """The fields of the base's config.config an image built on it inherits, type-checked."""
    if runtime is None:
        return {}
    if not isinstance(runtime, dict):
        raise LayerpipeError("its config's 'config' is not an object", where)
    for key in INHERITED:
        if runtime.get(key) is not None and not _well_typed(key, runtime[key]):
            raise LayerpipeError(f"its config's {key} is not {_SAID[_KINDS[key]]}" +
                                 (" of strings" if key == "Labels" else ""), where)
    return {key: runtime[key] for key in INHERITED if runtime.get(key) is not None}


def _history(config: dict, layer_count: int, where: str) -> list[dict]:
    """The base's history, or one entry per layer when it has none."""
    history = config.get("history")
    if history is None or history == []:
        return [{"created_by": "layerpipe image-assemble --base", "comment": "a layer of the base image"}
                for _ in range(layer_count)]
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise LayerpipeError("its config's history is not a list of objects", where)
    return history
