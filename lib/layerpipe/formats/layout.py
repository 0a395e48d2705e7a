"""An OCI image layout in the making, and writing it as a tar (oci_dir.py
writes it as a directory).

Blobs come from files (layer blobs in the blob directory), from memory
(config, manifest, top layer) or from a base image (a file of its layout,
or a member of its tar).  A blob that is not in memory is never trusted: it
must be a regular file whose size and sha256 match its descriptor, checked
while it is copied, streamed or before it is linked.
"""
import hashlib
import os
import stat
from dataclasses import dataclass, field
from typing import IO, Callable

from ..errors import LayerpipeError
from ..imageconfig import INDEX_MEDIA_TYPE, canonical_json, qualified_name
from ..tarwriter import TarWriter

CHUNK = 1 << 20
LAYOUT_FILE = b'{"imageLayoutVersion":"1.0.0"}'


@dataclass
class Blob:
    digest: str
    size: int
    path: str | None = None
    data: bytes | None = None
    opener: Callable[[], IO[bytes]] | None = None  # a blob that is no file of its own
    label: str | None = None  # how messages name an opener's blob

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]

    @property
    def where(self) -> str:
        return self.label or self.path or self.digest


@dataclass
class Layout:
    blobs: dict[str, Blob] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)

    def add_blob_data(self, data: bytes) -> Blob:
        blob = Blob("sha256:" + hashlib.sha256(data).hexdigest(), len(data), data=data)
        self.blobs[blob.digest] = blob
        return blob

    def add_blob_file(self, digest: str, size: int, path: str) -> Blob:
        return self.blobs.setdefault(digest, Blob(digest, size, path=path))

    def add_blob_from(self, digest: str, size: int, src, name: str) -> Blob:
        """A blob of an image source (formats/source): linked from a directory,
        copied out of a tar."""
        path = src.file_path(name)
        if path is not None:
            return self.add_blob_file(digest, size, path)
        blob = Blob(digest, size, opener=lambda: src.open(name), label=f"{src.where}: {name}")
        return self.blobs.setdefault(digest, blob)

    def set_index(self, manifest_desc: dict, tags: list[str]) -> None:
        """index.json: the manifest once per tag, named as containerd and OCI tools look for it."""
        self.files["index.json"] = canonical_json({
            "schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE,
            "manifests": [{**manifest_desc, "annotations": {
                "io.containerd.image.name": qualified_name(tag),
                "org.opencontainers.image.ref.name": tag}}
                for tag in tags]})

    def entries(self) -> list[tuple[str, Blob | bytes]]:
        """All files, sorted by name: blobs/sha256/<hex> first, then the JSON files."""
        items = [(f"blobs/sha256/{b.hex}", b) for b in self.blobs.values()]
        items += [("oci-layout", LAYOUT_FILE)] + list(self.files.items())
        return sorted(items, key=lambda item: item[0])


def _open_blob(blob: Blob) -> IO[bytes]:
    if blob.opener is not None:
        return blob.opener()
    try:
        fd = os.open(blob.path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise LayerpipeError(f"layer blob {blob.path}: {exc.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size != blob.size:
        os.close(fd)
        raise LayerpipeError(f"layer blob {blob.path}: not a regular file of {blob.size} bytes")
    return os.fdopen(fd, "rb")


def copy_checked(blob: Blob, write) -> None:
    for chunk in _checked_chunks(blob):
        write(chunk)


def write_tar(layout: Layout, out: IO[bytes], mtime: int) -> None:
    tar = TarWriter(out.write, mtime)
    tar.add_dir(b"blobs", 0o755)
    tar.add_dir(b"blobs/sha256", 0o755)
    for name, item in layout.entries():
        if isinstance(item, bytes):
            tar.add_file(name.encode(), 0o644, len(item), iter([item]))
        elif item.data is not None:
            tar.add_file(name.encode(), 0o644, item.size, iter([item.data]))
        else:
            tar.add_file(name.encode(), 0o644, item.size, _checked_chunks(item))
    tar.close()


def _checked_chunks(blob: Blob):
    """The blob's bytes, hashed on the way; a mismatch raises after the last chunk."""
    h = hashlib.sha256()
    with _open_blob(blob) as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            yield chunk
    if "sha256:" + h.hexdigest() != blob.digest:
        raise LayerpipeError(f"layer blob {blob.where} does not match its digest {blob.digest}")
