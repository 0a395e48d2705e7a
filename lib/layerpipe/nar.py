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
_NODE = _OPEN + _TYPE + _CLOSE                       # ( type ... )
_REGULAR = _NODE + _s(len("regular")) + _s(len("contents"))
_EXECUTABLE = _s(len("executable")) + _s(0)
_SYMLINK = _NODE + _s(len("symlink")) + _s(len("target"))
_DIRECTORY = _NODE + _s(len("directory"))
_ENTRY = _s(len("entry")) + _OPEN + _s(len("name")) + _s(len("node")) + _CLOSE   # plus name and node


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
