"""Writing an OCI image layout directory: a new one, or an image added to one.

The new layout is built beside PATH and swapped in whole (renameat2
RENAME_EXCHANGE where the kernel has it), so PATH always names a complete
layout.  An existing layout at PATH keeps its images: its files are carried
into the new one (hard links), index.json gets our entries in place of those
with the same `org.opencontainers.image.ref.name`, and blobs that only the
replaced entries reached are dropped.  Writers of the same layout take turns
(flock on the layout directory), so none loses another's image.
"""
import contextlib
import ctypes
import errno
import fcntl
import json
import os
import shutil
import tempfile
from typing import Iterator

from ..blobs import hash_file
from ..cli import signals_held
from ..errors import LayerpipeError
from ..imageconfig import canonical_json
from .layout import Blob, Layout, copy_checked
from .source import INDEX_TYPES, MANIFEST_TYPES, MAX_JSON, REF_NAME


def write_dir(layout: Layout, path: str) -> None:
    """Write LAYOUT as directory PATH, or add it to the OCI layout there;
    anything else at PATH is refused."""
    path = os.path.abspath(path)
    parent, base = os.path.split(path)
    with _locked(path) as existing:
        tmp = None
        try:
            with signals_held():  # a ^C right after mkdtemp still finds TMP to remove
                try:
                    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{base}.", suffix=".tmp")
                except OSError as exc:
                    raise LayerpipeError(f"cannot write here: {exc.strerror}", path) from None
            os.makedirs(os.path.join(tmp, "blobs", "sha256"), exist_ok=True)
            index = layout.files["index.json"]
            if existing:
                index = _add_to(path, tmp, index, set(layout.blobs))
            for name, item in layout.entries():
                _write_entry(os.path.join(tmp, name), index if name == "index.json" else item)
            os.chmod(tmp, 0o755)
            _swap_in(tmp, path)
        except BaseException:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
            raise


def _write_entry(dest: str, item: Blob | bytes) -> None:
    if isinstance(item, bytes):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(dest)  # a link to the old layout's file, which must stay as it is
        with open(dest, "wb") as f:
            f.write(item)
    elif not os.path.exists(dest) or hash_file(dest) != (item.digest, item.size):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(dest)  # a damaged copy of a blob we share with the layout
        _place_blob(item, dest)


def _place_blob(blob: Blob, dest: str) -> None:
    """Hard-link a checked blob file, or copy it (another file system, a tar member)."""
    if blob.data is not None:
        with open(dest, "wb") as f:
            f.write(blob.data)
        return
    if blob.path is not None:
        copy_checked(blob, lambda chunk: None)
        try:
            os.link(blob.path, dest)
            return
        except OSError:
            pass
    with open(dest, "wb") as f:
        copy_checked(blob, f.write)


@contextlib.contextmanager
def _locked(path: str) -> Iterator[bool]:
    """Hold the layout at PATH locked (True), or there is none (False).  Should
    another writer swap in a new layout while we wait, lock that one."""
    while True:
        if not os.path.lexists(path):
            yield False
            return
        if not os.path.isdir(path) or not os.path.isfile(os.path.join(path, "oci-layout")):
            raise LayerpipeError(f"{path}: exists and is not an OCI image layout; not replacing it")
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            now, held = os.stat(path), os.fstat(fd)
            if (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                yield True
                return
        finally:
            os.close(fd)


def _read_json(path: str, what: str):
    try:
        if os.path.getsize(path) > MAX_JSON:
            raise ValueError(f"larger than {MAX_JSON >> 20} MiB")
        with open(path, "rb") as f:
            return json.loads(f.read())
    except (OSError, ValueError) as exc:
        raise LayerpipeError(f"not a valid OCI image layout: {what}: {exc}", os.path.dirname(path)) from None


def _add_to(old: str, tmp: str, ours_index: bytes, our_blobs: set[str]) -> bytes:
    """Carry the layout at OLD into TMP; the merged index.json."""
    _read_json(os.path.join(old, "oci-layout"), "oci-layout")
    index = _read_json(os.path.join(old, "index.json"), "index.json")
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise LayerpipeError("not a valid OCI image layout: index.json has no list of manifests", old)
    ours = json.loads(ours_index)["manifests"]
    names = {d["annotations"][REF_NAME] for d in ours}
    gone = [d for d in index["manifests"] if _ref(d) in names]
    kept = [d for d in index["manifests"] if _ref(d) not in names]
    first_gone = next((i for i, d in enumerate(index["manifests"]) if _ref(d) in names), None)
    at = len(kept) if first_gone is None else sum(1 for d in index["manifests"][:first_gone] if _ref(d) not in names)
    _carry(old, tmp)
    orphans = _reachable(old, gone) - _reachable(old, kept) - our_blobs
    for digest in orphans:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(tmp, "blobs", *digest.split(":", 1)))
    return canonical_json({**index, "manifests": kept[:at] + ours + kept[at:]})


def _ref(desc) -> str | None:
    notes = desc.get("annotations") if isinstance(desc, dict) else None
    return notes.get(REF_NAME) if isinstance(notes, dict) else None


def _carry(old: str, tmp: str) -> None:
    """Every file of OLD but index.json into TMP: hard links, copies across file systems."""
    for folder, dirs, files in os.walk(old):
        rel = os.path.relpath(folder, old)
        for name in dirs:
            if not os.path.islink(os.path.join(folder, name)):
                os.makedirs(os.path.join(tmp, rel, name), exist_ok=True)
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            if rel == "." and name == "index.json":
                continue
            src, dest = os.path.join(folder, name), os.path.join(tmp, rel, name)
            if os.path.islink(src):
                os.symlink(os.readlink(src), dest)
                continue
            try:
                os.link(src, dest)
            except OSError:
                shutil.copy2(src, dest)


def _reachable(root: str, descs: list) -> set[str]:
    """The digests of the blobs DESCS lead to, through indexes and manifests."""
    seen: set[str] = set()
    todo = list(descs)
    while todo:
        desc = todo.pop()
        digest = desc.get("digest") if isinstance(desc, dict) else None
        if not isinstance(digest, str) or ":" not in digest or digest in seen:
            continue
        seen.add(digest)
        if desc.get("mediaType") not in INDEX_TYPES | MANIFEST_TYPES:
            continue
        try:
            doc = _read_json(os.path.join(root, "blobs", *digest.split(":", 1)), digest)
        except LayerpipeError:
            continue  # a missing or damaged manifest: what it led to is not ours to judge
        if isinstance(doc, dict):
            for key in ("manifests", "layers", "blobs"):
                if isinstance(doc.get(key), list):
                    todo.extend(doc[key])
            todo.extend(doc.get(key) for key in ("config", "subject"))
    return seen


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
