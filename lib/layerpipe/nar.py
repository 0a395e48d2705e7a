"""Nix archive (NAR) sizes computed from a file tree, as Nix defines them.

A NAR is a sequence of length-prefixed strings padded to 8 bytes; its size
follows from names, file sizes and symlink targets alone, so no file is read.
"""
import os
import stat

from .errors import LayerpipeError


def _s(n: int) -> int:
    """Bytes one NAR string of length N takes: 8-byte length, data, padding."""
    return 8 + ((n + 7) & ~7)


_OPEN, _CLOSE, _TYPE = _s(1), _s(1), _s(4)
_HEADER = _s(len("nix-archive-1"))


def nar_size(fs_path: str) -> int:
    """Size of the NAR serialisation of the tree at FS_PATH (not followed if a link)."""
    return _HEADER + _node_size(os.fsencode(fs_path))


def _node_size(path: bytes) -> int:
    st = os.lstat(path)
    mode = st.st_mode
    size = _OPEN + _TYPE + _CLOSE
    if stat.S_ISREG(mode):
        size += _s(len("regular"))
        if mode & stat.S_IXUSR:  # as Nix: the owner bit decides
            size += _s(len("executable")) + _s(0)
        return size + _s(len("contents")) + _s(st.st_size)
    if stat.S_ISLNK(mode):
        return size + _s(len("symlink")) + _s(len("target")) + _s(len(os.readlink(path)))
    if stat.S_ISDIR(mode):
        size += _s(len("directory"))
        for name in sorted(os.listdir(path)):
            size += (_s(len("entry")) + _OPEN + _s(len("name")) + _s(len(name))
                     + _s(len("node")) + _node_size(os.path.join(path, name)) + _CLOSE)
        return size
    raise LayerpipeError(f"{os.fsdecode(path)}: special file (not a regular file, directory or symlink) in a store item")
