"""Where two images differ: the first differing entry, down inside the layers.

image_difference(a, b) takes two images, each an archive (Docker archive or
OCI archive, as bytes) or an OCI layout directory ({relative path: bytes}),
and walks them as an image is built: the layers of the first manifest in
order, each compared entry by entry inside the tar (headers, then contents),
then the config, then every other file.  It returns one line naming the
first difference, or None when the two are the same bytes.
"""
import gzip
import io
import json
import tarfile

import zstandard


def _plain(blob: bytes) -> bytes | None:
    """The uncompressed tar of a layer blob, or None when it is not one."""
    try:
        if blob[:2] == b"\x1f\x8b":
            blob = gzip.decompress(blob)
        elif blob[:4] == b"\x28\xb5\x2f\xfd":
            blob = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob), read_across_frames=True).read()
    except (OSError, EOFError, zstandard.ZstdError):
        return None
    return blob if blob[257:262] == b"ustar" else None


HEADER_FIELDS = ("type", "mode", "uid", "gid", "uname", "gname", "mtime", "size", "linkname", "pax_headers")


def _entries(tar_bytes: bytes) -> list[tuple[str, dict, bytes | None]]:
    """(name, header fields, contents) of every entry of a tar."""
    out = []
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
        for m in tar:
            body = tar.extractfile(m).read() if m.isreg() else None
            out.append((m.name, {f: getattr(m, f) for f in HEADER_FIELDS}, body))
    return out


def _offset(a: bytes, b: bytes) -> str:
    at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"{len(a)} and {len(b)} bytes, first differing at byte {at}"


def tar_difference(a: bytes, b: bytes, where: str) -> str | None:
    """The first entry where tars A and B differ."""
    if a == b:
        return None
    ea, eb = _entries(a), _entries(b)
    for (na, ha, ba), (nb, hb, bb) in zip(ea, eb):
        if na != nb:
            return f"{where}: entry {na!r} where the other has {nb!r}"
        if ha != hb:
            fields = [f"{f} {ha[f]!r} vs {hb[f]!r}" for f in HEADER_FIELDS if ha[f] != hb[f]]
            return f"{where} > {na}: headers differ: {', '.join(fields)}"
        if ba != bb:
            return f"{where} > {na}: contents differ ({_offset(ba, bb)})"
    if len(ea) != len(eb):
        longer, extra = ("first", ea[len(eb)][0]) if len(ea) > len(eb) else ("second", eb[len(ea)][0])
        return f"{where}: the {longer} has more entries, from {extra!r}"
    return f"{where}: the same entries, other bytes ({_offset(a, b)})"


def blob_difference(a: bytes, b: bytes, where: str) -> str | None:
    if a == b:
        return None
    pa, pb = _plain(a), _plain(b)
    if pa is None or pb is None:
        return f"{where}: {_offset(a, b)}"
    if pa == pb:
        return f"{where}: the same tar, compressed to other bytes ({_offset(a, b)})"
    return tar_difference(pa, pb, where)


def _files(image) -> dict[str, bytes]:
    if isinstance(image, dict):
        return image
    return {name: body for name, _, body in _entries(image) if body is not None}


def _blob(files: dict, digest: str) -> bytes:
    return files.get("blobs/sha256/" + digest.split(":")[-1], b"")


def _manifest(files: dict) -> dict:
    try:
        index = json.loads(files["index.json"])
        return json.loads(_blob(files, index["manifests"][0]["digest"]))
    except (KeyError, IndexError, ValueError):
        return {}


def image_difference(a, b) -> str | None:
    """One line naming the first difference between images A and B, or None."""
    if a == b:
        return None
    fa, fb = _files(a), _files(b)
    ma, mb = _manifest(fa), _manifest(fb)
    for i, (la, lb) in enumerate(zip(ma.get("layers", []), mb.get("layers", []))):
        diff = blob_difference(_blob(fa, la["digest"]), _blob(fb, lb["digest"]), f"layer {i}")
        if diff:
            return diff
    if len(ma.get("layers", [])) != len(mb.get("layers", [])):
        return f"{len(ma.get('layers', []))} layers and {len(mb.get('layers', []))} layers"
    if ma.get("config") and mb.get("config"):
        ca, cb = _blob(fa, ma["config"]["digest"]), _blob(fb, mb["config"]["digest"])
        if ca != cb:
            return f"config: {_offset(ca, cb)}"
    for name in sorted(set(fa) | set(fb)):
        if name not in fa or name not in fb:
            return f"{name}: only in the {'first' if name in fa else 'second'} image"
        if fa[name] != fb[name]:
            return blob_difference(fa[name], fb[name], name)
    return "the same files, in another archive order" if not isinstance(a, dict) else None
