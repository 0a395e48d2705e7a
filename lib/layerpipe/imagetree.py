"""The file tree of the image being assembled, as its layers' tar headers give it.

image-assemble asks it whether an entry point exists and reads a profile's
manifest from it: the layers are the truth about what the image holds, so
no store directory is needed.  A layer is read (decompressed, headers only)
the first time a lookup needs it: the layer whose `paths` hold the store item
a name lies in, or, for a name outside every store item, all of them.
Symbolic links are followed inside the image only, as a container would see
them: an absolute target starts again at the image root, `..` stops there.
"""
import posixpath
import tarfile
from typing import Callable, IO

import zstandard

from .errors import LayerpipeError
from .formats.source import decompressed

MAX_HOPS = 40
DIR, FILE, LINK = "dir", "file", "link"


def _clean(name: str) -> str:
    return posixpath.normpath("/" + name).lstrip("/")


class Layer:
    """One layer: how to open its blob, and the store items it holds (None: unknown)."""

    def __init__(self, opener: Callable[[], IO[bytes]], items: list[str] | None, where: str):
        self.opener, self.items, self.where = opener, items, where
        self.entries: dict[str, tuple[str, str, int]] | None = None
        self._children: dict[str, list[str]] | None = None

    def children(self, name: str) -> list[str]:
        """The names of the entries right below NAME in this layer."""
        if self._children is None:
            self._children = {}
            for entry, (kind, _, _) in self.load().items():
                if kind != "whiteout":
                    parent, base = posixpath.split(entry)
                    self._children.setdefault(parent, []).append(base)
        return self._children.get(name, [])

    def load(self) -> dict[str, tuple[str, str, int]]:
        """name -> (kind, link target, mode); whiteouts as kind 'whiteout'."""
        if self.entries is None:
            entries: dict[str, tuple[str, str, int]] = {}
            for member, _ in self._members():
                name = _clean(member.name)
                for parent in _parents(name):
                    entries.setdefault(parent, (DIR, "", 0o755))
                base = posixpath.basename(name)
                if base.startswith(".wh."):
                    entries[name] = ("whiteout", "", 0)
                elif member.isdir():
                    entries[name] = (DIR, "", member.mode)
                elif member.issym():
                    entries[name] = (LINK, member.linkname, member.mode)
                else:
                    entries[name] = (FILE, "", member.mode)
            self.entries = entries
        return self.entries

    def _members(self):
        try:
            with self.opener() as blob:
                stream, _ = decompressed(blob)
                with tarfile.open(fileobj=stream, mode="r|") as tar:
                    for member in tar:
                        yield member, tar
        except (tarfile.TarError, OSError, EOFError, zstandard.ZstdError) as exc:
            raise LayerpipeError(f"cannot read the layer: {exc}", self.where) from None

    def read(self, name: str, limit: int) -> bytes:
        for member, tar in self._members():
            if _clean(member.name) == name and member.isfile():
                if member.size > limit:
                    raise LayerpipeError(f"/{name} is larger than {limit} bytes", self.where)
                return tar.extractfile(member).read()
        raise LayerpipeError(f"/{name} is not in the layer", self.where)


def _parents(name: str) -> list[str]:
    parts = name.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


class ImageTree:
    """Lookups in the union of LAYERS (base first) and TOP, the top layer's entries."""

    def __init__(self, layers: list[Layer], top: dict[str, tuple[str, str, int]]):
        self.layers, self.top = layers, top
        self.owners = {item.lstrip("/"): layer for layer in layers for item in layer.items or ()}

    def _owner(self, name: str) -> Layer | None:
        for prefix in [*_parents(name), name]:
            if prefix in self.owners:
                return self.owners[prefix]
        return None

    def entry(self, name: str) -> tuple[tuple[str, str, int] | None, Layer | None]:
        """The topmost entry NAME (no symlink followed) and the layer that has it."""
        if name in self.top:
            return self.top[name], None
        owner = self._owner(name)
        candidates = [owner] if owner is not None else list(reversed(self.layers))
        for layer in candidates:
            found = layer.load().get(name)
            if found is not None:
                return (None, None) if found[0] == "whiteout" else (found, layer)
            if any(layer.load().get(p, ("",))[0] == "whiteout" for p in _whiteouts(name)):
                return None, None
        return None, None

    def children(self, name: str) -> set[str]:
        """What the directory NAME (links not followed) holds, in every layer that may have it."""
        owner = self._owner(name)
        layers = [owner] if owner is not None else self.layers
        found = {posixpath.basename(n) for n in self.top if posixpath.dirname(n) == name}
        return found.union(*(layer.children(name) for layer in layers))

    def resolve(self, path: str) -> tuple[str, tuple[str, str, int], Layer | None] | None:
        """(the name PATH leads to after following links, its entry, its layer), or None."""
        todo = [p for p in path.split("/") if p][::-1]
        done: list[str] = []
        hops = 0
        found: tuple = ((DIR, "", 0o755), None)
        while todo:
            part = todo.pop()
            if part == ".":
                continue
            if part == "..":
                done = done[:-1]
                continue
            found = self.entry("/".join(done + [part]))
            if found[0] is None:
                return None
            kind, target, _ = found[0]
            if kind == LINK:
                hops += 1
                if hops > MAX_HOPS:
                    return None
                done = [] if target.startswith("/") else done
                todo.extend(p for p in reversed(target.split("/")) if p)
                continue
            if kind != DIR and todo:
                return None
            done.append(part)
        return "/".join(done), found[0], found[1]

    def read_file(self, path: str, limit: int = 64 << 20) -> bytes | None:
        """The contents of the regular file PATH leads to, or None when there is none."""
        hit = self.resolve(path)
        if hit is None or hit[1][0] != FILE or hit[2] is None:
            return None
        return hit[2].read(hit[0], limit)


def _whiteouts(name: str) -> list[str]:
    """Whiteout names that would hide NAME: `.wh.<name>` and opaque markers above it."""
    parent, base = posixpath.split(name)
    marks = [posixpath.join(parent, ".wh." + base)]
    return marks + [posixpath.join(p, ".wh..wh..opq") for p in _parents(name)]
