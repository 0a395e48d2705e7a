"""An OCI image layout in the making, and the two ways to write it out.

Blobs come from files (layer blobs in the blob directory) or from memory
(config, manifest, top layer).  A blob from a file is never trusted: it must
be a regular file whose size and sha256 match its descriptor, checked while
it is copied, streamed or before it is linked.
"""
import ctypes
import errno
import hashlib
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from typing import IO

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

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]


@dataclass
class Layout:
    blobs: dict[str, Blob] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)

    def add_blob_data(self, data: bytes) -> Blob:
        blob = Blob("sha256:" + hashlib.sha256(data).hexdigest(), len(data), data=data)
        self.blobs[blob.digest] = blob
        return blob

    def add_blob_file(self, digest: str, size: int, path: str) -> Blob:
        blob = Blob(digest, size, path=path)
        self.blobs.setdefault(digest, blob)
        return blob

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
    try:
        fd = os.open(blob.path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise LayerpipeError(f"layer blob {blob.path}: {exc.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size != blob.size:
        os.close(fd)
        raise LayerpipeError(f"layer blob {blob.path}: not a regular file of {blob.size} bytes")
    return os.fdopen(fd, "rb")


def _copy_checked(blob: Blob, write) -> None:
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
        raise LayerpipeError(f"layer blob {blob.path} does not match its digest {blob.digest}")


def _place_blob(blob: Blob, dest: str) -> None:
    """Hard-link a checked blob from the blob directory, or copy it (other filesystem)."""
    if blob.data is not None:
        with open(dest, "wb") as f:
            f.write(blob.data)
        return
    _copy_checked(blob, lambda chunk: None)
    try:
        os.link(blob.path, dest)
        return
    except OSError:
        pass
    with open(dest, "wb") as f:
        _copy_checked(blob, f.write)


def write_dir(layout: Layout, path: str) -> None:
    """Write the layout as directory PATH, atomically: built beside it, then renamed.

    An existing OCI layout at PATH is replaced; anything else there is refused.
    """
    path = os.path.abspath(path)
    if os.path.lexists(path) and not os.path.isfile(os.path.join(path, "oci-layout")):
        raise LayerpipeError(f"{path}: exists and is not an OCI image layout; not replacing it")
    parent, base = os.path.split(path)
    try:
        tmp = tempfile.mkdtemp(dir=parent, prefix=f".{base}.", suffix=".tmp")
    except OSError as exc:
        raise LayerpipeError(f"cannot write here: {exc.strerror}", path) from None
    try:
        os.makedirs(os.path.join(tmp, "blobs", "sha256"))
        for name, item in layout.entries():
            dest = os.path.join(tmp, name)
            if isinstance(item, bytes):
                with open(dest, "wb") as f:
                    f.write(item)
            else:
                _place_blob(item, dest)
        os.chmod(tmp, 0o755)
        _swap_in(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _exchange(a: str, b: str) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), b)


def _swap_in(new: str, path: str) -> None:
    """Put NEW at PATH; an old layout there is exchanged in one step where the
    kernel allows, so PATH always names a whole layout, then removed."""
    if not os.path.lexists(path):
        os.rename(new, path)
    elif _exchange(new, path):
        shutil.rmtree(new, ignore_errors=True)
    else:
        old = tempfile.mkdtemp(dir=os.path.dirname(path), prefix=f".{os.path.basename(path)}.", suffix=".old")
        os.rename(path, os.path.join(old, "layout"))
        os.rename(new, path)
        shutil.rmtree(old, ignore_errors=True)
