"""Nix archive (NAR) sizes and hashes computed from a file tree, as Nix defines them.

A NAR is a sequence of length-prefixed strings padded to 8 bytes; its size
follows from names, file sizes and symlink targets alone, so no file is read.
Its hash (the narHash of a store item) is the sha256 of those bytes, streamed.
"""
import hashlib
import os
import stat
import struct

from .errors import LayerpipeError


def _s(n: int) -> int:
    """Bytes one NAR string of length N takes: 8-byte length, data, padding."""
    return 8 + ((n + 7) & ~7)


_OPEN, _CLOSE, _TYPE = _s(1), _s(1), _s(4)
_HEADER = _s(len("nix-archive-1"))
_NODE = _OPEN + _TYPE + _CLOSE                       # ( type ... )
_REGULAR = _NODE + _s(len("regular")) + _s(len("contents"))
_EXECUTABLE = _s(len("executable")) + _s(0)
_SYMLINK = _NODE + _s(len("symlink")) + _s(len("target"))
_DIRECTORY = _NODE + _s(len("directory"))
_ENTRY = _s(len("entry")) + _OPEN + _s(len("name")) + _s(len("node")) + _CLOSE   # plus name and node
CHUNK = 1 << 20


def nar_size(fs_path: str) -> int:
    """Size of the NAR serialisation of the tree at FS_PATH (not followed if a link)."""
    path = os.fsencode(fs_path)
    st = os.lstat(path)
    return _HEADER + (_tree_size(path) if stat.S_ISDIR(st.st_mode) else _leaf_size(path, st))


def _tree_size(top: bytes) -> int:
    """One scandir per directory, one lstat per file (the entry types come
    with the listing); the order of entries does not change the size."""
    total, folders = 0, [top]
    while folders:
        folder = folders.pop()
        total += _DIRECTORY
        with os.scandir(folder) as entries:
            for entry in entries:
                total += _ENTRY + _s(len(entry.name))
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)
                else:
                    total += _leaf_size(entry.path, entry.stat(follow_symlinks=False))
    return total


def _leaf_size(path: bytes, st: os.stat_result) -> int:
    mode = st.st_mode
    if stat.S_ISREG(mode):  # as Nix: the owner exec bit decides
        return _REGULAR + (_EXECUTABLE if mode & stat.S_IXUSR else 0) + _s(st.st_size)
    if stat.S_ISLNK(mode):
        return _SYMLINK + _s(len(os.readlink(path)))
    raise LayerpipeError(f"{os.fsdecode(path)}: special file (not a regular file, directory or symlink) in a store item")


class _Sink:
    """Hashes and counts the NAR bytes written to it."""

    def __init__(self):
        self.hash, self.size = hashlib.sha256(), 0

    def write(self, data: bytes) -> None:
        self.hash.update(data)
        self.size += len(data)

    def string(self, data: bytes) -> None:
        self.write(struct.pack("<Q", len(data)) + data + b"\0" * (-len(data) % 8))


def nar_hash(fs_path: str) -> tuple[str, int]:
    """("sha256:<hex>", size) of the NAR serialisation of the tree at FS_PATH,
    streamed: file contents are read in chunks, never held whole."""
    sink = _Sink()
    sink.string(b"nix-archive-1")
    _dump(os.fsencode(fs_path), sink)
    return "sha256:" + sink.hash.hexdigest(), sink.size


def _dump(path: bytes, sink: _Sink) -> None:
    mode = os.lstat(path).st_mode
    sink.string(b"(")
    sink.string(b"type")
    if stat.S_ISREG(mode):
        sink.string(b"regular")
        if mode & stat.S_IXUSR:
            sink.string(b"executable")
            sink.string(b"")
        sink.string(b"contents")
        _contents(path, sink)
    elif stat.S_ISLNK(mode):
        sink.string(b"symlink")
        sink.string(b"target")
        sink.string(os.readlink(path))
    elif stat.S_ISDIR(mode):
        sink.string(b"directory")
        for name in sorted(os.listdir(path)):
            for token in (b"entry", b"(", b"name", name, b"node"):
                sink.string(token)
            _dump(os.path.join(path, name), sink)
            sink.string(b")")
    else:
        raise LayerpipeError(f"{os.fsdecode(path)}: special file (not a regular file, directory or symlink) in a store item")
    sink.string(b")")


def _contents(path: bytes, sink: _Sink) -> None:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        sink.write(struct.pack("<Q", size))
        done = 0
        while chunk := f.read(CHUNK):
            done += len(chunk)
            sink.write(chunk)
        if done != size:
            raise LayerpipeError(f"{os.fsdecode(path)}: file changed size while being read")
        sink.write(b"\0" * (-size % 8))
